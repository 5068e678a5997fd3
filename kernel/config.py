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
import os
import re
import shlex
import typing
from dataclasses import dataclass, field, fields, replace

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
        text = lambda v: ",".join(map(str, v)) if isinstance(v, tuple) else v  # stages as --stages takes them
        parts = [self.name, *(f"{k}={text(v)}" for k, v in self.overrides)]
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
# (real ImageNet weights a package ships), the last stage's accumulation `auto`. One stage, lr 1e-2, body_lr
# 0.1, presize 1.5 and no frozen epoch as bench/finetune.py measured them (tuned on seeds it does not report):
# a first stage at 64x48 cost the pretrained body 2-10 points on each set; body_lr 0.3 lost 3-7 on 3 of 4;
# decoded at the stage size, the random crop enlarged a part of the image, and scenes lost 8; with the body
# at 0.1 of lr from the start, a frozen first epoch only took an epoch from the body (0.2-2.2 points on all 4).
# 15 epochs: an epoch of a few hundred images at 96x72 costs a few CPU seconds next to a run's fixed costs
# (imports, checks, TTA over the test images); 10 scored higher than 5 on all 4 sets (+0.3 to +7 points),
# and 15 higher than 10 on textures (+3.7 on the tuning seeds), the one set where 10 was behind stock.
CPU_STAGES = (Stage((96, 72), 15, 16, 0),)


def cpu_cores() -> int:
    """The CPU cores this process may run on: its affinity (a container's share), not the machine's count."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def in_range(value: float, interval: str) -> bool:
    """Whether `value` lies in `interval`, written "[0, 1)", "(0, inf)" ...; NaN lies in none."""
    lo, hi = (float(v) for v in interval[1:-1].split(","))
    above = value >= lo if interval[0] == "[" else value > lo
    below = value <= hi if interval[-1] == "]" else value < hi
    return bool(above and below)


def doc(help: str, *, unit: str = "", range: str = "", choices: tuple[str, ...] = (),
        resume: bool = True, **kw):
    """A Config field with its documentation: what it does, its unit, its valid range (interval notation,
    checked in `Config.__post_init__`) or choices. `--help` is generated from these and the presets."""
    return field(metadata=dict(help=help, unit=unit, range=range, choices=choices, resume=resume), **kw)


@dataclass
class Config:
    """One run of the kernel. Fields with `resume=False` may change between a run and its resume.

    Each field's `doc(...)` is its one documentation: the CLI's --help (with every preset's default),
    and the range `__post_init__` checks."""
    data: str = doc("the competition folder: train.csv, train_images/ (class folders or flat), test_images/, "
                    "sample_submission.csv; read as kernel/layout.py says",
                    unit="path", resume=False, default="/kaggle/input/paddy-disease-classification")
    out: str = doc("where submission.csv, probs.csv, the model, history.csv and plots go (resume checkpoints "
                   "beside it, or in /kaggle/temp on Kaggle)",
                   unit="path", resume=False, default="/kaggle/working")
    # top of Paddy Doctor's leaderboard is convnext
    arch: str = doc("the network: any timm model name, with an optional pretrained tag",
                    unit="timm name", default="convnext_small.fb_in22k")
    weights: str | None = doc("pretrained weights: a .safetensors file, or a folder holding "
                              "<arch>.safetensors (what build ships), or several joined by ':' (the first that "
                              "has it); none: from scratch",
                              unit="path or none", resume=False, default=None)
    stages: tuple[Stage, ...] = doc(
        "progressive resizing: per stage, image height x width, epochs, batch size, gradient accumulation "
        "(auto: the smallest whose micro-batch fits the GPU), comma separated",
        unit="HxW:epochs:bs:accum,...", default=KAGGLE_STAGES)
    resize: str = doc("how an image is fitted to a stage's size: squish (stretched to it), crop (aspect "
                      "kept, cut to it: a random part in training, the centre in validation and prediction) "
                      "or pad (aspect kept, all of it, black bars)", unit="choice",
                      choices=("squish", "crop", "pad"), default="squish")
    presize: float = doc("decode each image at this multiple of the stage size; the batch's random crop and "
                         "augmentation then resample it down to the stage size (fastai's presizing: Road to "
                         "the Top decodes 480x360 for 256x192 batches, 1.875). 1: decode at the stage size, "
                         "and the crop enlarges that", unit="multiple of the stage size", range="[1, 4]",
                         default=1.0)
    lr: float = doc("peak learning rate of the one-cycle over the whole schedule (the head's, with a "
                    "pretrained body)", unit="per optimiser step, Adam", range="(0, 1]", default=5e-3)
    # With pretrained weights (fastai's fine_tune recipe): the first epochs train the head alone on a
    # one-cycle of their own, then the body trains at this fraction of lr. From scratch neither applies.
    freeze_epochs: int = doc("with pretrained weights: first epochs that train the head alone (body frozen), "
                             "on a one-cycle of their own; at most the first stage's epochs",
                             unit="epochs", range="[0, inf)", default=1)
    body_lr: float = doc("with pretrained weights: the body's learning rate as a fraction of lr",
                         unit="fraction of lr", range="(0, 1]", default=0.01)
    wd: float = doc("weight decay (decoupled, AdamW's)", unit="fraction of the weights per unit of lr",
                    range="[0, 1]", default=0.05)
    valid_pct: float = doc("share of the training images held out for validation; 0: train on every image",
                           unit="fraction", range="[0, 1)", default=0.2)
    seed: int = doc("seeds the validation split, the initialisation and the batches' order",
                    unit="integer", range="[0, 4294967295]", default=42)
    weighted_epochs: int = doc("extra epochs at the last size with rare classes drawn more often",
                               unit="epochs", range="[0, inf)", default=0)
    weight_power: float = doc("for those epochs, each class drawn with weight 1/count**power (1: classes "
                              "balanced, 0: as they come)", unit="exponent", range="[0, 1]", default=0.5)
    weighted_correction: bool = doc("after weighted epochs, rescale test probabilities to the true class "
                                    "frequencies", unit="on/off", resume=False, default=True)
    # Augmentation, on the GPU: fastai's aug_transforms (its defaults) and a shape-keeping random crop
    flip: bool = doc("augmentation: mirror left-right at random", unit="on/off", default=True)
    flip_vert: bool = doc("augmentation, with flip: all eight flips and quarter turns", unit="on/off",
                          default=False)
    max_rotate: float = doc("augmentation: largest random rotation", unit="degrees", range="[0, 180]",
                            default=10.0)
    min_zoom: float = doc("augmentation: smallest random zoom (below 1 zooms out); at most max_zoom",
                          unit="scale factor", range="(0, 10]", default=1.0)
    max_zoom: float = doc("augmentation: largest random zoom", unit="scale factor", range="(0, 10]",
                          default=1.1)
    max_warp: float = doc("augmentation: largest random perspective warp", unit="fraction of the image",
                          range="[0, 1)", default=0.2)
    max_lighting: float = doc("augmentation: largest random change of brightness and contrast",
                              unit="fraction", range="[0, 1)", default=0.2)
    min_scale: float = doc("augmentation: the random crop keeps at least this share of the image (its "
                           "shape kept; validation and test see it whole)", unit="fraction of the area",
                           range="(0, 1]", default=0.75)
    mixup: float = doc("MixUp's alpha (fastai's default when on: 0.4); 0: off; exclusive with cutmix",
                       unit="Beta(alpha, alpha)", range="[0, inf)", default=0.0)
    cutmix: float = doc("CutMix's alpha (fastai's default when on: 1.0); 0: off", unit="Beta(alpha, alpha)",
                        range="[0, inf)", default=0.0)
    label_smoothing: float = doc("eps of fastai's LabelSmoothingCrossEntropyFlat (its default: 0.1); 0: off",
                                 unit="probability moved off the label", range="[0, 1)", default=0.0)
    precision: str = doc("auto: fp16 mixed precision on CUDA, fp32 on the CPU", unit="choice",
                         choices=("auto", "fp16", "fp32"), default="auto")
    tta: int = doc("augmented passes over the test set averaged by learn.tta; 0: one plain pass",
                   unit="passes", range="[0, inf)", resume=False, default=4)
    val_bs: int = doc("validation and TTA batch; 0: the largest the memory estimate lets fit",
                      unit="images", range="[0, inf)", resume=False, default=0)
    time_limit: float = doc("the whole run's time budget: epochs are cut so that submission.csv is "
                            "written before it; 0: none", unit="seconds", range="[0, inf)", resume=False,
                            default=0)
    accelerator: str = doc("Kaggle machine shape whose GPU memory `accum auto` fits, off the GPU",
                           unit="machine_shape", resume=False, default="NvidiaTeslaT4")
    gpu_memory: int = doc("GPU memory each stage must fit, for `accum auto` and the preflight; 0: the GPU's "
                          "own, or the accelerator's off the GPU", unit="MiB", range="[0, inf)", resume=False,
                          default=0)
    members: tuple[Member, ...] = doc("an ensemble: 'name field=value ...; name ...' (and weight=W in the "
                                      "average); empty: one model, trained into out itself",
                                      unit="members", default=())
    sessions: int = doc("Kaggle training kernels the members are split over (balanced by estimated cost), "
                        "at most two running at once; 1: every member in one kernel", unit="sessions",
                        range="[1, inf)", resume=False, default=1)
    test_count: int = doc("test images the competition scores: in a code competition the hidden set's (its "
                          "Data page says, e.g. Cassava ~15000), for build's inference estimate; "
                          "0: Paddy's 3469",
                          unit="images", range="[0, inf)", resume=False, default=0)
    infer_limit: float = doc("the competition's run-time limit of a submitted notebook (its Code Requirements, "
                             "e.g. 9h for Cassava): build refuses an inference kernel estimated past it; "
                             "0: none",
                             unit="seconds, or with h/m", range="[0, inf)", resume=False, default=0)
    devices: str = doc("where members run at once: auto (every visible GPU, else the CPU), or a list "
                       "such as 0,1 or cpu,cpu", unit="devices", resume=False, default="auto")
    num_workers: int | None = doc("data loader worker processes of each model; none: its share of the cores "
                                  "(members training at once share them: 2 each of a Kaggle T4 session's 4)",
                                  unit="processes", range="[0, inf)", resume=False, default=None)
    threads: int | None = doc("torch threads of each model's process; none: its share of the cores, as "
                              "num_workers", unit="threads", range="[1, inf)", resume=False, default=None)
    cache_share: float | None = doc("share of the RAM free when a stage starts that its decoded images may "
                                    "take, kept to be decoded once a stage instead of once an epoch (a line "
                                    "says which); 0: decode every epoch; none: 3/4 of it, split among the "
                                    "members training at once, as the cores", unit="fraction of the free RAM",
                                    range="[0, 1]", resume=False, default=None)
    progress: str = doc("lines: one line per epoch; table: fastai's table; auto: the table in a notebook",
                        unit="choice", choices=("auto", "lines", "table"), resume=False, default="auto")
    label_col: str = doc("train.csv's column of class names; if train.csv has none of that name, "
                         "sample_submission.csv's target column", unit="column", default="label")
    id_col: str = doc("train.csv's and sample_submission.csv's column of image names (with or without the "
                      "extension); if train.csv has none of that name, sample_submission.csv's first column",
                      unit="column", default="image_id")
    restart: bool = doc("delete the checkpoint and history in out and start over", unit="on/off",
                        resume=False, default=False)

    def __post_init__(self):
        """Refuse values that would only fail deep inside fastai, hours later (or train silently)."""
        if not self.stages: raise UserError("no stages; give at least one, e.g. --stages 160x120:6:64:1")
        for f in fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if meta["range"] and value is not None and not in_range(value, meta["range"]):
                raise UserError(f"--{f.name} {value} is out of range; give a value in {meta['range']}")
            if meta["choices"] and value not in meta["choices"]:
                raise UserError(f"--{f.name} {value!r} must be one of {', '.join(meta['choices'])}")
        if self.freeze_epochs > self.stages[0].epochs:
            raise UserError(f"--freeze_epochs {self.freeze_epochs} must be at most the first stage's "
                            f"{self.stages[0].epochs} epochs")
        if self.min_zoom > self.max_zoom:
            raise UserError(f"--min_zoom {self.min_zoom} is above --max_zoom {self.max_zoom}; "
                            "lower min_zoom or raise max_zoom")
        if self.mixup and self.cutmix: raise UserError("--mixup and --cutmix are exclusive; set one to 0")
        accelerator(self.accelerator)

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

    def shared(self, at_once: int = 1, *, cores: int | None = None) -> "Config":
        """This config with `num_workers`, `threads` and `cache_share` where they are not set: its share of
        the `cores` (this process's, `cpu_cores()`) and of 3/4 of the free RAM, with `at_once` models training
        side by side on them (the last quarter: for what grows after a stage's images are kept)."""
        share = max(1, (cpu_cores() if cores is None else cores) // at_once)
        return replace(self, num_workers=share if self.num_workers is None else self.num_workers,
                       threads=share if self.threads is None else self.threads,
                       cache_share=0.75 / at_once if self.cache_share is None else self.cache_share)

    def member(self, m: Member, out: str) -> "Config":
        """This config as member `m` trains it: its overrides applied, one model, into `out`."""
        return Config.make(None, **{**self.to_dict(), **dict(m.overrides), "members": (), "out": out})

    def models(self) -> list["Config"]:
        """Each model this config trains: its members' configs, or itself (what the preflight checks and
        the weights are fetched for)."""
        return [self.member(m, self.out) for m in self.members] or [self]

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

# Presets for a laptop's CPU (the dry run's), never laid over a Kaggle run by build or push.
LAPTOP_PRESETS = ("cpu", "cpu-scratch")
PRESETS: dict[str | None, dict] = {
    None: {},
    # Two members, one per T4, each on its own validation split; the session is 12 hours, less a margin
    # for installing, loading and averaging.
    "kaggle": dict(members="a seed=42; b seed=43", time_limit=11.5 * 3600),
    # The Kaggle default's shape on a laptop (see CPU_STAGES): two members side by side, one process each;
    # the dry run gives it the packaged EfficientNet-Lite0 weights.
    "cpu": dict(arch="tf_efficientnet_lite0", stages=CPU_STAGES, presize=1.5, lr=1e-2, body_lr=0.1,
                freeze_epochs=0, wd=0.01, tta=2, num_workers=0, time_limit=0, members="a seed=1; b seed=2",
                devices="cpu,cpu"),
    # From scratch, one model, when no pretrained weights can be had. resnet10t: on the sample it learns
    # from scratch in minutes where resnet18 barely starts (0.64 vs 0.39).
    "cpu-scratch": dict(arch="resnet10t", stages=SCRATCH_STAGES, lr=5e-3, wd=0.01, tta=2, num_workers=0,
                        time_limit=0),
    # Road to the Top part 3 (fastai course22 notebook 10, Paddy's best published recipe): four large models,
    # each fitted two ways (a squish of the whole image, and Resize((640, 480)), a crop to the stage's shape
    # at validation; ConvNeXt both ways cropped, at 224 and 320x224), fine_tune(12) = 1 frozen + 12 epochs at
    # lr 0.01 (5e-3 once unfrozen, the body at 1/100), fastai's wd 0.01, batch 64 (accum 2 on a 16 GB card
    # there; `auto` here finds what a T4 takes), TTA, the ViTs weighted double; seeds differ, as its splits
    # did. The Swins take their native sizes (SwinV2 192x192) in the run's one stage. Over 2 sessions.
    "rttt": dict(stages="224x224:13:64:auto", lr=5e-3, wd=0.01, tta=4, sessions=2, time_limit=11.5 * 3600,
                 members="; ".join([
                     "convnext-224 arch=convnext_large.fb_in22k resize=crop seed=1",
                     "convnext-320 arch=convnext_large.fb_in22k resize=crop stages=320x224:13:64:auto seed=2",
                     "vit-squish arch=vit_large_patch16_224.augreg_in21k_ft_in1k resize=squish seed=3 "
                     "weight=2",
                     "vit-crop arch=vit_large_patch16_224.augreg_in21k_ft_in1k resize=crop seed=4 weight=2",
                     "swinv2-squish arch=swinv2_large_window12_192.ms_in22k resize=squish seed=5",
                     "swinv2-crop arch=swinv2_large_window12_192.ms_in22k resize=crop seed=6",
                     "swin-squish arch=swin_large_patch4_window7_224.ms_in22k_ft_in1k resize=squish seed=7",
                     "swin-crop arch=swin_large_patch4_window7_224.ms_in22k_ft_in1k resize=crop seed=8"])),
}


def _convert(name: str, value):
    """Turn a command-line string (or a notebook value) into the field's type."""
    if name == "stages": return parse_stages(value) if isinstance(value, str) else tuple(value)
    if name == "members": return parse_members(value)
    hint = typing.get_type_hints(Config)[name]
    if not isinstance(value, str): return value
    try:
        if type(None) in typing.get_args(hint):  # `int | None`: none, or an int
            if value.lower() in ("none", ""): return None
            hint = next(t for t in typing.get_args(hint) if t is not type(None))
        if hint is bool:
            if value.lower() in ("1", "true", "yes"): return True
            if value.lower() in ("0", "false", "no"): return False
            raise ValueError(value)
        if hint is float and value[-1:] in ("h", "m"):  # a duration: 9h, 30m
            return float(value[:-1]) * (3600 if value[-1] == "h" else 60)
        if hint in (int, float): return hint(value)
        return value
    except ValueError:
        raise UserError(f"--{name} wants a {getattr(hint, '__name__', hint)}, got {value!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one `UserError` line, not a usage block and exit."""
    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{message}; see --help")


def _shown(v) -> str:
    """A default as --help and docs/options.md write it."""
    return "none" if v is None or v == "" else repr(v) if isinstance(v, str) else f"{v:g}" \
        if isinstance(v, float) else str(v)


def _kind(meta) -> str:
    """A field's unit or choices, and its valid range: `[unit, in (0, 1]]` of its --help."""
    kind = f"one of {', '.join(meta['choices'])}" if meta["choices"] else meta["unit"]
    return kind + (f", in {meta['range']}" if meta["range"] else "")


def describe(name: str, made: dict[str | None, dict]) -> str:
    """A field's --help: what it does, its unit and range, and its default under each preset (and with no
    preset, where that differs), generated from PRESETS so that a new preset shows up. `made`: each preset's
    `Config.make(preset).to_dict()`, made once for all the fields of a parser."""
    meta = next(f.metadata for f in fields(Config) if f.name == name)
    values = {p: _shown(made[p][name]) for p in PRESETS}
    default = f"default {values[None]}" if len(set(values.values())) == 1 else \
        "default: " + ", ".join(f"{p or 'no preset'} {v}" for p, v in values.items() if p) \
        + f", no preset {values[None]}"
    return f"{meta['help']} [{_kind(meta)}]; {default}".replace("%", "%%")


def markdown() -> str:
    """docs/options.md: every Config field (the option `--field`), its doc, unit and range, and its default
    under each preset, from the same `doc(...)` metadata and PRESETS as --help. Regenerate it with
    `python -m kernel.optionsdoc > docs/options.md` (tests/test_options_doc.py checks it is current)."""
    made = {p: Config.make(p).to_dict() for p in PRESETS}
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    code = lambda text: "`" + str(text).replace("`", "'") + "`"
    presets = [p for p in PRESETS if p]
    lines = [
        "# Options",
        "",
        "<!-- generated by `python -m kernel.optionsdoc > docs/options.md` from kernel/config.py; do not edit -->",
        "",
        "Every field of `kernel.Config` is an option `--field value` of `python -m kernel`, `python -m",
        "kernel.train`, `build.py build`, `build.py dry-run` and `build.py push`, and a key of `Config.make(...)`",
        "in a notebook. `build` and `push` leave out `--data`, `--out`, `--weights` and `--restart` (Kaggle's",
        "paths; `--weights FILE` there ships a file). On/off options are `--field` and `--no-field`.",
        "",
        "`--preset NAME` starts from a preset (" + ", ".join(f"`{p}`" for p in presets) + "): `build` and `push`",
        "start from `kaggle` (a `--preset` is laid over it), `dry-run` from `cpu`, `python -m kernel` from no",
        "preset. Options given are laid over the preset. A value out of its range is refused in one line",
        "before anything runs. Each command's `--help` prints the same text.",
        "",
        "| option | what it does | unit, range | " + " | ".join(f"`{p}`" for p in presets) + " | no preset |",
        "|---|---|---|" + "---|" * (len(presets) + 1),
    ]
    long = []  # defaults too long for a table cell (rttt's eight members): written out below it
    for f in fields(Config):
        values = []
        for p in presets + [None]:
            v = _shown(made[p][f.name])
            if len(v) > 60:
                long.append((p, f.name, v))
                v, shown = f"{p or 'no preset'}: see below", False
            else: shown = True
            values.append(cell(code(v)) if shown else v)
        lines.append(f"| `--{f.name}` | {cell(f.metadata['help'])} | {cell(_kind(f.metadata))} | "
                     + " | ".join(values) + " |")
    for p, name, v in long:
        lines += ["", f"`--{name}` under `{p or 'no preset'}`:", "", "```text",
                  *(part.strip() for part in v.strip("'").split(";")), "```"]
    return "\n".join(lines) + "\n"


def options(p: argparse.ArgumentParser, skip: tuple[str, ...] = (),
            preset: bool = True) -> argparse.ArgumentParser:
    """Add `--preset` and one `--field` option per Config field not in `skip` to `p`, each with its help.

    Every option defaults to None, meaning "not given": what was given is read back by `given()`.
    """
    if preset:
        p.add_argument("--preset", choices=[k for k in PRESETS if k],
                       help="start from this preset's values (each option's help gives them)")
    hints = typing.get_type_hints(Config)
    made = {p: Config.make(p).to_dict() for p in PRESETS}
    for name in FIELDS:
        if name in skip: continue
        if hints[name] is bool:
            p.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                           help=describe(name, made))
        else:
            kind = {int: "INT", float: "FLOAT"}.get(hints[name], "TEXT")
            p.add_argument(f"--{name}", default=None, metavar=kind, help=describe(name, made))
    return p


def parser(description: str = "", skip: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A parser whose errors are one line, with `--preset` and the Config fields' options."""
    return options(Parser(description=description, allow_abbrev=False), skip)


def given(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> dict:
    """{field: value} of the Config options that were given on the command line (those not in `skip`: options
    of the same name that mean something else there)."""
    return {k: v for k, v in vars(args).items() if k in FIELDS and k not in skip and v is not None}


def parse_args(argv: list[str], description: str = "") -> Config:
    """`--field value ...` (and `--preset NAME`) -> Config."""
    args = parser(description).parse_args(argv)
    return Config.make(args.preset, **given(args))
