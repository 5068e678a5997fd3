"""Where a competition's files are, read off the folder Kaggle gives, with no flag in the common cases.

Kaggle's image competitions differ in small ways, and a kernel that guesses wrong fails after the hours are
spent (in a code competition, on the hidden rerun). What is looked for, in order:

    train.csv                          the id and target columns: --id_col / --label_col (image_id, label)
                                       if train.csv has them, else sample_submission.csv's header
    train_images/ or train/            images in class folders (<label>/<id>) or flat (<id>), found on disk
    test_images/ or test/              the test images, read when the kernel runs (the hidden set in a rerun)
    sample_submission.csv or test.csv  the test ids and the submission's row order
    ids                                with or without the file extension (Cassava's 1000015157.jpg, APTOS's
                                       000c1434d8d7 for 000c1434d8d7.png): the extension found on disk

    labels                             multi-label when some are several separated by spaces, one of which
                                       is a row's whole label elsewhere (Plant Pathology 2021's `scab
                                       frog_eye_leaf_spot` beside `scab`): a class named `Early blight` stays
                                       one class

Paddy Doctor: class folders, ids with extension. Cassava: flat, integer labels, ids with extension. APTOS 2019:
flat, ids without extension, test.csv. Plant Pathology 2021: flat, labels separated by spaces (multi-label).
Labels are read as text and written back the same way, so integer labels stay integers.
"""
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from .config import Config
from .errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
TRAIN_DIRS, TEST_DIRS, ID_FILES = ("train_images", "train"), ("test_images", "test"), \
    ("sample_submission.csv", "test.csv")


@dataclass(frozen=True)
class Layout:
    data: Path
    id_col: str              # train.csv's (and the submission's) image id column
    label_col: str           # train.csv's (and the submission's) target column
    train_dir: Path
    folders: bool            # train images at train_dir/<label>/<id>, else train_dir/<id>
    suffix: str              # appended to an id to name its file: "" when the ids carry their extension
    test_dir: Path
    ids: Path | None         # sample_submission.csv or test.csv: the test ids in the submission's order
    multilabel: bool         # an image's target is a set of labels, written separated by spaces

    def train_path(self, image_id: str, label: str) -> Path:
        return (self.train_dir / label if self.folders else self.train_dir) / f"{image_id}{self.suffix}"

    def test_id(self, path: Path) -> str:
        """A test image's id as the competition writes it: its file name, less the extension if ids lack it."""
        return path.name[:-len(self.suffix)] if self.suffix and path.name.endswith(self.suffix) else path.name

    def describe(self, n_train: int, n_classes: int) -> str:
        where = f"{self.train_dir.name}/<{self.label_col}>/" if self.folders else f"{self.train_dir.name}/"
        classes = f"{n_classes} labels, multi-label" if self.multilabel else f"{n_classes} classes"
        return (f"data: {n_train} images in {where}<{self.id_col}>{self.suffix or ''} from train.csv "
                f"({self.id_col} -> {self.label_col}, {classes}); "
                f"test images in {self.test_dir.name}/, "
                f"ids and order from {self.ids.name if self.ids else 'the file names'}")


def resolved(cfg: Config) -> Config:
    """`cfg` with the id and target columns it will read (as set, else found): what the rest of the kernel
    and the exported model's config name them by."""
    where = read(cfg)[0]
    return replace(cfg, id_col=where.id_col, label_col=where.label_col)


def _first(data: Path, names: tuple[str, ...]) -> Path | None:
    return next((data / n for n in names if (data / n).exists()), None)


def _columns(cfg: Config, train: pd.DataFrame, ids: Path | None) -> tuple[str, str]:
    """The id and target columns: as set when train.csv has them (Paddy's are the defaults), else the first
    two of sample_submission.csv's header that train.csv has (APTOS: id_code, diagnosis)."""
    header = list(pd.read_csv(ids, nrows=0).columns) if ids is not None and ids.name != "test.csv" else []
    found = [c for c in header if c in train.columns]
    id_col = cfg.id_col if cfg.id_col in train.columns or not found else found[0]
    label_col = cfg.label_col if cfg.label_col in train.columns else \
        next((c for c in found if c != id_col), cfg.label_col)
    missing = [c for c in (id_col, label_col) if c not in train.columns]
    if missing:
        raise UserError(f"train.csv lacks column(s) {missing}; its columns are {list(train.columns)} "
                        "(set --id_col / --label_col)")
    return id_col, label_col


def multilabel(labels: pd.Series) -> bool:
    """Targets that are sets of labels separated by spaces: some row has several, one of them a whole label
    of its own elsewhere (labels that merely contain spaces, as `Early blight`, are single classes)."""
    single = set(labels[~labels.str.contains(" ")])
    return any(part in single for label in labels[labels.str.contains(" ")].unique() for part in label.split())


def _images(train_dir: Path, rows: list[tuple[str, str]]) -> tuple[bool, str] | None:
    """(class folders?, suffix) under which most of `rows` (id, label) have a file, or None if none do."""
    tried = [(folders, suffix) for folders in (True, False) for suffix in ("", *IMAGE_SUFFIXES)]
    def hits(folders: bool, suffix: str) -> int:
        folder = lambda label: train_dir / label if folders else train_dir
        return sum((folder(label) / f"{i}{suffix}").is_file() for i, label in rows)
    best = max(tried, key=lambda t: hits(*t))
    return best if hits(*best) else None


def read(cfg: Config) -> tuple[Layout, pd.DataFrame]:
    """The layout of `cfg.data` and train.csv as read (ids and labels as text). A folder that cannot be read
    is one line naming what was found and the option that fixes it."""
    data = Path(cfg.data)
    if not data.is_dir():
        raise UserError(f"data folder not found at {data}; pass --data DIR, the competition's folder")
    found = sorted(p.name + "/" * p.is_dir() for p in data.iterdir())[:12]
    csv = data / "train.csv"
    if not csv.is_file():
        raise UserError(f"no train.csv in {data} (it holds {found}); pass --data the competition's folder")
    train_dir, test_dir = _first(data, TRAIN_DIRS), _first(data, TEST_DIRS)
    for what, d, names in (("train", train_dir, TRAIN_DIRS), ("test", test_dir, TEST_DIRS)):
        if d is None or not d.is_dir():
            raise UserError(f"no {what} image folder ({' or '.join(n + '/' for n in names)}) in {data}; "
                            f"it holds {found}")
    try:
        train = pd.read_csv(csv, dtype=str, keep_default_na=False)
    except Exception as e:
        raise UserError(f"cannot read {csv} ({e}); it must be a CSV with a header row") from None
    ids = _first(data, ID_FILES)
    if ids is not None and ids.name == "sample_submission.csv":
        header = list(pd.read_csv(ids, nrows=0).columns)
        if len(header) > 2:
            raise UserError(f"{ids} has {len(header)} columns ({', '.join(header[:4])}, ...): a submission of "
                            "one column per class, which the kit does not write; it writes an id and a label")
    id_col, label_col = _columns(cfg, train, ids)
    empty = train.index[train[label_col].str.strip() == ""]
    if len(empty):
        raise UserError(f"{len(empty)} train.csv rows have no {label_col} (e.g. line {empty[0] + 2} of the "
                        "file); give each a label or remove it")
    rows = list(zip(train[id_col], train[label_col]))
    if not rows: raise UserError(f"{csv} has no rows; nothing to train on")
    how = _images(train_dir, rows[:50])
    if how is None:
        i, label = rows[0]
        raise UserError(f"train.csv's first images are not in {train_dir}/ (looked for {label}/{i} and {i}, "
                        f"with and without an extension); set --id_col to the column of image names")
    several = not how[0] and multilabel(train[label_col])  # in class folders an image has one label
    if several: train[label_col] = train[label_col].str.split().str.join(" ")  # "a  b " is a and b
    return Layout(data, id_col, label_col, train_dir, *how, test_dir, ids, several), train
