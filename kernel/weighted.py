"""A robust `DataBlock.weighted_dataloaders` and `class_weights`.

fastai 2.8.12's own version indexes `wgts` with the split indices without checking it: the wrong
length slips through, a pandas Series is read by index label instead of position, and negative or
all-zero weights reach `np.random.choice` (or silently skew sampling). This one takes one weight per
item of `source`, in source order, checks them before any item is loaded, keeps the training
split's weights and builds the loaders exactly as `DataBlock.dataloaders` does (item and batch
transforms, `dls_kwargs`), with `WeightedDL` for the training set only.
"""
import numpy as np
import pandas as pd
import torch
from fastai.callback.data import WeightedDL
from fastai.data.block import DataBlock
from fastai.data.core import DataLoaders, Datasets
from fastai.data.transforms import RandomSplitter
from fastcore.basics import noop, patch


def class_weights(labels, power: float = 0.5) -> np.ndarray:
    """Per-item weights `1 / count(label) ** power`: 1 = reciprocal, 0.5 = 1/sqrt, 0 = uniform."""
    labels = pd.Series(np.asarray(labels))
    counts = labels.map(labels.value_counts())
    return (1.0 / counts.to_numpy(dtype=float) ** power)


def _as_array(wgts, source, items) -> np.ndarray:
    """Read `wgts` (list, array, tensor, Series, callable, or a column of a DataFrame source) by position."""
    if isinstance(wgts, str):
        if not isinstance(source, pd.DataFrame):
            raise ValueError(f"weights given as column name {wgts!r} but the source is not a DataFrame; "
                             "pass the weights themselves (a list, array, Series or callable)")
        if wgts not in source.columns:
            raise ValueError(f"weights column {wgts!r} is not in the DataFrame; "
                             f"its columns are {list(source.columns)}")
        wgts = source[wgts]
    if isinstance(wgts, pd.Series): return wgts.to_numpy()  # by position, whatever the index says
    if isinstance(wgts, torch.Tensor): return wgts.detach().cpu().numpy()
    if callable(wgts):
        rows = (r for _, r in items.iterrows()) if isinstance(items, pd.DataFrame) else items
        try: return np.array([wgts(o) for o in rows])
        except Exception as e:
            raise ValueError(f"the weights callable failed on an item ({type(e).__name__}: {e}); "
                             "it must take one item of the source and return a number") from None
    try: return np.asarray(wgts)
    except Exception as e:
        raise ValueError(f"cannot read weights of type {type(wgts).__name__} ({e}); "
                         "pass a list, numpy array, tensor, Series, callable or column name") from None


def check_weights(wgts, source, items, train_idxs) -> np.ndarray:
    """Return the training split's weights, normalised; raise one `ValueError` for anything else."""
    w = _as_array(wgts, source, items)
    if w.ndim != 1 or not np.issubdtype(w.dtype, np.number) or np.issubdtype(w.dtype, np.complexfloating):
        raise ValueError(f"weights must be a flat list of real numbers, got dtype {w.dtype} "
                         f"and shape {w.shape}; give one number per item of the source")
    w = w.astype(float)
    if len(w) != len(items):
        raise ValueError(f"got {len(w)} weights for {len(items)} items; "
                         "give one weight per item of the source "
                         "(all items, in source order: the training split is taken for you)")
    if not np.isfinite(w).all():
        raise ValueError(f"{int((~np.isfinite(w)).sum())} weights are NaN or infinite; "
                         "replace them with finite numbers >= 0")
    if (w < 0).any():
        raise ValueError(f"{int((w < 0).sum())} weights are negative (smallest {w.min():g}); "
                         "weights must be >= 0")
    trn = w[np.asarray(train_idxs, dtype=int)]
    if trn.sum() <= 0:
        raise ValueError("all weights of the training split are zero; give some training items a weight > 0")
    return trn / trn.sum()


@patch
def weighted_dataloaders(self: DataBlock, source, wgts, bs: int = 64, verbose: bool = False,
                         **kwargs) -> DataLoaders:
    """Like `DataBlock.dataloaders`, with the training set drawn by `wgts` (one per item of `source`)."""
    # DataBlock.datasets, in its steps: Datasets' setup loads the first item, so the weights are
    # checked between the split and the Datasets, against the very split the Datasets then uses.
    items = (self.get_items or noop)(source)
    splits = (self.splitter or RandomSplitter())(items)
    trn = check_weights(wgts, source, items, splits[0])
    self.source = source
    dss = Datasets(items, tfms=self._combine_type_tfms(), splits=splits, dl_type=self.dl_type,
                   n_inp=self.n_inp, verbose=verbose)
    kwargs = {**self.dls_kwargs, **kwargs, 'verbose': verbose}
    dl_kwargs = [{'wgts': trn}] + [{}] * (dss.n_subsets - 1)  # the validation set is not weighted
    return dss.dataloaders(bs=bs, dl_type=WeightedDL, dl_kwargs=dl_kwargs,
                           after_item=self.item_tfms, after_batch=self.batch_tfms, **kwargs)
