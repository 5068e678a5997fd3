"""paddy kernel kit: fastai training for folder-per-class image competitions, inside a Kaggle kernel.

`import kernel` is cheap (no torch, no fastai), so the laptop side starts fast. fastai comes in with the
modules that use it; `from kernel import class_weights` (or importing any of kernel.data, kernel.train)
gives every fastai `DataBlock` a robust `weighted_dataloaders`.
"""
import warnings

# fastai 2.8.12 calls torch.jit.script at import, which torch 2.15 deprecates: noise on every run.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

from .config import Config, Member, Stage
from .errors import UserError

__version__ = "0.2.0"
__all__ = ["Config", "Member", "Stage", "UserError", "class_weights", "check_weights"]


def __getattr__(name: str):
    """`kernel.class_weights` and `kernel.check_weights` import kernel.weighted (and fastai) on first use."""
    if name in ("class_weights", "check_weights"):
        from . import weighted
        return getattr(weighted, name)
    raise AttributeError(f"module 'kernel' has no attribute {name!r}")
