"""Each stage's estimated peak GPU memory (kernel/memory.py) and, on a CUDA GPU, the measured one beside it.

    python bench/memory.py [--gib 15] [--steps 4] [--classes 10] [--arch NAME] [--stages S] [--field value]

Estimates (seconds on a CPU laptop): per stage of the config (the Kaggle default unless `--stages` is given),
the parts, the total against the capacity (`--gib`, default 15: a Kaggle T4), the smallest accumulation that
fits, and the largest validation/TTA batch at the last stage's size.

Measured (only with a CUDA GPU): the card is capped at the capacity (`set_per_process_memory_fraction`,
less the CUDA context, which the cap does not cover), then each stage is trained on a generated sample
as `kernel.train` trains it (its learner: fp16 with one GradScaler, the stage's accumulation): one
optimizer step to warm up (Adam's state, cuDNN's choices), then the peak statistics are reset and `--steps`
more run. Measured = peak reserved by torch's allocator + the CUDA context (device memory in use less what
torch reserved). The goal: measured / estimate within 15%. Not a CI test.
"""
import gc
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
from fastai.callback.core import Callback, CancelFitException

from kernel import data, memory, model
from kernel.config import Config, given, parser
from kernel.sample import make_sample
from kernel.callbacks import Accumulate
from kernel.train import make_learner

GiB = memory.GiB


class Steps(Callback):
    """Reset the peak statistics after `warm` training micro-batches; end the fit after `warm + n` of them."""
    def __init__(self, warm: int, n: int): self.warm, self.n = warm, n
    def before_fit(self): self.seen = 0
    def after_batch(self):
        if not self.training: return
        self.seen += 1
        if self.seen == self.warm: torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        if self.seen >= self.warm + self.n: raise CancelFitException


def context_bytes() -> int:
    """The CUDA context (and cuDNN's, cuBLAS's internals): device memory in use, less what torch reserved.

    Assumes the card is ours alone (Kaggle, a bench machine): `mem_get_info` sees every process."""
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


def measure(cfg: Config, stage, items, steps: int) -> dict:
    """Peak memory of `steps` optimizer steps of `stage`, as kernel.train runs them, after one to warm up."""
    gc.collect()  # the last stage's Learner and its callbacks refer to one another: its model is freed here
    torch.cuda.empty_cache()
    vocab = sorted(items[cfg.label_col].unique())
    net = model.create(cfg.arch, len(vocab), log=lambda *_: None)
    dls = data.dataloaders(cfg, stage.size, stage.micro_bs, stage.micro_bs, items, vocab, model.stats(net))
    learn = make_learner(cfg, dls, net, has_valid=True, lines=True)
    t0, ok = time.time(), True
    try:
        acc = Accumulate()
        acc.accum, acc.n_acc = stage.accum, stage.bs
        learn.fit(1, cfg.lr, cbs=[acc, Steps(stage.accum, steps * stage.accum)])
    except torch.OutOfMemoryError:
        ok = False
    torch.cuda.synchronize()
    out = dict(ok=ok, secs=(time.time() - t0) / (steps + 1), n_out=len(vocab),
               allocated=torch.cuda.max_memory_allocated(), reserved=torch.cuda.max_memory_reserved(),
               context=context_bytes())
    del learn, net
    return out


PARTS = [("weights", "weights"), ("grads", "grads"), ("optim", "optimizer"), ("activ", "activations"),
         ("works", "workspace"), ("alloc", "allocator"), ("ctx", "context")]


def main(argv: list[str]) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="optimizer steps measured per stage")
    p.add_argument("--gib", type=float, default=15, help="the GPU's memory (default 15: a Kaggle T4)")
    p.add_argument("--classes", type=int, default=10)
    args = p.parse_args(argv)
    cfg = Config.make(args.preset or "kaggle", **given(args))
    steps, n_out, capacity = args.steps, args.classes, int(args.gib * GiB)
    # `auto` accumulation: the smallest that fits, as kernel.train resolves it
    cfg.stages = tuple(replace(s, accum=s.accum
                               or memory.fit_accum(cfg.arch, n_out, s.size, s.bs, capacity) or 1)
                       for s in cfg.stages)
    gpu = torch.cuda.is_available()
    print(f"{cfg.arch}, {n_out} classes, capacity {capacity / GiB:.1f} GiB, fp16 (torch {torch.__version__})")
    t0 = time.time()
    model.meta_net(cfg.arch, n_out)
    print(f"meta model built in {time.time() - t0:.1f}s")

    measured = {}
    if gpu:
        torch.cuda.init()
        total = torch.cuda.get_device_properties(0).total_memory
        print(f"{torch.cuda.get_device_name(0)}: {total / GiB:.1f} GiB; "
              f"CUDA context after init {context_bytes() / GiB:.2f} GiB")
        with tempfile.TemporaryDirectory() as tmp:
            n = max(s.bs for s in cfg.stages) * (steps + 2) * 2  # all steps inside the first epoch
            cfg.data = str(make_sample(Path(tmp) / "sample", n_train=n, n_test=10))
            items = data.train_items(cfg, log=lambda *_: None)
            # The cap leaves out the context, which is known once a first step has loaded cuDNN and cuBLAS.
            measure(cfg, cfg.stages[0], items, 1)
            context = context_bytes()
            torch.cuda.set_per_process_memory_fraction(min(1.0, max(0.0, capacity - context) / total))
            print(f"capped at {(capacity - context) / GiB:.2f} GiB for torch, "
                  f"+ {context / GiB:.2f} GiB of CUDA context")
            for stage in cfg.stages:
                measured[stage] = m = measure(cfg, stage, items, steps)
                n_out = m["n_out"]
    else:
        print("no CUDA device: nothing measured, estimates only")

    head = f"{'stage':>16} {'micro':>5} |" + "".join(f"{name:>8}" for name, _ in PARTS)
    head += f" | {'total':>6} {'fits':>4} {'accum':>5} {'secs':>5}"
    if gpu: head += f" | {'measured':>8} {'alloc':>6} {'reserv':>6} {'ctx':>6} {'ratio':>5} {'s/step':>6}"
    print("\n" + head)
    for stage in cfg.stages:
        t0 = time.time()
        e = memory.estimate(cfg.arch, n_out, stage.size, stage.micro_bs)
        secs = time.time() - t0
        accum = memory.fit_accum(cfg.arch, n_out, stage.size, stage.bs, capacity)
        fits = "yes" if e.total <= capacity else "NO"
        parts = "".join(f"{getattr(e, k) / GiB:>8.2f}" for _, k in PARTS)
        line = f"{str(stage):>16} {stage.micro_bs:>5} |{parts}"
        line += f" | {e.total / GiB:>6.2f} {fits:>4} {accum or '-':>5} {secs:>5.1f}"
        if stage in measured:
            m = measured[stage]
            total = m["reserved"] + m["context"]
            line += (f" | {total / GiB:>8.2f} {m['allocated'] / GiB:>6.2f} {m['reserved'] / GiB:>6.2f}"
                     f" {m['context'] / GiB:>6.2f} {total / e.total:>5.2f} {m['secs']:>6.2f}")
            if not m["ok"]: line += "  OUT OF MEMORY"
        print(line)
    last = cfg.stages[-1]
    t0 = time.time()
    val_bs = memory.largest_batch(cfg.arch, n_out, last.size, capacity, limit=512)
    print(f"\nlargest validation/TTA batch at {last.size[0]}x{last.size[1]}: {val_bs} "
          f"({time.time() - t0:.1f}s)")
    print("GiB throughout. accum: the smallest accumulation whose micro-batch fits; secs: one estimate's "
          "time; measured: peak reserved + context; ratio: measured / estimate (goal: 0.85-1.15)")


if __name__ == "__main__":
    main(sys.argv[1:])
