"""The run's pictures (kernel.report): history.png drawn from history.csv, every epoch, for one run and for an
ensemble's members."""
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from fastai.callback.core import Callback

from kernel import Config, report
from kernel.sample import make_sample
from kernel.train import run

pytestmark = pytest.mark.kernel  # runs inside the notebook: also tested on Kaggle's versions (tests/run)

PNG = b"\x89PNG\r\n\x1a\n"


def history(n_frozen: int = 1, offset: float = 0.0) -> pd.DataFrame:
    """A history.csv as train.py writes it: stage 1 (64x48, its first epoch frozen) for 3 epochs, stage 2
    (96x72) for 2, then 1 weighted epoch."""
    rows = [(0, 0, "64x48", True, False), (0, 1, "64x48", False, False), (0, 2, "64x48", False, False),
            (1, 0, "96x72", False, False), (1, 1, "96x72", False, False), (2, 0, "96x72", False, True)]
    h = pd.DataFrame(rows, columns=["stage", "epoch", "size", "frozen", "weighted"])
    h["frozen"] = [i < n_frozen for i in range(len(h))]
    h["stage_epochs"] = [3, 3, 3, 2, 2, 1]
    h["train_loss"] = np.linspace(2.2, 0.4, len(h)) + offset
    h["valid_loss"] = [2.0, 1.5, 1.1, 1.3, 0.9, 0.8]
    h["error_rate"] = [0.8, 0.5, 0.4, 0.45, 0.3, 0.28]
    h["lr"] = [1e-3, 4e-3, 2e-3, 1e-3, 1e-4, 2e-5]
    h["seconds"] = 3.0
    return h


def lines(fig) -> dict:
    """{label: (axes, ydata)} of every labelled line in the figure."""
    return {l.get_label(): (ax, list(l.get_ydata())) for ax in fig.axes for l in ax.lines
            if not l.get_label().startswith("_")}


def test_history_draws_losses_error_rate_and_the_learning_rate_with_stages_and_frozen_epochs_marked():
    h = history()
    fig = report.draw_history({"": h})
    drawn = lines(fig)
    assert drawn["train loss"][1] == list(h.train_loss) and drawn["valid loss"][1] == list(h.valid_loss)
    assert drawn["error rate"][1] == list(h.error_rate)
    # the learning rate on a second y axis of the loss panel (its own scale), not the loss's nor the error's
    lr_ax = drawn["learning rate"][0]
    assert drawn["learning rate"][1] == list(h.lr)
    assert lr_ax not in (drawn["valid loss"][0], drawn["error rate"][0])
    assert lr_ax.get_shared_x_axes().joined(lr_ax, drawn["valid loss"][0])
    # a vertical line where each stage (and the weighted epochs) begins: epochs 1, 4 and 6
    loss_ax = drawn["valid loss"][0]
    starts = sorted({l.get_xdata()[0] for l in loss_ax.lines if l.get_label().startswith("_")
                     and l.get_xdata()[0] == l.get_xdata()[-1]})
    assert starts == [0.5, 3.5, 5.5]
    texts = [t.get_text() for t in loss_ax.texts]
    assert texts == ["stage 1\n64x48", "stage 2\n96x72", "weighted\n96x72"]
    # the frozen epoch (1) and the weighted one (6) shaded, each its own colour; nothing else
    spans = sorted((p.get_x() + p.get_width() / 2, p.get_facecolor()[:3]) for p in loss_ax.patches)
    assert [x for x, _ in spans] == [1, 6] and spans[0][1] != spans[1][1]
    plt.close(fig)


def test_a_history_without_a_validation_set_draws_no_empty_error_legend(recwarn):
    # valid_pct 0: train.py writes no valid_loss and no error_rate; the stage lines are still on the error
    # panel, and matplotlib warns about a legend of nothing
    h = history().drop(columns=["valid_loss", "error_rate"])
    fig = report.draw_history({"": h})
    loss_ax, err_ax = fig.axes[0], fig.axes[1]
    assert err_ax.get_legend() is None and loss_ax.get_legend() is not None
    assert not [w for w in recwarn if "legend" in str(w.message)]
    plt.close(fig)


def test_an_ensembles_history_has_one_line_per_member(tmp_path):
    for name, offset in (("a", 0.0), ("b", 0.3)):
        (tmp_path / "members" / name).mkdir(parents=True)
        history(offset=offset).to_csv(tmp_path / "members" / name / "history.csv", index=False)
    assert report.plot_history(tmp_path) == tmp_path / "history.png"
    both = (tmp_path / "history.png").read_bytes()
    assert both[:8] == PNG
    # the file drawn holds b's lines: without them it differs
    (tmp_path / "members" / "b" / "history.csv").unlink()
    report.plot_history(tmp_path)
    assert (tmp_path / "history.png").read_bytes() != both
    drawn = lines(report.draw_history({"a": history(), "b": history(offset=0.3)}))
    assert {"a valid loss", "b valid loss", "a train loss", "b train loss", "a learning rate",
            "b learning rate", "a error rate", "b error rate"} <= set(drawn)
    assert drawn["b train loss"][1] == list(history(offset=0.3).train_loss)
    plt.close("all")


class Die(Callback):
    """Raises after the second epoch's end (after the kernel's EpochEnd), as a run killed there would stop."""
    order = 100

    def __init__(self, out): self.epochs, self.out, self.pngs = 0, out, []

    def after_epoch(self):
        if any(type(c).__name__ == "EpochEnd" for c in self.learn.cbs):
            self.epochs += 1
            self.pngs.append((self.out / "history.png").read_bytes())  # as this epoch left it
            if self.epochs == 2: raise RuntimeError("killed")


def test_a_run_that_dies_leaves_history_png_of_its_epochs_and_the_learning_rate_it_used(tmp_path):
    data = make_sample(tmp_path / "small", n_train=60, n_test=12, seed=1)
    out = tmp_path / "out"
    cfg = Config.make("cpu-scratch", data=str(data), out=str(out), stages="32x24:2:8:1,32x24:2:8:1", tta=0)
    lrs = []  # the head's learning rate of every training batch, as fastai's optimiser had it

    class Look(Callback):
        order = 100

        def after_batch(self):
            if self.training and any(type(c).__name__ == "EpochEnd" for c in self.learn.cbs):
                lrs.append((self.epoch, self.opt.hypers[-1]["lr"]))
    die = Die(out)
    with pytest.raises(RuntimeError, match="killed"):
        run(cfg, cbs=[Look(), die], log=lambda *_: None)
    h = pd.read_csv(out / "history.csv")
    assert len(h) == 2 and (out / "history.png").read_bytes()[:8] == PNG
    assert die.pngs[0][:8] == PNG and die.pngs[0] != die.pngs[1]  # redrawn at every epoch
    last = {e: lr for e, lr in lrs}  # each epoch's last batch
    assert all(math.isclose(a, b, rel_tol=1e-9) for a, b in zip(h.lr, [last[0], last[1]]))
    assert h.lr[0] != h.lr[1]
