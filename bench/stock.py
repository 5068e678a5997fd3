"""Stock fastai's loaders for the benches: what a user types without the kit (one definition, so that every
bench compares against the same stock pipeline).

`ImageBlock` + `Resize(item)` on the CPU, `aug_transforms(size=size, ...)` on the batch, a `RandomSplitter`,
over a competition folder in Paddy's layout; `aug` holds the kit's augmentation fields (`flip`, `max_rotate`,
...) so that both sides augment alike.
"""
from pathlib import Path

import pandas as pd
from fastai.vision.all import (CategoryBlock, ColReader, DataBlock, ImageBlock, RandomSplitter, Resize,
                               aug_transforms)

DEFAULTS = dict(flip=True, flip_vert=False, max_rotate=10.0, min_zoom=1.0, max_zoom=1.1, max_warp=0.2,
                max_lighting=0.2, min_scale=0.75)  # fastai's aug_transforms defaults, as the kit's Config has


def loaders(data: Path, aug: dict, *, item: tuple[int, int], size: tuple[int, int], bs: int, seed: int):
    """fastai's DataLoaders over `data`'s train.csv, 20% held out by `seed`."""
    train = pd.read_csv(data / "train.csv", dtype={"image_id": str})
    train["path"] = [str(data / "train_images" / l / i) for i, l in zip(train.image_id, train.label)]
    a = {**DEFAULTS, **aug}
    tfms = aug_transforms(size=size, min_scale=a["min_scale"], do_flip=a["flip"], flip_vert=a["flip_vert"],
                          max_rotate=a["max_rotate"], min_zoom=a["min_zoom"], max_zoom=a["max_zoom"],
                          max_warp=a["max_warp"], max_lighting=a["max_lighting"])
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ColReader("path"), get_y=ColReader("label"),
                      splitter=RandomSplitter(0.2, seed=seed), item_tfms=Resize(item), batch_tfms=tfms)
    return block.dataloaders(train, bs=bs, num_workers=0)
