"""Pictures of a run: the stage schedule and the validation confusion matrix, as PNGs."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display inside a kernel or a tmux session
import matplotlib.pyplot as plt
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner

from .atomic import atomic_write


def _save(fig, path: Path) -> Path:
    with atomic_write(path) as tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_schedule(phases: list, n_stages: int, path: Path) -> Path:
    """One bar per epoch: its image height, labelled with batch x accumulation; frozen and weighted
    hatched."""
    fig, ax = plt.subplots(figsize=(max(4, len(phases) * 2.5), 3))
    epoch = 0
    for p in phases:
        if not p.epochs: continue
        what = "weighted" if p.weighted else \
            f"stage {p.stage + 1}/{n_stages}" + (", body frozen" if p.frozen else "")
        ax.bar(range(epoch, epoch + p.epochs), [p.size[0]] * p.epochs, color=f"C{p.stage}",
               hatch="//" if p.weighted else ".." if p.frozen else None,
               label=f"{what}: {p.size[0]}x{p.size[1]}, bs {p.micro_bs}x{p.accum}")
        epoch += p.epochs
    ax.set(xlabel="epoch", ylabel="image height (px)", title="training schedule")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_confusion(learn: Learner, path: Path) -> Path:
    """fastai's confusion matrix on the validation set."""
    interp = ClassificationInterpretation.from_learner(learn)
    n = len(learn.dls.vocab)
    interp.plot_confusion_matrix(figsize=(max(4, n * 0.6), max(4, n * 0.6)))
    return _save(plt.gcf(), path)
