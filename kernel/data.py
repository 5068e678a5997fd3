"""The competition on disk (its layout: kernel/layout.py) -> checked items -> fastai DataLoaders for a stage."""
import random
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.vision.all import (CategoryBlock, ColReader, DataBlock, DataLoaders, IntToFloatTensor,
                               MultiCategoryBlock, Normalize, PILImage, RandomResizedCropGPU, RandomSplitter,
                               RandTransform, TensorImage, TransformBlock, aug_transforms)
from PIL import Image

from . import layout, weighted  # noqa: F401  (weighted gives DataBlock its robust weighted_dataloaders)
from .config import GIB, Config
from .errors import UserError
from .layout import IMAGE_SUFFIXES
from .submission import check_ids


def decodes(path: Path) -> str | None:
    """None if the image decodes, else the reason. Decodes at 1/8 scale (JPEG DCT), so it is cheap."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (im.width // 8, im.height // 8))
            im.load()
        return None
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def _drop_undecodable(df: pd.DataFrame, what: str, log=print) -> pd.DataFrame:
    bad = {p: why for p in df["path"] if (why := decodes(Path(p)))}
    fate = "left out of training" if what == "train" else "predicted from the class frequencies"
    for p, why in bad.items(): log(f"warning: {what} image {p} cannot be decoded ({why}); {fate}")
    return df[~df["path"].isin(bad)].reset_index(drop=True)


def train_items(cfg: Config, log=print) -> pd.DataFrame:
    """train.csv with a `path` column, every row checked to have a decodable image; the layout read
    (kernel/layout.py) is said in one line."""
    where, df = layout.read(cfg)
    df["path"] = [str(where.train_path(i, label)) for i, label in zip(df[where.id_col], df[where.label_col])]
    missing = [p for p in df["path"] if not Path(p).is_file()]
    if missing:
        raise UserError(f"{len(missing)} of {len(df)} train.csv rows have no image, e.g. {missing[0]}; "
                        f"the others are at {where.train_path('<id>', '<label>')}")
    classes = len(vocab(df[where.label_col], where.multilabel))
    if classes < 2:
        raise UserError(f"train.csv has fewer than 2 classes in {where.label_col!r}; nothing to classify")
    log(where.describe(len(df), classes))
    return _drop_undecodable(df, "train", log)


def vocab(labels: pd.Series, multilabel: bool) -> list[str]:
    """The classes, sorted: the labels, or (multi-label) the single labels the label sets are made of."""
    return sorted({x for s in labels for x in s.split(" ")} if multilabel else set(labels))


def test_items(cfg: Config, log=print, *, where: layout.Layout | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(decodable test images with `path` and id columns, ids of the images that do not decode), read from
    the test folder when called: in a code competition's rerun, the hidden set. `where`: the layout, if read."""
    where = where or layout.read(cfg)[0]
    paths = sorted(p for p in where.test_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise UserError(f"no images in {where.test_dir}; put the test images there")
    df = pd.DataFrame({where.id_col: [where.test_id(p) for p in paths], "path": [str(p) for p in paths]})
    good = _drop_undecodable(df, "test", log)
    return good, sorted(set(df[where.id_col]) - set(good[where.id_col]))


def checked_test(cfg: Config, log=print) -> tuple[pd.DataFrame, list[str], Path | None]:
    """`test_items` and the file of test ids (sample_submission.csv or test.csv: the submission's row
    order), checked against the test images now, not after hours of training."""
    where = layout.read(cfg)[0]
    test, undecodable = test_items(cfg, log, where=where)
    check_ids([*test[where.id_col], *undecodable], where.ids, where.id_col)
    return test, undecodable, where.ids


def fitted(path: str | Path, size: tuple[int, int], resize: str = "squish") -> Image.Image:
    """What `load_image` makes of the image at `path` before any random choice: decoded and scaled, for
    squish and pad to `size` (h, w) itself, for crop to cover it (aspect kept; `load_image` cuts it)."""
    h, w = size
    with Image.open(path) as im:
        want = scaled(im.size, size, resize)
        im.draft("RGB", want)
        im = im.convert("RGB")
    # Resized here rather than by fastai's `Resize`, which zero-pads (copies) every image it is given.
    if im.size != want: im = im.resize(want, Image.BILINEAR)
    if resize == "pad":
        canvas = Image.new("RGB", (w, h))
        canvas.paste(im, ((w - want[0]) // 2, (h - want[1]) // 2))
        im = canvas
    return im


def scaled(image: tuple[int, int], size: tuple[int, int], resize: str) -> tuple[int, int]:
    """The (w, h) an image of PIL size `image` (w, h) is scaled to for `size` (h, w) and `resize`."""
    (W, H), (h, w) = image, size
    scale = {"squish": None, "crop": max(w / W, h / H), "pad": min(w / W, h / H)}[resize]
    return (w, h) if scale is None else (max(1, round(W * scale)), max(1, round(H * scale)))


def corner(image: tuple[int, int], size: tuple[int, int], where: tuple[float, float]) -> tuple[int, int]:
    """(left, top) of the crop of `size` (h, w) out of an image of PIL size `image` (w, h), at `where`."""
    return round((image[0] - size[1]) * where[1]), round((image[1] - size[0]) * where[0])


def load_image(path: str | Path, size: tuple[int, int], resize: str = "squish",
               where: tuple[float, float] = (0.5, 0.5)) -> PILImage:
    """The image at `path` as RGB, fitted to `size` (h, w) as `resize` says, decoded no larger than needed.

    squish: stretched to `size`. crop: scaled (aspect kept) to cover `size`, then cut to it at `where`
    (fractions of the slack, top and left: (0.5, 0.5) is the centre). pad: scaled to fit inside `size`,
    centred on black. `draft` asks libjpeg to decode at the smallest DCT scale (1/1, 1/2, 1/4 or 1/8) that
    still covers the size wanted, so a 640x480 JPEG comes out 160x120 without the full image ever being
    decoded or resized: most of the CPU's work at the small stages. Other formats ignore `draft`.
    """
    im = fitted(path, size, resize)
    if resize == "crop":
        left, top = corner(im.size, size, where)
        im = im.crop((left, top, left + size[1], top + size[0]))
    return PILImage(im)


def free_memory() -> int | None:
    """Bytes of RAM this process may still take: Linux's MemAvailable (the page cache it can give back
    counted in), or less where a cgroup's limit (a container's) leaves less; None off Linux."""
    try: free = int(re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)[1])
    except (OSError, TypeError): return None
    free *= 1024
    cgroup = Path("/sys/fs/cgroup")
    for limit, used, reclaimable in (("memory.max", "memory.current", "inactive_file"),  # cgroup v2, v1:
                                     ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes",
                                      "total_inactive_file")):
        try:
            stat = (cgroup / limit).with_name("memory.stat").read_text()
            stat = dict(line.split() for line in stat.splitlines())
            free = min(free, int((cgroup / limit).read_text()) - int((cgroup / used).read_text())
                       + int(stat[reclaimable]))
        except (OSError, ValueError, KeyError): pass  # no such cgroup, or no limit ("max")
    return free


class ImageCache:
    """One stage's images decoded once and kept in RAM, in one uint8 buffer, rather than decoded every epoch.

    It holds what `fitted` makes of each image, the part of `LoadImage` that involves no random choice, so
    the loaders draw the same pictures (crops included) and the batch augmentation is as before. One stage
    at a time: a new size lets the last stage's images go before the free memory is read. `fill` keeps the
    images only when they fit the config's share of the free memory (`cache_share`), and says which in one
    line. `copy` and `deepcopy` share it; a pickled copy (an exported learner, a spawned worker) holds
    nothing and decodes (forked workers read the very buffer).
    """

    def __init__(self): self.clear()

    def clear(self) -> None:
        self.key, self.rows, self.spans, self.buffer = None, {}, [], None

    def __copy__(self) -> "ImageCache": return self
    def __deepcopy__(self, memo) -> "ImageCache": return self
    def __reduce__(self): return ImageCache, ()

    def get(self, path) -> np.ndarray | None:
        """The image kept for `path` (height x width x RGB, a view of the buffer: read it, do not change it),
        or None."""
        i = self.rows.get(str(path))
        if i is None: return None
        start, h, w = self.spans[i]
        return self.buffer[start:start + h * w * 3].reshape(h, w, 3)

    def fill(self, cfg: Config, size: tuple[int, int], paths, log=print) -> bool:
        """Keep the images at `paths`, fitted to `size` as `cfg.resize` says, if they fit `cfg.cache_share` of
        the free memory; whether they are kept. Images kept already (the same size and paths) stay."""
        paths = list(dict.fromkeys(map(str, paths)))  # an image listed twice is decoded once
        key = (tuple(size), cfg.resize, paths)
        if self.key == key: return True
        self.clear()
        cfg = cfg.shared()  # the share of the free memory, and the threads that decode
        every = f"images decoded every epoch at {size[0]}x{size[1]}"
        if not cfg.cache_share:
            log(f"{every}: cache_share 0")
            return False
        if cfg.resize == "crop":  # the covering size depends on each image's own (its header: no decode)
            def header(p: str) -> tuple[int, int]:
                with Image.open(p) as im: return scaled(im.size, size, "crop")
            with ThreadPoolExecutor(cfg.threads) as pool: shapes = [(h, w) for w, h in pool.map(header, paths)]
        else: shapes = [tuple(size)] * len(paths)
        lengths = [h * w * 3 for h, w in shapes]
        need, free = sum(lengths), free_memory()
        if free is None:
            log(f"{every}: this system does not say how much memory is free (no /proc/meminfo)")
            return False
        room = cfg.cache_share * free
        said = f"cache_share {cfg.cache_share:.2g} of {free / GIB:.1f} GiB free"
        if need > room:
            log(f"{every}: kept in RAM they would take {need / GIB:.2f} GiB, more than the {room / GIB:.2f} "
                f"GiB allowed ({said})")
            return False
        t0 = time.time()
        starts = np.cumsum([0, *lengths[:-1]])
        buffer = np.empty(need, np.uint8)

        def decode(i: int) -> None:
            image = np.asarray(fitted(paths[i], size, cfg.resize))
            buffer[starts[i]:starts[i] + lengths[i]] = image.reshape(-1)
        with ThreadPoolExecutor(cfg.threads) as pool:  # PIL lets go of the GIL while it decodes and resizes
            list(pool.map(decode, range(len(paths))))
        self.buffer, self.spans = buffer, [(int(s), h, w) for s, (h, w) in zip(starts, shapes)]
        self.rows, self.key = {p: i for i, p in enumerate(paths)}, key
        log(f"images decoded once for the stage at {size[0]}x{size[1]}, kept in RAM: {len(paths):,} images, "
            f"{need / GIB:.2f} GiB of the {room / GIB:.2f} GiB allowed ({said}), {time.time() - t0:.0f} s")
        return True


class LoadImage(RandTransform):
    """Path -> `load_image(path, size, resize)`; a crop is cut at random in training, at the centre in
    validation and prediction (fastai's `Resize` does the same). From `cache` where it holds the image: the
    same picture, without the decode. A class, not a `partial`, so that it pickles (spawned workers)."""
    split_idx = None  # training and validation alike (a RandTransform's default is training only)

    def __init__(self, size: tuple[int, int], resize: str = "squish", cache: ImageCache | None = None):
        super().__init__()
        self.size, self.resize, self.cache = size, resize, cache

    def before_call(self, b, split_idx: int | None) -> None:
        super().before_call(b, split_idx)
        self.where = (random.random(), random.random()) if split_idx == 0 else (0.5, 0.5)

    def encodes(self, path) -> PILImage | TensorImage:
        kept = None if self.cache is None else self.cache.get(path)
        if kept is None: return load_image(path, self.size, self.resize, self.where)
        if self.resize == "crop":
            (h, w), (left, top) = self.size, corner(kept.shape[1::-1], self.size, self.where)
            kept = kept[top:top + h, left:left + w]
        # what ToTensor makes of the PILImage: channels first, uint8 (a view: the batch is a stacked copy)
        return TensorImage(torch.from_numpy(kept).permute(2, 0, 1))


def decoded(cfg: Config, size: tuple[int, int]) -> tuple[int, int]:
    """The size images are decoded at for a stage of `size`: `presize` times it. The batch transforms
    resample them to `size` once, from the sharper picture: decoded at the stage size, the random crop would
    enlarge a part of it instead (real photos at 96x72, bench/finetune.py: scenes lost 8 points to that)."""
    return (round(size[0] * cfg.presize), round(size[1] * cfg.presize))


def augmentations(cfg: Config, size: tuple[int, int]) -> list:
    """Batch transforms (on the GPU): fastai's `aug_transforms` with the config's values, and a random crop
    keeping at least `min_scale` of the image, resampled to `size` (from a presized image: see `decoded`).

    Not `aug_transforms(min_scale=...)`: its crop is square, so at a portrait stage size it stretches a
    square to the stage's shape and, in validation and at test time, cuts a quarter off every image's
    height. This crop keeps the image's own shape, give or take 4/3, and takes all of it in validation.
    """
    h, w = size
    crop = [RandomResizedCropGPU(size, min_scale=cfg.min_scale, ratio=(0.75 * w / h, w / h / 0.75))]
    cropped = cfg.min_scale < 1 or decoded(cfg, size) != size  # the crop also brings a presized image down
    return aug_transforms(do_flip=cfg.flip, flip_vert=cfg.flip_vert, max_rotate=cfg.max_rotate,
                          min_zoom=cfg.min_zoom, max_zoom=cfg.max_zoom, max_warp=cfg.max_warp,
                          max_lighting=cfg.max_lighting, xtra_tfms=crop if cropped else None)


def datablock(cfg: Config, size: tuple[int, int], vocab: list[str], stats: tuple,
              cache: ImageCache | None = None, *, multilabel: bool = False) -> DataBlock:
    """Images decoded straight to `size` (or `presize` times it) on the CPU (`load_image`, fitted as
    `cfg.resize` says), augmented, brought to `size` and normalised in batches on the GPU. Normalisation is
    here, in every stage's pipeline, not left to `vision_learner`: it adds `Normalize` only to the loaders it
    is first given, so later stages and prediction would go without. Images `cache` holds are not decoded.
    Multi-label: targets are the labels separated by spaces, one-hot over `vocab`."""
    image = TransformBlock(type_tfms=LoadImage(decoded(cfg, size), cfg.resize, cache),
                           batch_tfms=IntToFloatTensor)
    target = MultiCategoryBlock(vocab=vocab) if multilabel else CategoryBlock(vocab=vocab)
    return DataBlock(blocks=(image, target), get_x=ColReader("path"),
                     get_y=ColReader(cfg.label_col, label_delim=" " if multilabel else None),
                     splitter=RandomSplitter(cfg.valid_pct, seed=cfg.seed),
                     batch_tfms=[*augmentations(cfg, size), Normalize.from_stats(*stats)])


def dataloaders(cfg: Config, size: tuple[int, int], bs: int, val_bs: int, items: pd.DataFrame,
                vocab: list[str], stats: tuple, wgts=None, *, cache: ImageCache | None = None,
                multilabel: bool = False, log=print) -> DataLoaders:
    """Loaders of micro-batches `bs` (validation and test: `val_bs`); with `wgts` (one per item) the training
    set is drawn by weight (multi-label: by label set). With a `cache`, the items' images are decoded into it
    once, if they fit (its `fill` says in a line), and read from it by every loader built with it until it
    fills at another size."""
    kept = cache is not None and cache.fill(cfg, decoded(cfg, size), items["path"], log)
    block = datablock(cfg, size, vocab, stats, cache if kept else None, multilabel=multilabel)
    kw = dict(bs=bs, val_bs=val_bs, num_workers=cfg.shared().num_workers)  # unless set: the cores
    return block.dataloaders(items, **kw) if wgts is None else block.weighted_dataloaders(items, wgts, **kw)
