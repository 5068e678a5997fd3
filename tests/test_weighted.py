"""kernel's DataBlock.weighted_dataloaders and class_weights, on real fastai objects."""
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.vision.all import (CategoryBlock, ColReader, DataBlock, ImageBlock, IndexSplitter, Resize,
                               Transform, TransformBlock)
from PIL import Image

import kernel
from kernel import class_weights

pytestmark = pytest.mark.kernel  # runs inside the notebook: also tested on Kaggle's versions (tests/run)

N = 20
VALID = list(range(15, 20))  # IndexSplitter: the last five items are the validation set


class Times10(Transform):
    """An item transform we can see in the batches."""
    def encodes(self, x: torch.Tensor): return x * 10


class Plus1(Transform):
    """A batch transform we can see in the batches."""
    def encodes(self, x: torch.Tensor): return x + 1


def make_block(loads: list | None = None) -> DataBlock:
    """Items are DataFrame rows; x is the row's `x` as a tensor. `loads` counts item loads."""
    def get_x(row):
        if loads is not None: loads.append(row.x)
        return torch.tensor([float(row.x)])
    return DataBlock(blocks=(TransformBlock, CategoryBlock), get_x=get_x, get_y=ColReader("y"),
                     splitter=IndexSplitter(VALID), item_tfms=Times10(), batch_tfms=Plus1())


@pytest.fixture
def df() -> pd.DataFrame:
    return pd.DataFrame({"x": np.arange(N), "y": ["a", "b"] * (N // 2),
                         "w": np.arange(1, N + 1, dtype=float)})


def expected(w) -> np.ndarray:
    trn = np.asarray(w, dtype=float)[:15]
    return trn / trn.sum()


@pytest.mark.parametrize("kind", ["list", "array", "tensor", "series"])
def test_all_item_weights_keep_the_training_subset_normalised(df, kind):
    w = np.arange(1, N + 1, dtype=float)
    wgts = {"list": list(w), "array": w, "tensor": torch.tensor(w), "series": pd.Series(w)}[kind]
    dls = make_block().weighted_dataloaders(df, wgts, bs=4, num_workers=0)
    assert len(dls.train.wgts) == 15
    np.testing.assert_allclose(dls.train.wgts, expected(w))


def test_series_is_taken_by_position_not_index(df):
    w = np.arange(1, N + 1, dtype=float)
    shuffled = pd.Series(w, index=np.random.default_rng(0).permutation(N))  # index labels say nothing
    dls = make_block().weighted_dataloaders(df, shuffled, bs=4, num_workers=0)
    np.testing.assert_allclose(dls.train.wgts, expected(w))


def test_callable_and_column_name(df):
    by_callable = make_block().weighted_dataloaders(df, lambda row: row.x + 1.0, bs=4, num_workers=0)
    by_column = make_block().weighted_dataloaders(df, "w", bs=4, num_workers=0)
    np.testing.assert_allclose(by_callable.train.wgts, expected(df.w))
    np.testing.assert_allclose(by_column.train.wgts, expected(df.w))


def test_item_and_batch_transforms_apply_as_in_dataloaders(df):
    plain = make_block().dataloaders(df, bs=5, num_workers=0)
    weighted = make_block().weighted_dataloaders(df, np.ones(N), bs=5, num_workers=0)
    xb, _ = weighted.valid.one_batch()
    xp, _ = plain.valid.one_batch()
    assert torch.equal(xb, xp)
    assert torch.equal(xb.flatten(), torch.tensor([15., 16, 17, 18, 19]) * 10 + 1)  # Times10 then Plus1


def test_image_block_resizes_like_dataloaders(tmp_path):
    paths = []
    for i in range(8):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (40 + i, 30), (i * 20, 0, 0)).save(p)
        paths.append(str(p))
    items = pd.DataFrame({"path": paths, "y": ["a", "b"] * 4})
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ColReader("path"), get_y=ColReader("y"),
                      splitter=IndexSplitter([6, 7]), item_tfms=Resize((16, 12)))
    dls = block.weighted_dataloaders(items, np.ones(8), bs=2, num_workers=0)
    assert dls.train.one_batch()[0].shape == (2, 3, 16, 12)
    assert dls.valid.one_batch()[0].shape == (2, 3, 16, 12)


BAD = [
    (np.ones(N - 1), r"got 19 weights for 20 items"),
    (np.r_[np.ones(N - 1), -1.0], r"negative"),
    (np.r_[np.ones(N - 1), np.nan], r"NaN or infinite"),
    (np.r_[np.ones(N - 1), np.inf], r"NaN or infinite"),
    (np.r_[np.zeros(15), np.ones(5)], r"all weights of the training split are zero"),
    (np.array(["a"] * N), r"real numbers"),
    (object(), r"real numbers|cannot read weights"),
    ("no_such_column", r"not in the DataFrame"),
    (lambda row: row.no_such_field, r"the weights callable failed"),
]


@pytest.mark.parametrize("wgts,message", BAD)
def test_bad_weights_fail_before_any_item_is_loaded(df, wgts, message):
    loads = []
    with pytest.raises(ValueError, match=message):
        make_block(loads).weighted_dataloaders(df, wgts, bs=4, num_workers=0)
    assert loads == []


def test_fastai_stock_silently_accepts_wrong_length():
    """Why the patch exists: fastai's own `DataBlock.weighted_dataloaders` takes 19 weights for 20 items
    without a word. Run where kernel never patched DataBlock: a fresh interpreter importing fastai alone."""
    code = textwrap.dedent("""
        import numpy as np, pandas as pd, torch
        from fastai.vision.all import CategoryBlock, ColReader, DataBlock, IndexSplitter, TransformBlock
        df = pd.DataFrame({"x": np.arange(20), "y": ["a", "b"] * 10})
        block = DataBlock(blocks=(TransformBlock, CategoryBlock), get_x=lambda r: torch.tensor([float(r.x)]),
                          get_y=ColReader("y"), splitter=IndexSplitter(list(range(15, 20))))
        dls = block.weighted_dataloaders(df, np.ones(19), bs=4, num_workers=0)
        print(type(dls).__name__, len(dls.train.wgts), "kernel" in __import__("sys").modules)
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["DataLoaders", "15", "False"]  # accepted; ours refuses it (BAD above)


def test_sampling_follows_the_weights_and_validation_is_whole(df):
    w = np.ones(N)
    w[:15:2] = 9.0  # even training items (x = 0, 2, ..., 14) weigh 9, odd ones 1
    torch.manual_seed(0); np.random.seed(0)
    dls = make_block().weighted_dataloaders(df, w, bs=5, num_workers=0)
    seen = torch.cat([xb.flatten() for _ in range(40) for xb, _ in dls.train])
    xs = ((seen - 1) / 10).round().long()
    assert torch.equal(seen, xs.float() * 10 + 1)  # item then batch transform, each applied once, in training
    assert set(xs.tolist()) <= set(range(15))
    heavy = (xs % 2 == 0).float().mean().item()
    # 8 heavy items x 9 vs 7 light x 1: p(heavy) = 72 / 79 = 0.911
    assert abs(heavy - 72 / 79) < 0.02, heavy
    seen = torch.cat([xb.flatten() for xb, _ in dls.valid])
    assert sorted(seen.tolist()) == [x * 10.0 + 1 for x in VALID]


def test_class_weights_powers():
    labels = ["a", "a", "a", "a", "b", "c", "c", "c", "c", "b"]  # a: 4, b: 2, c: 4
    counts = np.array([4, 4, 4, 4, 2, 4, 4, 4, 4, 2], dtype=float)
    np.testing.assert_allclose(class_weights(labels, 0), np.ones(10))
    np.testing.assert_allclose(class_weights(pd.Series(labels, index=range(10, 0, -1)), 0.5),
                               1 / np.sqrt(counts))
    np.testing.assert_allclose(class_weights(np.array(labels), 1), 1 / counts)
    assert kernel.class_weights(labels).sum() == pytest.approx(8 / 2 + 2 / np.sqrt(2))
