"""paddy kernel kit: fastai training for folder-per-class image competitions, inside a Kaggle kernel.

`import kernel` patches every fastai `DataBlock` with a robust `weighted_dataloaders`.
"""
import warnings

# fastai 2.8.12 calls torch.jit.script at import, which torch 2.15 deprecates: noise on every run.
warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)

from .config import Config, Stage
from .errors import UserError
from .weighted import class_weights, check_weights

__version__ = "0.1.0"
__all__ = ["Config", "Stage", "UserError", "class_weights", "check_weights"]
