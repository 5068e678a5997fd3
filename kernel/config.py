"""Every knob of a run, in one dataclass, with defaults for Kaggle's GPU machine (two T4s, 15 GiB each).

Override from the command line (`--field value`: the options are generated from the fields), from the
notebook's parameters cell (`Config.make(field=value)`), or by preset (`--preset cpu` for the local dry
run). The stage schedule is written `HxW:epochs:bs:accum` per stage, comma separated, e.g.
`160x120:6:64:1,448x336:3:64:auto` (`auto`: the smallest accumulation whose micro-batch fits the GPU).
Members of an ensemble are written `name field=value ...; name ...`, e.g. `a seed=1; b seed=2 arch=resnet50`.

No torch or fastai here: the laptop side (`build.py status`) imports this and must start fast.
"""
import argparse
import hashlib
import json
import math
import re
import shlex
import typing
from dataclasses import dataclass, field, fields

from .errors import UserError

GIB = 2**30


@dataclass(frozen=True)
class Accelerator:
    """A Kaggle machine shape, as kernel-metadata.json's `machine_shape` names it."""
    name: str
    gpus: int
    memory: int  # bytes per GPU, as the card reports it
    retired: str = ""  # why it cannot be asked for any more


MIB = 2**20
# Every shape the kaggle client lists (kaggle-cli docs/kernels.md, Feb 2026), with its GPUs and the memory
# a card reports (nvidia-smi's total, what torch can see of it): a T4 reports 15,095 MiB (14.74 GiB), not
# the "16 GB" on the box. Some shapes are only for certain competitions or admins: Kaggle answers 403 to a
# push that asks for one, said in one line. The kaggle client (2.2.5) marks P100 and the v2/v3 TPUs
# retired: Kaggle silently runs those sessions on something else. Counts and memory of the shapes beyond T4
# are as Kaggle's pages and the cards' specifications give them (A100: the 40 GB card, the smaller of its
# two, so a plan that fits it fits either).
ACCELERATORS = {a.name: a for a in (
    Accelerator("NvidiaTeslaT4", 2, 15095 * MIB),
    Accelerator("NvidiaTeslaT4Highmem", 2, 15095 * MIB),  # the same two T4s, more host memory
    Accelerator("NvidiaL4", 4, 23034 * MIB),
    Accelerator("NvidiaL4X1", 1, 23034 * MIB),
    Accelerator("NvidiaTeslaA100", 1, 40960 * MIB),
    Accelerator("NvidiaH100", 1, 81559 * MIB),
    Accelerator("NvidiaRtxPro6000", 1, 97887 * MIB),
    Accelerator("NvidiaTeslaP100", 1, 16 * GIB, "retired by Kaggle: sessions run on NvidiaTeslaT4 instead"),
    *(Accelerator(t, 0, 0, "a TPU: the kit trains on CUDA GPUs") for t in (
        "TpuV38", "Tpu1VmV38", "TpuV232", "TpuV2256", "TpuV5E8", "TpuV6E8")),
)}


def accelerator(name: str) -> Accelerator:
    """The accelerator named `name`, refused in one line if Kaggle no longer offers it or it is no GPU."""
    usable = ", ".join(a.name for a in ACCELERATORS.values() if not a.retired)
    acc = ACCELERATORS.get(name)
    if acc is None: raise UserError(f"unknown accelerator {name!r}; use one of: {usable}")
    if acc.retired: raise UserError(f"accelerator {name} is {acc.retired}; use one of: {usable}")
    return acc


@dataclass(frozen=True)
class Stage:
    """One step of progressive resizing: image size (height, width), epochs, batch size, accumulation.

    The effective batch is `bs`; each forward pass sees `bs // accum` images (the micro-batch), and the
    optimiser steps once per `accum` micro-batches. `accum` 0 stands for `auto`, resolved before training.
    """
    size: tuple[int, int]
    epochs: int
    bs: int = 64
    accum: int = 1

    @property
    def micro_bs(self) -> int:
        if not self.accum: raise ValueError(f"stage {self}: accumulation 'auto' is not resolved yet")
        return self.bs // self.accum

    def __str__(self) -> str:
        return f"{self.size[0]}x{self.size[1]}:{self.epochs}:{self.bs}:{self.accum or 'auto'}"

    @classmethod
    def parse(cls, text: str) -> "Stage":
        try:
            size, epochs, bs, accum = text.strip().split(":")
            h, w = (int(v) for v in size.lower().split("x"))
            stage = cls((h, w), int(epochs), int(bs), 0 if accum == "auto" else int(accum))
        except ValueError:
            raise UserError(f"bad stage {text!r}; write it HxW:epochs:bs:accum, "
                            "e.g. 448x336:3:64:4") from None
        if (min(h, w, stage.epochs, stage.bs) < 1 or stage.accum < 0
                or (stage.accum and stage.bs % stage.accum)):
            raise UserError(f"bad stage {text!r}; sizes, epochs and bs must be positive, "
                            "and accum divide bs (or be auto)")
        return stage


def parse_stages(text: str) -> tuple[Stage, ...]:
    """`160x120:6:64:1,320x240:4:64:2` -> stages."""
    return tuple(Stage.parse(s) for s in text.split(",") if s.strip())


@dataclass(frozen=True)
class Member:
    """One model of an ensemble: a name, the Config fields it changes, and its weight in the average."""
    name: str
    overrides: tuple[tuple[str, typing.Any], ...] = ()
    weight: float = 1.0

    def __str__(self) -> str:
        parts = [self.name, *(f"{k}={v}" for k, v in self.overrides)]
        return " ".join(parts + ([f"weight={self.weight:g}"] if self.weight != 1 else []))


def parse_members(value) -> tuple[Member, ...]:
    """`"a seed=1; b seed=2 arch=resnet50 weight=2"`, or a list of dicts with a "name" -> members."""
    if isinstance(value, str):
        specs = []
        for part in value.split(";"):
            if not part.strip(): continue
            name, *pairs = shlex.split(part)
            if any("=" not in p for p in pairs):
                raise UserError(f"bad member {part.strip()!r}; "
                                "write it `name field=value ...`, e.g. `a seed=1`")
            specs.append({"name": name, **dict(p.split("=", 1) for p in pairs)})
    else:
        specs = [dict(s) for s in value]
    members = []
    for spec in specs:
        name = str(spec.pop("name", ""))
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
            raise UserError(f"member name {name!r} must be letters, digits, '.', '_' or '-' "
                            "(it names a folder)")
        given = spec.pop("weight", 1.0)
        try: weight = float(given)
        except ValueError: weight = math.nan
        if not (weight > 0 and math.isfinite(weight)):  # all 0 would average to NaN: the first class, always
            raise UserError(f"member {name}: weight={given} must be a positive number; "
                            "leave the member out to give it no say")
        bad = [k for k in spec if k not in MEMBER_FIELDS]
        if bad: raise UserError(f"member {name}: {bad[0]!r} cannot differ between members; "
                                f"a member may set {', '.join(sorted(MEMBER_FIELDS))}")
        members.append(Member(name, tuple((k, _convert(k, v)) for k, v in spec.items()), weight))
    names = [m.name for m in members]
    if len(set(names)) != len(names): raise UserError(f"member names must differ, got {names}")
    return tuple(members)


# Paddy images are 480 wide x 640 high. 1/4 and 1/2 of that decode straight from the JPEG's DCT (see
# data.py). The last stage's accumulation is `auto`: the memory preflight picks the smallest that fits.
KAGGLE_STAGES = (Stage((160, 120), 6, 64, 1), Stage((320, 240), 4, 64, 2), Stage((448, 336), 3, 64, 0))
# Dry run on a laptop CPU, from scratch (no pretrained weights to be had): tiny images, two short stages.
# Small batches: from scratch, a few hundred images need many steps more than big batches. No accumulation: a
# CPU has the memory, and resnet10t's BatchNorm learns worse from micro-batches of 8 (sample, 3 seeds:
# 0.73-0.80 accuracy without, 0.68-0.74 with).
SCRATCH_STAGES = (Stage((64, 48), 6, 16, 1), Stage((96, 72), 3, 16, 1))
# The dry run's default has the Kaggle default's shape at a laptop's scale: pretrained EfficientNet-Lite0
# (real ImageNet weights a package ships), the first epoch frozen, the last stage's accumulation `auto`.
CPU_STAGES = (Stage((64, 48), 3, 16, 1), Stage((96, 72), 2, 16, 0))


@dataclass
class Config:
    """One run of the kernel. Fields marked `resume=False` may change between a run and its resume."""
    data: str = field(default="/kaggle/input/paddy-disease-classification", metadata={"resume": False})
    out: str = field(default="/kaggle/working", metadata={"resume": False})
    arch: str = "convnext_small.fb_in22k"  # any timm name; top of Paddy Doctor's leaderboard is convnext
    # Pretrained weights: a file, or a folder holding `<arch>.safetensors` (what build.py ships);
    # None: scratch
    weights: str | None = field(default=None, metadata={"resume": False})
    stages: tuple[Stage, ...] = KAGGLE_STAGES
    lr: float = 5e-3  # peak learning rate of the one-cycle that runs over the whole schedule
    # With pretrained weights (fastai's fine_tune recipe): the first epochs train the head alone on a
    # one-cycle of their own, then the body trains at this fraction of lr. From scratch neither applies.
    freeze_epochs: int = 1
    body_lr: float = 0.01
    wd: float = 0.05
    valid_pct: float = 0.2  # 0: train on every image, no validation
    seed: int = 42  # seeds the validation split and the training
    weighted_epochs: int = 0  # extra epochs at the last size with rare classes drawn more often
    weight_power: float = 0.5  # class weight 1/count**power for those epochs
    # after weighted epochs, rescale test probabilities to the true class frequencies (see train.export)
    weighted_correction: bool = field(default=True, metadata={"resume": False})
    # Augmentation, on the GPU: fastai's aug_transforms (its defaults) and a shape-keeping random crop
    flip: bool = True  # mirror left-right
    flip_vert: bool = False  # with flip: all eight flips and quarter turns (fastai's flip_vert)
    max_rotate: float = 10.0
    min_zoom: float = 1.0
    max_zoom: float = 1.1
    max_warp: float = 0.2
    max_lighting: float = 0.2
    min_scale: float = 0.75  # the crop keeps at least this share of the image
    mixup: float = 0.0  # MixUp's alpha (fastai's default when on: 0.4); 0: off
    cutmix: float = 0.0  # CutMix's alpha (fastai's default when on: 1.0); 0: off
    label_smoothing: float = 0.0  # eps of fastai's LabelSmoothingCrossEntropyFlat (its default: 0.1); 0: off
    precision: str = "auto"  # auto: fp16 mixed precision on CUDA, fp32 on CPU; or fp16, fp32
    tta: int = field(default=4, metadata={"resume": False})  # augmented passes averaged by learn.tta; 0: none
    # validation/TTA batch; 0: the largest that fits
    val_bs: int = field(default=0, metadata={"resume": False})
    time_limit: float = field(default=0, metadata={"resume": False})  # seconds for the whole run; 0: none
    accelerator: str = field(default="NvidiaTeslaT4", metadata={"resume": False})  # for accum auto off-GPU
    gpu_memory: int = field(default=0, metadata={"resume": False})  # MiB a stage must fit; 0: the GPU's
    members: tuple[Member, ...] = ()  # an ensemble; none: one model, trained into `out` itself
    # where members run at once: auto (every visible GPU, else the CPU), or a list: 0,1 / cpu,cpu
    devices: str = field(default="auto", metadata={"resume": False})
    num_workers: int = field(default=4, metadata={"resume": False})
    # lines, table; auto: table in a notebook
    progress: str = field(default="auto", metadata={"resume": False})
    label_col: str = "label"
    id_col: str = "image_id"
    restart: bool = field(default=False, metadata={"resume": False})

    def __post_init__(self):
        """Refuse values that would only fail deep inside fastai, hours later."""
        if not self.stages: raise UserError("no stages; give at least one, e.g. --stages 160x120:6:64:1")
        if not 0 <= self.valid_pct < 1:
            raise UserError(f"--valid_pct {self.valid_pct} must be at least 0 and below 1, e.g. 0.2")
        for name in ("tta", "weighted_epochs", "num_workers", "freeze_epochs", "val_bs", "time_limit",
                     "mixup", "cutmix", "label_smoothing", "max_rotate", "max_warp", "max_lighting"):
            if getattr(self, name) < 0: raise UserError(f"--{name} {getattr(self, name)} must be 0 or more")
        if self.freeze_epochs > self.stages[0].epochs:
            raise UserError(f"--freeze_epochs {self.freeze_epochs} must be at most the first stage's "
                            f"{self.stages[0].epochs} epochs")
        if not 0 < self.min_scale <= 1: raise UserError(f"--min_scale {self.min_scale} must be in (0, 1]")
        if self.mixup and self.cutmix: raise UserError("--mixup and --cutmix are exclusive; set one to 0")
        accelerator(self.accelerator)
        choices = (("precision", ("auto", "fp16", "fp32")), ("progress", ("auto", "lines", "table")))
        for name, allowed in choices:
            if getattr(self, name) not in allowed:
                raise UserError(f"--{name} {getattr(self, name)!r} must be one of {', '.join(allowed)}")

    def fingerprint(self) -> str:
        """Hash of the fields that change what is trained: a checkpoint resumes only under the same one."""
        d = {name: str(getattr(self, name)) for name in RESUME_FIELDS}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        """Plain JSON values: stages and members as the text `--stages` and `--members` take."""
        text = {"stages": ",".join(map(str, self.stages)), "members": "; ".join(map(str, self.members))}
        return {f.name: text.get(f.name, getattr(self, f.name)) for f in fields(self)}

    def to_args(self) -> list[str]:
        """The command line that gives this config: `--field value` for every field."""
        flag = lambda k, v: [f"--{k}" if v else f"--no-{k}"] if isinstance(v, bool) else \
            [f"--{k}", "none" if v is None else str(v)]
        return [a for k, v in self.to_dict().items() for a in flag(k, v)]

    def member(self, m: Member, out: str) -> "Config":
        """This config as member `m` trains it: its overrides applied, one model, into `out`."""
        return Config.make(None, **{**self.to_dict(), **dict(m.overrides), "members": (), "out": out})

    @classmethod
    def make(cls, preset: str | None = None, **overrides) -> "Config":
        """A config from a preset (`kaggle` or `cpu`) with fields overridden; unknown names are refused."""
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; use one of {', '.join(p for p in PRESETS if p)}")
        bad = [k for k in overrides if k not in FIELDS]
        if bad: raise UserError(f"unknown config field {bad[0]!r}; known fields: {', '.join(FIELDS)}")
        return cls(**{k: _convert(k, v) for k, v in {**PRESETS[preset], **overrides}.items()})


FIELDS = [f.name for f in fields(Config)]
# What a checkpoint must match to resume: what is trained (fields not marked `resume=False`).
RESUME_FIELDS = [f.name for f in fields(Config) if f.metadata.get("resume", True)]
# What may differ between members: what is trained, not where the data or the output is.
MEMBER_FIELDS = set(RESUME_FIELDS) - {
    "members", "label_col", "id_col"} | {"weights"}

PRESETS: dict[str | None, dict] = {
    None: {},
    # Two members, one per T4, each on its own validation split; the session is 12 hours, less a margin
    # for installing, loading and averaging.
    "kaggle": dict(members="a seed=42; b seed=43", time_limit=11.5 * 3600),
    # The Kaggle default's shape on a laptop (see CPU_STAGES): two members side by side, one process each;
    # the dry run gives it the packaged EfficientNet-Lite0 weights.
    "cpu": dict(arch="tf_efficientnet_lite0", stages=CPU_STAGES, lr=5e-3, wd=0.01, tta=2, num_workers=0,
                time_limit=0, members="a seed=1; b seed=2", devices="cpu,cpu"),
    # From scratch, one model, when no pretrained weights can be had. resnet10t: on the sample it learns
    # from scratch in minutes where resnet18 barely starts (0.64 vs 0.39).
    "cpu-scratch": dict(arch="resnet10t", stages=SCRATCH_STAGES, lr=5e-3, wd=0.01, tta=2, num_workers=0,
                        time_limit=0),
}


def _convert(name: str, value):
    """Turn a command-line string (or a notebook value) into the field's type."""
    if name == "stages": return parse_stages(value) if isinstance(value, str) else tuple(value)
    if name == "members": return parse_members(value)
    hint = typing.get_type_hints(Config)[name]
    if not isinstance(value, str): return value
    try:
        if value.lower() in ("none", "") and type(None) in typing.get_args(hint): return None
        if hint is bool:
            if value.lower() in ("1", "true", "yes"): return True
            if value.lower() in ("0", "false", "no"): return False
            raise ValueError(value)
        if hint in (int, float): return hint(value)
        return value
    except ValueError:
        raise UserError(f"--{name} wants a {getattr(hint, '__name__', hint)}, got {value!r}") from None


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one `UserError` line, not a usage block and exit."""
    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{message}; see --help")


def options(p: argparse.ArgumentParser, skip: tuple[str, ...] = (),
            preset: bool = True) -> argparse.ArgumentParser:
    """Add `--preset` and one `--field` option per Config field not in `skip` to `p`.

    Every option defaults to None, meaning "not given": what was given is read back by `given()`.
    """
    if preset:
        p.add_argument("--preset", choices=[k for k in PRESETS if k], help="start from this preset's values")
    hints, defaults = typing.get_type_hints(Config), Config().to_dict()
    for name in FIELDS:
        if name in skip: continue
        if hints[name] is bool:
            p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                           help=f"default {defaults[name]}")
        else:
            kind = {int: "INT", float: "FLOAT"}.get(hints[name], "TEXT")
            p.add_argument(f"--{name}", default=None, metavar=kind,
                           help=f"default {defaults[name]!r}" if name != "members" else
                           "an ensemble: 'name field=value ...; name ...' (default: one model)")
    return p


def parser(description: str = "", skip: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A parser whose errors are one line, with `--preset` and the Config fields' options."""
    return options(_Parser(description=description, allow_abbrev=False), skip)


def given(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict:
    """{field: value} of the Config options that were given on the command line (those not in `skip`: options
    of the same name that mean something else there)."""
    return {k: v for k, v in vars(args).items() if k in FIELDS and k not in skip and v is not None}


def parse_args(argv: list[str], description: str = "") -> Config:
    """`--field value ...` (and `--preset NAME`) -> Config."""
    args = parser(description).parse_args(argv)
    return Config.make(args.preset, **given(args))
