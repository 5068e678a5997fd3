"""Every knob of a run, in one dataclass, with defaults for a Kaggle 16 GB GPU (P100/T4).

Override from the command line (`--field value`), from the notebook's parameters cell
(`Config.make(field=value)`), or by preset (`--preset cpu` for the local dry run). The stage schedule
is written `HxW:epochs:bs:accum` per stage, comma separated, e.g. `160x120:6:64:1,448x336:3:64:4`.
"""
import hashlib
import json
import typing
from dataclasses import dataclass, field, fields

from .errors import UserError


@dataclass(frozen=True)
class Stage:
    """One step of progressive resizing: image size (height, width), epochs, batch size, accumulation.

    The effective batch is `bs`; each forward pass sees `bs // accum` images (the micro-batch), and
    the optimiser steps once per `accum` micro-batches.
    """
    size: tuple[int, int]
    epochs: int
    bs: int = 64
    accum: int = 1

    @property
    def micro_bs(self) -> int: return self.bs // self.accum

    def __str__(self) -> str: return f"{self.size[0]}x{self.size[1]}:{self.epochs}:{self.bs}:{self.accum}"

    @classmethod
    def parse(cls, text: str) -> "Stage":
        try:
            size, epochs, bs, accum = text.strip().split(":")
            h, w = (int(v) for v in size.lower().split("x"))
            stage = cls((h, w), int(epochs), int(bs), int(accum))
        except ValueError:
            raise UserError(f"bad stage {text!r}; write it HxW:epochs:bs:accum, e.g. 448x336:3:64:4") from None
        if min(h, w, stage.epochs + 1, stage.bs, stage.accum) < 1 or stage.bs % stage.accum:
            raise UserError(f"bad stage {text!r}; sizes, bs and accum must be positive and bs divisible by accum")
        return stage


def parse_stages(text: str) -> tuple[Stage, ...]:
    """`160x120:6:64:1,320x240:4:64:2` -> stages."""
    return tuple(Stage.parse(s) for s in text.split(",") if s.strip())


# Paddy images are 480 wide x 640 high. 1/4 and 1/2 of that decode straight from the JPEG's DCT
# (see data.py); the last stage is as large as a convnext_small fits on 16 GB with 16 images a pass.
KAGGLE_STAGES = (Stage((160, 120), 6, 64, 1), Stage((320, 240), 4, 64, 2), Stage((448, 336), 3, 64, 4))
# Dry run on a laptop CPU: tiny images, two short stages, the second with accumulation. Small batches:
# from scratch, a few hundred images need many steps more than big batches.
CPU_STAGES = (Stage((64, 48), 6, 16, 1), Stage((96, 72), 3, 16, 2))


@dataclass
class Config:
    """One run of the kernel. Fields marked `resume=False` may change between a run and its resume."""
    data: str = field(default="/kaggle/input/paddy-disease-classification", metadata={"resume": False})
    out: str = field(default="/kaggle/working", metadata={"resume": False})
    arch: str = "convnext_small.fb_in22k"  # any timm name; top of Paddy Doctor's leaderboard is convnext
    weights: str | None = None  # local pretrained weights file for `arch` (no internet on Kaggle)
    stages: tuple[Stage, ...] = KAGGLE_STAGES
    lr: float = 2e-3
    wd: float = 0.05
    valid_pct: float = 0.2
    seed: int = 42
    weighted_epochs: int = 0  # extra epochs at the last size with rare classes drawn more often
    weight_power: float = 0.5  # class weight 1/count**power for those epochs
    tta: int = field(default=4, metadata={"resume": False})  # augmented passes averaged by learn.tta; 0: none
    num_workers: int = field(default=4, metadata={"resume": False})
    label_col: str = "label"
    id_col: str = "image_id"
    restart: bool = field(default=False, metadata={"resume": False})

    def __post_init__(self):
        """Refuse values that would only fail deep inside fastai, hours later."""
        if not self.stages: raise UserError("no stages; give at least one, e.g. --stages 160x120:6:64:1")
        if not 0 < self.valid_pct < 1: raise UserError(f"--valid_pct {self.valid_pct} must be between 0 and 1, e.g. 0.2")
        for name in ("tta", "weighted_epochs", "num_workers"):
            if getattr(self, name) < 0: raise UserError(f"--{name} {getattr(self, name)} must be 0 or more")

    def fingerprint(self) -> str:
        """Hash of the fields that change what is trained: a checkpoint resumes only under the same one."""
        d = {f.name: str(getattr(self, f.name)) for f in fields(self) if f.metadata.get("resume", True)}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {f.name: str(getattr(self, f.name)) if f.name == "stages" else getattr(self, f.name) for f in fields(self)}

    @classmethod
    def make(cls, preset: str | None = None, **overrides) -> "Config":
        """A config from a preset (`kaggle` or `cpu`) with fields overridden; unknown names are refused."""
        if preset not in PRESETS: raise UserError(f"unknown preset {preset!r}; use one of {', '.join(map(str, PRESETS))}")
        known = {f.name for f in fields(cls)}
        bad = [k for k in overrides if k not in known]
        if bad: raise UserError(f"unknown config field {bad[0]!r}; known fields: {', '.join(sorted(known))}")
        values = {**PRESETS[preset], **{k: _convert(k, v) for k, v in overrides.items()}}
        return cls(**values)


PRESETS: dict[str | None, dict] = {
    None: {}, "kaggle": {},
    # resnet10t: on the sample it learns from scratch in minutes where resnet18 barely starts (0.64 vs 0.39).
    "cpu": dict(arch="resnet10t", stages=CPU_STAGES, lr=5e-3, wd=0.01, tta=2, num_workers=0),
}


def _convert(name: str, value):
    """Turn a command-line string (or a notebook value) into the field's type."""
    hint = typing.get_type_hints(Config)[name]
    if name == "stages": return parse_stages(value) if isinstance(value, str) else tuple(value)
    if not isinstance(value, str): return value
    try:
        if hint is bool:
            if value.lower() in ("1", "true", "yes"): return True
            if value.lower() in ("0", "false", "no"): return False
            raise ValueError(value)
        if hint in (int, float): return hint(value)
        if value.lower() in ("none", "") and type(None) in typing.get_args(hint): return None
        return value
    except ValueError:
        raise UserError(f"--{name} wants a {getattr(hint, '__name__', hint)}, got {value!r}") from None


def parse_args(argv: list[str], extra: tuple[str, ...] = ()) -> tuple[Config, dict]:
    """`--field value` pairs (and `--preset NAME`) -> Config; names in `extra` are returned apart."""
    pairs, rest, i = {}, {}, 0
    flags = {"restart"}  # may stand alone: `--restart`
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"): raise UserError(f"unexpected argument {arg!r}; options are written --field value")
        name = arg[2:].replace("-", "_")
        if "=" in name: (name, value), i = name.split("=", 1), i + 1
        elif name in flags and (i + 1 == len(argv) or argv[i + 1].startswith("--")): value, i = "true", i + 1
        elif i + 1 < len(argv): value, i = argv[i + 1], i + 2
        else: raise UserError(f"--{name} needs a value")
        (rest if name in extra else pairs)[name] = value
    preset = pairs.pop("preset", None)
    return Config.make(preset, **pairs), rest

