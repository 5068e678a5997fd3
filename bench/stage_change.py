"""What a stage change does to the valid loss: one one-cycle over the run (the kit) against a one-cycle
restarted at every stage (the baseline, fastai's `fit_one_cycle` per stage), across seeds, in the same run.

    python bench/stage_change.py [--seeds 1,2,3] [--preset cpu-scratch] [--field value ...]

For each seed it trains the preset on the generated sample twice, the same in all but the learning-rate
schedule, and prints, for each stage change, the valid loss of the first epoch at the new size over that of
the last epoch before it (above 1: the change undid some of what was learnt), and the test accuracy. One
run's ratio is noisy (the valid loss of a single epoch at a high rate jumps about): read it across seeds.
Not a CI test; the figures depend on the machine only through time, not through what is printed.
"""
import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pandas as pd
from fastai.callback.core import Callback

from kernel import Config
from kernel.config import given, options
from kernel.sample import accuracy, make_sample
from kernel.train import run


class PerStageCycle(Callback):
    """The baseline: each stage's epochs laid over a one-cycle of their own (warm-up included), as a
    `fit_one_cycle` per stage would, instead of one cycle over the run. Set on the plan before the fit."""
    order = -25  # before the Schedule reads the plan

    def before_fit(self):
        schedule = next((c for c in self.learn.cbs if type(c).__name__ == "Schedule"), None)
        if schedule is None: return  # prediction's learner
        epochs = schedule.run.epochs
        for stage in {e.stage for e in epochs}:
            mine = [e for e in epochs if e.stage == stage and not e.frozen]
            for k, e in enumerate(mine): e.start, e.step = k / len(mine), 1 / len(mine)


def ratios(history: pd.DataFrame) -> list[float]:
    """Valid loss of each new stage's first epoch over the last epoch's before it."""
    h = history.reset_index(drop=True)
    return [h.valid_loss[i] / h.valid_loss[i - 1] for i in range(1, len(h)) if h.stage[i] != h.stage[i - 1]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="1,2,3")
    options(p, skip=("data", "out", "seed", "preset"), preset=False)
    p.add_argument("--preset", default="cpu-scratch")
    args = p.parse_args()
    overrides = given(args, skip=("data", "out", "seed"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="pkk-stage-change-") as tmp:
        data = make_sample(Path(tmp) / "sample")
        for seed in map(int, args.seeds.split(",")):
            row = {"seed": seed}
            for name, cbs in (("kit", []), ("restart", [PerStageCycle()])):
                out = Path(tmp) / f"{name}-{seed}"
                cfg = Config.make(args.preset, data=str(data), out=str(out), seed=seed, **overrides)
                path = run(cfg, cbs=cbs, log=lambda *_: None)
                r = ratios(pd.read_csv(out / "history.csv"))
                row[f"{name} ratio"] = " ".join(f"{x:.2f}" for x in r)
                row[f"{name} acc"] = round(accuracy(path, data / "test_answers.csv"), 3)
            rows.append(row)
            print(pd.DataFrame(rows).to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
