"""A submission.csv that cannot be silently wrong: matched by image id, checked, written atomically.

A submission whose rows are in the wrong order scores zero without a word, so rows are placed by
id (never by sort order), in sample_submission's row order, and checked against it before writing.
"""
from pathlib import Path

import pandas as pd

from .atomic import atomic_write
from .errors import UserError


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write a CSV whole or not at all."""
    with atomic_write(path) as tmp: df.to_csv(tmp, index=False)
    return path


def check_ids(ids: list[str], sample: Path | None, id_col: str = "image_id") -> list[str]:
    """The submission's ids in row order: sample_submission's (which must list exactly `ids`), else `ids` sorted."""
    if sample is None or not sample.exists(): return sorted(ids)
    order = pd.read_csv(sample, dtype={id_col: str})
    if id_col not in order.columns:
        raise UserError(f"{sample} has no {id_col!r} column; its columns are {list(order.columns)}")
    rows = list(order[id_col])
    have = set(ids)
    missing, extra = [i for i in rows if i not in have], sorted(have - set(rows))
    if missing or extra or len(set(rows)) != len(rows):
        raise UserError(f"test images do not match {sample}: {len(missing)} ids missing (e.g. {missing[:3]}), "
                        f"{len(extra)} extra (e.g. {extra[:3]}), {len(rows) - len(set(rows))} repeated; "
                        "test_images/ and sample_submission.csv must list the same images")
    return rows


def make_submission(pred: dict[str, str], vocab: list[str], sample: Path | None,
                    id_col: str = "image_id", label_col: str = "label") -> pd.DataFrame:
    """Rows of sample_submission (or ids sorted when there is none) with the predicted label of each id."""
    ids = check_ids(list(pred), sample, id_col)
    sub = pd.DataFrame({id_col: ids, label_col: [pred[i] for i in ids]})
    unknown = set(sub[label_col]) - set(vocab)
    if unknown: raise UserError(f"labels {sorted(unknown)} are not in the training vocabulary")  # a bug, not user input
    return sub
