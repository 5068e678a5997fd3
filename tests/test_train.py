"""Training through kernel.train: schedule, accumulation, checkpoints and resume, weights, submission, bad input."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from fastai.callback.core import Callback
from PIL import Image

from conftest import kernel_subprocess
from kernel import Config, UserError
from kernel.data import train_items
from kernel.sample import accuracy, make_sample
from kernel.submission import make_submission
from kernel.train import make_learner, run

pytestmark = pytest.mark.kernel  # runs inside the notebook: also tested on Kaggle's versions (tests/run)

ROOT = Path(__file__).resolve().parents[1]
TINY = "32x24:1:8:1,32x24:1:8:4"  # two quick stages, the second with accumulation 4


def quiet(*_): pass


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("comp") / "sample", n_train=300, n_test=100)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("comp") / "small", n_train=60, n_test=12, seed=1)


def train_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernel.train", *args], capture_output=True, text=True, timeout=600, **kernel_subprocess(), **kw)


def test_full_cpu_run_on_the_sample_learns_and_writes_a_valid_submission(sample, tmp_path):
    out = tmp_path / "out"
    cfg = Config.make("cpu", data=str(sample), out=str(out))
    assert len(cfg.stages) == 2 and cfg.stages[1].accum == 2
    path = run(cfg, log=quiet)
    sub = pd.read_csv(path)
    expected = pd.read_csv(sample / "sample_submission.csv")
    assert list(sub.image_id) == list(expected.image_id)  # sample_submission's row order
    assert sub.label.isin(pd.read_csv(sample / "train.csv").label.unique()).all()
    acc = accuracy(path, sample / "test_answers.csv")
    assert acc > 0.4, f"accuracy {acc:.2f}: chance is 0.10, the majority class 0.17"
    history = pd.read_csv(out / "history.csv")
    assert list(history[["stage", "epoch"]].itertuples(index=False, name=None)) == [(0, e) for e in range(cfg.stages[0].epochs)] + [(1, e) for e in range(cfg.stages[1].epochs)]
    assert {"size", "train_loss", "valid_loss", "error_rate", "seconds"} <= set(history.columns)
    probs = pd.read_csv(out / "probs.csv")
    assert len(probs) == 100 and probs.drop(columns="image_id").sum(axis=1).round(3).eq(1).all()
    for png in ("schedule.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A finished run only predicts again: no epoch is added.
    run(cfg, log=quiet)
    assert len(pd.read_csv(out / "history.csv")) == len(history)


class CountSteps(Callback):
    """Counts optimiser steps and micro-batches per fit, and notes each fit's training loader."""
    def before_fit(self): self.steps, self.batches, self.train_dl = 0, 0, self.dls.train
    def after_step(self): self.steps += 1
    def after_batch(self):
        if self.training: self.batches += 1
    def after_fit(self): self.log.append((self.batches, self.steps, self.train_dl))


def test_accumulation_steps_weighted_epochs_and_a_broken_test_image(small, tmp_path):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(small, data)
    (data / "test_images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    pd.concat([pd.read_csv(data / "sample_submission.csv"), pd.DataFrame({"image_id": ["broken.jpg"]})]).to_csv(
        data / "sample_submission.csv", index=False)
    counter = CountSteps()
    counter.log = []
    logged = []
    cfg = Config.make("cpu", data=str(data), out=str(tmp_path / "out"), stages=TINY, tta=0, weighted_epochs=1, weight_power=1)
    path = run(cfg, cbs=[counter], log=logged.append)
    (b1, s1, dl1), (b4, s4, _), (bw, sw, dlw) = counter.log
    assert s1 == b1  # accum 1: a step per batch
    assert b4 // 4 == b1 and b4 > 3 * b1  # micro-batches of 8 // 4 = 2 images: four times as many
    assert s4 == b4 // 4 and s4 < b4  # one optimiser step per 4 micro-batches
    # The weighted epoch: last stage's size and accumulation, rare classes drawn by 1/count.
    assert not hasattr(dl1, "wgts") and sw == bw // 4
    counts = dlw.dataset.items["label"].map(pd.read_csv(data / "train.csv").label.value_counts())  # counted over all items
    assert abs(dlw.wgts - (1 / counts) / (1 / counts).sum()).max() < 1e-9
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    assert history.weighted.tolist() == [False, False, True]
    # The test image that does not decode is named, and gets the commonest training class.
    assert any("broken.jpg" in line and "cannot be decoded" in line for line in logged)
    sub = pd.read_csv(path)
    assert sub.image_id.iloc[-1] == "broken.jpg"
    counts = dl1.dataset.items["label"].value_counts()  # the training split's; ties go to the first in the vocab
    assert sub.label.iloc[-1] == sorted(counts[counts == counts.max()].index)[0]


def test_resume_after_sigkill_does_not_repeat_finished_epochs(small, tmp_path):
    out = tmp_path / "out"
    args = ["--preset", "cpu", "--data", str(small), "--out", str(out), "--stages", "32x24:2:8:1,32x24:2:8:2", "--tta", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "kernel.train", *args], **kernel_subprocess(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    history = out / "history.csv"
    deadline = time.time() + 300
    checkpoint = out / "checkpoints" / "last.pth"  # written (atomically) after the epoch's history row
    while time.time() < deadline and proc.poll() is None and not checkpoint.exists():
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    first = pd.read_csv(history)
    assert (out / "checkpoints" / "last.pth").exists() and len(first) < 4
    r = train_cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming from" in r.stdout
    final = pd.read_csv(history)
    assert list(final[["stage", "epoch"]].itertuples(index=False, name=None)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    pd.testing.assert_frame_equal(final.iloc[:len(first)].reset_index(drop=True), first)  # finished epochs untouched
    sub = pd.read_csv(out / "submission.csv")
    assert list(sub.image_id) == list(pd.read_csv(small / "sample_submission.csv").image_id)
    # A changed config refuses to resume, in one line; --restart starts over.
    r = train_cli(*args, "--lr", "0.5")
    assert r.returncode == 2 and "changed: lr" in r.stderr and "--restart" in r.stderr and "Traceback" not in r.stderr
    r = train_cli(*args, "--lr", "0.5", "--restart", "--stages", "32x24:1:8:1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(pd.read_csv(history)) == 1


def test_shuffled_test_ids_land_on_their_rows(tmp_path):
    sample = tmp_path / "sample_submission.csv"
    pd.DataFrame({"image_id": ["c.jpg", "a.jpg", "b.jpg"], "label": ""}).to_csv(sample, index=False)
    pred = {"b.jpg": "blast", "c.jpg": "normal", "a.jpg": "hispa"}  # test order differs from both sorts
    sub = make_submission(pred, ["blast", "hispa", "normal"], sample)
    assert sub.values.tolist() == [["c.jpg", "normal"], ["a.jpg", "hispa"], ["b.jpg", "blast"]]
    with pytest.raises(UserError, match="1 ids missing"):
        make_submission({"a.jpg": "blast", "b.jpg": "blast"}, ["blast"], sample)
    with pytest.raises(UserError, match="1 extra"):
        make_submission({**pred, "z.jpg": "blast"}, ["blast", "hispa", "normal"], sample)


def test_pretrained_weights_load_from_a_local_file(small, tmp_path):
    cfg = Config.make("cpu", data=str(small), out=str(tmp_path), arch="test_resnet", stages="32x24:1:8:1")
    from kernel.data import dataloaders
    dls = dataloaders(cfg, cfg.stages[0], train_items(cfg, quiet))
    src = timm.create_model("test_resnet", pretrained=False, num_classes=7)
    torch.save(src.state_dict(), tmp_path / "test_resnet.pth")
    learn = make_learner(Config.make("cpu", arch="test_resnet", weights=str(tmp_path / "test_resnet.pth")), dls, quiet)
    body = learn.model[0].model if hasattr(learn.model[0], "model") else learn.model[0]
    loaded = body.state_dict()
    for k, v in src.state_dict().items():
        if not k.startswith("fc."): assert torch.equal(loaded[k], v), k
    other = timm.create_model("test_efficientnet", pretrained=False)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    with pytest.raises(UserError, match=r"does not fit test_resnet") as e:
        make_learner(Config.make("cpu", arch="test_resnet", weights=str(tmp_path / "other.pth")), dls, quiet)
    assert "\n" not in str(e.value)
    (tmp_path / "junk.pth").write_bytes(b"not a weights file")
    with pytest.raises(UserError, match=r"does not fit test_resnet"):
        make_learner(Config.make("cpu", arch="test_resnet", weights=str(tmp_path / "junk.pth")), dls, quiet)


def broken(tmp_path: Path, small: Path, how: str) -> Path:
    import shutil
    d = tmp_path / "data"
    shutil.copytree(small, d)
    if how == "train.csv": (d / "train.csv").unlink()
    if how == "train_images": shutil.rmtree(d / "train_images")
    if how == "test_images": shutil.rmtree(d / "test_images")
    if how == "ids":
        sub = pd.read_csv(d / "sample_submission.csv")
        sub.iloc[:-1].to_csv(d / "sample_submission.csv", index=False)
    if how == "orphan row":
        df = pd.read_csv(d / "train.csv")
        (d / "train_images" / df.label[0] / df.image_id[0]).unlink()
    return d


@pytest.mark.parametrize("how,args,message", [
    ("no folder", ["--data", "/nonexistent/comp"], "data folder not found at /nonexistent/comp"),
    ("train.csv", [], "train.csv not found"),
    ("train_images", [], "train_images/ not found"),
    ("test_images", [], "test_images/ not found"),
    ("orphan row", [], "1 of 62 train.csv rows have no image"),  # 60 asked, 3 a class at least
    ("arch", ["--arch", "no_such_net"], "unknown timm architecture 'no_such_net'"),
    ("field", ["--no_such_field", "3"], "unknown config field 'no_such_field'"),
    ("stages", ["--stages", "64:2"], "bad stage '64:2'"),
    ("no stages", ["--stages", ","], "no stages"),
    ("valid_pct", ["--valid_pct", "1.5"], "--valid_pct 1.5 must be between 0 and 1"),
    ("tta", ["--tta", "-1"], "--tta -1 must be 0 or more"),
    ("arch tag", ["--arch", "resnet10t.no_such_tag"], "timm cannot build 'resnet10t.no_such_tag'"),
    ("ids", [], "test images do not match"),
])
def test_bad_input_gives_one_line(small, tmp_path, how, args, message):
    d = broken(tmp_path, small, how)
    r = train_cli("--preset", "cpu", "--data", str(d), "--out", str(tmp_path / "out"), *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], r.stderr[-1500:]
    assert "Traceback" not in r.stderr


def test_undecodable_images_are_named_and_left_out(small, tmp_path):
    d = broken(tmp_path, small, "")
    df = pd.read_csv(d / "train.csv")
    bad = d / "train_images" / df.label[3] / df.image_id[3]
    bad.write_bytes(b"\xff\xd8 truncated")
    logged = []
    items = train_items(Config.make("cpu", data=str(d)), logged.append)
    assert len(items) == len(df) - 1 and str(bad) not in set(items.path)
    assert len(logged) == 1 and str(bad) in logged[0] and "left out of training" in logged[0]
