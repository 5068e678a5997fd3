"""Training one model through kernel.train: schedule, accumulation, normalisation, pretrained weights, mixed
precision, checkpoints and resume, the time budget, the lock, weighted epochs, submission, bad input."""
import copy
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
from fastai.callback.core import Callback
from fastai.callback.mixup import MixHandler
from fastai.losses import LabelSmoothingCrossEntropyFlat
from fastai.vision.all import Normalize
from safetensors.torch import save_file

from conftest import kernel_subprocess
from kernel import Config, UserError, checkpoint, data, memory, model, train
from kernel.data import load_image, train_items
from kernel.errors import cli
from kernel.lock import locked
from kernel.sample import accuracy, make_sample
from kernel.submission import make_submission
from kernel.train import make_learner, run

pytestmark = pytest.mark.kernel  # runs inside the notebook: also tested on Kaggle's versions (tests/run)

TINY = "32x24:1:8:1,32x24:1:8:4"  # two quick stages, the second with accumulation 4


def quiet(*_): pass


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("comp") / "sample", n_train=300, n_test=100)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("comp") / "small", n_train=60, n_test=12, seed=1)


def copy_data(src: Path, tmp_path: Path) -> Path:
    shutil.copytree(src, tmp_path / "data")
    return tmp_path / "data"


def train_cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kernel.train", *args], capture_output=True, text=True,
                          timeout=600, **kernel_subprocess(), **kw)


def fitting(learn) -> bool:
    """In one of training's fits, not in the prediction's learner (run() hands callbacks to both)."""
    return any(type(c).__name__ == "EpochEnd" for c in learn.cbs)


class Probe(Callback):
    """Calls `fn(learn, event)` on the events it names, in training's fits (and in prediction too with
    `predicting`): a window into what the kernel's learners do."""
    order = 100  # after everything the kernel adds (MixedPrecision, the scheduler, the checkpoint)

    def __init__(self, fn, *events: str, predicting: bool = False):
        self.fn = fn
        for e in events:
            setattr(self, e,
                    lambda e=e: self.fn(self.learn, e) if predicting or fitting(self.learn) else None)


def test_cpu_preset_learns_the_sample_keeps_what_it_learnt_across_stages_and_a_rerun_only_predicts(
        sample, tmp_path):
    out = tmp_path / "out"
    cfg = Config.make("cpu-scratch", data=str(sample), out=str(out))
    assert len(cfg.stages) >= 2
    lrs = []  # (image size, the head's learning rate) of every training batch

    def lr(learn, _):
        if learn.training: lrs.append((tuple(learn.x.shape[-2:]), learn.opt.hypers[-1]["lr"]))
    norms = []  # (event, the first BatchNorm's running mean) around every epoch

    def norm(learn, event):
        bn = next(m for m in learn.model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        norms.append((event, bn.running_mean.clone()))
    path = run(cfg, cbs=[Probe(lr, "before_batch"), Probe(norm, "before_epoch", "after_epoch")], log=quiet)
    sub = pd.read_csv(path)
    assert list(sub.image_id) == list(pd.read_csv(sample / "sample_submission.csv").image_id)  # its row order
    acc = accuracy(path, sample / "test_answers.csv")
    assert acc > 0.4, f"accuracy {acc:.2f}: chance is 0.10, the majority class 0.17"
    history = pd.read_csv(out / "history.csv")
    assert list(zip(history.stage, history.epoch)) == \
        [(i, e) for i, s in enumerate(cfg.stages) for e in range(s.epochs)]
    assert {"size", "train_loss", "valid_loss", "error_rate", "lr", "seconds", "stage_epochs"} \
        <= set(history.columns)
    # A stage change keeps what was learnt. The learning rate carries on down at a new stage, never back up
    # to a new warm-up (restarting a one-cycle per stage is what undid each stage)...
    changes = [i for i in range(1, len(lrs)) if lrs[i][0] != lrs[i - 1][0]]
    assert len(changes) == len(cfg.stages) - 1
    for i in changes:
        assert max(r for _, r in lrs[i:]) <= lrs[i - 1][1], f"the learning rate rises again at batch {i}"
    # ...and the BatchNorm statistics are re-estimated at the new size before it trains. (How the valid loss
    # moves across a stage change is a property of many seeds, not of one run: bench/stage_change.py.)
    n = sum(s.epochs for s in cfg.stages)
    assert [e for e, _ in norms] == ["before_epoch", "after_epoch"] * n
    firsts = np.cumsum([s.epochs for s in cfg.stages])[:-1]  # the first epoch of each later stage
    for k in range(1, n):  # between two epochs: re-estimated at a new stage's size, else left alone
        same = torch.equal(norms[2 * k - 1][1], norms[2 * k][1])
        assert same != (k in firsts), f"epoch {k + 1}: {'kept the old' if same else 'changed the'} statistics"
    probs = pd.read_csv(out / "probs.csv")
    assert len(probs) == 100 and probs.drop(columns="image_id").sum(axis=1).round(4).eq(1).all()
    for png in ("history.png", "confusion.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A finished run only predicts again: no epoch is added, and TTA gives the same probabilities.
    logged = []
    run(cfg, log=logged.append)
    assert len(pd.read_csv(out / "history.csv")) == len(history) and not [l for l in logged if "epoch" in l]
    pd.testing.assert_frame_equal(pd.read_csv(out / "probs.csv"), probs)


def test_pretrained_runs_normalised_everywhere_head_first_body_slower_and_exports_what_it_trained(
        small, tmp_path):
    """A weights file (resnet10t: ImageNet's mean and std) and two stages. Every batch the model sees, in
    training, validation and prediction, is normalised once with those stats. As fastai's `fine_tune`: the
    first epoch trains the head alone, then the body trains at body_lr of the head's rate. The exported model
    is the trained one, and a predict-only rerun gives the same probabilities."""
    arch = "resnet10t"
    pre = timm.get_pretrained_cfg(arch)
    mean, std = torch.tensor(pre.mean).view(3, 1, 1), torch.tensor(pre.std).view(3, 1, 1)
    weights = tmp_path / f"{arch}.safetensors"
    save_file(pretrained_like(arch), str(weights))
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch=arch,
                      weights=str(weights),
                      stages="32x24:2:8:1,48x36:1:8:1", tta=0)
    seen = []  # (kind, x batch, paths of its items)

    def look(learn, event):
        norms = [t for t in learn.dls.train.after_batch.fs if isinstance(t, Normalize)]
        assert len(norms) == 1 and torch.allclose(norms[0].mean.flatten().cpu(), mean.flatten())
        assert torch.allclose(norms[0].std.flatten().cpu(), std.flatten())
        kind = "train" if learn.training else "valid" if fitting(learn) else "test"
        if learn.training or learn.iter == 0:
            seen.append((kind, learn.x.detach().cpu().float(), learn.dl.items))
    fits = []  # per epoch: the body's conv weights and the head's before and after, the lr of each group

    def convs(learn):
        return {n: p.detach().clone() for n, p in model.body(learn.model).named_parameters() if p.ndim == 4}

    def head(learn):
        return [p.detach().clone() for p in learn.model[1].parameters()]

    def weigh(learn, event):
        if event == "before_epoch": fits.append(dict(convs=convs(learn), head=head(learn)))
        else: fits[-1].update(convs_after=convs(learn), head_after=head(learn),
                              lrs=[h["lr"] for h in learn.opt.hypers],
                              state={k: v.detach().clone() for k, v in learn.model.state_dict().items()})
    logged = []
    run(cfg, cbs=[Probe(look, "before_batch", predicting=True), Probe(weigh, "before_epoch", "after_epoch")],
        log=logged.append)
    assert any(f"loaded pretrained weights for {arch}" in l for l in logged)
    kinds = [k for k, *_ in seen]
    assert {"train", "valid", "test"} <= set(kinds), kinds
    sizes = {tuple(x.shape[-2:]) for _, x, _ in seen}
    assert sizes == {(32, 24), (48, 36)}  # both stages' batches were looked at
    lo, hi = (0 - mean) / std, (1 - mean) / std  # what a [0, 1] image becomes, channel by channel
    for kind, x, items in seen:
        assert (x >= lo - 1e-3).all() and (x <= hi + 1e-3).all(), f"{kind} batch normalised twice"
        assert x.min() < -0.5, f"{kind} batch not normalised"  # a [0, 1] image has nothing below 0
        if kind != "train":  # no augmentation: exactly the image, loaded at the stage size, normalised
            h, w = x.shape[-2:]
            first = torch.from_numpy(np.array(load_image(items.path.iloc[0], (h, w)))).permute(2, 0, 1)
            assert torch.allclose(x[0], (first.float() / 255 - mean) / std, atol=0.05), kind
    # three epochs: the frozen one, the rest of stage 1, stage 2
    assert len(fits) == 3
    frozen, *others = fits
    assert all(torch.equal(frozen["convs"][n], v) for n, v in frozen["convs_after"].items())
    assert not all(torch.equal(a, b) for a, b in zip(frozen["head"], frozen["head_after"]))
    for f in others:
        assert not any(torch.equal(f["convs"][n], v) for n, v in f["convs_after"].items())
        assert f["lrs"][0] == pytest.approx(cfg.body_lr * f["lrs"][-1]) and cfg.body_lr < 1
    net, _ = model.load(tmp_path / "out")
    exported = net.state_dict()
    assert exported.keys() == others[-1]["state"].keys()
    assert all(torch.equal(exported[k], v) for k, v in others[-1]["state"].items())
    probs = pd.read_csv(tmp_path / "out" / "probs.csv")
    run(cfg, log=quiet)  # finished: predicts again only, from the exported model
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "probs.csv"), probs)


def pretrained_like(arch: str) -> dict:
    """A state dict as training leaves one: every float tensor moved off its initial value (a fresh model's
    norm weights are all ones and biases zeros, which a random init would match by chance)."""
    g = torch.Generator().manual_seed(0)
    body = timm.create_model(arch, pretrained=False, num_classes=0)
    return {k: (v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v).contiguous()
            for k, v in body.state_dict().items()}


def test_a_body_without_batchnorm_is_not_reestimated_at_a_new_size(small, tmp_path):
    """ConvNeXt's body normalises with LayerNorm; fastai's head has BatchNorm1d whatever the body. The
    re-estimation at a new size is for the body's statistics: none here, so the head's are left as training
    left them (not reset and averaged over 100 batches)."""
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_convnext",
                      stages="64x48:1:8:1,96x72:1:8:1", tta=0)  # its body takes 32 pixels down to one
    head = []  # (event, the head's first BatchNorm1d's running mean and batches counted) around each epoch

    def look(learn, event):
        bn = next(m for m in learn.model[1].modules() if isinstance(m, torch.nn.BatchNorm1d))
        head.append((event, bn.running_mean.clone(), int(bn.num_batches_tracked)))
    run(cfg, cbs=[Probe(look, "before_epoch", "after_epoch")], log=quiet)
    assert [e for e, *_ in head] == ["before_epoch", "after_epoch"] * 2
    (_, mean, n), (_, mean2, n2) = head[1], head[2]  # the end of stage 1, the start of stage 2
    assert n2 == n and torch.equal(mean2, mean), "the head's BatchNorm was re-estimated at the new size"


def test_weights_that_do_not_fill_the_body_are_refused(small, tmp_path):
    state = pretrained_like("test_resnet")
    files = {"good": state,
             "partial": {k: v for i, (k, v) in enumerate(state.items()) if i % 3},
             "renamed": {f"backbone.{k}": v for k, v in state.items()}}
    for name, sd in files.items(): save_file(sd, str(tmp_path / f"{name}.safetensors"))
    logged = []
    net = model.create("test_resnet", 7, tmp_path / "good.safetensors", logged.append)
    n = sum(1 for v in state.values() if v.is_floating_point())
    assert logged == [f"loaded pretrained weights for test_resnet from {tmp_path / 'good.safetensors'}: "
                      f"all {n} tensors of the body"]
    for k, v in model.body(net).state_dict().items(): assert torch.equal(v, state[k]), k
    for name, matched in (("partial", "holds only"), ("renamed", "holds only 0 of")):
        with pytest.raises(UserError, match=f"{matched} .*tensors of test_resnet's body") as e:
            model.create("test_resnet", 7, tmp_path / f"{name}.safetensors", quiet)
        assert "\n" not in str(e.value) and "random init" in str(e.value)
    save_file(pretrained_like("test_efficientnet"), str(tmp_path / "other.safetensors"))
    (tmp_path / "junk.pth").write_bytes(b"not a weights file")
    for bad in ("other.safetensors", "junk.pth"):
        with pytest.raises(UserError, match="does not fit test_resnet|holds only"):
            model.create("test_resnet", 7, tmp_path / bad, quiet)


def test_a_vit_trains_and_predicts_at_a_size_it_was_not_made_for(small, tmp_path):
    """test_vit3 takes 160x160 only, in 16-pixel patches; a stage at 40x24 (2.5 x 1.5 patches) trains, and
    the exported model predicts the same again in a predict-only rerun (rebuilt as it was trained)."""
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_vit3",
                      stages="40x24:2:8:1", tta=0)
    path = run(cfg, log=quiet)
    assert len(pd.read_csv(tmp_path / "out" / "history.csv")) == 2 and len(pd.read_csv(path)) == 12
    probs = pd.read_csv(tmp_path / "out" / "probs.csv")
    run(cfg, log=quiet)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "out" / "probs.csv"), probs)


def test_leftover_gradients_never_carry_into_the_next_epoch(small, tmp_path):
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:3:8:4", tta=0)
    epochs = []  # per epoch: micro-batches, optimiser steps, |grad| left when the next epoch starts

    def look(learn, event):
        if event == "before_epoch":
            left = sum(float(p.grad.abs().sum()) for p in learn.model.parameters() if p.grad is not None)
            epochs.append({"batches": 0, "steps": 0, "grad_at_start": left})
        elif event == "after_step": epochs[-1]["steps"] += 1
        elif learn.training: epochs[-1]["batches"] += 1
    run(cfg, cbs=[Probe(look, "before_epoch", "after_step", "after_batch")], log=quiet)
    batches = epochs[0]["batches"]
    assert batches % 4, f"{batches} micro-batches an epoch: the test needs some left over at the epoch's end"
    assert [e["steps"] for e in epochs] == [batches // 4] * 3  # a step per 4 micro-batches of 2 images
    assert [e["grad_at_start"] for e in epochs] == [0.0] * 3, "gradients were carried into the next epoch"


def test_accumulation_steps_weighted_epochs_and_a_broken_test_image(small, tmp_path):
    data = copy_data(small, tmp_path)
    (data / "test_images" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    pd.concat([pd.read_csv(data / "sample_submission.csv"),
               pd.DataFrame({"image_id": ["broken.jpg"]})]).to_csv(
        data / "sample_submission.csv", index=False)
    fits = []

    def look(learn, event):
        if event == "before_epoch":
            fits.append(dict(batches=0, steps=0, dl=learn.dls.train, val_bs=learn.dls.valid.bs))
        elif event == "after_step": fits[-1]["steps"] += 1
        elif learn.training: fits[-1]["batches"] += 1
    logged = []
    cfg = Config.make("cpu-scratch", data=str(data), out=str(tmp_path / "out"), stages=TINY, tta=0,
                      weighted_epochs=1,
                      weight_power=1)
    path = run(cfg, cbs=[Probe(look, "before_epoch", "after_step", "after_batch")], log=logged.append)
    (b1, s1, dl1, v1), (b4, s4, _, v4), (bw, sw, dlw, vw) = [tuple(f.values()) for f in fits if f["batches"]]
    # validation batches are whole batches, not micro-batches of 2
    assert (dl1.bs, v1, v4, vw) == (8, 8, 8, 8)
    assert s1 == b1  # accum 1: a step per batch
    assert b4 // 4 == b1 and b4 > 3 * b1  # micro-batches of 8 // 4 = 2 images: four times as many
    assert s4 == b4 // 4 and s4 < b4  # one optimiser step per 4 micro-batches
    # The weighted epoch: last stage's size and accumulation, rare classes drawn by 1/count.
    assert not hasattr(dl1, "wgts") and sw == bw // 4
    # over all items
    counts = dlw.dataset.items["label"].map(pd.read_csv(data / "train.csv").label.value_counts())
    assert abs(dlw.wgts - (1 / counts) / (1 / counts).sum()).max() < 1e-9
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    assert history.weighted.tolist() == [False, False, True]
    # The test image that does not decode is named, and gets the training split's class frequencies.
    assert any("broken.jpg" in line and "cannot be decoded" in line for line in logged)
    sub = pd.read_csv(path)
    assert sub.image_id.iloc[-1] == "broken.jpg"
    # the training split's; ties go to the first in the vocab
    counts = dl1.dataset.items["label"].value_counts()
    assert sub.label.iloc[-1] == sorted(counts[counts == counts.max()].index)[0]
    prior = pd.read_csv(tmp_path / "out" / "probs.csv").set_index("image_id").loc["broken.jpg"]
    assert np.allclose(prior[counts.index].to_numpy(), (counts / counts.sum()).to_numpy())


def test_weighted_epochs_are_corrected_back_to_the_true_class_frequencies(sample, tmp_path):
    """After epochs that draw rare classes as often as common ones, the model over-predicts rare classes; the
    correction (on by default) multiplies its probabilities by prior / frequency drawn and renormalises."""
    cfg = dict(data=str(sample), out=str(tmp_path / "out"), stages="48x36:1:16:1", weighted_epochs=1,
               weight_power=1, tta=0)
    logged = []
    run(Config.make("cpu-scratch", **cfg), log=logged.append)
    corrected = pd.read_csv(tmp_path / "out" / "probs.csv").set_index("image_id")
    assert any("rescaled to the true class frequencies" in l for l in logged)
    run(Config.make("cpu-scratch", **cfg, weighted_correction=False), log=quiet)  # the model predicts again
    raw = pd.read_csv(tmp_path / "out" / "probs.csv").set_index("image_id")
    assert not corrected.equals(raw)
    # Exactly: weight_power 1 draws class c in proportion to (its share of the training split) / (its count
    # in train.csv); the correction multiplies by prior / drawn and renormalises.
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    vocab, prior = meta["vocab"], np.array(meta["prior"])
    counts = pd.read_csv(sample / "train.csv").label.value_counts().reindex(vocab).to_numpy(float)
    drawn = prior / counts / (prior / counts).sum()
    np.testing.assert_allclose(meta["scale"], prior / drawn, rtol=1e-6)
    expected = raw[vocab].to_numpy() * meta["scale"]
    np.testing.assert_allclose(corrected[vocab].to_numpy(), expected / expected.sum(1, keepdims=True),
                               atol=1e-6)


def test_the_gradscaler_scale_survives_a_stage_change_and_a_resume(small, tmp_path):
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="16x12:1:8:1,16x12:1:8:1", precision="fp16", tta=0)
    scales = []

    class Overflow(Exception): pass

    def look(learn, event):
        if event == "after_backward" and learn.iter == 0 and learn.epoch == 0 and not scales:
            # an fp16 overflow: the scaler halves its scale
            next(learn.model.parameters()).grad.fill_(float("inf"))
        if event == "after_epoch": scales.append(("end", learn.scaler.get_scale()))
        if event == "before_train": scales.append(("start", learn.scaler.get_scale()))
        if event == "before_train" and len(scales) == 3:
            raise Overflow("a crash in stage 2, after its checkpoint")
    with pytest.raises(Overflow):
        run(cfg, cbs=[Probe(look, "after_backward", "after_epoch", "before_train")], log=quiet)
    (_, first), (_, end1), (_, start2) = scales
    assert first == 65536.0 and end1 < first  # the injected overflow halved it (and others may have)
    assert start2 == end1, "stage 2 started with a new GradScaler"
    scales.clear()
    run(cfg, cbs=[Probe(look, "before_train")], log=quiet)
    assert scales[0] == ("start", end1), "the resumed run did not restore the scaler's scale"


def test_resume_after_sigkill_restores_model_and_optimiser_and_repeats_no_epoch_and_restart_prints_epochs(
        small, tmp_path):
    out = tmp_path / "out"
    args = ["--preset", "cpu-scratch", "--data", str(small), "--out", str(out), "--stages",
            "32x24:2:8:1,32x24:2:8:2",
            "--tta", "0"]
    proc = subprocess.Popen([sys.executable, "-m", "kernel.train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **kernel_subprocess())
    saved_at = checkpoint.path(out)  # written (atomically) after the epoch's history row
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not saved_at.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    first = pd.read_csv(out / "history.csv")
    saved = torch.load(saved_at, weights_only=False)
    assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the picture of how far it got
    # the history row comes first: a kill between it and the checkpoint leaves one row more
    assert len(first) < 4 and len(first) in (saved["epoch"], saved["epoch"] + 1)
    restored = {}

    def look(learn, event):
        if not restored:
            restored["model"] = {k: v.detach().clone() for k, v in learn.model.state_dict().items()}
            restored["opt"] = copy.deepcopy(learn.opt.state_dict())  # its tensors change as training goes on
    logged = []
    cfg = Config.make("cpu-scratch", data=str(small), out=str(out), stages="32x24:2:8:1,32x24:2:8:2", tta=0)
    run(cfg, cbs=[Probe(look, "before_fit")], log=logged.append)
    assert any(l.startswith("resuming from") for l in logged)
    for k, v in saved["model"].items(): assert torch.equal(restored["model"][k], v), f"model {k} not restored"
    opt = [s for s in restored["opt"]["state"] if s]
    assert len(opt) == len([s for s in saved["opt"]["state"] if s]) > 0, "optimiser state not restored"
    for mine, theirs in zip(opt, [s for s in saved["opt"]["state"] if s]):
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs if torch.is_tensor(theirs[k]))
    final = pd.read_csv(out / "history.csv")
    assert list(zip(final.stage, final.epoch)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    # finished epochs untouched
    pd.testing.assert_frame_equal(final.iloc[:len(first)].reset_index(drop=True), first)
    # A changed config refuses to resume, in one line; --restart starts over. The command prints one line
    # per epoch, with no progress-bar redraws.
    r = train_cli(*args, "--lr", "0.5")
    assert (r.returncode == 2 and "changed: lr" in r.stderr and "--restart" in r.stderr
            and "Traceback" not in r.stderr)
    r = train_cli(*args, "--restart", "--stages", "32x24:2:8:1,48x36:1:8:1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(pd.read_csv(out / "history.csv")) == 3
    lines = [l for l in r.stdout.splitlines() if l.startswith("stage ") and " epoch " in l]
    assert [l.split(":")[0] for l in lines] == ["stage 1/2 32x24 epoch 1/2", "stage 1/2 32x24 epoch 2/2",
                                                 "stage 2/2 48x36 epoch 1/1"]
    assert all("train_loss" in l and "valid_loss" in l and "error_rate" in l for l in lines)
    assert "\r" not in r.stdout + r.stderr and "█" not in r.stdout + r.stderr  # no progress-bar redraws


class Killed(Exception): pass


def test_a_killed_run_resumed_draws_the_batches_an_unkilled_one_does_and_says_what_it_resumed(
        small, tmp_path):
    """Loader workers > 0 (fastai's DataLoader shuffles with a random.Random of its own; its workers are
    seeded from torch). Killed after the frozen epoch's checkpoint, the resumed run (in a process whose
    random states were moved on) draws the same first batch in every epoch left, across a stage change,
    and ends with the same weights, as the run that was never killed."""
    weights = tmp_path / "test_resnet.safetensors"
    save_file(pretrained_like("test_resnet"), str(weights))

    def cfg(name: str) -> Config:
        return Config.make("cpu-scratch", data=str(small), out=str(tmp_path / name), arch="test_resnet",
                           weights=str(weights), stages="32x24:2:8:1,48x36:2:8:2", tta=0, num_workers=2)
    firsts: dict[str, list] = {"whole": [], "resumed": []}

    def first_batch(into: str):
        def look(learn, _):
            if learn.training and learn.iter == 0:
                firsts[into].append((learn.x.detach().clone(), learn.y.detach().clone()))
        return Probe(look, "before_batch")

    run(cfg("whole"), cbs=[first_batch("whole")], log=quiet)

    def kill(learn, _):
        if learn.epoch == 1: raise Killed("killed")  # after epoch 1's checkpoint, before epoch 2 draws
    with pytest.raises(Killed):
        run(cfg("killed"), cbs=[Probe(kill, "before_epoch")], log=quiet)
    assert torch.load(checkpoint.path(tmp_path / "killed"), weights_only=False)["epoch"] == 1
    random.seed(7), np.random.seed(7), torch.manual_seed(7)  # whatever this process drew meanwhile
    logged = []
    run(cfg("killed"), cbs=[first_batch("resumed")], log=logged.append)
    whole, again = firsts["whole"][1:], firsts["resumed"]
    assert len(whole) == len(again) == 3
    for k, ((x, y), (x2, y2)) in enumerate(zip(whole, again)):
        assert torch.equal(y, y2) and torch.equal(x, x2), f"epoch {k + 2} drew another first batch"
    a, b = model.load(tmp_path / "whole")[0].state_dict(), model.load(tmp_path / "killed")[0].state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), "the resumed run trained to other weights"
    resumed = [l for l in logged if l.startswith("resuming from")]
    assert resumed == [f"resuming from {checkpoint.path(tmp_path / 'killed')}: epoch 2 of 4 "
                       "(stage 1/2, epoch 2), fine-tuning pretrained weights"], logged
    assert not [l for l in logged if "from scratch" in l]


# loading values into meta tensors is a no-op, and torch says so once a tensor: only devices are checked here
@pytest.mark.filterwarnings("ignore:.*to a meta parameter")
def test_a_restored_checkpoint_lies_on_the_loaders_device(small, tmp_path):
    """A resume on a GPU: the model moved to the loaders' device before its state is loaded, and Adam's state
    onto each parameter's device (fastai leaves it where it was loaded: on the CPU). torch's meta device
    stands in for the GPU: tensors that say where they are, without one."""
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:1:8:1", tta=0, precision="fp16")

    def kill(*_): raise Killed("killed")  # after the epoch's checkpoint, before the export removes it
    with pytest.raises(Killed):
        run(cfg, cbs=[Probe(kill, "after_epoch")], log=quiet)
    state = checkpoint.load(tmp_path / "out", cfg, quiet)
    items = train_items(cfg, quiet)
    vocab = sorted(items.label.unique())
    net = model.create(cfg.arch, len(vocab), log=quiet)
    dls = data.dataloaders(cfg, (32, 24), 8, 8, items, vocab, model.stats(net))
    learn = make_learner(cfg, dls, net, has_valid=True, lines=True)
    learn.dls.device = torch.device("meta")
    scaler = learn.cbs.filter(lambda c: hasattr(c, "scaler"))[0].scaler
    state["scaler"]["scale"] = 1024.0  # not the 65536 a new GradScaler starts at: a restore must be seen
    checkpoint.restore(learn, state, scaler)
    params = list(learn.model.parameters())
    assert {p.device.type for p in params} == {"meta"}
    # the optimiser steps the model's own parameters, and its state lies beside them
    assert {id(p) for p in learn.opt.all_params(with_grad=False).itemgot(0)} == {id(p) for p in params}
    tensors = [(p, v) for p, s in learn.opt.state.items() for v in s.values() if torch.is_tensor(v)]
    assert len(tensors) >= 2 * len(params)  # grad_avg and sqr_avg of each
    assert {v.device.type for _, v in tensors} == {"meta"}
    assert scaler.get_scale() == 1024.0


def test_an_auto_stage_resolves_to_accumulation_above_1_on_a_small_gpu(small, tmp_path):
    """`auto` takes the smallest accumulation whose micro-batch the memory estimate fits, here against
    --gpu_memory (a GPU smaller than a T4), and training then runs those micro-batches."""
    n = len(pd.read_csv(small / "train.csv").label.unique())
    need = {m: memory.estimate("test_resnet", n, (96, 72), m).total for m in (16, 8)}
    room = need[8] // 2**20 + 1  # MiB: micro-batches of 8 fit, of 16 do not
    assert need[16] > room * 2**20
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="96x72:1:16:auto", tta=0, gpu_memory=room)
    seen, logged = [], []

    def look(learn, event):
        if learn.training: seen.append((event, len(learn.y)))
    run(cfg, cbs=[Probe(look, "before_batch", "after_step")], log=logged.append)
    assert f"stage 96x72:1:16:auto: accumulation 2 (micro-batch 8) fits {room / 1024:.1f} GiB" in logged
    batches = [b for e, b in seen if e == "before_batch"]
    assert set(batches) == {8} and sum(e == "after_step" for e, _ in seen) == len(batches) // 2


def estimates() -> int:
    """How many estimates kernel.memory was asked for so far in this process (its cache's count of calls)."""
    info = memory._estimate.cache_info()
    return info.hits + info.misses


def test_a_failing_memory_estimate_is_one_warning_and_the_run_goes_on_without_it(small, tmp_path):
    """The estimate simulates torch's internals on fake tensors: a torch that changed them breaks it on
    Kaggle, however well the preflight went on the laptop. Here torch's own switch that forbids saved-tensor
    hooks (the simulation needs them, training does not) breaks it: one warning line, the run finishes with
    the given accumulation and 1 for the auto stage, and the failed estimate is the only one asked for."""
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="40x32:1:8:auto,40x32:1:8:4", tta=0)
    logged = []
    before = estimates()
    with torch.autograd.graph.disable_saved_tensors_hooks("no saved-tensor hooks here"):
        path = run(cfg, log=logged.append)
    assert [l for l in logged if l.startswith("warning:")] == [
        "warning: memory estimate failed (RuntimeError: no saved-tensor hooks here); using accumulation 1 "
        "for auto stages (a step out of GPU memory halves the micro-batch) and the training batch to "
        "validate, 64 to predict"]
    assert estimates() - before == 1
    assert "stage 1/2: 40x32, 1 epoch, batch 8 = 1 x 8" in logged, logged
    assert "stage 2/2: 40x32, 1 epoch, batch 8 = 4 x 2" in logged, logged
    assert len(pd.read_csv(path)) == 12
    assert json.loads((tmp_path / "out" / "model.json").read_text())["complete"] is True


def test_the_batches_are_decided_once_before_training_and_a_resume_reads_them_back(small, tmp_path):
    """The plan holds each epoch's accumulation, validation and prediction batch, decided before its first
    epoch; a resume takes them from the checkpoint and asks no estimate: not on a GPU where the estimate would
    refuse the stage (--gpu_memory 1), not where no estimate can run (as in the test above)."""
    n = len(pd.read_csv(small / "train.csv").label.unique())
    need = {m: memory.estimate("test_resnet", n, (48, 40), m).total for m in (16, 8)}
    room = need[8] // 2**20 + 1  # MiB: micro-batches of 8 fit, of 16 do not
    assert need[16] > room * 2**20
    make = lambda mib: Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"),
                                   arch="test_resnet", stages="48x40:3:16:auto", tta=0, time_limit=600,
                                   gpu_memory=mib)
    run(make(room), cbs=[Probe(limit_reached, "after_batch")], log=quiet)
    plan = torch.load(checkpoint.path(tmp_path / "out"), weights_only=False)["plan"]
    assert [(e["accum"], e["val_bs"], e["predict_bs"]) for e in plan] == [(2, 16, 64)] * 3  # off the GPU
    logged, seen = [], []

    def look(learn, _):
        if learn.training: seen.append(len(learn.y))
    before = estimates()
    with torch.autograd.graph.disable_saved_tensors_hooks("no saved-tensor hooks here"):
        run(make(1), cbs=[Probe(look, "before_batch")], log=logged.append)
    assert estimates() == before and not [l for l in logged if "warning" in l or "accumulation" in l], logged
    assert any(l.startswith("resuming from") and "epoch 2 of 3" in l for l in logged), logged
    assert set(seen) == {8}
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert meta["predict_bs"] == 64 and meta["complete"] is True


def test_a_time_stopped_model_is_exported_unfinished_and_resumes(small, tmp_path):
    """The time limit reached mid-epoch: training stops, the model trained so far predicts, and it is
    marked unfinished; the same command again resumes it from its last epoch (members alike: see
    test_ensemble)."""
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:3:8:1", tta=0, time_limit=600)
    logged = []
    path = run(cfg, cbs=[Probe(limit_reached, "after_batch")], log=logged.append)
    assert "time budget: only prediction still fits before the time limit; training stops here" in logged
    assert len(pd.read_csv(path)) == 12 and len(pd.read_csv(tmp_path / "out" / "history.csv")) == 1
    assert json.loads((tmp_path / "out" / "model.json").read_text())["complete"] is False
    logged.clear()
    run(cfg, log=logged.append)
    assert any(l.startswith("resuming from") and "epoch 2 of 3" in l for l in logged), logged
    assert len(pd.read_csv(tmp_path / "out" / "history.csv")) == 3
    assert json.loads((tmp_path / "out" / "model.json").read_text())["complete"] is True


def test_on_kaggle_the_checkpoint_lives_outside_the_output_and_goes_once_the_model_is_complete(
        small, tmp_path, monkeypatch):
    """/kaggle/working is the output Kaggle keeps (20 GB at most): the optimiser's state is kept out of it, in
    /kaggle/temp, while the model may still resume, and removed once its export is complete. Elsewhere it
    lies beside OUT (an ensemble's members in one folder there); on Kaggle without /kaggle/temp, in the
    system's temp folder."""
    kaggle = tmp_path / "kaggle"
    monkeypatch.setattr(checkpoint, "KAGGLE_OUTPUT", kaggle / "working")
    monkeypatch.setattr(checkpoint, "KAGGLE_TEMP", kaggle / "temp")
    assert checkpoint.path(kaggle / "working") == Path(tempfile.gettempdir()) / "pkk-checkpoints/last.pth"
    assert checkpoint.path(tmp_path / "out" / "members" / "a") == tmp_path / ".out-checkpoints/a/last.pth"
    (kaggle / "temp").mkdir(parents=True)
    out = kaggle / "working"
    cfg = Config.make("cpu-scratch", data=str(small), out=str(out), arch="test_resnet", stages="32x24:2:8:1",
                      tta=0, time_limit=600)
    run(cfg, cbs=[Probe(limit_reached, "after_batch")], log=quiet)  # stopped by the time budget: unfinished
    assert checkpoint.path(out) == kaggle / "temp/pkk-checkpoints/last.pth"
    assert torch.load(checkpoint.path(out), weights_only=False)["epoch"] == 1
    assert not [p for p in out.rglob("*") if p.suffix in (".pth", ".tmp")]
    logged = []
    run(cfg, log=logged.append)
    assert any(l.startswith(f"resuming from {checkpoint.path(out)}: epoch 2 of 2") for l in logged), logged
    assert json.loads((out / "model.json").read_text())["complete"] is True
    assert list((kaggle / "temp").iterdir()) == [] and not [p for p in out.rglob("*") if p.suffix == ".pth"]
    logged.clear()
    run(cfg, log=logged.append)  # finished, with no checkpoint: it only predicts again
    assert not [l for l in logged if "epoch" in l] and len(pd.read_csv(out / "history.csv")) == 2, logged


def limit_reached(learn, _):
    """In the second epoch, the time limit arrives (as it would hours into a run)."""
    if learn.epoch == 1 and learn.iter == 0:
        budget = next(c for c in learn.cbs if type(c).__name__ == "TimeLimit").run.budget
        budget.deadline = time.time()


@pytest.mark.parametrize("field, value", [("mixup", 0.3), ("cutmix", 0.7), ("label_smoothing", 0.05)])
def test_mixup_cutmix_and_label_smoothing_reach_fastais_training(small, tmp_path, field, value):
    """Values other than fastai's defaults (0.4, 1.0, 0.1), so that a field wired to a default fails."""
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:1:8:1", tta=0, **{field: value})
    seen = []  # (the mixing callbacks with their alpha, the loss in use) at every training batch

    def look(learn, _):
        if learn.training:
            mixers = [c for c in learn.cbs if isinstance(c, MixHandler)]
            seen.append(([(type(c).__name__, float(c.distrib.concentration1)) for c in mixers],
                         learn.loss_func, mixers))
    run(cfg, cbs=[Probe(look, "before_batch")], log=quiet)
    assert seen and all(s[0] == seen[0][0] for s in seen)
    mixers, loss, cbs = seen[0]
    if field == "label_smoothing":
        assert mixers == [] and isinstance(loss, LabelSmoothingCrossEntropyFlat) and loss.func.eps == value
    else:
        assert mixers == [({"mixup": "MixUp", "cutmix": "CutMix"}[field], pytest.approx(value))]
        assert loss == cbs[0].lf  # the mixed targets' loss is the one training uses


def test_a_time_limit_too_short_for_the_schedule_still_submits_before_it(small, tmp_path):
    limit = 20.0
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:40:8:1,48x36:40:8:1", tta=1, time_limit=limit)
    logged, lrs = [], []
    t0 = time.time()
    path = run(cfg, cbs=[Probe(lambda learn, _: lrs.append(learn.opt.hypers[-1]["lr"]), "before_batch")],
               log=logged.append)
    took = path.stat().st_mtime - t0  # when the submission was written (the plots that follow are not timed)
    assert took < limit, f"the submission came {took:.1f} s after the start, past the {limit:.0f} s limit"
    sub = pd.read_csv(path)
    assert (list(sub.image_id) == list(pd.read_csv(small / "sample_submission.csv").image_id)
            and sub.label.notna().all())
    stopped = any("training stops here" in l for l in logged)
    # On a machine busy with other work the time may run out before the first epoch ends: no epoch to keep.
    if not stopped or (tmp_path / "out" / "history.csv").exists():
        history = pd.read_csv(tmp_path / "out" / "history.csv")
        assert 1 <= len(history) < 80
        # history.csv says what was cut: the stages' epochs as planned when each epoch ran
        assert history.stage_epochs.iloc[-1] < 40 or (history.stage == 0).all()
    if not stopped:
        assert lrs[-1] < 0.05 * max(lrs), (lrs[-1], max(lrs))  # the shortened cycle annealed to its end
    cut = [l for l in logged if l.startswith("time budget:") and (" cut stage" in l or "stops here" in l)]
    assert cut, logged[-5:]  # the projection shortened the schedule, or the time ran out between batches


def test_a_second_run_on_a_locked_out_is_refused_while_the_first_goes_on(small, tmp_path):
    out = tmp_path / "out"
    args = ["--preset", "cpu-scratch", "--data", str(small), "--out", str(out), "--stages", "32x24:200:8:1",
            "--tta", "0"]
    first = subprocess.Popen([sys.executable, "-m", "kernel.train", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, **kernel_subprocess())
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "history.csv").exists() and first.poll() is None:
            time.sleep(0.05)
        second = train_cli(*args)
        assert first.poll() is None, "the first run ended before the second was refused"
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: {out} is in use by another run (pid {first.pid}); wait for it to finish, "
            "or give this run another --out")
    finally:
        first.kill()  # SIGKILL: no chance to clean up
        first.wait()
    assert not (out / "submission.csv").exists()  # the second run wrote nothing either
    with locked(out): pass  # a killed run leaves no stale lock behind


def test_valid_pct_0_trains_on_every_image_and_submits(small, tmp_path):
    sizes, logged = [], []
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), stages="32x24:2:8:1",
                      valid_pct=0,
                      tta=0)
    path = run(cfg, cbs=[Probe(lambda learn, e: sizes.append((len(learn.dls.train.items),
                                                              len(learn.dls.valid.items))),
                               "before_fit")], log=logged.append)
    assert sizes == [(len(pd.read_csv(small / "train.csv")), 0)]
    assert sum("no validation loss" in l for l in logged) == 1
    history = pd.read_csv(tmp_path / "out" / "history.csv")
    assert len(history) == 2 and "valid_loss" not in history.columns and history.train_loss.notna().all()
    assert len(pd.read_csv(path)) == 12


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


def broken(tmp_path: Path, small: Path, how: str) -> Path:
    d = copy_data(small, tmp_path)
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
    ("train.csv", [], "no train.csv in"),
    ("train_images", [], "no train image folder (train_images/ or train/) in"),
    ("test_images", [], "no test image folder (test_images/ or test/) in"),
    ("orphan row", [], "1 of 62 train.csv rows have no image"),  # 60 asked, 3 a class at least
    ("arch", ["--arch", "no_such_net"], "unknown timm architecture 'no_such_net'"),
    ("field", ["--no_such_field", "3"], "unrecognized arguments: --no_such_field 3"),
    ("stages", ["--stages", "64:2"], "bad stage '64:2'"),
    ("no stages", ["--stages", ","], "no stages"),
    ("valid_pct", ["--valid_pct", "1.5"], "--valid_pct 1.5 is out of range; give a value in [0, 1)"),
    ("tta", ["--tta", "-1"], "--tta -1 is out of range; give a value in [0, inf)"),
    ("lr", ["--lr", "fast"], "--lr wants a float, got 'fast'"),
    ("arch tag", ["--arch", "resnet10t.no_such_tag"], "resnet10t.no_such_tag"),
    ("weights", ["--weights", "/nonexistent/w.safetensors"],
     "weights file /nonexistent/w.safetensors not found"),
    ("member", ["--members", "a data=/x"], "member a: 'data' cannot differ between members"),
    ("accelerator", ["--accelerator", "NvidiaTeslaP100"], "accelerator NvidiaTeslaP100 is retired by Kaggle"),
    ("ids", [], "test images do not match"),
    ("member weight", ["--members", "a weight=0; b"], "member a: weight=0 must be a positive number"),
    ("member weight", ["--members", "a; b weight=-1"], "member b: weight=-1 must be a positive number"),
])
def test_bad_input_gives_one_line(small, tmp_path, capsys, how, args, message):
    """`python -m kernel.train` is kernel.train.main under kernel.errors.cli: run here, in this process, as
    the module runs it (a subprocess per case would import torch and fastai again, ~8 s each, twice in CI);
    the real command's path is test_bad_input_through_the_real_command_is_one_line."""
    d = broken(tmp_path, small, how)
    with pytest.raises(SystemExit) as e:
        cli(train.main, ["--preset", "cpu-scratch", "--data", str(d), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2
    lines = err.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], err[-1500:]


def test_bad_input_through_the_real_command_is_one_line(tmp_path):
    """`python -m kernel.train` in a process of its own: one `error:` line, exit status 2, no traceback."""
    nowhere = tmp_path / "nowhere"
    r = train_cli("--preset", "cpu-scratch", "--data", str(nowhere), "--out", str(tmp_path / "out"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: data folder not found at {nowhere}; "), r.stderr[-1500:]


def test_undecodable_images_are_named_and_left_out(small, tmp_path):
    d = copy_data(small, tmp_path)
    df = pd.read_csv(d / "train.csv")
    bad = d / "train_images" / df.label[3] / df.image_id[3]
    bad.write_bytes(b"\xff\xd8 truncated")
    logged = []
    items = train_items(Config.make("cpu-scratch", data=str(d)), logged.append)
    assert len(items) == len(df) - 1 and str(bad) not in set(items.path)
    warned = [l for l in logged if l.startswith("warning:")]
    assert len(warned) == 1 and str(bad) in warned[0] and "left out of training" in warned[0]


def test_cuda_out_of_memory_halves_the_micro_batch_and_redoes_the_epoch_from_its_start(small, tmp_path):
    """CUDA's out-of-memory error, raised from inside a training step of the second epoch (after some steps
    of it), as the real one is: the epoch starts again from its checkpoint with half the micro-batch (twice
    the accumulation, the same batch per step), and so do the epochs after it; one line says so."""
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:3:8:2", tta=0)
    seen = []  # per epoch: (the weights at its start, its micro-batches' sizes, its optimiser steps)
    raised = []

    def look(learn, event):
        if event == "before_epoch":
            seen.append(({k: v.clone() for k, v in learn.model.state_dict().items()}, [], 0))
        elif event == "after_step": seen[-1] = (*seen[-1][:2], seen[-1][2] + 1)
        elif learn.training:
            seen[-1][1].append(len(learn.y))
            if len(seen) == 2 and learn.iter == 3 and not raised:
                raised.append(learn.iter)
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    logged = []
    path = run(cfg, cbs=[Probe(look, "before_epoch", "after_pred", "after_step")], log=logged.append)
    assert len(pd.read_csv(path)) == 12 and len(pd.read_csv(tmp_path / "out" / "history.csv")) == 3
    assert "out of GPU memory in stage 1/1 32x24 epoch 2: micro-batch 4 -> 2 (batch 8 = 4 x 2), from here " \
           "on; the epoch starts again" in logged
    (_, b1, s1), (w, failed, _), (again, b2, s2), (_, b3, s3) = seen
    assert set(b1) == {4} and s1 == len(b1) // 2 and failed == [4] * 4
    assert set(b2) == set(b3) == {2} and (s2, s3) == (len(b2) // 4, len(b3) // 4)  # 4 x 2 images a step
    for k in w:  # the redone epoch starts where the failed one did, not after its step (and forward passes)
        assert torch.equal(w[k], again[k]), f"{k} is not as it was at the epoch's start"
    assert json.loads((tmp_path / "out" / "model.json").read_text())["complete"] is True


def test_out_of_memory_at_a_micro_batch_of_one_is_one_line(small, tmp_path):
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:2:8:1", tta=0)

    def oom(learn, _):
        if learn.training: raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    logged = []
    with pytest.raises(UserError, match=r"^out of GPU memory in stage 1/1 32x24 epoch 1 even one image at a "
                                        r"time; use a smaller size, batch or model$"):
        run(cfg, cbs=[Probe(oom, "before_batch")], log=logged.append)  # before BatchNorm meets 1 image
    assert [l.split(": ")[1] for l in logged if l.startswith("out of GPU memory")] == \
        ["micro-batch 8 -> 4 (batch 8 = 2 x 4), from here on; the epoch starts again",
         "micro-batch 4 -> 2 (batch 8 = 4 x 2), from here on; the epoch starts again",
         "micro-batch 2 -> 1 (batch 8 = 8 x 1), from here on; the epoch starts again"]


def test_a_schedule_longer_than_its_time_limit_ends_in_the_last_quarter_of_it(sample, tmp_path):
    """The time budget spends the time it is given: the epochs it plans with are timed end to end (loaders,
    history plot and checkpoint too), from the latest rather than the first, cold one, and a cut is undone
    when the epochs turn out quicker than feared. Before, the first epoch's time cut the schedule for good."""
    limit = 60.0  # a cold first epoch (start-up) is then a small part of it
    cfg = Config.make("cpu-scratch", data=str(sample), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:100:16:1,48x36:100:16:1", tta=1, time_limit=limit)
    logged = []
    t0 = time.time()
    path = run(cfg, log=logged.append)
    took = path.stat().st_mtime - t0  # when the submission was written (the plots that follow are not timed)
    print("\n".join(logged), f"\ntook {took:.1f} s")
    assert 0.75 * limit <= took <= limit, f"the submission came {took:.1f} s after the start of {limit:.0f} s"
    sub = pd.read_csv(path)
    assert len(sub) == 100 and sub.label.notna().all()
