"""Compare the from-scratch CPU preset with stock fastai in the same time, on real images too.

    python bench/cpu_preset.py [--sets sample,digits,textures,scenes] [--seeds 1] [--field value ...]

For each set — the generated sample (kernel.sample, 1,000 train images) and three real sets that
installed packages ship (bench/realsets.py: digit scans, photo textures, upright scenes), all in Paddy's
layout and imbalance — it runs `kernel.train` with `--preset cpu-scratch` (plus the set's augmentation, as
a user would choose it, and any `--field value` given), then fastai's stock recipe: `vision_learner(resnet18,
pretrained=False)`, `Resize` and `aug_transforms` with the same augmentation, `fit_one_cycle` at 64x48
(fastai's "64 px"), bs 32, for the fewest epochs whose projected run (timed on a first epoch and a
prediction, thrown away) is at least the kit's whole wall time (data checks, training, TTA, submission),
plus one: one timed epoch undershoots when the load changes, and stock must not get less time than the
kit. It prints both test accuracies, their ratio, and stock's time as a share of the kit's. Not a CI test:
the figures depend on the machine (both sides run in the same process, one after the other).
"""
import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

# One thread for both sides (as bench/finetune.py): on a CPU shared with other jobs, two OpenMP threads that
# wait on each other run many times slower than one.
os.environ["OMP_NUM_THREADS"] = "1"
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
import pandas as pd
from fastai.vision.all import error_rate, resnet18, set_seed, vision_learner

import realsets
from stock import loaders as stock_dls
from kernel import Config
from kernel.config import given, options
from kernel.sample import accuracy, make_sample
from kernel.train import run

STOCK_SIZE, STOCK_BS, STOCK_LR = (64, 48), 32, 3e-3
SAMPLE_AUG = {}  # the generated shapes have no orientation that matters: fastai's defaults


def stock(data: Path, aug: dict, epochs: int | None = None, seconds: float | None = None,
          seed: int = 42) -> tuple[float, int, float]:
    """fastai's stock recipe on `data`: (test accuracy, epochs, wall seconds). With `seconds`, the fewest
    epochs whose run takes at least that, timed on a first epoch and a prediction (a model thrown away)."""
    t0 = time.time()
    dls = stock_dls(data, {"min_scale": 1.0, **aug}, item=STOCK_SIZE, size=STOCK_SIZE, bs=STOCK_BS,
                    seed=seed)
    answers = pd.read_csv(data / "test_answers.csv", dtype={"image_id": str})

    def fit(n: int):
        set_seed(seed)
        learn = vision_learner(dls, resnet18, pretrained=False, metrics=error_rate)
        with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(n, STOCK_LR)
        return learn

    def predict(learn):
        with learn.no_bar():
            test = dls.test_dl([str(data / "test_images" / i) for i in answers.image_id])
            return learn.get_preds(dl=test)[0]
    if epochs is None:  # time one epoch and the prediction: stock gets at least the kit's whole wall time
        t1 = time.time()
        learn = fit(1)
        t2 = time.time()
        predict(learn)
        epochs = max(1, math.ceil((seconds - (t1 - t0) - (time.time() - t2)) / (t2 - t1))) + 1
        t0 = time.time()
        dls = stock_dls(data, {"min_scale": 1.0, **aug}, item=STOCK_SIZE, size=STOCK_SIZE, bs=STOCK_BS,
                        seed=seed)  # timed again, as the kit's own loaders
    learn = fit(epochs)
    probs = predict(learn)
    acc = float((np.array(dls.vocab)[probs.argmax(1).numpy()] == answers.label.to_numpy()).mean())
    return acc, epochs, time.time() - t0


def kit(data: Path, out: Path, aug: dict, overrides: dict, seed: int) -> tuple[float, float, Config]:
    """The kit's CPU preset on `data`: (test accuracy, wall seconds, the config it ran)."""
    cfg = Config.make("cpu-scratch", data=str(data), out=str(out), seed=seed, **{**aug, **overrides})
    t0 = time.time()
    path = run(cfg, log=lambda *_: None)
    return accuracy(path, data / "test_answers.csv"), time.time() - t0, cfg


def main(argv: list[str]) -> None:
    p = options(argparse.ArgumentParser(description=__doc__.splitlines()[0]), skip=("data", "out"),
                preset=False)
    p.add_argument("--sets", default="sample,digits,textures,scenes")
    p.add_argument("--seeds", default="1", help="seeds to run, comma separated: each gives a row per set")
    p.add_argument("--n", type=int, default=1000, help="train images of the generated sample")
    args = p.parse_args(argv)
    overrides = given(args, skip=("data", "out"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets.split(","):
            data = Path(tmp) / name
            if name == "sample":
                make_sample(data, n_train=args.n, n_test=args.n // 3)
                aug = SAMPLE_AUG
            else:
                realsets.SETS[name](data)
                aug = getattr(realsets, f"{name.upper()}_AUG")
            for seed in map(int, args.seeds.split(",")):
                ours, secs, cfg = kit(data, Path(tmp) / f"{name}-out-{seed}", aug, overrides, seed)
                theirs, epochs, stock_secs = stock(data, aug, seconds=secs, seed=seed)
                rows.append((name, seed, ours, secs, theirs, epochs, stock_secs))
                print(f"{name} seed {seed}: kit {ours:.3f} in {secs:.0f} s; stock {theirs:.3f} "
                      f"({epochs} epochs, {stock_secs:.0f} s)", flush=True)
    print(f"\nkit: --preset cpu-scratch ({cfg.arch}, stages {','.join(map(str, cfg.stages))}, lr {cfg.lr}"
          + (f", {overrides}" if overrides else "") + f"); stock: resnet18 from scratch, "
          f"{STOCK_SIZE[0]}x{STOCK_SIZE[1]}, bs {STOCK_BS}, fit_one_cycle lr {STOCK_LR}; "
          "the same augmentation")
    print(f"{'set':<9} {'seed':>4} {'kit acc':>8} {'kit s':>6} {'stock acc':>10} {'epochs':>6} "
          f"{'stock s':>8} {'ratio':>6} {'time':>5}")
    for name, seed, ours, secs, theirs, epochs, stock_secs in rows:
        print(f"{name:<9} {seed:>4} {ours:>8.3f} {secs:>6.0f} {theirs:>10.3f} {epochs:>6} {stock_secs:>8.0f} "
              f"{ours / max(theirs, 1e-9):>6.2f} {stock_secs / secs:>5.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
