"""The network: a timm body under fastai's head, built the same way for training and for prediction.

Pretrained weights come from a file (Kaggle kernels have no internet): the one `build.py` ships as
`<arch>.safetensors`, or any file `--weights` names. timm loads them with `strict=False` and drops the
classifier, so a partial file, or one with other key names, would leave most of the body at random init
while its log says it loaded pretrained weights. `create` therefore compares the loaded body with the
file, tensor by tensor, and refuses anything less than all of it.

An exported model is a folder: `model.safetensors` (the whole network's state dict) and `model.json`
(architecture, classes, image size, normalisation, config): what prediction needs, with no pickled
`Learner`, which breaks across fastai and torch versions.
"""
import functools
import hashlib
import json
import os
from pathlib import Path

import timm
import torch
from fastai.vision.learner import TimmBody, create_timm_model
from safetensors.torch import load_file, save_file
from torch import nn

from .atomic import atomic_write
from .errors import UserError, first_line

WEIGHTS, META = "model.safetensors", "model.json"


def weights_file(weights: str | None, arch: str) -> Path | None:
    """The pretrained weights to load: `weights` itself, or `<weights>/<arch>.safetensors` for a folder.

    Several paths may be given, joined by os.pathsep: Kaggle mounts each weights dataset (one per
    architecture) in a folder of its own, and the first path that is a file, or a folder holding the
    architecture's file, is taken."""
    if weights is None: return None
    paths = [Path(p) for p in str(weights).split(os.pathsep) if p]
    for path in paths:
        if path.is_file(): return path
        if (path / f"{arch}.safetensors").is_file(): return path / f"{arch}.safetensors"
    folders = [p for p in paths if p.is_dir()]
    if not folders:
        raise UserError(f"weights file {weights} not found; pass --weights PATH to a file saved from the "
                        "architecture, or --weights none to train from scratch")
    have = ", ".join(sorted(p.name for f in folders for p in f.glob("*.safetensors"))) or "none"
    raise UserError(f"no pretrained weights for {arch} in {weights} (it has: {have}); rebuild with "
                    "`build.py build`, which fetches them, or pass --weights none to train from scratch")


def body(net: nn.Module) -> nn.Module:
    """The timm model inside fastai's `TimmBody` (the network's first part)."""
    return net[0].model


def stats(net: nn.Module) -> tuple[list[float], list[float]]:
    """The body's own normalisation (timm's pretrained config): what its weights were trained on."""
    cfg = body(net).pretrained_cfg
    return list(cfg["mean"]), list(cfg["std"])


def _digest(t: torch.Tensor) -> tuple:
    """A tensor's shape and value, as float32 bytes hashed: equal tensors, equal digests."""
    data = t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes()
    return tuple(t.shape), hashlib.blake2b(data, digest_size=16).digest()


def check_loaded(net: nn.Module, path: Path, arch: str) -> int:
    """How many of the body's tensors hold values from `path`; refuses anything less than all of them.

    Values, not names, are compared: a file in another key layout that timm's filter maps onto the model
    still counts, and one that timm silently skipped does not.
    """
    from timm.models import load_state_dict
    file = load_state_dict(str(path))
    have = {_digest(t) for t in file.values() if torch.is_tensor(t) and t.is_floating_point()}
    mine = [(k, t) for k, t in body(net).state_dict().items() if t.is_floating_point()]
    missed = [k for k, t in mine if _digest(t) not in have]
    if missed:
        n = len(mine) - len(missed)
        raise UserError(f"weights file {path} holds only {n} of the {len(mine)} tensors of {arch}'s body "
                        f"({100 * n / len(mine):.0f}%; e.g. {missed[0]} is not in it), so the rest would "
                        f"train from random init; give weights saved from {arch} (`build.py build` fetches "
                        "them when --weights is left out), or set --arch to the file's architecture")
    return len(mine)


def check_arch(arch: str) -> None:
    if not timm.is_model(arch):
        raise UserError(f"unknown timm architecture {arch!r}; pick a name from timm.list_models(), "
                        "e.g. convnext_small.fb_in22k")


class ChannelsFirstBody(TimmBody):
    """fastai's TimmBody for bodies whose features come channels last (timm's Swin and SwinV2 give
    (B, H, W, C)): fastai's head pools NCHW, and would take H for the channels."""
    def forward(self, x): return super().forward(x).permute(0, 3, 1, 2)


def timm_net(arch: str, n_out: int, **kwargs) -> nn.Module:
    """fastai's `create_timm_model`, with a ViT-like body built to take any image size.

    Stages train at sizes other than the 224x224 a ViT's position embeddings were made for (and 120 is not
    a multiple of its 16-pixel patches); timm refuses those unless the model is built with
    `dynamic_img_size` (the embeddings resampled per batch; the weights load unchanged) and
    `dynamic_img_pad`. Models without these options (CNNs) do not take the keywords: built without them.
    """
    try:
        net = create_timm_model(arch, n_out, dynamic_img_size=True, dynamic_img_pad=True, **kwargs)[0]
    except TypeError as e:
        if "dynamic_img" not in str(e): raise
        net = create_timm_model(arch, n_out, **kwargs)[0]
    if net[0].needs_pool and getattr(net[0].model, "output_fmt", "NCHW") == "NHWC":
        net[0].__class__ = ChannelsFirstBody  # the same module and state dict, its output permuted
    return net


@functools.lru_cache(maxsize=8)
def meta_net(arch: str, n_out: int) -> nn.Module:
    """The network `timm_net` builds, on the meta device (shapes, no weights, no download), in training mode:
    what the memory estimate (kernel.memory) and the cost (kernel.cost) work from.

    Cached per (arch, n_out): a table of stages costs one build. Do not modify the returned module.
    """
    with torch.device("meta"):
        net = timm_net(arch, n_out, pretrained=False)
    return net.train()


def native_size(arch: str) -> tuple[int, int] | None:
    """The one image size (h, w) a fixed-size body takes, timm's pretrained `input_size` (Swin: its
    windows tile that size only); None for a body that takes any size (CNNs; ViTs, built with
    `dynamic_img_size`). Decided on the meta-device model (`meta_net`): no weights, no download."""
    check_arch(arch)
    try: net = body(meta_net(arch, 10))
    except Exception as e:  # e.g. a pretrained tag timm does not know: `resnet10t.bogus`
        raise UserError(f"timm cannot build {arch!r} ({first_line(e, 200)}); "
                        "pick a name from timm.list_models()") from None
    cfg = net.pretrained_cfg
    if not cfg.get("fixed_input_size") or getattr(net, "dynamic_img_size", False): return None
    return tuple(cfg["input_size"][1:])


def create(arch: str, n_out: int, weights: Path | None = None, log=print) -> nn.Module:
    """fastai's timm model (body + head) for `n_out` classes; with `weights`, checked to fill the whole
    body."""
    check_arch(arch)
    # custom_load=False: timm 1.0.26 keeps a tag's custom_load flag under this overlay, and augreg ViTs
    # then look for a .npz loader that a safetensors file does not need (a KeyError).
    overlay = dict(file=str(weights), hf_hub_id=None, url=None, custom_load=False) if weights else None
    try:
        net = timm_net(arch, n_out, pretrained=weights is not None,
                       **(dict(pretrained_cfg_overlay=overlay) if overlay else {}))
    except Exception as e:
        first = first_line(e, 200)
        if not weights:  # e.g. a pretrained tag timm does not know: `resnet10t.bogus`
            raise UserError(f"timm cannot build {arch!r} ({first}); "
                            "pick a name from timm.list_models()") from None
        raise UserError(f"weights file {weights} does not fit {arch} ({type(e).__name__}: {first}); give a "
                        f"weights file saved from {arch}, or set --arch to the file's architecture") from None
    if weights:
        n = check_loaded(net, weights, arch)
        log(f"loaded pretrained weights for {arch} from {weights}: all {n} tensors of the body")
    else:
        log(f"no pretrained weights: training {arch} from scratch")
    return net


def export(net: nn.Module, folder: Path, meta: dict) -> Path:
    """Write `net`'s weights and `meta` (arch, vocab, size, mean, std, config, ...) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
    with atomic_write(folder / WEIGHTS) as tmp: save_file(state, str(tmp))
    with atomic_write(folder / META) as tmp: tmp.write_text(json.dumps(meta, indent=1) + "\n")
    return folder


def load(folder: Path) -> tuple[nn.Module, dict]:
    """An exported model, rebuilt from its `model.json` and weights: (network in eval mode, meta)."""
    try:
        meta = json.loads((folder / META).read_text())
        state = load_file(str(folder / WEIGHTS))
    except Exception as e:
        raise UserError(f"{folder} does not hold an exported model ({type(e).__name__}: {e}); point at a "
                        f"folder with {META} and {WEIGHTS}, as training writes them") from None
    net = create(meta["arch"], len(meta["vocab"]), log=lambda *_: None)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"{folder / WEIGHTS} does not fit {meta['arch']} ({len(missing)} tensors missing, "
                        f"{len(unexpected)} unexpected); was it exported by another version of the kit?")
    return net.eval(), meta
