"""Pictures of a run, as PNGs: the learning curves (history.png) and the validation confusion matrix."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display inside a kernel or a tmux session
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner

from .atomic import atomic_write


def _save(fig, path: Path) -> Path:
    with atomic_write(path) as tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_history(histories: dict[str, pd.DataFrame]):
    """The learning curves of one run ({"": history}) or of an ensemble's members ({name: history}).

    Top: train (dashed) and valid (solid) loss per epoch, and the learning rate (dotted, right axis, the
    head's rate at the epoch's end). Bottom: the valid error rate. One colour per member. Epochs are
    counted over the whole run; a new stage is a vertical line labelled with its size, frozen epochs (the
    head alone) are shaded grey, weighted epochs shaded orange (from the first member's history: members
    share the schedule unless they change it).
    """
    fig, (loss, err) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                   gridspec_kw={"height_ratios": (3, 2)})
    lr = loss.twinx()
    for i, (name, h) in enumerate(histories.items()):
        x, c, who = np.arange(1, len(h) + 1), f"C{i}", f"{name} " if name else ""
        if "train_loss" in h: loss.plot(x, h.train_loss, "--", color=c, label=f"{who}train loss")
        if "valid_loss" in h: loss.plot(x, h.valid_loss, "-", color=c, marker=".", label=f"{who}valid loss")
        if "error_rate" in h: err.plot(x, h.error_rate, "-", color=c, marker=".", label=f"{who}error rate")
        if "accuracy_multi" in h:  # multi-label: the share of (image, label) pairs wrong at 0.5
            err.plot(x, 1 - h.accuracy_multi, "-", color=c, marker=".", label=f"{who}error rate per label")
        if "lr" in h: lr.plot(x, h.lr, ":", color=c, label=f"{who}learning rate")
    h = next(iter(histories.values()))
    for e, row in enumerate(h.itertuples(), start=1):
        shade = "grey" if row.frozen else "orange" if row.weighted else None
        for ax in (loss, err):
            if shade: ax.axvspan(e - 0.5, e + 0.5, color=shade, alpha=0.15, lw=0)
        new = e == 1 or (row.stage, row.weighted) != (h.stage.iloc[e - 2], h.weighted.iloc[e - 2])
        if new:
            for ax in (loss, err): ax.axvline(e - 0.5, color="k", lw=0.8, alpha=0.5)
            what = "weighted" if row.weighted else f"stage {row.stage + 1}"
            loss.annotate(f"{what}\n{row.size}", (e - 0.5, 1), xycoords=("data", "axes fraction"),
                          xytext=(3, -3), textcoords="offset points", va="top", fontsize=8)
    loss.set(ylabel="loss", title="training history" + (" (grey: body frozen, orange: weighted)"
                                                         if h.frozen.any() or h.weighted.any() else ""))
    lr.set_ylabel("learning rate")
    lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
    err.set(xlabel="epoch", ylabel="error rate")
    handles = [a.get_legend_handles_labels() for a in (loss, lr)]
    loss.legend(handles[0][0] + handles[1][0], handles[0][1] + handles[1][1], fontsize=7, loc="lower left")
    # Stage lines are on `err` too; with no validation set (valid_pct 0) nothing there has a label.
    if err.get_legend_handles_labels()[0]: err.legend(fontsize=7, loc="upper right")
    return fig


def plot_history(out: Path, log=print) -> Path | None:
    """Draw `out/history.png` from `out/history.csv` (one run), or, when `out` holds an ensemble's members,
    from each `out/members/*/history.csv`, one line per member. Called after every epoch, so a run that
    dies leaves the picture of how far it got; a picture is not worth the run, so a failure is a warning."""
    try:
        if (out / "history.csv").is_file(): histories = {"": pd.read_csv(out / "history.csv")}
        else: histories = {p.parent.name: pd.read_csv(p) for p in sorted(out.glob("members/*/history.csv"))}
        histories = {k: h for k, h in histories.items() if len(h)}
        if not histories: return None
        return _save(draw_history(histories), out / "history.png")
    except Exception as e:
        log(f"warning: could not draw {out / 'history.png'} ({type(e).__name__}: {e})")
        return None


def plot_confusion(learn: Learner, path: Path) -> Path:
    """fastai's confusion matrix on the validation set."""
    interp = ClassificationInterpretation.from_learner(learn)
    n = len(learn.dls.vocab)
    interp.plot_confusion_matrix(figsize=(max(4, n * 0.6), max(4, n * 0.6)))
    return _save(plt.gcf(), path)
