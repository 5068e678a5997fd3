"""A submission.csv that cannot be silently wrong: matched by image id, checked, written atomically.

A submission whose rows are in the wrong order scores zero without a word, so rows are placed by
id (never by sort order), in sample_submission's row order, and checked against it before writing.
"""
import os
from pathlib import Path

import pandas as pd

from .errors import UserError


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write a CSV atomically: a temp file beside it, then rename."""
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def make_submission(pred: dict[str, str], vocab: list[str], sample: Path | None,
                    id_col: str = "image_id", label_col: str = "label") -> pd.DataFrame:
    """Rows of sample_submission (or ids sorted when there is none) with the predicted label of each id."""
    if sample is not None and sample.exists():
        order = pd.read_csv(sample, dtype={id_col: str})
        if id_col not in order.columns:
            raise UserError(f"{sample} has no {id_col!r} column; its columns are {list(order.columns)}")
        ids = list(order[id_col])
    else:
        ids = sorted(pred)
    missing = [i for i in ids if i not in pred]
    extra = sorted(set(pred) - set(ids))
    if missing or extra or len(set(ids)) != len(ids):
        raise UserError(f"predictions do not match {sample}: {len(missing)} ids missing (e.g. {missing[:3]}), "
                        f"{len(extra)} extra (e.g. {extra[:3]}), {len(ids) - len(set(ids))} repeated; "
                        "test_images/ and sample_submission.csv must list the same images")
    sub = pd.DataFrame({id_col: ids, label_col: [pred[i] for i in ids]})
    unknown = set(sub[label_col]) - set(vocab)
    if unknown: raise UserError(f"labels {sorted(unknown)} are not in the training vocabulary")  # a bug, not user input
    return sub
