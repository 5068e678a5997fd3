"""The fastai callbacks of the one fit that runs the plan (kernel.plan).

    TimeLimit   the time limit: shortens the plan before an epoch, stops between batches
    Schedule    at each epoch: its loaders (size, micro-batch, weighted), BatchNorm statistics at a new size,
                freezing, accumulation; at each batch: learning rate and momentum off the one-cycle
    EpochEnd    after each epoch: history.csv, a line, the checkpoint; the epoch timed for the budget
    RunMixedPrecision, Accumulate, NoValidation   fastai's own, for a fit that spans the whole run

They share a `Run`: the plan, where the fit began in it, the budget, and what the run is.
"""
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback, CancelFitException, CancelValidException
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.schedule import combined_cos
from fastai.callback.training import GradientAccumulation
from fastai.learner import Learner
from torch import nn
from torch.amp import GradScaler, autocast

from . import model, report
from .config import Config
from .plan import Budget, Epoch, stage_epochs
from .submission import write_csv


@dataclass
class Run:
    """What the callbacks share."""
    cfg: Config
    out: Path
    epochs: list[Epoch]  # the plan; the budget may shorten it
    start: int  # the plan's index of the fit's first epoch (0, or where a resume picks up)
    budget: Budget
    loaders: Callable  # Epoch -> DataLoaders
    save: Callable  # index of the next epoch -> None: writes the checkpoint
    lrs: np.ndarray  # peak learning rate of each parameter group (body, head)
    lines: bool  # one line per epoch (else fastai's table)
    log: Callable = print
    now: int = field(default=0, init=False)  # the plan's index of the epoch running

    def index(self, epoch: int) -> int: return self.start + epoch  # fastai counts from this fit's start


class RunMixedPrecision(MixedPrecision):
    """fastai's fp16 MixedPrecision with one GradScaler for the whole run.

    fastai makes a new GradScaler every `fit`; one fit runs the plan here, and the scaler is also saved in
    the checkpoint and restored, so a resume does not start again at scale 65536 and skip steps finding it.
    """
    def __init__(self, device: str):
        super().__init__()
        self.device, self.scaler = device, GradScaler(device)

    def before_fit(self):
        self.autocast = autocast(self.device, dtype=torch.float16)
        self.learn.scaler, self.scales = self.scaler, []


class Accumulate(GradientAccumulation):
    """fastai's GradientAccumulation (its n_acc counts samples) with the epoch's accumulation, never carrying
    gradients past an epoch; off for an epoch whose accumulation is 1.

    When an epoch's micro-batches are not a multiple of accum, fastai leaves the last ones' gradients in
    place, and they are added to the next epoch's (or stage's) first step. Here they are zeroed.
    """
    def __init__(self):
        super().__init__()
        self.accum = 1

    def after_loss(self):
        if self.accum > 1: super().after_loss()

    def before_step(self):
        if self.accum > 1: super().before_step()

    def after_train(self):
        if self.count:
            self.opt.zero_grad()
            self.count = 0


class NoValidation(Callback):
    """valid_pct 0: every image trains, and the (empty) validation pass is skipped."""
    def before_validate(self): raise CancelValidException


def recalibrate(learn: Learner, batches: int = 100) -> None:
    """Re-estimate the BatchNorm running statistics on training batches of a new stage's size.

    A network trained at one size sees another through the statistics of the first. On the sample, resnet10t
    at the end of a 64x48 stage had valid loss 0.90 at 64x48 and 1.62 at 96x72, before any training at the
    new size; with its statistics re-estimated at 96x72 (no weight changed), 0.96. Without this, the first
    epoch of each new stage starts by undoing the last. Only the body's BatchNorm layers: fastai's head has
    BatchNorm1d over pooled features, whatever the body, so a body without any (ConvNeXt's LayerNorm) is
    left as it is, with no pass over the data.
    """
    norms = [m for m in model.body(learn.model).modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms: return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches, not a running one
    mp = next((c for c in learn.cbs if isinstance(c, RunMixedPrecision)), None)
    learn.model.to(learn.dls.device).train()
    with torch.no_grad(), autocast(mp.device, dtype=torch.float16) if mp else contextlib.nullcontext():
        for i, (x, _) in enumerate(learn.dls.train):
            if i >= batches: break
            learn.model(x)
    for m, momentum in zip(norms, momenta): m.momentum = momentum


class TimeLimit(Callback):
    """The time limit: before each epoch the plan may be shortened; between batches, training stops when
    only prediction still fits (the epoch is not saved: a rerun resumes from the one before)."""
    order = -30  # before the Schedule sets the epoch up

    def __init__(self, run: Run): self.run = run

    def before_fit(self): self.run.budget.started()
    def before_epoch(self): self.run.budget.cut(self.run.epochs, self.run.index(self.epoch))

    def after_batch(self):
        r = self.run
        if r.budget.out_of_time(r.epochs):  # a validation pass too: prediction comes first
            r.log("time budget: only prediction still fits before the time limit; training stops here")
            raise CancelFitException


class Schedule(Callback):
    """The plan, applied to the learner: at each epoch its loaders, freezing and accumulation; at each batch
    the learning rate and momentum off the one-cycle (fastai's ParamScheduler, over the plan's positions).

    New loaders are built where the plan's loaders change (a new size, micro-batch, or the weighted epochs),
    whether the fit started there or ran into it, so a resumed run draws what an unbroken one would. At a
    new size the BatchNorm statistics are re-estimated first. Freezing follows fastai's fine_tune: the switch
    from frozen to unfrozen clears the optimiser's state; a fit that starts mid-plan keeps the restored one.
    """
    order = -20  # before fastai's TrainEvalCallback (-10) and everything else sees the epoch

    def __init__(self, run: Run, accumulate: Accumulate):
        self.run, self.accumulate = run, accumulate
        self.lr = combined_cos(0.25, run.lrs / 25, run.lrs, run.lrs / 1e5)
        self.mom = combined_cos(0.25, 0.95, 0.85, 0.95)

    def before_fit(self):
        r = self.run
        self.frozen = r.epochs[r.start - 1].frozen if r.start else None  # of the epoch trained last

    def before_epoch(self):
        r = self.run
        i = r.now = r.index(self.epoch)
        if i >= len(r.epochs): raise CancelFitException  # the budget cut the plan short
        e, last = r.epochs[i], r.epochs[i - 1] if i else None
        if last is not None and e.loaders != last.loaders:
            self.learn.dls = r.loaders(e)
            if e.size != last.size: recalibrate(self.learn)
        if self.frozen is None or e.frozen == self.frozen: self.opt.freeze_to(-1 if e.frozen else 0)
        else: self.learn.freeze() if e.frozen else self.learn.unfreeze()  # clears the optimiser's state
        self.frozen = e.frozen
        self.accumulate.accum, self.accumulate.n_acc = e.accum, e.bs
        if last is None or i == r.start or e.kind != last.kind:
            n = len(r.cfg.stages)
            what = "weighted epochs (rare classes drawn more often)" if e.weighted else \
                f"stage {e.stage + 1}/{n}"
            left = sum(x.stage == e.stage and x.frozen == e.frozen for x in r.epochs[i:])
            r.log(f"{what}: {e.size[0]}x{e.size[1]}, {left} epoch{'s' * (left > 1)}"
                  f"{' with the body frozen' if e.frozen else ''}, batch {e.bs} = {e.accum} x {e.micro_bs}")

    def before_batch(self):
        if not self.training: return
        e = self.run.epochs[self.run.now]
        pos = min(1.0, e.start + e.step * self.iter / self.n_iter)
        self.opt.set_hyper("lr", self.lr(pos))
        self.opt.set_hyper("mom", self.mom(pos))


class EpochEnd(Callback):
    """After every epoch: time it, write its history row, print a line, save the checkpoint (atomically).

    History is written first: if we die between the two, the epoch is redone and its row replaced.
    """
    order = 65  # after the Recorder (50) has the epoch's losses and metrics

    def __init__(self, run: Run): self.run = run

    def before_epoch(self): self.t0 = time.time()
    def before_validate(self): self.v0 = time.time()

    def after_validate(self):
        n = len(self.dls.valid.dataset)
        e = self.run.epochs[self.run.now]
        if n: self.run.budget.valid_rate = ((time.time() - self.v0) / n, e.size[0] * e.size[1])

    def after_epoch(self):
        r = self.run
        e, seconds = r.epochs[r.now], time.time() - self.t0
        names, values = self.recorder.metric_names[1:-1], self.recorder.log[1:-1]  # drop 'epoch' and 'time'
        metrics = {n: float(v) for n, v in zip(names, values) if v is not None}
        row = dict(stage=e.stage, epoch=e.epoch, stage_epochs=stage_epochs(r.epochs, e.stage),
                   size=f"{e.size[0]}x{e.size[1]}", frozen=e.frozen, weighted=e.weighted, **metrics,
                   lr=self.opt.hypers[-1]["lr"],  # the head's rate at the epoch's last batch
                   seconds=round(seconds, 1))
        self.record(row)
        if r.lines:
            what = "weighted epochs" if e.weighted else f"stage {e.stage + 1}/{len(r.cfg.stages)}"
            shown = " ".join(f"{n} {v:.4f}" for n, v in metrics.items())
            r.log(f"{what} {e.size[0]}x{e.size[1]} epoch {e.epoch + 1}/{row['stage_epochs']}"
                  f"{' (body frozen)' if e.frozen else ''}: {shown} ({row['seconds']:.0f} s)")
        r.save(r.now + 1)
        r.budget.timed(e)  # end to end: its loaders before it, its plot and checkpoint after it

    def record(self, row: dict) -> None:
        """The one place an epoch's history row is written: OUT/history.csv (whole, atomically)."""
        history = pd.concat([read_history(self.run.out), pd.DataFrame([row])], ignore_index=True)
        write_csv(history, self.run.out / "history.csv")
        report.plot_history(self.run.out, self.run.log)  # redrawn every epoch: a killed run leaves its picture


def read_history(out: Path) -> pd.DataFrame:
    p = out / "history.csv"
    return pd.read_csv(p) if p.exists() else pd.DataFrame()


def keep_history(out: Path, epochs: list[Epoch], start: int) -> None:
    """Drop history rows of epochs that will run (again): all of them on a fresh start."""
    h = read_history(out)
    if not len(h): return
    done = {(e.stage, e.epoch) for e in epochs[:start]}
    write_csv(h[[(s, x) in done for s, x in zip(h.stage, h.epoch)]], out / "history.csv")
