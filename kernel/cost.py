"""How long one model's run takes on a Kaggle T4, and how much it writes, estimated before anything runs:
what balances an ensemble's members over sessions, and the time plan and the output plan build prints.

    seconds = (forward FLOPs of everything the run computes) / T4_FLOPS

The forward FLOPs of one image are counted once per (arch, size) by torch's own `FlopCounterMode` on the
model built on the meta device (`model.meta_net`: shapes, no weights, no download). A training image costs
3 forwards (backward ~2x forward), a frozen epoch's 1 (backward stops at the head), a validation image 1,
and prediction (TTA passes + 1 over the test set, at the last stage's size) 1 per pass. Epochs x images x
a per-arch, per-size factor: what issue 20 asks for, with the factor counted rather than guessed.

T4_FLOPS is one measured figure, not a T4 specification (65 TFLOP/s fp16 peak, never reached by a
whole training run): Road to the Top part 2 (fastai course22 notebook 09, executed on Kaggle, cell
timestamps 02:53:20 -> 03:26:22, 33 min) fine-tuned convnext_small_in22k for 12 epochs (+1 frozen) at
256x192 on Paddy's 10,407 images (20% validation): 5.70e15 forward-FLOP-equivalents by the count above in
1,982 s = 2.9e12 per second, loading and decoding included. How sure: one run, on a Kaggle GPU of June 2022
(Kaggle then also offered P100s; the notebook does not say which), with 2 CPUs decoding full-size JPEGs, so
GPU-bound large models may run faster; and FLOPs per second differ by architecture (ViTs' matmuls use
tensor cores better than ConvNeXt's depthwise convolutions). Take it as within a factor of 2; the
balance of members over sessions depends only on the ratios, which hold better than the scale.

What a run writes (`output_bytes`) is mostly its exported models: a Kaggle session keeps at most 20 GB of
/kaggle/working, and a ViT-L exports 1.2 GB. Each model.safetensors is sized exactly from the network's state
dict on the meta device; the rest (probabilities, plots, logs), about 1 MB a model on Paddy's test set, is
reckoned from what a small run wrote (tests/test_ensemble.py compares the two).
"""
import functools
import json
import math
from dataclasses import dataclass

from .config import Config

T4_FLOPS = 2.9e12  # forward-FLOP-equivalents per second of a whole run (see above)
TRAIN_FACTOR = 3  # forward + backward (~2 forwards) per training image
# Paddy Doctor's image counts: only defaults, for an estimate at build time, before the data is seen.
PADDY_TRAIN, PADDY_TEST = 10407, 3469


@functools.lru_cache(maxsize=64)
def flops(arch: str, size: tuple[int, int], n_out: int = 10) -> float:
    """Forward FLOPs of one image of `size` (h, w) through the model training builds (timm body, fastai
    head), counted on the meta device: no weights, no download, well under a second for a large model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from .model import meta_net
    net = meta_net(arch, n_out)
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net.eval()(torch.empty(1, 3, *size, device="meta"))
    finally:
        net.train()
    return float(counter.get_total_flops())


def seconds(cfg: Config, n_train: int = PADDY_TRAIN, n_test: int = PADDY_TEST) -> float:
    """Estimated T4 wall seconds of one model's run: every epoch of its plan over `n_train` images (the
    `valid_pct` share validated, the rest trained), then prediction over `n_test` with its TTA passes.
    `cfg` is one model (a member's config, `Config.member`), its stages as it trains them (`plan.shaped`).
    `freeze_epochs` count as frozen (the run is taken to be pretrained, as a build ships it)."""
    if cfg.members: raise ValueError("seconds() is for one model: pass each member's config")
    n_valid = round(n_train * cfg.valid_pct)
    work = 0.0
    for i, s in enumerate(cfg.stages):
        frozen = min(cfg.freeze_epochs, s.epochs) if i == 0 else 0
        trained = frozen + (s.epochs - frozen) * TRAIN_FACTOR  # forwards per training image
        work += flops(cfg.arch, s.size) * (trained * (n_train - n_valid) + s.epochs * n_valid)
    last = flops(cfg.arch, cfg.stages[-1].size)
    work += last * cfg.weighted_epochs * (TRAIN_FACTOR * (n_train - n_valid) + n_valid)
    work += last * (cfg.tta + 1 if cfg.tta else 1) * n_test
    return work / T4_FLOPS


OUTPUT_LIMIT = 20 * 10**9  # bytes of /kaggle/working a Kaggle session keeps
# The small files, as a small run wrote them (10 classes): a probability as pandas writes a float32
# ("0.06740933656692505,"), an image id ("200001.jpg,") and a label, a history.csv row and its log line,
# a plot (history.png, confusion.png: 33-52 KB), model.json and the ensemble's json files.
PROB_CHARS, ID_CHARS, LABEL_CHARS = 20, 11, 14
EPOCH_TEXT = 300
PLOT = 64 * 1024
SMALL = 4096


@functools.lru_cache(maxsize=64)
def weights_bytes(arch: str, n_out: int = 10) -> int:
    """Bytes of the model.safetensors an export writes (`model.export`: the network's whole state dict, fp32
    weights and BatchNorm's buffers, behind a JSON header naming each tensor), from the network built on the
    meta device: its parameter count, no weights, no download."""
    from .model import meta_net
    state = meta_net(arch, n_out).state_dict()
    header, offset = {}, 0
    for name in sorted(state, key=lambda k: (-state[k].element_size(), k)):  # safetensors' order: the offsets
        t = state[name]
        n = t.numel() * t.element_size()
        # every dtype's name is three letters (F32, I64): only the header's length counts here
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + n]}
        offset += n
    return 8 + math.ceil(len(json.dumps(header, separators=(",", ":"))) / 8) * 8 + offset


def output_bytes(cfg: Config, n_test: int = PADDY_TEST, n_classes: int = 10) -> tuple[int, int]:
    """(total, peak): the bytes a run of `cfg` leaves in its output folder, each model's model.safetensors
    (`weights_bytes`), probs.csv, submission.csv, history, plots and log, and an ensemble's own probs.csv,
    submission.csv and plot beside its members' (checkpoints are kept outside it, kernel.checkpoint); and the
    most it holds at once. An export goes through a temp file (kernel.atomic), and a re-export holds the new
    file beside the old until the rename: the peak is the total and the largest model once more."""
    from .plan import models
    probs = (ID_CHARS + n_classes * PROB_CHARS) * (n_test + 1)
    predictions = probs + (ID_CHARS + LABEL_CHARS) * (n_test + 1) + SMALL  # probs, submission, json files
    configs = models(cfg)
    weights = [weights_bytes(c.arch, n_classes) for c in configs]
    epochs = [sum(s.epochs for s in c.stages) + c.weighted_epochs for c in configs]  # history and log lines
    total = sum(w + predictions + 2 * PLOT + EPOCH_TEXT * e for w, e in zip(weights, epochs))
    if cfg.members: total += predictions + PLOT  # the ensemble's average and its plot of every member
    return total, total + max(weights)


def infer_seconds(cfg: Config, n_test: int = PADDY_TEST) -> float:
    """Estimated T4 seconds of the inference kernel: every model (its members) in turn over `n_test` images,
    each at its last stage's size with its TTA passes (+1), as `seconds` counts prediction."""
    from .plan import models
    return math.fsum(flops(c.arch, c.stages[-1].size) * (c.tta + 1 if c.tta else 1) * n_test / T4_FLOPS
                     for c in models(cfg))


@dataclass(frozen=True)
class Row:
    """One model of the time plan."""
    name: str  # the member's name; "" for a run of one model
    arch: str
    stages: str
    weight: float
    seconds: float


def table(cfg: Config, n_train: int = PADDY_TRAIN, n_test: int = PADDY_TEST) -> list[Row]:
    """One row per model the config trains (its members, or itself), with its estimated T4 seconds: what
    `--sessions` balances and what `show` prints."""
    from .plan import models
    weights = {m.name: m.weight for m in cfg.members}
    names = [m.name for m in cfg.members] or [""]
    return [Row(n, c.arch, ",".join(map(str, c.stages)), weights.get(n, 1.0), seconds(c, n_train, n_test))
            for n, c in zip(names, models(cfg))]


def show(rows: list[Row], log=print) -> float:
    """Print the time plan, one line per model; returns the total seconds."""
    log("time plan (estimated T4 hours per model; kernel/cost.py says how, within ~2x):")
    for r in rows:
        log(f"  {r.name or 'model':<14} {r.arch:<46} {r.seconds / 3600:5.1f} h  {r.stages}"
            + (f"  weight {r.weight:g}" if r.weight != 1 else ""))
    total = math.fsum(r.seconds for r in rows)
    log(f"  {'total':<14} {'(one T4 after another)':<46} {total / 3600:5.1f} h")
    return total
