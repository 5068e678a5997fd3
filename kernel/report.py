"""Pictures of a run: the stage schedule and the validation confusion matrix, as PNGs."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display inside a kernel or a tmux session
import matplotlib.pyplot as plt
from fastai.interpret import ClassificationInterpretation
from fastai.learner import Learner

from .atomic import atomic_write
from .config import Stage


def _save(fig, path: Path) -> Path:
    with atomic_write(path) as tmp: fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_schedule(plan: list[tuple[Stage, bool]], path: Path) -> Path:
    """One bar per epoch: its image height, labelled with batch x accumulation; weighted epochs hatched."""
    fig, ax = plt.subplots(figsize=(max(4, len(plan) * 2.5), 3))
    epoch = 0
    for i, (stage, weighted) in enumerate(plan):
        xs = range(epoch, epoch + stage.epochs)
        ax.bar(xs, [stage.size[0]] * stage.epochs, color=f"C{i}", hatch="//" if weighted else None,
               label=f"{stage.size[0]}x{stage.size[1]}, bs {stage.micro_bs}x{stage.accum}" + (", weighted" if weighted else ""))
        epoch += stage.epochs
    ax.set(xlabel="epoch", ylabel="image height (px)", title="training schedule")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def plot_confusion(learn: Learner, path: Path) -> Path:
    """fastai's confusion matrix on the validation set."""
    interp = ClassificationInterpretation.from_learner(learn)
    n = len(learn.dls.vocab)
    interp.plot_confusion_matrix(figsize=(max(4, n * 0.6), max(4, n * 0.6)))
    return _save(plt.gcf(), path)
