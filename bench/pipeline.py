"""Images per second of the training loader: fastai's stock pipeline, ours (kernel/data.py), and ours with the
stage's images decoded once and kept in RAM (`data.ImageCache`).

    python bench/pipeline.py [--n 300] [--workers 0,2] [--images 1024] [--aug-images 256] [--rounds 3]

All read the same 480x640 JPEGs (a sample competition made in a temp folder), at each default Kaggle
stage size, with the same batch size, number of workers and batch augmentation (`data.augmentations`,
fastai's `aug_transforms`, and normalisation), in the same run. Stock is fastai's `ImageBlock` (full decode)
+ `Resize` (squish); ours differs only in how an image is opened (`data.load_image`: decoded at a JPEG DCT
scale, squished by PIL), and is what trains when a stage's images do not fit the free RAM; cached reads
ours's very pictures out of RAM, decoded once for the stage (the seconds that took, per image listed once,
are the `fill` column), what trains when they fit.

Two figures per row:
  loader  batches as they leave the CPU: decode, resize, collate. On a Kaggle GPU kernel this is all
          the CPU does; the batch augmentation that follows runs on the GPU.
  +aug    the same batches after the batch augmentation on this machine's device: the GPU if there
          is one, else the CPU, where augmentation costs the same for all and hides the gain.
The items are listed several times so that an epoch is long, as Paddy's 130 batches are, and each
figure is timed inside one epoch after its first batch (worker start-up), best of `--rounds`,
the loaders measured in turn so that other work on the machine slows them alike.
"""
import argparse
import math
import os
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

warnings.filterwarnings("ignore")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch
from fastai.vision.all import (CategoryBlock, ColReader, DataBlock, ImageBlock, Normalize, Pipeline,
                               RandomSplitter, Resize, ResizeMethod, imagenet_stats)

from kernel import data
from kernel.config import KAGGLE_STAGES, Config, Stage
from kernel.sample import make_sample


STATS = imagenet_stats
# The Kaggle stages, an `auto` accumulation taken as 4 (micro-batch 16, what bench/memory.py's estimate gives
# convnext_small at 448x336 on a T4): the loader's batch is the micro-batch.
STAGES = [replace(s, accum=s.accum or 4) for s in KAGGLE_STAGES]


def stock_datablock(cfg: Config, stage: Stage) -> DataBlock:
    """fastai's stock way to read images (full decode, then `Resize`), with our batch augmentation."""
    return DataBlock(blocks=(ImageBlock, CategoryBlock),
                     get_x=ColReader("path"), get_y=ColReader(cfg.label_col),
                     splitter=RandomSplitter(cfg.valid_pct, seed=cfg.seed),
                     item_tfms=Resize(stage.size, method=ResizeMethod.Squish),
                     batch_tfms=[*data.augmentations(cfg, stage.size), Normalize.from_stats(*STATS)])


def our_datablock(cfg: Config, stage: Stage, items: pd.DataFrame) -> DataBlock:
    """Ours: `data.load_image` decodes at the stage size; the same augmentation and normalisation."""
    return data.datablock(cfg, stage.size, sorted(items[cfg.label_col].unique()), STATS)


def cached_datablock(cfg: Config, stage: Stage, items: pd.DataFrame, cache: data.ImageCache) -> DataBlock:
    """Ours, reading the images `cache` holds (filled for the stage) instead of decoding them."""
    return data.datablock(cfg, stage.size, sorted(items[cfg.label_col].unique()), STATS, cache)


def images_per_second(dl, aug: bool, n_images: int) -> float:
    """Time `n_images` of the training loader, after the epoch's first batch."""
    if not aug: dl.after_batch = Pipeline([])  # stop where the GPU would take over
    batches = iter(dl)
    next(batches)
    n, t0 = 0, time.perf_counter()
    while n < n_images: n += len(next(batches)[0])
    if torch.cuda.is_available(): torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    del batches  # stops the workers
    return n / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="JPEGs in the sample")
    ap.add_argument("--workers", default="0,2", help="num_workers values, comma separated")
    ap.add_argument("--images", type=int, default=1024, help="images timed per loader figure")
    ap.add_argument("--aug-images", type=int, default=256, help="images timed per +aug figure")
    ap.add_argument("--rounds", type=int, default=3, help="timings per figure; the best is kept")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config.make(data=str(make_sample(Path(tmp) / "sample", n_train=args.n, n_test=1)))
        items = data.train_items(cfg, log=lambda *a: None)
        max_bs = max(s.micro_bs for s in STAGES)
        repeat = math.ceil((args.images + 2 * max_bs) / (len(items) * (1 - cfg.valid_pct)))
        items = pd.concat([items] * repeat, ignore_index=True)
        print(f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, "
              f"batch augmentation on {device}, load average {os.getloadavg()[0]:.1f}; "
              f"{len(items) // repeat} sample JPEGs 480x640 listed {repeat} times")
        names = ("stock", "ours", "cached")
        cols = " ".join(f"{n:>6}" for n in names) + f" {'cached/ours':>11}"
        print(f"{'':>9} {'':>7} {'':>3} {'fill':>6} | {'loader':^33} | {'+aug':^33}\n"
              f"{'stage hxw':>9} {'workers':>7} {'bs':>3} {'img/s':>6} | {cols} | {cols}   (img/s)")
        for stage in STAGES:
            cache, t0 = data.ImageCache(), time.perf_counter()
            if not cache.fill(cfg, data.decoded(cfg, stage.size), items.path, log=print):
                raise SystemExit(f"the sample's images at {stage.size} do not fit this machine's free memory")
            fill = len(cache.rows) / (time.perf_counter() - t0)  # decoded once each, on `threads` threads
            for workers in (int(w) for w in args.workers.split(",")):
                row = []
                for aug, n_images in ((False, args.images), (True, args.aug_images)):
                    best = dict.fromkeys(names, 0.0)
                    for _ in range(args.rounds):
                        for name, block in (("stock", stock_datablock(cfg, stage)),
                                            ("ours", our_datablock(cfg, stage, items)),
                                            ("cached", cached_datablock(cfg, stage, items, cache))):
                            dls = block.dataloaders(items, bs=stage.micro_bs, num_workers=workers,
                                                    device=device)
                            best[name] = max(best[name], images_per_second(dls.train, aug, n_images))
                    row.append(" ".join(f"{best[n]:>6.0f}" for n in names)
                               + f" {best['cached'] / best['ours']:>10.2f}x")
                h, w = stage.size
                print(f"{f'{h}x{w}':>9} {workers:>7} {stage.micro_bs:>3} {fill:>6.0f} | " + " | ".join(row),
                      flush=True)
        print(f"load average {os.getloadavg()[0]:.1f} at the end "
              f"(above {os.cpu_count()}, other work shared the cores)")


if __name__ == "__main__":
    main()
