"""A submission.csv that cannot be silently wrong: matched by image id, checked, written atomically.

A submission whose rows are in the wrong order scores zero without a word, so rows are placed by
id (never by sort order), in sample_submission's row order, and checked against it before writing.
`average_outputs` is the fan-in of an ensemble split over sessions: the laptop's (kit/submit.py) and the dry
run's. Multi-label (kernel/layout.py): each label has its own probability, and an image gets those at or above
a threshold chosen on the validation split (`choose_threshold`), written separated by spaces.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_write
from .errors import UserError


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Write a CSV whole or not at all."""
    with atomic_write(path) as tmp: df.to_csv(tmp, index=False)
    return path


def check_ids(ids: list[str], sample: Path | None, id_col: str = "image_id") -> list[str]:
    """The submission's ids in row order: sample_submission's (which must list exactly `ids`), else `ids`
    sorted."""
    if sample is None or not sample.exists(): return sorted(ids)
    order = pd.read_csv(sample, dtype={id_col: str})
    if id_col not in order.columns:
        raise UserError(f"{sample} has no {id_col!r} column; its columns are {list(order.columns)}")
    rows = list(order[id_col])
    have = set(ids)
    missing, extra = [i for i in rows if i not in have], sorted(have - set(rows))
    if missing or extra or len(set(rows)) != len(rows):
        raise UserError(f"test images do not match {sample}: {len(missing)} ids missing "
                        f"(e.g. {missing[:3]}), {len(extra)} extra (e.g. {extra[:3]}), "
                        f"{len(rows) - len(set(rows))} repeated; "
                        "test_images/ and sample_submission.csv must list the same images")
    return rows


def make_submission(pred: dict[str, str], vocab: list[str], sample: Path | None,
                    id_col: str = "image_id", label_col: str = "label", *,
                    multilabel: bool = False) -> pd.DataFrame:
    """Rows of sample_submission (or ids sorted when there is none) with the predicted label of each id
    (`multilabel`: labels separated by spaces; else one class, whose name may hold spaces)."""
    ids = check_ids(list(pred), sample, id_col)
    sub = pd.DataFrame({id_col: ids, label_col: [pred[i] for i in ids]})
    given = {x for labels in sub[label_col] for x in (labels.split(" ") if multilabel else [labels])}
    unknown = given - set(vocab)
    if unknown:  # a bug, not user input
        raise UserError(f"labels {sorted(unknown)} are not in the training vocabulary")
    return sub


def average(frames: dict[str, pd.DataFrame], weights: dict[str, float],
            id_col: str = "image_id") -> pd.DataFrame:
    """The weighted mean of several models' class probabilities, per id, in the first frame's row order.

    Every frame must have the same classes and ids: a model trained on other classes is refused by name,
    since averaging its columns with the others' would mix different things.
    """
    names = list(frames)
    first = frames[names[0]]
    classes = [c for c in first.columns if c != id_col]
    for name in names[1:]:
        other = [c for c in frames[name].columns if c != id_col]
        if set(other) != set(classes):
            differ = sorted(set(other) ^ set(classes))[:3]
            raise UserError(f"{name} was trained on other classes than {names[0]} ({differ} differ); "
                            "leave it out, or retrain it on the same train.csv")
        if set(frames[name][id_col]) != set(first[id_col]):
            raise UserError(f"{name} predicted other test images than {names[0]}; "
                            "predict both on the same test_images/")
    stacked = np.stack([frames[n].set_index(id_col).loc[first[id_col], classes].to_numpy(dtype=float)
                        for n in names])
    w = np.array([weights.get(n, 1.0) for n in names], dtype=float)
    mean = np.tensordot(w / w.sum(), stacked, axes=1)
    return pd.concat([first[[id_col]].reset_index(drop=True), pd.DataFrame(mean, columns=classes)], axis=1)


def chosen(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Multi-label: which labels each row gets, those of probability >= `threshold`, else (none passes) its
    most probable one: every image gets at least one label, as every image of the training set has."""
    pick = probs >= threshold
    pick[np.arange(len(probs)), probs.argmax(1)] |= ~pick.any(1)
    return pick


def f1_samples(pick: np.ndarray, truth: np.ndarray) -> float:
    """The mean over rows of the F1-score of each row's labels against the true ones (sklearn's
    f1_score(average="samples"), Plant Pathology 2021's metric), from boolean (rows, labels) arrays."""
    both, sizes = (pick & truth).sum(1), pick.sum(1) + truth.sum(1)
    return float(np.mean(2 * both / np.maximum(sizes, 1)))


THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def choose_threshold(probs: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(the threshold of THRESHOLDS whose `chosen` labels score the best `f1_samples` against `truth`, that
    score); ties go to the one nearest 0.5 (a small validation split scores many alike)."""
    scores = {float(t): f1_samples(chosen(probs, t), truth) for t in THRESHOLDS}
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    return best, scores[best]


def write_submission(probs: pd.DataFrame, sample: Path | None, id_col: str, label_col: str,
                     path: Path, threshold: float | None = None) -> Path:
    """submission.csv from class probabilities, in sample_submission's order: each id's most probable
    class, or with a `threshold` (multi-label) its `chosen` labels, sorted and separated by spaces."""
    vocab = [c for c in probs.columns if c != id_col]
    p = probs[vocab].to_numpy(dtype=float)
    if threshold is None: labels = np.array(vocab)[p.argmax(1)]
    else: labels = [" ".join(sorted(np.array(vocab)[row])) for row in chosen(p, threshold)]
    sub = make_submission(dict(zip(probs[id_col], labels)), vocab, sample, id_col, label_col,
                          multilabel=threshold is not None)
    return write_csv(sub, path)


def average_outputs(plan: list[dict], folders: dict[str, Path], tokens: dict[str, str | None], dest: Path,
                    names: dict[str, str] | None = None) -> tuple[Path, list[str]]:
    """DEST/submission.csv (and DEST/probs.csv) from the sessions' outputs in `folders` ({folder: where}), each
    first checked to be the run push started (its manifest's token, the build's fingerprint): every member's
    probabilities averaged with its weight (as one session averages its own members), rows in a session's
    submission.csv order; (its path, the members missing). `names`: how to call each session's run."""
    from . import manifest
    for s in plan:
        run = (names or {}).get(s["folder"], folders[s["folder"]])
        manifest.check(folders[s["folder"]], tokens[s["folder"]],
                       f"the output of session {s['session']} ({run})",
                       f"rerun that session with `python build.py push --session {s['session']}`",
                       s["fingerprint"])
    first = next((folders[s["folder"]] / "submission.csv" for s in plan
                  if (folders[s["folder"]] / "submission.csv").is_file()), None)
    if first is None:
        raise UserError("no session wrote its submission.csv; read the logs (`python build.py status`), fix, "
                        "and push again")
    written = pd.read_csv(first, dtype=str, keep_default_na=False)
    id_col, label_col = written.columns[:2]
    metas = [folders[s["folder"]] / "members" / n / "model.json" for s in plan for n in s["names"]]
    if any(json.loads(m.read_text()).get("multilabel") for m in metas if m.is_file()):
        raise UserError("a multi-label run's sessions cannot be averaged from their probabilities here (the "
                        "threshold lives in the models); submit through the inference kernel: submit --infer")
    frames, weights = {}, {}
    for s in plan:
        where = folders[s["folder"]]
        weights.update(s["weights"])  # as built: a session that died before its ensemble.json still counts
        for name in s["names"]:
            if (where / "members" / name / "probs.csv").is_file():
                frames[name] = pd.read_csv(where / "members" / name / "probs.csv", dtype={id_col: str})
    if not frames:
        raise UserError("no member wrote its probs.csv; read the logs (`python build.py status`), fix, and push "
                        "again")
    missing = [n for s in plan for n in s["names"] if n not in frames]
    probs = average(frames, {n: float(weights[n]) for n in frames}, id_col)
    write_csv(probs, dest / "probs.csv")
    return write_submission(probs, first, id_col, label_col, dest / "submission.csv"), missing
