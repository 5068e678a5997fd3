"""Train one model through the stage schedule, checkpoint every epoch, resume, export, predict.

    python -m kernel.train --data DIR --out DIR [--preset cpu] [--field value ...] [--restart]

The notebook calls `kernel.ensemble.run(config)`, which calls `run` here for a single model or for each
member of an ensemble (in its own process): one code path for Kaggle and for tmux. Run the same command
again after a crash and it resumes from the last finished epoch; a finished run only predicts again.

The learner is built once (and restored once, on resume); a loop then runs the phases that remain:
each stage (its first epochs frozen, for a pretrained body), then the optional weighted epochs. The
learning rate follows one one-cycle over the whole schedule, so a new stage carries on where the last
one left off instead of restarting at full rate; a time budget may shorten what remains, and the cycle
still anneals to its end.
"""
import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback, CancelFitException, CancelValidException
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.mixup import CutMix, MixUp
from fastai.callback.progress import ProgressCallback
from fastai.callback.schedule import combined_cos
from fastai.callback.training import GradientAccumulation
from fastai.learner import Learner
from fastai.losses import CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.metrics import error_rate
from fastai.torch_core import set_seed
from fastai.vision.learner import default_split
from torch import nn
from torch.amp import GradScaler, autocast

from . import data, model, predict, report
from .atomic import atomic_write
from .config import RESUME_FIELDS, Config, Stage, accelerator, parse_args
from .errors import UserError, cli
from .lock import locked
from .submission import write_csv, write_submission
from .weighted import class_weights

CHECKPOINT = "checkpoints/last.pth"


@dataclass
class Phase:
    """Epochs trained alike: one stage's size and batches, frozen or not, weighted or not.

    `start` and `step` place its epochs on the one-cycle: epoch t (fractional within an epoch) of this
    phase is at position start + t * step, from 0 to 1 over all unfrozen phases. Frozen phases (the head
    alone, first epochs of a pretrained run) have a one-cycle of their own, as in fastai's fine_tune.
    """
    stage: int  # index into cfg.stages; len(cfg.stages) for the weighted epochs
    size: tuple[int, int]
    bs: int
    accum: int
    first: int  # the stage's epoch this phase starts at (a stage's frozen epochs come first)
    epochs: int
    frozen: bool = False
    weighted: bool = False
    start: float = 0.0
    step: float = 1.0

    @property
    def micro_bs(self) -> int: return self.bs // self.accum


def spread(phases: list[Phase], k: int = 0, done: int = 0, here: float = 0.0) -> None:
    """Lay the unfrozen epochs from phase k's epoch `done` on evenly over the cycle from `here` to its end."""
    left = sum(p.epochs - (done if i == k else 0) for i, p in enumerate(phases) if i >= k and not p.frozen)
    step = (1 - here) / left if left else 0.0
    for i, p in enumerate(phases):
        if p.frozen:
            p.start, p.step = 0.0, 1.0 / p.epochs
        elif i >= k:
            first = done if i == k else 0
            p.start, p.step = here - first * step, step
            here += (p.epochs - first) * step


def remaining(phases: list[Phase], pos: tuple[int, int]) -> list[int]:
    """The phases with epochs still to run from position (phase, next epoch)."""
    return [k for k, p in enumerate(phases)
            if p.epochs and (k > pos[0] or (k == pos[0] and pos[1] < p.epochs))]


def plan(cfg: Config, stages: tuple[Stage, ...], pretrained: bool) -> list[Phase]:
    """The phases of a fresh run: each stage (first `freeze_epochs` frozen if pretrained), then weighted."""
    phases = []
    for i, s in enumerate(stages):
        frozen = cfg.freeze_epochs if i == 0 and pretrained else 0
        if frozen: phases.append(Phase(i, s.size, s.bs, s.accum, 0, frozen, frozen=True))
        if s.epochs > frozen: phases.append(Phase(i, s.size, s.bs, s.accum, frozen, s.epochs - frozen))
    if cfg.weighted_epochs:
        last = stages[-1]
        phases.append(Phase(len(stages), last.size, last.bs, last.accum, 0, cfg.weighted_epochs,
                            weighted=True))
    spread(phases)
    return phases


def resolve(cfg: Config, n_out: int, log=print) -> tuple[Stage, ...]:
    """The stages with `auto` accumulation replaced by the smallest that fits this GPU (or, off the GPU,
    the accelerator the config names), by the memory estimate."""
    if all(s.accum for s in cfg.stages): return cfg.stages
    from . import memory
    capacity = torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() \
        else accelerator(cfg.accelerator).memory
    stages = []
    for s in cfg.stages:
        if not s.accum:
            accum = memory.fit_accum(cfg.arch, n_out, s.size, s.bs, capacity)
            if accum is None:
                raise UserError(f"stage {s}: {cfg.arch} at {s.size[0]}x{s.size[1]} does not fit "
                                f"{capacity / 2**30:.1f} GiB even one image at a time; use a smaller size")
            log(f"stage {s}: accumulation {accum} (micro-batch {s.bs // accum}) "
                f"fits {capacity / 2**30:.1f} GiB")
            s = replace(s, accum=accum)
        stages.append(s)
    return tuple(stages)


class RunMixedPrecision(MixedPrecision):
    """fastai's fp16 MixedPrecision with one GradScaler for the whole run.

    fastai makes a new GradScaler every `fit`, so each stage would restart at scale 65536 and skip its
    first steps finding the scale again; this one keeps it, and the checkpoint saves it.
    """
    def __init__(self, device: str):
        super().__init__()
        self.device, self.scaler = device, GradScaler(device)

    def before_fit(self):
        self.autocast = autocast(self.device, dtype=torch.float16)
        self.learn.scaler, self.scales = self.scaler, []


class Accumulate(GradientAccumulation):
    """fastai's GradientAccumulation (its n_acc counts samples), never carrying gradients past an epoch.

    When an epoch's micro-batches are not a multiple of accum, fastai leaves the last ones' gradients in
    place, and they are added to the next epoch's (or stage's) first step. Here they are zeroed.
    """
    def after_train(self):
        if self.count:
            self.opt.zero_grad()
            self.count = 0


class NoValidation(Callback):
    """valid_pct 0: every image trains, and the (empty) validation pass is skipped."""
    def before_validate(self): raise CancelValidException


class OneCycle(Callback):
    """Learning rate and momentum for every batch from the run's one cycle (see `Phase`)."""
    order = 60  # where fastai's ParamScheduler runs

    def __init__(self, phase: Phase, lrs: np.ndarray):
        self.phase = phase
        self.lr = combined_cos(0.25, lrs / 25, lrs, lrs / 1e5)
        self.mom = combined_cos(0.25, 0.95, 0.85, 0.95)

    def before_batch(self):
        if not self.training: return
        pos = min(1.0, self.phase.start + self.phase.step * (self.epoch + self.iter / self.n_iter))
        self.opt.set_hyper("lr", self.lr(pos))
        self.opt.set_hyper("mom", self.mom(pos))


def recalibrate(learn: Learner, batches: int = 100) -> None:
    """Re-estimate the BatchNorm running statistics on training batches of a new stage's size.

    A network trained at one size sees another through the statistics of the first. On the sample, resnet10t
    at the end of a 64x48 stage had valid loss 0.90 at 64x48 and 1.62 at 96x72, before any training at the
    new size; with its statistics re-estimated at 96x72 (no weight changed), 0.96. Without this, the first
    epoch of each new stage starts by undoing the last. Models without BatchNorm (ConvNeXt's LayerNorm) are
    left as they are.
    """
    norms = [m for m in learn.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
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


class Run:
    """What the callbacks share: the plan, where the run is, its deadline and how long epochs took."""

    def __init__(self, cfg: Config, out: Path, phases: list[Phase], deadline: float, n_train: int,
                 n_test: int, log):
        self.cfg, self.out, self.phases, self.deadline, self.log = cfg, out, phases, deadline, log
        self.n_train, self.n_test = n_train, n_test
        self.seconds: dict[int, float] = {}  # phase -> seconds of its last epoch (training and validation)
        self.valid_rate: tuple[float, int] | None = None  # (seconds per validation image, at how many pixels)
        self.stopped = False  # the time budget ended training early

    def stage_epochs(self, stage: int) -> int:
        return sum(p.epochs for p in self.phases if p.stage == stage)

    def pixels(self, k: int) -> int:
        return self.phases[k].size[0] * self.phases[k].size[1]

    def epoch_seconds(self, k: int) -> float:
        """Measured for phase k, else the last measurement scaled by pixels (compute grows with them)."""
        if k in self.seconds: return self.seconds[k]
        j = max(self.seconds)
        return self.seconds[j] * self.pixels(k) / self.pixels(j)

    def reserve(self) -> float:
        """Seconds to keep for prediction (TTA passes over the test set at the last size) and a margin:
        2% of the limit (at most 5 minutes), and a few seconds for loading the model and the loaders."""
        margin = min(300.0, 0.02 * self.cfg.time_limit) + 5.0
        if self.valid_rate: rate, pixels = self.valid_rate
        elif self.seconds:  # no validation: inference takes about a third of a training step
            j = max(self.seconds)
            rate, pixels = self.seconds[j] / self.n_train / 3, self.pixels(j)
        else: return margin
        passes = self.cfg.tta + 1 if self.cfg.tta else 1
        return 1.5 * rate * self.pixels(len(self.phases) - 1) / pixels * passes * self.n_test + margin


class Budget(Callback):
    """The time limit: before each epoch, project the rest of the schedule and prediction, and shorten the
    schedule if it would not fit; between batches, stop training outright when only prediction still fits."""
    order = 5  # before the others see the epoch

    def __init__(self, run: Run, k: int, start: int): self.run, self.k, self.start = run, k, start

    def need(self) -> float:
        """Seconds the rest of the schedule takes, from this epoch on."""
        r = self.run
        return sum(r.epoch_seconds(i) * (p.epochs - (self.epoch if i == self.k else 0))
                   for i, p in enumerate(r.phases) if i >= self.k)

    def before_epoch(self):
        r, k = self.run, self.k
        if self.epoch >= r.phases[k].epochs: raise CancelFitException  # this phase was cut short earlier
        if not r.seconds or math.isinf(r.deadline) or self.epoch < self.start: return
        left = r.deadline - time.time() - r.reserve()
        if self.need() <= left: return
        before = [p.epochs for p in r.phases]
        while self.need() > left:  # one epoch at a time, from the phase with the most still to run
            todo = [(p.epochs - (self.epoch if i == k else 0), -i) for i, p in enumerate(r.phases)
                    if i >= k and not p.frozen and p.epochs > (self.epoch if i == k else 0)]
            if not todo: break
            r.phases[-max(todo)[1]].epochs -= 1
        p = r.phases[k]
        spread(r.phases, k, self.epoch, 0.0 if p.frozen else p.start + self.epoch * p.step)
        cuts = [f"{'weighted epochs' if p.weighted else f'stage {p.stage + 1}'} from {b} to {p.epochs}"
                for p, b in zip(r.phases, before) if p.epochs != b]
        r.log(f"time budget: {left:.0f} s left for training, not enough for the rest of the schedule; "
              f"cut {', '.join(cuts)} epochs (the one-cycle still anneals to its end)")
        if self.epoch >= r.phases[k].epochs: raise CancelFitException

    def after_batch(self):
        r = self.run
        if time.time() + r.reserve() > r.deadline:  # a validation pass too: prediction comes first
            r.log("time budget: only prediction still fits before the time limit; training stops here")
            r.stopped = True
            raise CancelFitException


class EpochEnd(Callback):
    """After every epoch: time it, append to history.csv, print a line, save the checkpoint (atomically).

    History is written first: if we die between the two, the epoch is redone and its row replaced.
    """
    order = 65  # after the Recorder (50) has the epoch's losses and metrics

    def __init__(self, run: Run, k: int, lines: bool, save):
        self.run, self.k, self.lines, self.save = run, k, lines, save

    def before_epoch(self): self.t0, self.skipped = time.time(), False
    def after_cancel_epoch(self): self.skipped = True  # SkipToEpoch: finished before the resume
    def before_validate(self): self.v0 = time.time()

    def after_validate(self):
        n = len(self.dls.valid.dataset)
        if n: self.run.valid_rate = ((time.time() - self.v0) / n, self.run.pixels(self.k))

    def after_epoch(self):
        if self.skipped: return
        r, p = self.run, self.run.phases[self.k]
        r.seconds[self.k] = time.time() - self.t0
        names, values = self.recorder.metric_names[1:-1], self.recorder.log[1:-1]  # drop 'epoch' and 'time'
        metrics = {n: float(v) for n, v in zip(names, values) if v is not None}
        row = dict(stage=p.stage, epoch=p.first + self.epoch, stage_epochs=r.stage_epochs(p.stage),
                   size=f"{p.size[0]}x{p.size[1]}", frozen=p.frozen, weighted=p.weighted, **metrics,
                   lr=self.opt.hypers[-1]["lr"],  # the head's rate at the epoch's last batch
                   seconds=round(r.seconds[self.k], 1))
        history = pd.concat([read_history(r.out), pd.DataFrame([row])], ignore_index=True)
        write_csv(history, r.out / "history.csv")
        report.plot_history(r.out, r.log)
        if self.lines:
            what = "weighted epochs" if p.weighted else f"stage {p.stage + 1}/{len(r.cfg.stages)}"
            shown = " ".join(f"{n} {v:.4f}" for n, v in metrics.items())
            r.log(f"{what} {p.size[0]}x{p.size[1]} epoch {row['epoch'] + 1}/{row['stage_epochs']}"
                  f"{' (body frozen)' if p.frozen else ''}: {shown} ({row['seconds']:.0f} s)")
        self.save(self.k, self.epoch + 1)


def read_history(out: Path) -> pd.DataFrame:
    p = out / "history.csv"
    return pd.read_csv(p) if p.exists() else pd.DataFrame()


def load_checkpoint(out: Path, cfg: Config, log=print) -> dict | None:
    """The last checkpoint if this config may resume from it; refuses a changed config."""
    path = out / CHECKPOINT
    if cfg.restart:
        for p in (path, out / "history.csv", out / model.META, out / model.WEIGHTS): p.unlink(missing_ok=True)
        return None
    if not path.exists(): return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}); "
                        "add --restart to start over") from None
    if state.get("fingerprint") != cfg.fingerprint():
        changed = [k for k, v in cfg.to_dict().items()
                   if k in RESUME_FIELDS and str(state.get("config", {}).get(k)) != str(v)]
        raise UserError(f"{path} was made with a different config "
                        f"(changed: {', '.join(changed) or 'version'}); "
                        "rerun with the same options to resume, or add --restart to start over")
    state["phases"] = phases = [Phase(**p) for p in state["phases"]]
    (k, e), todo = state["position"], remaining(phases, state["position"])
    if todo:
        p = phases[k] if e < phases[k].epochs else phases[todo[0]]
        log(f"resuming from {path}: stage {p.stage + 1}, epoch {p.first + (e if p is phases[k] else 0) + 1}")
    return state


def make_learner(cfg: Config, dls, net, has_valid: bool, lines: bool) -> Learner:
    """fastai's Learner over our network, with the config's loss, and fp16 mixed precision on CUDA."""
    loss = LabelSmoothingCrossEntropyFlat(eps=cfg.label_smoothing) if cfg.label_smoothing \
        else CrossEntropyLossFlat()
    learn = Learner(dls, net, loss_func=loss, metrics=error_rate if has_valid else None,
                    splitter=default_split, wd=cfg.wd)
    if not has_valid: learn.recorder.valid_metrics = False
    if lines:  # one line per epoch from EpochEnd instead of fastprogress's bars (redraws in a log)
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *_: None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.precision == "fp16" or (cfg.precision == "auto" and device == "cuda"):
        learn.add_cb(RunMixedPrecision(device))
    return learn


def in_notebook() -> bool:
    """Inside a Jupyter kernel (Kaggle's notebook, the dry run's nbclient), where fastai draws a table."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


def keep_history(out: Path, phases: list[Phase], pos: tuple[int, int]) -> None:
    """Drop history rows of epochs that will run (again): all of them on a fresh start."""
    h = read_history(out)
    if not len(h): return
    done = {(p.stage, p.first + i) for k, p in enumerate(phases) for i in range(p.epochs) if (k, i) < pos}
    write_csv(h[[(s, e) in done for s, e in zip(h.stage, h.epoch)]], out / "history.csv")


def fit(cfg: Config, out: Path, items: pd.DataFrame, vocab: list[str], state: dict | None, deadline: float,
        n_test: int, cbs=(), log=print) -> Learner:
    """Train (or resume) what remains of the schedule and export the model; returns the learner."""
    set_seed(cfg.seed)  # before the model's random init: the same config, the same run
    weights = None if state else model.weights_file(cfg.weights, cfg.arch)  # a resume has its own weights
    net = model.create(cfg.arch, len(vocab), weights, log)
    stats = model.stats(net)
    pretrained = state["pretrained"] if state else weights is not None
    if not pretrained and (cfg.freeze_epochs or cfg.body_lr != 1):
        log("from scratch: the whole network trains at the full learning rate from the first epoch "
            "(freeze_epochs and body_lr are for pretrained bodies)")
    phases = state["phases"] if state else plan(cfg, resolve(cfg, len(vocab), log), pretrained)
    pos = tuple(state["position"]) if state else (0, 0)
    has_valid = cfg.valid_pct > 0
    if not has_valid: log("valid_pct 0: training on every image; no validation loss or error rate")
    lines = cfg.progress == "lines" or (cfg.progress == "auto" and not in_notebook())
    run = Run(cfg, out, phases, deadline, len(items), n_test, log)
    keep_history(out, phases, pos)

    def loaders(p: Phase):
        wgts = class_weights(items[cfg.label_col], cfg.weight_power) if p.weighted else None
        val_bs = predict.inference_bs(cfg.val_bs, cfg.arch, len(vocab), p.size, p.bs)
        return data.dataloaders(cfg, p.size, p.micro_bs, val_bs, items, vocab, stats, wgts)

    todo = remaining(phases, pos)
    built = todo[0] if todo else len(phases) - 1  # the phase whose loaders the learner has
    learn = make_learner(cfg, loaders(phases[built]), net, has_valid, lines)
    mp = next((c for c in learn.cbs if isinstance(c, RunMixedPrecision)), None)
    learn.create_opt()
    frozen = None  # whether the optimiser's state comes from a frozen phase; None: it has none yet
    if state is not None:
        net.load_state_dict(state["model"])
        learn.opt.load_state_dict(state["opt"])
        if mp and state.get("scaler"): mp.scaler.load_state_dict(state["scaler"])
        frozen = phases[min(pos[0], len(phases) - 1)].frozen

    def save(k: int, epoch: int) -> None:
        """Position = the next epoch to run: (phase, epoch); epoch == the phase's epochs: it is done."""
        path = out / CHECKPOINT
        path.parent.mkdir(parents=True, exist_ok=True)
        ckpt = dict(model=learn.model.state_dict(), opt=learn.opt.state_dict(), position=(k, epoch),
                    phases=[asdict(p) for p in phases], pretrained=pretrained, fingerprint=cfg.fingerprint(),
                    config=cfg.to_dict(), vocab=vocab, scaler=mp.scaler.state_dict() if mp else None)
        with atomic_write(path) as tmp: torch.save(ckpt, tmp)

    lrs = np.array([cfg.lr * (cfg.body_lr if pretrained else 1.0), cfg.lr])
    for k in todo:
        p = phases[k]
        if run.stopped or not p.epochs: continue  # stopped by the time budget, or cut to nothing by it
        if k != built: learn.dls, built = loaders(p), k
        start = pos[1] if k == pos[0] else 0
        last = next((q for q in reversed(phases[:k]) if q.epochs), None)  # the phase trained before this one
        if start == 0 and last is not None and last.size != p.size: recalibrate(learn)
        if frozen is None or p.frozen == frozen: learn.opt.freeze_to(-1 if p.frozen else 0)
        else:  # fastai clears the optimiser state, as fine_tune
            learn.freeze() if p.frozen else learn.unfreeze()
        frozen = p.frozen
        what = "weighted epochs (rare classes drawn more often)" if p.weighted else \
            f"stage {p.stage + 1}/{len(cfg.stages)}"
        log(f"{what}: {p.size[0]}x{p.size[1]}, {p.epochs} epoch{'s' * (p.epochs > 1)}"
            f"{' with the body frozen' if p.frozen else ''}, "
            f"batch {p.bs} = {p.accum} x {p.micro_bs}")
        extra = [Accumulate(n_acc=p.bs)] if p.accum > 1 else []
        extra += [MixUp(cfg.mixup)] if cfg.mixup else [CutMix(cfg.cutmix)] if cfg.cutmix else []
        extra += [] if has_valid else [NoValidation()]
        learn.fit(p.epochs, wd=cfg.wd, start_epoch=start,
                  cbs=[OneCycle(p, lrs), Budget(run, k, start), EpochEnd(run, k, lines, save), *extra, *cbs])
    export(learn, cfg, out, items, vocab, stats, phases)
    return learn


def export(learn: Learner, cfg: Config, out: Path, items: pd.DataFrame, vocab: list[str], stats,
           phases: list[Phase]) -> Path:
    """The model and what prediction needs, into OUT (model.safetensors, model.json).

    `prior` is the training split's class frequencies (the guess for an image that does not decode).
    After weighted epochs the model has seen rare classes more often than they occur, and believes them
    more probable than they are: `scale` (prior / frequency drawn) corrects its probabilities back.
    """
    train = learn.dls.train.items
    labels = train[cfg.label_col].to_numpy()
    prior = np.array([(labels == v).sum() for v in vocab], dtype=float) / len(labels)
    scale = None
    if any(p.weighted and p.epochs for p in phases):
        w = class_weights(items[cfg.label_col], cfg.weight_power)[train.index.to_numpy()]
        drawn = np.array([w[labels == v].sum() for v in vocab]) / w.sum()
        scale = (prior / np.maximum(drawn, 1e-12)).tolist()
    last = next((p for p in reversed(phases) if p.epochs), phases[-1])
    meta = dict(arch=cfg.arch, vocab=vocab, size=list(last.size), mean=stats[0], std=stats[1],
                prior=prior.tolist(), scale=scale, fingerprint=cfg.fingerprint(), config=cfg.to_dict())
    return model.export(learn.model, out, meta)


def run(cfg: Config, cbs=(), log=print) -> Path:
    """Train (or resume) one model, export it, predict the test images; returns the submission's path."""
    if cfg.members:
        raise UserError("this config has members (an ensemble): run it with kernel.ensemble.run, "
                        "or `python -m kernel.train`, which does")
    t0, out = time.time(), Path(cfg.out)
    with locked(out):
        deadline = t0 + cfg.time_limit if cfg.time_limit else math.inf
        model.check_arch(cfg.arch)  # before reading every image
        items = data.train_items(cfg, log)
        test, undecodable, sample = data.checked_test(cfg, log)
        vocab = sorted(items[cfg.label_col].unique())
        state = load_checkpoint(out, cfg, log)
        if state is not None and state["vocab"] != vocab:
            raise UserError(f"the checkpoint in {out} was trained on other classes ({len(state['vocab'])}: "
                            f"{state['vocab'][:3]}...) than {cfg.data} has; "
                            "use another --out, or add --restart")
        done = state is not None and not remaining(state["phases"], state["position"])
        n_test = len(test) + len(undecodable)
        learn = None if done and predict.exported(out, cfg.fingerprint()) else \
            fit(cfg, out, items, vocab, state, deadline, n_test, cbs, log)
        probs = predict.predict(out, test, undecodable, cfg.tta, cfg.val_bs, cfg.num_workers,
                                cfg.weighted_correction, cbs, log)
        write_csv(probs, out / "probs.csv")
        path = write_submission(probs, sample, cfg.id_col, cfg.label_col, out / "submission.csv")
        log(f"wrote {path} ({len(probs)} rows) {time.time() - t0:.0f} s after the start")
        if learn is not None and cfg.valid_pct > 0:
            try:
                report.plot_confusion(learn, out / "confusion.png")
            except Exception as e:  # a picture is not worth the run
                log(f"warning: could not plot the confusion matrix ({type(e).__name__}: {e})")
    return path


def main(argv: list[str]) -> None:
    from .ensemble import run as run_all  # the whole job: one model, or every member of an ensemble
    run_all(parse_args(argv, __doc__.splitlines()[0]))


if __name__ == "__main__":
    cli(main)
