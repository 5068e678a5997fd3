"""The run's plan, one entry per epoch, and the time budget that may shorten it.

fastai's `fit_one_cycle` is one fit whose ParamScheduler reads the learning rate off one cycle at
`pct_train`. The schedule here is the same shape with more in it: the plan says, for every epoch, the image
size, the batch and its accumulation, the validation and prediction batches, whether the body is frozen or
the classes weighted, and where on the one-cycle the epoch starts and how far it goes. One `learn.fit` runs the plan (see callbacks.Schedule);
a checkpoint is an epoch index into it plus the states, so a resume needs no other bookkeeping.

Frozen epochs (the head alone, a pretrained run's first epochs) have a cycle of their own, as in fastai's
fine_tune; every other epoch lies on one cycle over the whole run, so a new stage carries on where the last
one left off instead of restarting at full rate. The time budget takes epochs off what has not run yet,
and the cycle is laid again over what is left, so that it still anneals to its end.
"""
import math
import statistics
import time
from dataclasses import dataclass

from .config import Config, Member, Stage, accelerator
from .errors import UserError, first_line


@dataclass
class Epoch:
    """One epoch of the plan: what it trains on and where it sits on the one-cycle."""
    stage: int  # index into cfg.stages; len(cfg.stages) for the weighted epochs
    epoch: int  # the epoch's number within its stage (frozen ones first)
    size: tuple[int, int]
    bs: int
    accum: int
    val_bs: int  # the validation batch (training's state beside the model)
    predict_bs: int  # the prediction batch, should the run end in this epoch (the model alone)
    frozen: bool = False
    weighted: bool = False
    start: float = 0.0  # position on its cycle (0 to 1) when the epoch begins
    step: float = 0.0  # how far along the cycle the epoch goes

    def __post_init__(self): self.size = tuple(self.size)  # a checkpoint stores it as a list

    @property
    def micro_bs(self) -> int: return self.bs // self.accum

    @property
    def loaders(self) -> tuple:
        """What the epoch's loaders depend on: epochs that agree share them."""
        return self.size, self.micro_bs, self.val_bs, self.weighted

    @property
    def kind(self) -> tuple:
        """Epochs of one kind take as long as one another (the budget times them by kind)."""
        return self.stage, self.frozen, self.weighted


@dataclass(frozen=True)
class Batches:
    """What the memory estimate decides for a stage (`resolve`)."""
    accum: int  # the stage's accumulation, `auto` resolved
    val_bs: int
    predict_bs: int


def plan(cfg: Config, batches: list[Batches], pretrained: bool) -> list[Epoch]:
    """The epochs of a fresh run: each stage's (the first `freeze_epochs` frozen if pretrained), then the
    weighted ones at the last stage's size, laid on the cycle. `batches`: each stage's, from `resolve`."""
    epochs = []
    for i, (s, b) in enumerate(zip(cfg.stages, batches)):
        frozen = cfg.freeze_epochs if i == 0 and pretrained else 0
        epochs += [Epoch(i, e, s.size, s.bs, b.accum, b.val_bs, b.predict_bs, frozen=e < frozen)
                   for e in range(s.epochs)]
    last, b = cfg.stages[-1], batches[-1]
    epochs += [Epoch(len(cfg.stages), e, last.size, last.bs, b.accum, b.val_bs, b.predict_bs, weighted=True)
               for e in range(cfg.weighted_epochs)]
    spread(epochs)
    return epochs


def spread(epochs: list[Epoch], i: int = 0, here: float = 0.0) -> None:
    """Lay the unfrozen epochs from index `i` on evenly over the cycle from `here` to its end; the frozen
    ones over a cycle of their own."""
    frozen = [e for e in epochs if e.frozen]
    for k, e in enumerate(frozen): e.start, e.step = k / len(frozen), 1 / len(frozen)
    todo = [e for e in epochs[i:] if not e.frozen]
    for k, e in enumerate(todo):
        e.step = (1 - here) / len(todo)
        e.start = here + k * e.step


def stage_epochs(epochs: list[Epoch], stage: int) -> int:
    """How many epochs the plan gives `stage` now (the budget may have cut some)."""
    return sum(e.stage == stage for e in epochs)


def capacity(cfg: Config) -> int:
    """Bytes of GPU memory a stage must fit: `gpu_memory` if set, else this GPU's, else (off the GPU) the
    memory of the accelerator the config names."""
    import torch
    if cfg.gpu_memory: return cfg.gpu_memory * 2**20
    if torch.cuda.is_available(): return torch.cuda.get_device_properties(0).total_memory
    return accelerator(cfg.accelerator).memory


def resolve(cfg: Config, n_out: int, log=print) -> list[Batches]:
    """Each stage's batches, decided once per run before training (the plan keeps them, and a resume reads
    them from the checkpoint): an `auto` accumulation the smallest whose micro-batch fits `capacity` (the code
    the preflight runs at build time, here on the GPU the run got), validation and prediction batches on a
    GPU the largest that fit (`predict.inference_bs`).

    The estimate simulates torch's internals on fake tensors, and fails where a torch changed them or a model
    does what it cannot trace. Rather than lose the run, it goes on after one warning line with what needs no
    estimate: a stage's given accumulation (as the preflight takes it), 1 where it is `auto` (a step out of
    GPU memory then halves the micro-batch, see train.smaller_steps), and the batches used off the GPU."""
    from . import predict
    room = capacity(cfg)
    try:
        from . import memory
        batches = [Batches(s.accum or memory.fit_accum(cfg.arch, n_out, s.size, s.bs, room),
                           predict.inference_bs(cfg.val_bs, cfg.arch, n_out, s.size, s.bs),
                           predict.inference_bs(cfg.val_bs, cfg.arch, n_out, s.size, 64, resident=False))
                   for s in cfg.stages]
    except Exception as e:
        then = f"batches of {cfg.val_bs}" if cfg.val_bs else "the training batch to validate, 64 to predict"
        log(f"warning: memory estimate failed ({type(e).__name__}: {first_line(e, 200)}); using "
            f"accumulation 1 for auto stages (a step out of GPU memory halves the micro-batch) and {then}")
        return [Batches(s.accum or 1, cfg.val_bs or s.bs, cfg.val_bs or 64) for s in cfg.stages]
    for s, b in zip(cfg.stages, batches):
        if s.accum: continue
        if b.accum is None:
            raise UserError(f"stage {s}: {cfg.arch} at {s.size[0]}x{s.size[1]} does not fit "
                            f"{room / 2**30:.1f} GiB even two images at a time; use a smaller size")
        log(f"stage {s}: accumulation {b.accum} (micro-batch {s.bs // b.accum}) fits {room / 2**30:.1f} GiB")
    return batches


def shaped(cfg: Config, *, own_stages: bool = False, name: str = "", log=None) -> Config:
    """`cfg` with the stages its model can train at. A fixed-size model (Swin's windows: timm's pretrained
    `input_size`, `model.native_size`) trains at its own size, in one stage of the run's whole epochs
    (batch and accumulation from the last stage), unless the stages are its own (`own_stages`: a member
    that set them), which must then all be at that size; anything else is refused in one line."""
    from .model import native_size
    native = native_size(cfg.arch)
    if native is None or all(s.size == native for s in cfg.stages): return cfg
    h, w = native
    if own_stages:
        who = f"member {name}" if name else "the run"
        raise UserError(f"{who}: {cfg.arch} takes only {h}x{w} images, not the stages "
                        f"{','.join(map(str, cfg.stages))}; give it stages at {h}x{w}, e.g. "
                        f"stages={h}x{w}:{sum(s.epochs for s in cfg.stages)}:{cfg.stages[-1].bs}:auto, "
                        "or leave its stages out to train at that size")
    last = cfg.stages[-1]
    stage = Stage(native, sum(s.epochs for s in cfg.stages), last.bs, last.accum)
    if log: log(f"{name or cfg.arch}: {cfg.arch} takes only {h}x{w} images: one stage {stage} "
                f"instead of {','.join(map(str, cfg.stages))}")
    return Config.make(None, **{**cfg.to_dict(), "stages": (stage,)})


def member(cfg: Config, m: Member, out: str, log=None) -> Config:
    """Member `m` as it trains (`Config.member`), its stages `shaped`: its own checked, else fitted."""
    return shaped(cfg.member(m, out), own_stages="stages" in dict(m.overrides), name=m.name, log=log)


def models(cfg: Config) -> list[Config]:
    """Each model the config trains (`Config.models`), with its stages as it trains them (`shaped`)."""
    return [member(cfg, m, cfg.out) for m in cfg.members] or [shaped(cfg)]


class Budget:
    """The time limit: how long the rest of the plan and the prediction take, from the epochs timed so far,
    and the cut that makes them fit (undone as far as later, quicker epochs allow)."""

    def __init__(self, cfg: Config, deadline: float, n_train: int, n_test: int, log=print):
        self.cfg, self.deadline, self.n_train, self.n_test, self.log = cfg, deadline, n_train, n_test, log
        self.seconds: dict[tuple, list[float]] = {}  # epoch kind -> its latest epochs' seconds, end to end
        self.last: Epoch | None = None  # the epoch timed last
        self.mark = time.time()  # when the epoch being timed began: the last one's end, or the fit's start
        self.valid_rate: tuple[float, int] | None = None  # (seconds per validation image, at how many pixels)
        self.dropped: list[Epoch] = []  # the epochs the cut took off the plan, in the plan's order

    def started(self) -> None:
        """A fit starts: its first epoch is timed from here (the model moved to its device included)."""
        self.mark = time.time()

    def timed(self, e: Epoch) -> None:
        """Epoch `e` ended, its checkpoint written: timed end to end, from the end of the one before (loaders
        built, history plotted, checkpoint saved: all that each epoch costs)."""
        now = time.time()
        self.seconds.setdefault(e.kind, []).append(now - self.mark)
        del self.seconds[e.kind][:-3]
        self.mark, self.last = now, e

    def epoch_seconds(self, e: Epoch) -> float:
        """The median of its kind's latest three epochs (a first, cold one counts until later ones outvote
        it), else the last kind's scaled by pixels (compute grows with them)."""
        if e.kind in self.seconds: return statistics.median(self.seconds[e.kind])
        return self.epoch_seconds(self.last) * pixels(e) / pixels(self.last)

    def reserve(self, epochs: list[Epoch]) -> float:
        """Seconds to keep for prediction (TTA passes over the test set at the last size, at the rate the
        validation pass predicted at) and a margin: 2% of the limit (at most 5 minutes), and a few seconds
        for loading the model and the loaders."""
        margin = min(300.0, 0.02 * self.cfg.time_limit) + 5.0
        if self.valid_rate: rate, px = self.valid_rate
        elif self.last:  # no validation: inference takes about a third of a training step
            rate, px = self.epoch_seconds(self.last) / self.n_train / 3, pixels(self.last)
        else: return margin
        passes = self.cfg.tta + 1 if self.cfg.tta else 1
        return 1.5 * rate * pixels(epochs[-1]) / px * passes * self.n_test + margin

    def cut(self, epochs: list[Epoch], i: int) -> None:
        """Before epoch `i`: fit the rest of the schedule (the plan's, and what earlier cuts took off that is
        still to come) before the limit by the latest timings, taking epochs off one at a time from the stage
        with the most still to run (not the frozen ones); lay the cycle again over what is left when that
        changes the plan. The plan is changed in place; the log says how."""
        if not self.seconds or math.isinf(self.deadline): return
        last = epochs[i - 1] if i else None
        order = lambda e: (e.stage, e.epoch)  # the plan's order (frozen epochs come first in their stage)
        rest = sorted(epochs[i:] + [e for e in self.dropped if last is None or order(e) > order(last)],
                      key=order)
        if not rest: return
        left = self.deadline - time.time() - self.reserve(rest)
        need = lambda plan: sum(self.epoch_seconds(e) for e in plan)

        def fitted(seconds: float) -> list[Epoch]:
            keep = list(rest)
            while need(keep) > seconds:
                todo: dict[int, int] = {}
                for e in keep:
                    if not e.frozen: todo[e.stage] = todo.get(e.stage, 0) + 1
                if not todo: break
                most = max(todo.values())
                stage = next(s for s, n in todo.items() if n == most)  # the earliest of those with the most
                keep.remove(next(e for e in reversed(keep) if e.stage == stage))
            return keep
        # Cut when the plan does not fit; give epochs back only into 90% of the time left, so that the next
        # epoch's timing (never quite the same) does not take them off again at once.
        fits, had = need(epochs[i:]) <= left, len(epochs) - i
        keep = fitted(0.9 * left) if fits else fitted(left)
        if fits and len(keep) <= had: return  # the plan fits, and no epoch more would
        self.dropped = [e for e in rest if not any(e is k for k in keep)]
        before = {e.stage: stage_epochs(epochs, e.stage) for e in epochs + rest}
        epochs[i:] = keep
        spread(epochs, i, last.start + last.step if last is not None and not last.frozen else 0.0)
        n = len(self.cfg.stages)
        changes = [f"{'weighted epochs' if s == n else f'stage {s + 1}'} from {b} to {now}"
                   for s, b in before.items() if (now := stage_epochs(epochs, s)) != b]
        if len(keep) > had:
            self.log(f"time budget: {left:.0f} s left for training, more than the epochs timed before "
                     f"feared; {', '.join(changes)} epochs again (the one-cycle still anneals to its end)")
            return
        # Cut to nothing from here: the epoch trained last stays where it was on the cycle (it cannot anneal
        # after the fact), as when the time runs out between batches.
        then = ("; only prediction still fits before the time limit: training stops here" if i >= len(epochs)
                else " (the one-cycle still anneals to its end)")
        self.log(f"time budget: {left:.0f} s left for training, not enough for the rest of the schedule; "
                 f"cut {', '.join(changes)} epochs{then}")

    def out_of_time(self, epochs: list[Epoch]) -> bool:
        """Between batches: only prediction still fits before the limit."""
        return time.time() + self.reserve(epochs) > self.deadline


def pixels(e: Epoch) -> int: return e.size[0] * e.size[1]
