"""Peak GPU memory of each default stage, under a 16 GiB cap (Kaggle's P100/T4 have 16,280 MiB).

    python bench/memory.py [--steps 6] [--arch convnext_small.fb_in22k] [--field value ...]

Trains each stage of the Kaggle schedule for a few optimiser steps on a generated sample, with
`torch.cuda.set_per_process_memory_fraction` capping the card at 16 GiB, fp16 and the stage's
gradient accumulation exactly as `kernel.train` runs them. Prints peak memory per stage and whether
it fits. Needs a CUDA GPU; not a CI test.
"""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from fastai.callback.core import Callback, CancelFitException

from kernel.config import parse_args
from kernel.data import dataloaders, train_items
from kernel.sample import make_sample
from kernel.train import fit_stage, make_learner

CAP_GIB = 16280 / 1024 - 0.5  # Kaggle's P100/T4 report 16,280 MiB; the CUDA context takes ~0.5 GiB of it


class StopAfter(Callback):
    """End the fit after `n` training micro-batches."""
    def __init__(self, n: int): self.n = n
    def before_fit(self): self.seen = 0
    def after_batch(self):
        self.seen += self.training
        if self.seen >= self.n: raise CancelFitException


def main(argv: list[str]) -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing measured (run this on a GPU machine)")
        return
    cfg, extra = parse_args(argv, extra=("steps",))
    steps = int(extra.get("steps", 6))
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, CAP_GIB * 2**30 / total))
    print(f"{torch.cuda.get_device_name(0)}: {total / 2**30:.1f} GiB, capped at {CAP_GIB:.1f} GiB; arch {cfg.arch}")
    with tempfile.TemporaryDirectory() as tmp:
        n = max(s.bs for s in cfg.stages) * steps * 2  # enough that the steps fit in one epoch
        cfg.data = str(make_sample(Path(tmp) / "sample", n_train=n, n_test=10))
        items = train_items(cfg, log=lambda *_: None)
        print(f"{'stage':>10} {'micro-batch':>11} {'accum':>5} {'peak alloc GiB':>14} {'peak reserved GiB':>17} {'s/step':>7}  fits")
        for stage in cfg.stages:
            torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
            learn = make_learner(cfg, dataloaders(cfg, stage, items), log=lambda *_: None)
            t0 = time.time()
            try:  # the stage as kernel.train fits it (accumulation, fp16), cut short
                fit_stage(learn, cfg, Path(tmp), 0, stage, False, 0, cbs=[StopAfter(steps * stage.accum)])
                ok = True
            except torch.OutOfMemoryError:
                ok = False
            torch.cuda.synchronize()
            secs = (time.time() - t0) / steps
            alloc, reserved = torch.cuda.max_memory_allocated() / 2**30, torch.cuda.max_memory_reserved() / 2**30
            print(f"{stage.size[0]:>5}x{stage.size[1]:<4} {stage.micro_bs:>11} {stage.accum:>5} {alloc:>14.2f} {reserved:>17.2f} {secs:>7.2f}  {'yes' if ok and reserved <= CAP_GIB else 'NO (out of memory)'}")
            del learn


if __name__ == "__main__":
    main(sys.argv[1:])
