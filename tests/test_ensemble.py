"""Ensembles (kernel.ensemble): members side by side in their own processes, averaged; a failing member, a
killed parent, and exported models that predict alone in a fresh process (kernel.predict)."""
import gc
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastai.callback.core import Callback

from conftest import as_a_terminal_job, kernel_subprocess
from kernel import Config, checkpoint, cost, data, ensemble, plan, predict, train
from kernel.config import cpu_cores
from kernel.lock import locked
from kernel.sample import make_sample

pytestmark = pytest.mark.kernel  # runs inside the notebook: also tested on Kaggle's versions (tests/run)

ONE = dict(stages="32x24:1:8:1", tta=0)
TWO = dict(**ONE, devices="cpu,cpu", members="a seed=1; b seed=2 arch=test_resnet weight=3")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("comp") / "small", n_train=60, n_test=12, seed=2)


@pytest.fixture(scope="module")
def two(small, tmp_path_factory) -> tuple[Path, list[str]]:
    """Two members, different seeds and architectures, run concurrently on two CPU slots."""
    out = tmp_path_factory.mktemp("ens") / "out"
    cfg = Config.make("cpu-scratch", data=str(small), out=str(out), **TWO)
    logged = []
    ensemble.run(cfg, log=logged.append)
    return out, logged


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"image_id": str}).set_index("image_id")


def test_two_members_train_side_by_side_and_their_weighted_mean_is_the_submission(two, small):
    out, logged = two
    for name in ("a", "b"):
        folder = out / "members" / name
        for f in ("probs.csv", "model.safetensors", "model.json", "history.csv", "history.png", "log.txt"):
            assert (folder / f).is_file(), f"{name}/{f}"
    # finished: no optimiser state is left, in OUT or beside it (where a resume would have found it)
    assert not list(out.rglob("*.pth")) and not (out.parent / f".{out.name}-checkpoints").exists()
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # one line per member
    assert json.loads((out / "members" / "b" / "model.json").read_text())["arch"] == "test_resnet"
    a, b, mean = read(out / "members/a/probs.csv"), read(out / "members/b/probs.csv"), read(out / "probs.csv")
    assert not np.allclose(a.to_numpy(), b.loc[a.index].to_numpy())  # two different models
    expected = (a + 3 * b.loc[a.index]) / 4  # member b weighs 3
    assert np.abs(mean.loc[a.index].to_numpy() - expected.to_numpy()).max() < 1e-6
    sub = pd.read_csv(out / "submission.csv", dtype={"image_id": str})
    assert list(sub.image_id) == list(pd.read_csv(small / "sample_submission.csv",
                                                  dtype={"image_id": str}).image_id)
    assert list(sub.label) == list(mean.loc[sub.image_id].idxmax(axis=1))
    # concurrent: both started before either finished; each member's epoch lines stream with its name
    # two CPU slots share this process's cores: torch threads their share, loader workers as the preset says
    n = cpu_cores()
    line = (f"each member: 0 loader workers, {max(1, n // 2)} torch threads, 0.38 of the free RAM for a "
            f"stage's decoded images ({n} CPU cores, 2 members at a time)")
    assert line in logged, logged
    for name in ("a", "b"):  # each with its share of the free RAM, which the sample's images fit
        assert any(l.startswith(f"[{name}] images decoded once for the stage at 32x24, kept in RAM") and
                   "(cache_share 0.38 of " in l for l in logged), logged
    started = [i for i, l in enumerate(logged) if l.endswith("started on the CPU")]
    finished = [i for i, l in enumerate(logged) if l.endswith("] finished")]
    assert len(started) == 2 and len(finished) == 2 and max(started) < min(finished), logged
    for name in ("a", "b"):
        assert any(l.startswith(f"[{name}] stage 1/1 32x24 epoch 1/1: train_loss") for l in logged)


def test_the_output_build_estimates_is_what_the_run_wrote(two, small):
    """kernel.cost.output_bytes, what build holds against Kaggle's 20 GB: each exported model to a byte or so
    (from the network's parameter count on the meta device), the whole output folder within 10%."""
    out, _ = two
    wrote = {p: p.stat().st_size for p in out.rglob("*") if p.is_file()}
    for name, arch in (("a", "resnet10t"), ("b", "test_resnet")):
        assert cost.weights_bytes(arch) == pytest.approx(wrote[out / "members" / name / "model.safetensors"],
                                                         rel=1e-3)
    cfg = Config.make("cpu-scratch", data=str(small), out=str(out), **TWO)
    total, peak = cost.output_bytes(cfg, n_test=12)  # the sample's test images
    assert total == pytest.approx(sum(wrote.values()), rel=0.1), sorted(wrote.items())
    assert peak == total + cost.weights_bytes("resnet10t")  # its export's temp file beside the rest


def test_an_exported_model_predicts_alone_in_a_fresh_process(two, small, tmp_path):
    """Only the package's code, a new process, no checkpoint: the same probabilities (no TTA) as the member,
    and over both members the same ensemble."""
    trained, _ = two
    out = tmp_path / "exported"  # what `build.py output` downloads: no checkpoints
    shutil.copytree(trained, out, ignore=shutil.ignore_patterns(".lock"))
    assert not list(out.rglob("*.pth"))
    for models, expected in ((out / "members" / "a", out / "members" / "a" / "probs.csv"),
                             (out, out / "probs.csv")):
        dest = tmp_path / f"predicted-{models.name}"
        r = subprocess.run([sys.executable, "-m", "kernel.predict", "--models", str(models),
                            "--data", str(small), "--out", str(dest)],
                           capture_output=True, text=True, timeout=300, **kernel_subprocess())
        assert r.returncode == 0, r.stderr[-2000:]
        got, want = read(dest / "probs.csv"), read(expected)
        assert list(got.columns) == list(want.columns)
        assert np.abs(got.loc[want.index].to_numpy() - want.to_numpy()).max() < 1e-6


def test_each_model_is_freed_before_the_next_predicts(two, small):
    """The inference kernel predicts with one model after another (eight for rttt): each one's memory (on a
    GPU) must be back before the next loads, not left to the garbage collector (disabled here, so that only
    what predict lets go of is gone)."""
    trained, _ = two
    cfg = Config.make("cpu-scratch", data=str(small))
    test, undecodable, _ = data.checked_test(cfg, lambda *_: None)
    models = []

    class Look(Callback):
        def before_fit(self): models.append(weakref.ref(self.learn.model))
    gc.collect()
    gc.disable()
    try:
        for name in ("a", "b"):
            predict.predict(trained / "members" / name, test, undecodable, tta=0, cbs=[Look()],
                            log=lambda *_: None)
            assert len(models) == 1 + (name == "b") and models[-1]() is None, f"model {name} is still alive"
    finally:
        gc.enable()


def test_a_failing_member_is_one_line_and_the_others_still_submit(small, tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not weights")
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), **ONE, devices="cpu",
                      members=f"good seed=1; bad seed=2 weights={tmp_path / 'junk.safetensors'}")
    logged = []
    path = ensemble.run(cfg, log=logged.append)
    failures = [l for l in logged if l.startswith("member ")]
    assert len(failures) == 1 and failures[0].startswith("member bad failed: weights file") and \
        "does not fit resnet10t" in failures[0] and "the others go on" in failures[0], failures
    assert logged[-1].endswith("the mean of good; missing: bad")
    good = read(tmp_path / "out" / "members" / "good" / "probs.csv")
    sub = pd.read_csv(path, dtype={"image_id": str})
    assert list(sub.label) == list(good.loc[sub.image_id].idxmax(axis=1))


def test_a_killed_parent_takes_its_members_along_and_a_rerun_keeps_the_finished_one(small, tmp_path):
    out = tmp_path / "out"
    args = ["--preset", "cpu-scratch", "--data", str(small), "--out", str(out), "--stages", "32x24:2:8:1",
            "--tta", "0", "--members", "a seed=1; b seed=2", "--devices", "cpu"]
    parent = subprocess.Popen([sys.executable, "-m", "kernel", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, **kernel_subprocess())
    deadline = time.time() + 300
    while (time.time() < deadline and parent.poll() is None
           and not checkpoint.path(out / "members" / "b").exists()):
        time.sleep(0.05)
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    assert parent.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    a = out / "members" / "a"
    assert (a / "probs.csv").is_file() and not (out / "submission.csv").exists()
    deadline = time.time() + 30
    while True:  # member b, training in its own process, died with its parent: its lock is free
        try:
            with locked(out / "members" / "b"): break
        except Exception:
            assert time.time() < deadline, "member b went on training after its parent was killed"
            time.sleep(0.2)
    before = {p.name: p.stat().st_mtime_ns for p in a.iterdir() if p.is_file()}
    r = subprocess.run([sys.executable, "-m", "kernel", *args], capture_output=True, text=True,
                       timeout=600, **kernel_subprocess())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "[a] finished earlier: not trained again" in r.stdout and "[b] resuming from" in r.stdout
    assert {p.name: p.stat().st_mtime_ns for p in a.iterdir() if p.is_file()} == before  # a untouched
    assert len(pd.read_csv(out / "members" / "b" / "history.csv")) == 2
    assert (out / "submission.csv").is_file() and "the mean of a, b" in r.stdout


def test_a_ctrl_c_to_the_parent_alone_stops_its_member_and_waits_for_it(small, tmp_path):
    """`kill -INT` of the parent alone (its members did not hear it): it passes the interrupt on and waits for
    the member to stop and say so before its own one line. A wait that Ctrl-C broke into once returned at once
    the second time (Thread.join, CPython <= 3.12), and the parent ended while its member was still saving."""
    out = tmp_path / "out"
    args = ["--preset", "cpu-scratch", "--data", str(small), "--out", str(out), "--stages", "32x24:50:8:1",
            "--tta", "0", "--members", "a seed=1", "--devices", "cpu"]
    parent = subprocess.Popen([sys.executable, "-m", "kernel", *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=as_a_terminal_job, **kernel_subprocess())
    try:
        deadline, saved = time.time() + 300, checkpoint.path(out / "members" / "a")
        while time.time() < deadline and parent.poll() is None and not saved.exists():
            time.sleep(0.05)
        assert parent.poll() is None and saved.exists(), parent.communicate()  # the first of 50 epochs saved
        parent.send_signal(signal.SIGINT)
        said, err = parent.communicate(timeout=120)
    finally:
        if parent.poll() is None: os.killpg(parent.pid, signal.SIGKILL)  # a failed test leaves nothing running
    assert parent.returncode == 130 and "Traceback" not in said + err, said + err
    # said by the parent once the member's process has ended: it waited for it
    assert "[a] interrupted, its finished epochs saved" in said.splitlines(), said
    assert err.splitlines() == [
        f"interrupted: members a of {out} stopped during training, every finished epoch saved: rerun the same "
        "command to resume them (finished members are kept)"], err


def test_a_member_the_time_budget_stopped_is_resumed_by_a_rerun(small, tmp_path):
    """Member a ran out of time in its second epoch (as on Kaggle, hours in): it predicted with what it had,
    and is unfinished. The rerun resumes it from its checkpoint instead of counting it finished."""
    from test_train import Probe, limit_reached
    out = tmp_path / "out"
    cfg = Config.make("cpu-scratch", data=str(small), out=str(out), stages="32x24:3:8:1", tta=0,
                      members="a seed=1", devices="cpu", time_limit=600)
    member = cfg.member(cfg.members[0], str(out / "members" / "a"))
    train.run(member, cbs=[Probe(limit_reached, "after_batch")], log=lambda *_: None)
    assert (out / "members" / "a" / "probs.csv").is_file()
    assert len(pd.read_csv(out / "members" / "a" / "history.csv")) == 1
    logged = []
    ensemble.run(cfg, log=logged.append)
    assert not [l for l in logged if "finished earlier" in l], logged
    assert any(l.startswith("[a] resuming from") and "epoch 2 of 3" in l for l in logged), logged
    assert "[a] finished" in logged and len(pd.read_csv(out / "members" / "a" / "history.csv")) == 3


def test_members_start_longest_first_each_with_a_time_share_that_leaves_the_waiting_theirs(small, tmp_path):
    """One slot, members listed shortest first: they start longest first by kernel/cost.py's estimate, each
    with a time limit of its part, by cost, of the time left beside the members still waiting (the last
    takes all that is left); the one before it took no more than its part of the time."""
    out = tmp_path / "out"
    cfg = Config.make("cpu-scratch", data=str(small), out=str(out), arch="test_resnet", tta=0, devices="cpu",
                      time_limit=3600, members="short stages=32x24:1:8:1; middle stages=32x24:2:8:1; "
                                               "long stages=48x36:2:8:1")
    logged = []
    ensemble.run(cfg, log=logged.append)
    quiet = lambda *_: None
    n_train, n_test = len(data.train_items(cfg, quiet)), len(data.checked_test(cfg, quiet)[0])
    seconds = {m.name: cost.seconds(plan.member(cfg, m, str(out)), n_train, n_test) for m in cfg.members}
    line = r"\[(\w+)\] started on the CPU, (\d+) s of the (\d+) s left \(its share by estimated cost\)"
    started = [(m[1], int(m[2]), int(m[3])) for m in map(lambda l: re.fullmatch(line, l), logged) if m]
    assert [name for name, *_ in started] == ["long", "middle", "short"], logged
    for i, (name, limit, left) in enumerate(started):
        part = seconds[name] / sum(seconds[n] for n, *_ in started[i:])  # beside those still waiting
        assert abs(limit - left * part) <= 1, (name, limit, left, part)
        assert abs(json.loads((out / "members" / name / "model.json").read_text())["config"]["time_limit"]
                   - limit) <= 0.5
        if i: assert left >= started[i - 1][2] - started[i - 1][1] - 1  # the one before took at most its part
    assert started[-1][1] == started[-1][2] and (out / "submission.csv").is_file()


def test_inference_in_a_fresh_process_reproduces_trainings_tta_submission(small, tmp_path):
    """TTA on: its augmentations are drawn batch by batch, so the inference kernel must predict in the batches
    training predicted in (the exported model's), not the largest that fits where it runs. Probabilities
    agree within 1e-5 (the same arithmetic in another process), labels exactly."""
    out = tmp_path / "out"
    cfg = Config.make("cpu-scratch", data=str(small), out=str(out), stages="32x24:1:8:1", tta=2, val_bs=5)
    train.run(cfg, log=lambda *_: None)
    dest = tmp_path / "inferred"
    r = subprocess.run([sys.executable, "-m", "kernel.predict", "--models", str(out), "--data", str(small),
                        "--out", str(dest)],
                       capture_output=True, text=True, timeout=300, **kernel_subprocess())
    assert r.returncode == 0, r.stderr[-2000:]
    got, want = read(dest / "probs.csv"), read(out / "probs.csv")
    assert np.abs(got.loc[want.index].to_numpy() - want.to_numpy()).max() < 1e-5
    pd.testing.assert_frame_equal(pd.read_csv(dest / "submission.csv"), pd.read_csv(out / "submission.csv"))


def test_a_members_process_starts_cuda_with_expandable_segments_unless_set(small, tmp_path, monkeypatch):
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), **ONE)
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    env = ensemble.member_env(cfg, "1")
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True" and env["CUDA_VISIBLE_DEVICES"] == "1"
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:128")  # the user's own is kept
    assert ensemble.member_env(cfg, "cpu")["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:128"
