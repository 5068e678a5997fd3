"""paddy kernel kit: fastai training for folder-per-class image competitions, inside a Kaggle kernel.

`import kernel` patches every fastai `DataBlock` with a robust `weighted_dataloaders`.
"""
from .config import Config, Stage
from .errors import UserError
from .weighted import class_weights, check_weights

__version__ = "0.1.0"
__all__ = ["Config", "Stage", "UserError", "class_weights", "check_weights"]
