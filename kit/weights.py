"""Pretrained weights for the dataset, fetched here on the laptop: Kaggle kernels run without internet.

timm's own loader gets the weights of an architecture's pretrained tag (`convnext_small.fb_in22k`) through
the Hugging Face hub cache it uses: downloaded once, then read from the cache, with HF_HOME and
HF_HUB_OFFLINE honoured. They are written as `<arch>.safetensors`, the body only (fastai puts its own head
on), in the key layout the kernel's model has: the kernel loads them with timm and checks every tensor.
"""
import os
from pathlib import Path

from kernel.errors import UserError, first_line


class Unavailable(UserError):
    """The weights could not be had: no network and nothing cached (the dry run carries on without)."""


def cache_dir() -> str:
    """Where huggingface_hub keeps downloads, as it decides."""
    from huggingface_hub import constants
    return constants.HF_HUB_CACHE


def fetch(arch: str, dest: Path) -> Path:
    """Write `dest/<arch>.safetensors`, the pretrained body of `arch`; `Unavailable` if it cannot be had."""
    import timm
    import torch
    from safetensors.torch import save_file

    from kernel.model import check_arch
    check_arch(arch)
    try:
        with torch.device("cpu"):
            body = timm.create_model(arch, pretrained=True, num_classes=0)
    except Exception as e:
        first = first_line(e, 160)
        offline = (" (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true")
                   else "")
        raise Unavailable(f"cannot get the pretrained weights of {arch}{offline}: "
                          f"{type(e).__name__}: {first}; "
                          f"connect to the internet once so timm can download them into {cache_dir()}, "
                          "or pass --weights FILE, or --no-pretrained to train from scratch") from None
    path = dest / f"{arch}.safetensors"
    # clone: tensors that share storage (tied weights) cannot be written to a safetensors file as they are
    save_file({k: v.detach().contiguous().clone() for k, v in body.state_dict().items()}, str(path))
    return path
