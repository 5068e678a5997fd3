"""Every check that needs a CUDA GPU, in one run (under 8 minutes, untimed), on a card made to look like a T4.

    python bench/gpu_check.py [--only peak,resolve,pytest,scaler,oom,devices,checkpoint,channels_last]

No GPU was lent to the sessions that wrote the kit: this script waits for the first one (an H100 or H200),
and prints section by section what only a GPU can say, then a summary table. The card is made to look
like a T4 (15,095 MiB, sm75): torch's allocator is capped at the T4's memory less the CUDA context
(`set_per_process_memory_fraction`), flash and cuDNN attention are off (sm80 and later only; a T4 has
the memory-efficient kernel, which stays on), TF32 is off (a T4 has none), and the allocator grows
expandable segments as the members' processes do (`ensemble.member_env`). It is still not a T4: speeds
are the card's own, and cuDNN may pick other algorithms, with other workspaces.

    peak           measured peak memory of training steps against kernel.memory's estimate: each stage of
                   the `kaggle` preset, one batch of the `rttt` preset's convnext-320, vit and swinv2
    resolve        `auto` accumulation (plan.resolve) and the validation and prediction batches
                   (predict.inference_bs) as CUDA computes them; one prediction batch run at the T4's size
    pytest         `pytest -m gpu` (tests/test_gpu.py) in a subprocess, on the whole card
    scaler         GradScaler updates against optimiser steps in a short fit (kernel.train.run), accum 4
    oom            a real CUDA out-of-memory error (the cap set low) and kernel.train's retry
    devices        one process per member slot (ensemble.slots, member_env): the devices each one sees
    checkpoint     checkpoint.save of a ViT-L with its Adam state: seconds and size, and the read back
    channels_last  ConvNeXt training images/s (fp16 autocast), with and without channels_last

Models are built with pretrained=False (the GPU machine has no internet), on a generated sample
(kernel.sample). Without CUDA each section says so in one line and the script exits 0 in seconds
(tests/test_gpu_check.py). With CUDA the exit status is 1 if a section failed (its traceback is printed,
the others still run). `--only` reruns some sections. Figures go to bench/README.md, with the card.
"""
import argparse
import datetime
import gc
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

# Members train with expandable segments (ensemble.member_env); the allocator reads this as CUDA starts.
os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import torch
import torch.nn.functional as F

import kernel  # noqa: F401  before fastai: it silences fastai's torch.jit warning
from fastai.callback.core import Callback

from kernel import Config, checkpoint, data, ensemble, memory, model, plan, predict
from kernel.callbacks import EpochEnd, RunMixedPrecision
from kernel.config import ACCELERATORS
from kernel.errors import UserError, cli, first_line
from kernel.sample import make_sample
from kernel.train import make_learner, run
from memory import Steps, context_bytes, measure  # bench/memory.py, beside this file (not kernel.memory)

GiB = memory.GiB
T4 = ACCELERATORS["NvidiaTeslaT4"].memory  # 15,095 MiB, as the card reports it
N_OUT = 10  # the sample's classes, as Paddy's
RTTT = ("convnext-320", "vit-squish", "swinv2-squish")  # ConvNeXt at its larger size, the ViT, the SwinV2


def quiet(*_): pass


class Failed(Exception):
    """A check that ran and did not hold (as against a section that crashed)."""


@dataclass
class Lab:
    """What the sections share: a temp folder, the sample, and the cap that makes the card a T4."""
    tmp: Path
    sample: Path
    total: int  # the card's memory
    room: int  # torch's share of a T4: its memory less this card's CUDA context

    def cap(self, nbytes: int | None = None) -> None:
        """Let torch's allocator take at most `nbytes` (the T4's `room` by default)."""
        torch.cuda.set_per_process_memory_fraction(min(1.0, (nbytes or self.room) / self.total))


def free() -> None:
    """What the last section left goes: the Learner and its callbacks refer to one another, so a model
    stays on the card until the garbage collector runs."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def t4_like(tmp: Path) -> Lab:
    """Set the card up as a T4 and make the sample; prints what was set."""
    torch.backends.cuda.enable_flash_sdp(False)  # sm80+
    torch.backends.cuda.enable_cudnn_sdp(False)  # sm80+
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    # A convolution and a matmul, forward and backward in fp16, load cuDNN and cuBLAS into the context.
    conv = torch.nn.Conv2d(3, 8, 3).cuda()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        y = conv(x).flatten(1) @ torch.randn(8 * 30 * 30, 16, device="cuda")
    y.float().sum().backward()
    del conv, x, y
    free()
    props = torch.cuda.get_device_properties(0)
    context = context_bytes()
    lab = Lab(tmp, tmp / "sample", props.total_memory, T4 - context)
    lab.cap()
    print(f"{props.name}, sm{props.major}{props.minor}, {props.total_memory / GiB:.1f} GiB; CUDA context "
          f"{context / GiB:.2f} GiB; torch capped at {lab.room / GiB:.2f} GiB (a T4's "
          f"{T4 / GiB:.2f} GiB less the context); attention: flash "
          f"{torch.backends.cuda.flash_sdp_enabled()}, memory-efficient "
          f"{torch.backends.cuda.mem_efficient_sdp_enabled()}, math "
          f"{torch.backends.cuda.math_sdp_enabled()}; "
          f"PYTORCH_CUDA_ALLOC_CONF={os.environ.get('PYTORCH_CUDA_ALLOC_CONF')}")
    t0 = time.time()
    make_sample(lab.sample, n_train=512, n_test=16)
    print(f"sample: 512 train, 16 test images in {time.time() - t0:.0f} s")
    return lab


def rttt_member(lab: Lab, name: str) -> Config:
    """Member `name` of the `rttt` preset as it trains on a T4 (its stages shaped and resolved), on the
    sample."""
    rttt = Config.make("rttt", data=str(lab.sample), gpu_memory=T4 // 2**20)
    cfg = plan.member(rttt, next(m for m in rttt.members if m.name == name), str(lab.tmp / name))
    return replace(cfg, stages=plan.resolve(cfg, N_OUT, log=quiet))


def kaggle_model(lab: Lab) -> Config:
    """The `kaggle` preset's first member as it trains on a T4, on the sample."""
    cfg = plan.models(Config.make("kaggle", data=str(lab.sample), gpu_memory=T4 // 2**20))[0]
    return replace(cfg, stages=plan.resolve(cfg, N_OUT, log=quiet))


def peak(lab: Lab) -> str:
    kaggle = kaggle_model(lab)
    todo = [(f"kaggle {s}", kaggle, s, 2) for s in kaggle.stages]
    for name in RTTT:
        cfg = rttt_member(lab, name)
        todo.append((f"rttt {name} {cfg.stages[-1]}", cfg, cfg.stages[-1], 1))
    items = data.train_items(kaggle, log=quiet)
    print(f"{'what':>36} {'arch':>34} {'micro':>5} | {'estimate':>8} {'measured':>8} {'alloc':>6} "
          f"{'reserv':>6} {'ctx':>5} {'ratio':>5} {'s/step':>6}")
    ratios, ooms, over = [], [], []
    for what, cfg, stage, steps in todo:
        e = memory.estimate(cfg.arch, N_OUT, stage.size, stage.micro_bs)
        free()
        m = measure(cfg, stage, items, steps)
        assert m["n_out"] == N_OUT, f"the sample has {m['n_out']} classes, the estimates assume {N_OUT}"
        measured = m["reserved"] + m["context"]
        ratios.append(measured / e.total)
        line = (f"{what:>36} {cfg.arch:>34} {stage.micro_bs:>5} | {e.total / GiB:>8.2f} "
                f"{measured / GiB:>8.2f} {m['allocated'] / GiB:>6.2f} {m['reserved'] / GiB:>6.2f} "
                f"{m['context'] / GiB:>5.2f} {ratios[-1]:>5.2f} {m['secs']:>6.2f}")
        if not m["ok"]:
            line += "  OUT OF MEMORY"
            ooms.append(what)
        if m["reserved"] > lab.room: over.append(what)
        print(line, flush=True)
    print("GiB. measured: peak reserved + CUDA context; ratio: measured / estimate (goal 0.85-1.15); "
          "kaggle rows: two optimiser steps after one to warm up; rttt rows: one after one")
    if over:  # the cap did not hold: these are not a T4's figures
        raise Failed(f"reserved more than the T4 cap in {', '.join(over)}")
    if ooms: raise Failed(f"out of memory at the T4 cap in {', '.join(ooms)}")
    return f"{len(todo)} rows, measured / estimate {min(ratios):.2f} to {max(ratios):.2f}"


def resolve(lab: Lab) -> str:
    cfg = plan.models(Config.make("kaggle"))[0]
    card = plan.resolve(cfg, N_OUT, log=quiet)  # capacity(): this card's memory
    t4 = plan.resolve(replace(cfg, gpu_memory=T4 // 2**20), N_OUT, log=quiet)
    print(f"plan.capacity: {plan.capacity(cfg) / GiB:.2f} GiB on this card, {T4 / GiB:.2f} with gpu_memory "
          f"{T4 // 2**20} (a T4)")
    print(f"{cfg.arch} stages resolved on this card: {','.join(map(str, card))}; on a T4: "
          f"{','.join(map(str, t4))}")
    last = t4[-1]
    # As training sizes its validation batch (resident: training's state beside the model) and export its
    # prediction batch (the model alone): predict.inference_bs, which reads this card's memory.
    valid = predict.inference_bs(0, cfg.arch, N_OUT, last.size, last.bs)
    pred = predict.inference_bs(0, cfg.arch, N_OUT, last.size, 64, resident=False)
    valid_t4 = memory.largest_batch(cfg.arch, N_OUT, last.size, T4, limit=4 * last.bs)
    pred_t4 = memory.largest_batch(cfg.arch, N_OUT, last.size, T4, limit=4 * 64, resident=False)
    print(f"at {last.size[0]}x{last.size[1]}: validation batch {valid} on this card, {valid_t4} on a T4; "
          f"prediction batch {pred} on this card, {pred_t4} on a T4")
    # The T4's prediction batch, run: the model alone, eval, fp16 autocast (as learn.to_fp16 predicts).
    free()
    net = model.create(cfg.arch, N_OUT, log=quiet).cuda().eval()
    x = torch.randn(pred_t4, 3, *last.size, device="cuda")
    try:
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
            net(x)
        torch.cuda.synchronize()
        ok = True
    except torch.OutOfMemoryError:
        ok = False
    measured = torch.cuda.max_memory_reserved() + context_bytes()
    e = memory.inference_peak(cfg.arch, N_OUT, last.size, pred_t4, resident=False)
    del net, x
    print(f"prediction batch {pred_t4} at {last.size[0]}x{last.size[1]}: "
          f"{'ran' if ok else 'OUT OF MEMORY'}, measured {measured / GiB:.2f} GiB (peak reserved + context), "
          f"estimate {e.total / GiB:.2f}, ratio {measured / e.total:.2f}")
    if not ok: raise Failed(f"prediction batch {pred_t4} ran out of memory at the T4 cap")
    return (f"T4 accum {','.join(str(s.accum) for s in t4)}; valid/predict batch {valid_t4}/{pred_t4} "
            f"(this card {valid}/{pred}); batch {pred_t4} ran at {measured / e.total:.2f} of its estimate")


def pytest_gpu(lab: Lab) -> str:
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                           "tests/test_gpu.py"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    lines = (done.stdout + done.stderr).strip().splitlines()
    print("\n".join(lines[-30:]))
    last = lines[-1] if lines else "no output"
    if done.returncode: raise Failed(f"exit status {done.returncode}: {last}")
    return last


class Tally(Callback):
    """In training's fit (not prediction's learner): micro-batches per epoch, optimiser steps attempted
    (fastai's after_step follows a step the GradScaler skipped, too), and the calls of GradScaler.update
    and of the optimiser's step, counted as they are made."""
    order = 100  # after RunMixedPrecision (10) set learn.scaler up

    def __init__(self):
        self.micro, self.attempts, self.calls, self.scales = [], 0, dict(update=0, step=0), []

    def fitting(self) -> bool: return any(isinstance(c, EpochEnd) for c in self.learn.cbs)

    def before_fit(self):
        if not self.fitting() or self.scales: return
        self.scales.append(self.learn.scaler.get_scale())
        self.learn.scaler.update = self.counted(self.learn.scaler.update, "update")
        self.learn.opt.step = self.counted(self.learn.opt.step, "step")

    def counted(self, fn, name: str):
        def call(*args, **kwargs):
            self.calls[name] += 1
            return fn(*args, **kwargs)
        return call

    def before_train(self):
        if self.fitting(): self.micro.append(0)

    def after_batch(self):
        if self.training and self.fitting(): self.micro[-1] += 1

    def after_step(self):
        self.attempts += 1
        self.scales.append(self.learn.scaler.get_scale())


def scaler(lab: Lab) -> str:
    cfg = Config.make("cpu-scratch", data=str(lab.sample), out=str(lab.tmp / "scaler"), arch="resnet10t",
                      stages="64x48:2:32:4", tta=0, precision="fp16")
    tally = Tally()
    run(cfg, cbs=[tally], log=quiet)
    accum = cfg.stages[0].accum
    want = sum(m // accum for m in tally.micro)  # Accumulate drops an epoch's last micro-batches short of 4
    skipped = sum(b < a for a, b in zip(tally.scales, tally.scales[1:]))  # an overflow halves the scale
    print(f"micro-batches {tally.micro} an epoch, accumulation {accum}: {want} optimiser steps expected; "
          f"{tally.attempts} attempted, GradScaler.update {tally.calls['update']}, opt.step "
          f"{tally.calls['step']}, skipped on overflow {skipped}; scale {tally.scales[0]:g} -> "
          f"{tally.scales[-1]:g}")
    if not tally.attempts == tally.calls["update"] == want == tally.calls["step"] + skipped:
        raise Failed(f"{tally.calls['update']} scaler updates and {tally.calls['step']} steps for {want} "
                     f"optimiser steps ({skipped} skipped)")
    return f"{want} steps of accum {accum}: {tally.calls['update']} updates, {skipped} skipped"


def oom(lab: Lab) -> str:
    arch, size, bs, fits = "resnet10t", (224, 224), 64, 8
    e = memory.estimate(arch, N_OUT, size, fits)
    room = e.total - e.context  # what torch needs at micro-batch 8, by the estimate: 64 cannot fit
    cfg = Config.make("cpu-scratch", data=str(lab.sample), out=str(lab.tmp / "oom"), arch=arch,
                      stages=f"{size[0]}x{size[1]}:1:{bs}:1", tta=0, val_bs=fits, num_workers=4)
    lines = []

    def log(line: str) -> None:
        lines.append(line)
        if line.startswith("out of GPU memory"): print(line, flush=True)
    free()
    lab.cap(room)
    print(f"{arch} {size[0]}x{size[1]}, batch {bs}, torch capped at {room / GiB:.2f} GiB (the estimate at "
          f"micro-batch {fits}, less the context)", flush=True)
    try:
        run(cfg, log=log)
    except UserError as err:  # even a micro-batch of one: the retry refuses in one line
        raise Failed(f"error: {err}") from None
    finally:
        lab.cap()
    retries = [line for line in lines if line.startswith("out of GPU memory")]
    if not retries: raise Failed(f"no out-of-memory error: micro-batch {bs} fit in {room / GiB:.2f} GiB")
    micro = [line.split("micro-batch ")[1].split(" (")[0] for line in retries]  # "64 -> 32" each
    return f"{len(retries)} retries ({', '.join(micro)}), then the run finished"


PROBE = ("import os, torch; n = torch.cuda.device_count(); "
         "print(repr(os.environ['CUDA_VISIBLE_DEVICES']), n, torch.cuda.get_device_name(0) if n else '-', "
         "os.environ.get('PYTORCH_CUDA_ALLOC_CONF'), sep='|')")


def devices(lab: Lab) -> str:
    cfg = Config.make("kaggle").shared(2)
    places = ensemble.slots(cfg.devices)  # auto: every visible GPU
    seen, wrong = [], []
    print(f"slots: {places} (+ a CPU slot)")
    print(f"{'slot':>5} | {'CUDA_VISIBLE_DEVICES':>20} {'devices':>7} {'device 0':>28} {'alloc conf':>28}")
    for slot in places + ["cpu"]:
        done = subprocess.run([sys.executable, "-c", PROBE], env=ensemble.member_env(cfg, slot),
                              capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise Failed(f"slot {slot}: {(done.stderr.strip().splitlines() or ['no output'])[-1]}")
        visible, n, name, conf = done.stdout.strip().splitlines()[-1].split("|")
        print(f"{slot:>5} | {visible:>20} {n:>7} {name:>28} {conf:>28}")
        seen.append(f"{slot}: {n}")
        if int(n) != (0 if slot == "cpu" else 1): wrong.append(slot)
    if wrong: raise Failed(f"slots {', '.join(wrong)} see other than one device (none for the CPU)")
    return "devices seen per slot: " + ", ".join(seen)


def checkpoint_save(lab: Lab) -> str:
    cfg = rttt_member(lab, "vit-squish")
    out = Path(cfg.out)
    items = data.train_items(cfg, log=quiet)
    vocab = sorted(items[cfg.label_col].unique())
    net = model.create(cfg.arch, len(vocab), log=quiet)
    micro = 8  # the Adam state does not depend on the batch; the step only has to make it
    dls = data.dataloaders(cfg, cfg.stages[-1].size, micro, micro, items, vocab, model.stats(net))
    learn = make_learner(cfg, dls, net, has_valid=True, lines=True)
    learn.fit(1, cfg.lr, cbs=[Steps(1, 1)])  # two optimiser steps: Adam's state is made at the first
    mp = next((c for c in learn.cbs if isinstance(c, RunMixedPrecision)), None)  # there on CUDA
    n_state = sum(torch.is_tensor(v) for s in learn.opt.state.values() for v in s.values())
    params = sum(p.numel() for p in learn.model.parameters())
    epochs = plan.plan(cfg, cfg.stages, pretrained=False)
    torch.cuda.synchronize()
    t0 = time.time()
    where = checkpoint.save(out, learn, mp and mp.scaler, epoch=1, epochs=epochs, cfg=cfg, vocab=vocab,
                            pretrained=False)
    secs, size = time.time() - t0, where.stat().st_size
    t0 = time.time()
    checkpoint.read(out)
    read = time.time() - t0
    checkpoint.remove(out)
    print(f"{cfg.arch}: {params / 1e6:.0f}M parameters, {n_state} optimiser state tensors; checkpoint "
          f"{size / 1e9:.2f} GB saved in {secs:.1f} s ({size / 1e9 / secs:.2f} GB/s), read back to the CPU "
          f"in {read:.1f} s, on this machine's disk ({where.parent})")
    return f"ViT-L {size / 1e9:.2f} GB: save {secs:.1f} s, read {read:.1f} s"


def channels_last(lab: Lab) -> str:
    arch = Config.make("kaggle").arch
    size, bs, warm, steps = (320, 240), 32, 3, 20  # the kaggle preset's second stage's micro-batch
    rates = {}
    for name, fmt in (("NCHW", torch.contiguous_format), ("channels_last", torch.channels_last)):
        free()
        net = model.create(arch, N_OUT, log=quiet).cuda().to(memory_format=fmt).train()
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        grad_scaler = torch.amp.GradScaler("cuda")
        x = torch.randn(bs, 3, *size, device="cuda").contiguous(memory_format=fmt)
        y = torch.randint(0, N_OUT, (bs,), device="cuda")
        for i in range(warm + steps):
            if i == warm:
                torch.cuda.synchronize()
                t0 = time.time()
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(net(x).float(), y)
            grad_scaler.scale(loss).backward()
            grad_scaler.step(opt)
            grad_scaler.update()
            opt.zero_grad()
        torch.cuda.synchronize()
        rates[name] = steps * bs / (time.time() - t0)
        del net, opt, x, y, loss
    gain = rates["channels_last"] / rates["NCHW"]
    print(f"{arch} {size[0]}x{size[1]}, batch {bs}, fp16 autocast, {steps} training steps after {warm}: "
          f"{rates['NCHW']:.0f} images/s NCHW, {rates['channels_last']:.0f} channels_last (x{gain:.2f}), "
          "on this card, not a T4")
    return f"{rates['NCHW']:.0f} -> {rates['channels_last']:.0f} images/s (x{gain:.2f})"


SECTIONS = {
    "peak": ("peak memory, measured against the estimate", peak),
    "resolve": ("resolve and the prediction batch under CUDA", resolve),
    "pytest": ("pytest -m gpu", pytest_gpu),
    "scaler": ("GradScaler updates against optimiser steps, accumulation 4", scaler),
    "oom": ("out-of-memory retry on a real card", oom),
    "devices": ("one device per member process", devices),
    "checkpoint": ("checkpoint save of a ViT-L", checkpoint_save),
    "channels_last": ("ConvNeXt images/s with and without channels_last", channels_last),
}


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip() or "?"
    except OSError:
        return "?"


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"the sections to run, comma separated (default: all): {','.join(SECTIONS)}")
    names = [n.strip() for n in p.parse_args(argv).only.split(",") if n.strip()]
    bad = [n for n in names if n not in SECTIONS]
    if bad: raise UserError(f"unknown section {bad[0]!r}; use some of {','.join(SECTIONS)}")
    sys.stdout.reconfigure(line_buffering=True)
    gpu = torch.cuda.is_available()
    card = torch.cuda.get_device_name(0) if gpu else "no CUDA device"
    print(f"{card}, torch {torch.__version__}, {datetime.date.today()}, commit {commit()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="pkk-gpu-check-") as tmp:
        lab = t4_like(Path(tmp)) if gpu else None
        for name in names:
            title, fn = SECTIONS[name]
            if not gpu:
                print(f"{title}: needs CUDA, skipped")
                results.append((name, "needs CUDA, skipped", 0.0))
                continue
            print(f"\n== {name}: {title}")
            t0 = time.time()
            try:
                result = fn(lab)
            except Failed as e:
                result = f"FAILED: {e}"
            except Exception as e:  # noqa: BLE001  the other sections still run
                traceback.print_exc()
                result = f"FAILED: {type(e).__name__}: {first_line(e, 100)}"
            finally:
                free()
                lab.cap()
            results.append((name, result, time.time() - t0))
    print(f"\n== summary ({card})\n\n| section | result | seconds |\n|---|---|---|")
    for name, result, secs in results: print(f"| {name} | {result} | {secs:.0f} |")
    if any(r.startswith("FAILED") for _, r, _ in results): sys.exit(1)


if __name__ == "__main__":
    cli(main)
