"""Train one model through the plan, checkpoint every epoch, resume, export, predict.

    python -m kernel.train --data DIR --out DIR [--preset cpu-scratch] [--field value ...] [--restart]

The notebook (and `python -m kernel`, the whole job) calls `kernel.ensemble.run(config)`, which calls `run`
here for a single model or for each member of an ensemble (in its own process, this command): one code path
for Kaggle and for tmux. Run the same command again after a crash, or after the time budget stopped it, and
it resumes from the last finished epoch; a finished run only predicts again.

The run is shaped like fastai's fit_one_cycle: a plan with one entry per epoch (kernel.plan: size, batch,
accumulation, frozen or weighted, where on the one-cycle), and one `learn.fit` over it whose callbacks
(kernel.callbacks) set each epoch up and save it (kernel.checkpoint: an epoch index plus the states).
"""
import copy
import gc
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.mixup import CutMix, MixUp
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.metrics import accuracy_multi, error_rate
from fastai.torch_core import set_seed
from fastai.vision.learner import default_split

from . import checkpoint, data, layout, model, predict, report
from .callbacks import (Accumulate, EpochEnd, NoValidation, Run, RunMixedPrecision, Schedule, TimeLimit,
                        keep_history)
from .config import Config, parse_args
from .errors import Interrupted, UserError, cli
from .lock import locked
from .plan import Budget, Epoch, plan, resolve, shaped
from .submission import choose_threshold, chosen, f1_samples, write_csv, write_submission
from .weighted import class_weights


def make_learner(cfg: Config, dls, net, has_valid: bool, lines: bool, *, multilabel: bool = False) -> Learner:
    """fastai's Learner over our network, with the config's loss, and fp16 mixed precision on CUDA.
    Multi-label: a sigmoid per label (binary cross-entropy), and the share of labels right at 0.5."""
    if multilabel: loss, metric = BCEWithLogitsLossFlat(), accuracy_multi
    elif cfg.label_smoothing:
        loss, metric = LabelSmoothingCrossEntropyFlat(eps=cfg.label_smoothing), error_rate
    else: loss, metric = CrossEntropyLossFlat(), error_rate
    learn = Learner(dls, net, loss_func=loss, metrics=metric if has_valid else None,
                    splitter=default_split, wd=cfg.wd)
    if not has_valid: learn.recorder.valid_metrics = False
    if lines:  # one line per epoch from EpochEnd instead of fastprogress's bars (redraws in a log)
        learn.remove_cb(ProgressCallback)
        learn.logger = lambda *_: None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if cfg.precision == "fp16" or (cfg.precision == "auto" and device == "cuda"):
        learn.add_cb(RunMixedPrecision(device))
    return learn


def in_notebook() -> bool:
    """Inside a Jupyter kernel (Kaggle's notebook, the dry run's nbclient), where fastai draws a table."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return type(shell).__name__ == "ZMQInteractiveShell"


def fit(cfg: Config, out: Path, items: pd.DataFrame, vocab: list[str], state: dict | None, budget: Budget,
        cbs=(), log=print, *, multilabel: bool = False) -> tuple[Learner, list[Epoch], int]:
    """Train (or resume) what remains of the plan in one fit and export the model; returns the learner, the
    plan (as the budget left it) and how many of its epochs are trained."""
    if state:  # the checkpoint holds the weights, pretrained or not: its own log line says which
        net = model.create(cfg.arch, len(vocab), None, log=lambda *_: None)
        pretrained = state["pretrained"]
    else:
        set_seed(cfg.seed)  # before the model's random init: the same config, the same run
        weights = model.weights_file(cfg.weights, cfg.arch)
        net = model.create(cfg.arch, len(vocab), weights, log)
        pretrained = weights is not None
    stats = model.stats(net)
    if not pretrained and (cfg.freeze_epochs or cfg.body_lr != 1):
        log("from scratch: the whole network trains at the full learning rate from the first epoch "
            "(freeze_epochs and body_lr are for pretrained bodies)")
    epochs = state["plan"] if state else plan(cfg, resolve(cfg, len(vocab), log), pretrained)
    start = state["epoch"] if state else 0
    has_valid = cfg.valid_pct > 0
    if not has_valid: log("valid_pct 0: training on every image; no validation loss or error rate")
    lines = cfg.progress == "lines" or (cfg.progress == "auto" and not in_notebook())
    keep_history(out, epochs, start)
    cache = data.ImageCache()  # each stage's images, decoded once for the stage where they fit the RAM

    def loaders(e: Epoch):
        wgts = class_weights(items[cfg.label_col], cfg.weight_power) if e.weighted else None
        return data.dataloaders(cfg, e.size, e.micro_bs, e.val_bs, items, vocab, stats, wgts, cache=cache,
                                multilabel=multilabel, log=log)

    # the loaders of the epoch the fit starts at (RandomSplitter reseeds torch: before restoring the states)
    learn = make_learner(cfg, loaders(epochs[min(start, len(epochs) - 1)]), net, has_valid, lines,
                         multilabel=multilabel)
    mp = next((c for c in learn.cbs if isinstance(c, RunMixedPrecision)), None)
    scaler = mp.scaler if mp else None
    what = dict(epochs=epochs, cfg=cfg, vocab=vocab, pretrained=pretrained)
    if state is None: learn.create_opt()
    else: checkpoint.restore(learn, state, scaler)
    trained = [start]
    # The state an out-of-memory retry goes back to: the fit's start (in memory) until the first checkpoint.
    back = [state or copy.deepcopy(checkpoint.state(learn, scaler, epoch=start, **what))]

    def save(i: int) -> None:
        checkpoint.save(out, learn, scaler, epoch=i, **what)
        trained[0], back[0] = i, None

    lrs = np.array([cfg.lr * (cfg.body_lr if pretrained else 1.0), cfg.lr])
    run = Run(cfg, out, epochs, start, budget, loaders, save, lrs, lines, log)
    accumulate = Accumulate()
    extra = [MixUp(cfg.mixup)] if cfg.mixup else [CutMix(cfg.cutmix)] if cfg.cutmix else []
    extra += [] if has_valid else [NoValidation()]
    while run.start < len(epochs):
        try:
            most = len(epochs) + len(budget.dropped) - run.start  # the epochs a budget's cut took may come back
            learn.fit(most, wd=cfg.wd,
                      cbs=[TimeLimit(run), Schedule(run, accumulate), accumulate, EpochEnd(run), *extra, *cbs])
            break
        except torch.cuda.OutOfMemoryError:
            pass  # handled out here: the exception's traceback holds the failed step's tensors
        run.start = smaller_steps(learn, run, scaler, back[0] or checkpoint.read(out))
    cache.clear()  # the RAM back for prediction (the learner's loaders decode what they still load)
    n = trained[0]
    if n < len(epochs):
        log(f"stopped after epoch {n} of {len(epochs)} by the time budget; run again to resume from there")
    threshold = choose(learn, has_valid, log) if multilabel else None
    export(learn, cfg, out, items, vocab, stats, epochs[:n] or epochs[:1], complete=n >= len(epochs),
           threshold=threshold)
    return learn, epochs, n


def choose(learn: Learner, has_valid: bool, log=print) -> float:
    """Multi-label: the threshold on each label's probability whose labels score best on the validation split
    (`choose_threshold`: the mean F1 over images, Plant Pathology 2021's metric); 0.5 without one."""
    if not has_valid or not len(learn.dls.valid.dataset):
        log("multi-label threshold 0.50: no validation split to choose it on")
        return 0.5
    with learn.no_bar(), learn.no_logging():
        probs, truth = learn.get_preds(dl=learn.dls.valid)
    probs, truth = probs.float().numpy(), truth.numpy() > 0.5
    t, score = choose_threshold(probs, truth)
    log(f"multi-label threshold {t:.2f}: the best mean F1 over the validation split's images, {score:.3f} "
        f"(at 0.50: {f1_samples(chosen(probs, 0.5), truth):.3f})")
    return t


def smaller_steps(learn: Learner, run: Run, scaler, state: dict) -> int:
    """After CUDA ran out of memory: let the failed step's memory go, halve the micro-batch of the epoch that
    failed and of every later one (more accumulation, the same batch per optimiser step), and put the learner
    back in `state`, the checkpoint of that epoch's start; returns the epoch's index, where the fit goes on.
    Refuses in one line when the micro-batch is 1 already."""
    learn.xb, learn.yb, learn.pred, learn.loss, learn.loss_grad = (None,), (None,), None, None, None
    mp = next((c for c in learn.cbs if isinstance(c, RunMixedPrecision)), None)
    if mp and torch.is_autocast_enabled(mp.device): mp.autocast.__exit__(None, None, None)  # left mid-forward
    for p in learn.model.parameters(): p.grad = None
    learn.opt = None
    gc.collect()
    if torch.cuda.is_available(): torch.cuda.empty_cache()
    i = state["epoch"]
    e = run.epochs[i]
    where = (f"{'weighted epochs' if e.weighted else f'stage {e.stage + 1}/{len(run.cfg.stages)}'} "
             f"{e.size[0]}x{e.size[1]} epoch {e.epoch + 1}")
    if e.micro_bs == 1:
        raise UserError(f"out of GPU memory in {where} even one image at a time; use a smaller size, batch "
                        "or model")
    old = e.micro_bs
    for x in run.epochs[i:] + run.budget.dropped:  # and those the time budget took off: they may come back
        if x.micro_bs > 1: x.accum = halving(x)
    run.log(f"out of GPU memory in {where}: micro-batch {old} -> {e.micro_bs} (batch {e.bs} = {e.accum} x "
            f"{e.micro_bs}), from here on; the epoch starts again")
    learn.dls = run.loaders(e)  # before the states: building loaders reseeds torch
    checkpoint.restore(learn, state, scaler)
    return i


def halving(e: Epoch) -> int:
    """The accumulation that halves the epoch's micro-batch: twice as much, or the next that divides the
    batch (as the plan's all do) with at most half the micro-batch."""
    return next(a for a in range(e.accum + 1, e.bs + 1) if e.bs % a == 0 and e.bs // a <= e.micro_bs // 2)


def export(learn: Learner, cfg: Config, out: Path, items: pd.DataFrame, vocab: list[str], stats,
           trained: list[Epoch], complete: bool, threshold: float | None = None) -> Path:
    """The model and what prediction needs, into OUT (model.safetensors, model.json).

    `prior` is the training split's class frequencies (the guess for an image that does not decode;
    multi-label: the share of images each label is on). After weighted epochs the model has seen rare
    classes more often than they occur, and believes them more probable than they are: `scale` (prior /
    frequency drawn) corrects its probabilities back (single-label only: a multi-label model's `threshold`,
    chosen on the validation split as it occurs, plays that part, kernel/submission.py `chosen`).
    The model predicts at the size it trained at last, in batches of `predict_bs` (TTA's random draws
    depend on the batches: the inference kernel takes the same), and `complete` says whether the plan
    ran to its end (a run the time budget stopped is resumed by a rerun).
    """
    train = learn.dls.train.items
    labels = train[cfg.label_col].to_numpy()
    multilabel = threshold is not None
    if multilabel:
        sets = [set(s.split(" ")) for s in labels]
        prior = np.array([sum(v in s for s in sets) for v in vocab], dtype=float) / len(sets)
    else: prior = np.array([(labels == v).sum() for v in vocab], dtype=float) / len(labels)
    scale = None
    if any(e.weighted for e in trained) and not multilabel:
        w = class_weights(items[cfg.label_col], cfg.weight_power)[train.index.to_numpy()]
        drawn = np.array([w[labels == v].sum() for v in vocab]) / w.sum()
        scale = (prior / np.maximum(drawn, 1e-12)).tolist()
    size, bs = trained[-1].size, trained[-1].predict_bs
    meta = dict(arch=cfg.arch, vocab=vocab, size=list(size), mean=stats[0], std=stats[1], predict_bs=bs,
                prior=prior.tolist(), scale=scale, multilabel=multilabel, threshold=threshold,
                complete=complete, fingerprint=cfg.fingerprint(), config=cfg.to_dict())
    return model.export(learn.model, out, meta)


def release(learn: Learner) -> None:
    """Training's weights, gradients and optimiser state off the GPU before prediction loads the exported
    model: the prediction batch is sized for that model alone (the confusion plot moves it back)."""
    learn.opt = None
    for p in learn.model.parameters(): p.grad = None
    learn.model.cpu()
    if torch.cuda.is_available(): torch.cuda.empty_cache()


def run(cfg: Config, cbs=(), log=print) -> Path:
    """Train (or resume) one model, export it, predict the test images; returns the submission's path."""
    if cfg.members:
        raise UserError("this config has members (an ensemble): run it with `python -m kernel`, "
                        "or kernel.ensemble.run")
    t0, out = time.time(), Path(cfg.out)
    with locked(out):
        deadline = t0 + cfg.time_limit if cfg.time_limit else math.inf
        model.check_arch(cfg.arch)  # before reading every image
        cfg = shaped(cfg, log=log)  # a fixed-size model (Swin) at its own size
        cfg = layout.resolved(cfg)  # the id and target columns as found
        cfg = cfg.shared()  # loader workers and torch threads, unless set: the cores (a member: its share)
        torch.set_num_threads(cfg.threads)
        items = data.train_items(cfg, log)
        test, undecodable, sample = data.checked_test(cfg, log)
        multilabel = layout.read(cfg)[0].multilabel
        if multilabel and cfg.label_smoothing:
            raise UserError("--label_smoothing smooths one class per image; these targets are several labels "
                            "(multi-label): set --label_smoothing 0")
        vocab = data.vocab(items[cfg.label_col], multilabel)
        state = checkpoint.load(out, cfg, log)
        meta = predict.read_meta(out)
        if state is None and meta: checkpoint.refuse_changed(out / model.META, meta, cfg)
        # finished: its plan ran to the end and was exported (its checkpoint went then)
        done = predict.exported(out, cfg.fingerprint()) and meta.get("complete") is True
        trained = state["vocab"] if state else meta["vocab"] if done else vocab
        if trained != vocab:
            raise UserError(f"the model in {out} was trained on other classes ({len(trained)}: "
                            f"{trained[:3]}...) than {cfg.data} has; use another --out, or add --restart")
        budget = Budget(cfg, deadline, len(items), len(test) + len(undecodable), log)
        learn = None
        if not done:
            try:
                learn, epochs, n = fit(cfg, out, items, vocab, state, budget, cbs, log, multilabel=multilabel)
            except KeyboardInterrupt:
                raise Interrupted(f"{out} stopped during training, every finished epoch saved: rerun the "
                                  "same command to resume from the next") from None
            release(learn)
            done = n >= len(epochs)
        if done: checkpoint.remove(out)  # nothing is left to resume: only the exported model is kept
        probs = predict.predict(out, test, undecodable, cfg.tta, 0, cfg.num_workers,
                                cfg.weighted_correction, cbs, log)
        write_csv(probs, out / "probs.csv")
        path = write_submission(probs, sample, cfg.id_col, cfg.label_col, out / "submission.csv",
                                predict.threshold({out: 1.0}))
        log(f"wrote {path} ({len(probs)} rows) {time.time() - t0:.0f} s after the start")
        if learn is not None and cfg.valid_pct > 0 and not multilabel:  # a confusion matrix is of one class
            try:
                learn.model.to(learn.dls.device)
                report.plot_confusion(learn, out / "confusion.png")
            except Exception as e:  # a picture is not worth the run
                log(f"warning: could not plot the confusion matrix ({type(e).__name__}: {e})")
    return path


def main(argv: list[str]) -> None:
    run(parse_args(argv, __doc__.splitlines()[0]))


if __name__ == "__main__":
    cli(main)
