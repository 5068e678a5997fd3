"""Train through the stage schedule, checkpoint every epoch, resume, predict, write submission.csv.

    python -m kernel.train --data DIR --out DIR [--preset cpu] [--field value ...] [--restart]

The notebook calls `run(config)`, the same function: one code path for Kaggle and for tmux.
Run the same command again after a crash and it resumes from the last finished epoch; a finished
run only predicts again.
"""
import time
from pathlib import Path

import pandas as pd
import timm
import torch
from fastai.callback.core import Callback
from fastai.callback.training import GradientAccumulation
from fastai.learner import Learner
from fastai.metrics import error_rate
from fastai.torch_core import set_seed
from fastai.vision.learner import vision_learner

from . import data, report
from .atomic import atomic_write
from .config import Config, Stage, parse_args
from .errors import UserError, cli
from .submission import check_ids, make_submission, write_csv
from .weighted import class_weights

CHECKPOINT = "checkpoints/last.pth"


def schedule(cfg: Config) -> list[tuple[Stage, bool]]:
    """The stages, then the optional weighted epochs at the last stage's size: (stage, weighted)."""
    plan = [(s, False) for s in cfg.stages]
    if cfg.weighted_epochs:
        last = cfg.stages[-1]
        plan.append((Stage(last.size, cfg.weighted_epochs, last.bs, last.accum), True))
    return plan


def make_learner(cfg: Config, dls, log=print) -> Learner:
    """A timm model by name through fastai; pretrained weights only from a local file."""
    if cfg.weights:
        path = Path(cfg.weights)
        if not path.is_file(): raise UserError(f"weights file {path} not found; pass --weights PATH to a file saved from {cfg.arch}")
        # timm reads the file itself, drops the classifier (fastai adds its own head) and checks the fit.
        kw = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path), hf_hub_id=None, url=None))
        log(f"loading pretrained weights for {cfg.arch} from {path}")
    else:
        kw = dict(pretrained=False)
        log(f"no --weights given: training {cfg.arch} from scratch")
    try:
        learn = vision_learner(dls, cfg.arch, metrics=error_rate, wd=cfg.wd, **kw)
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0][:200]
        if not cfg.weights:  # e.g. a pretrained tag timm does not know: `resnet10t.bogus`
            raise UserError(f"timm cannot build {cfg.arch!r} ({first}); pick a name from timm.list_models()") from None
        raise UserError(f"weights file {cfg.weights} does not fit {cfg.arch} ({first}); "
                        f"give a weights file saved from {cfg.arch}, or set --arch to the file's architecture") from None
    learn.unfreeze()  # train the whole network in every stage: resuming never depends on freeze state
    if torch.cuda.is_available(): learn.to_fp16()
    return learn


class Checkpoint(Callback):
    """After every epoch: append to history.csv, then save model, optimiser and position atomically.

    History is written first: if we die between the two, the epoch is redone and its row replaced.
    """
    order = 65  # after the Recorder (50) has the epoch's losses and metrics

    def __init__(self, out: Path, cfg: Config, stage_idx: int, stage: Stage, weighted: bool):
        self.out, self.cfg, self.stage_idx, self.stage, self.weighted = out, cfg, stage_idx, stage, weighted

    def before_epoch(self): self.t0, self.skipped = time.time(), False
    def after_cancel_epoch(self): self.skipped = True  # SkipToEpoch: finished before the resume

    def after_epoch(self):
        if self.skipped: return
        names, values = self.recorder.metric_names[1:-1], self.recorder.log[1:-1]  # drop 'epoch' and 'time'
        row = dict(stage=self.stage_idx, epoch=self.epoch, size=f"{self.stage.size[0]}x{self.stage.size[1]}",
                   weighted=self.weighted, **{n: float(v) for n, v in zip(names, values)}, seconds=round(time.time() - self.t0, 1))
        history = read_history(self.out)
        write_csv(pd.concat([history, pd.DataFrame([row])], ignore_index=True), self.out / "history.csv")
        save_checkpoint(self.learn, self.out, self.cfg, self.stage_idx, self.epoch + 1)


def read_history(out: Path) -> pd.DataFrame:
    p = out / "history.csv"
    return pd.read_csv(p) if p.exists() else pd.DataFrame()


def save_checkpoint(learn: Learner, out: Path, cfg: Config, stage: int, epoch: int) -> None:
    """Position = the next epoch to run: (stage, epoch); epoch == stage's epochs means the stage is done."""
    path = out / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(model=learn.model.state_dict(), opt=learn.opt.state_dict(), stage=stage, epoch=epoch,
                 fingerprint=cfg.fingerprint(), config=cfg.to_dict(), vocab=list(learn.dls.vocab))
    with atomic_write(path) as tmp: torch.save(state, tmp)


def load_checkpoint(out: Path, cfg: Config, log=print) -> dict | None:
    """The last checkpoint if this config may resume from it; refuses a changed config."""
    path = out / CHECKPOINT
    if cfg.restart:
        for p in (path, out / "history.csv"): p.unlink(missing_ok=True)
        return None
    if not path.exists(): return None
    try: state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e: raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}); add --restart to start over") from None
    if state["fingerprint"] != cfg.fingerprint():
        changed = [k for k, v in cfg.to_dict().items() if k in state["config"] and str(state["config"][k]) != str(v)
                   and Config.__dataclass_fields__[k].metadata.get("resume", True)]
        raise UserError(f"{path} was made with a different config (changed: {', '.join(changed) or 'version'}); "
                        "rerun with the same options to resume, or add --restart to start over")
    log(f"resuming from {path}: stage {state['stage'] + 1}, epoch {state['epoch'] + 1}")
    return state


def restore(learn: Learner, state: dict, cfg: Config) -> None:
    """Model and optimiser state from a checkpoint made on the same classes."""
    if state["vocab"] != list(learn.dls.vocab):
        raise UserError(f"the checkpoint in {cfg.out} was trained on other classes ({len(state['vocab'])}: {state['vocab'][:3]}...) "
                        f"than {cfg.data} has; use another --out, or add --restart to start over")
    learn.model.load_state_dict(state["model"])
    learn.create_opt()
    learn.opt.load_state_dict(state["opt"])


def fit_stage(learn: Learner, cfg: Config, out: Path, idx: int, stage: Stage, weighted: bool, start: int, cbs=()) -> None:
    """One stage: one-cycle over its epochs, micro-batches of bs // accum, a step every accum of them."""
    # GradientAccumulation's n_acc counts samples, not steps: stepping every `accum` micro-batches means n_acc = bs.
    acc = [GradientAccumulation(n_acc=stage.bs)] if stage.accum > 1 else []
    learn.fit_one_cycle(stage.epochs, cfg.lr, wd=cfg.wd, start_epoch=start,
                        cbs=acc + [Checkpoint(out, cfg, idx, stage, weighted)] + list(cbs))


def predict(learn: Learner, cfg: Config, test: pd.DataFrame, undecodable: list[str]) -> pd.DataFrame:
    """Class probabilities per test image (TTA over `cfg.tta` augmented passes); undecodable images get the prior."""
    dl = learn.dls.test_dl(test)
    probs = learn.tta(dl=dl, n=cfg.tta)[0] if cfg.tta else learn.get_preds(dl=dl)[0]
    vocab = list(learn.dls.vocab)
    df = pd.DataFrame(probs.float().numpy(), columns=vocab)
    df.insert(0, cfg.id_col, list(test[cfg.id_col]))
    if undecodable:  # most common training class: the best guess without an image
        counts = learn.dls.train_ds.items[cfg.label_col].value_counts(normalize=True)
        prior = pd.DataFrame([[i] + [float(counts.get(v, 0.0)) for v in vocab] for i in undecodable], columns=df.columns)
        df = pd.concat([df, prior], ignore_index=True)
    return df


def run(cfg: Config, cbs=(), log=print) -> Path:
    """Train (or resume) every stage, then predict the test images; returns the submission's path."""
    if not timm.is_model(cfg.arch):
        raise UserError(f"unknown timm architecture {cfg.arch!r}; pick a name from timm.list_models(), e.g. convnext_small.fb_in22k")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    items = data.train_items(cfg, log)
    test, undecodable = data.test_items(cfg, log)
    sample = Path(cfg.data) / "sample_submission.csv"
    check_ids([*test[cfg.id_col], *undecodable], sample, cfg.id_col)  # now, not after hours of training
    plan = schedule(cfg)
    state = load_checkpoint(out, cfg, log)
    pos = (state["stage"], state["epoch"]) if state else (0, 0)
    h = read_history(out)  # drop rows of epochs that will run (again): all of them on a fresh start
    if len(h): write_csv(h[[(s, e) < pos for s, e in zip(h.stage, h.epoch)]], out / "history.csv")
    report.plot_schedule(plan, out / "schedule.png")
    set_seed(cfg.seed)
    learn = None
    for idx, (stage, weighted) in enumerate(plan):
        start = pos[1] if idx == pos[0] else 0
        done = idx < pos[0] or start >= stage.epochs
        if done and idx < len(plan) - 1: continue  # finished; the last stage's loaders still serve prediction
        wgts = class_weights(items[cfg.label_col], cfg.weight_power) if weighted else None
        dls = data.dataloaders(cfg, stage, items, wgts)
        if learn is None:
            learn = make_learner(cfg, dls, log)
            if state is not None: restore(learn, state, cfg)
        learn.dls = dls
        if done: continue
        log(f"stage {idx + 1}/{len(plan)}: {stage.size[0]}x{stage.size[1]}, {stage.epochs} epochs, "
            f"batch {stage.bs} = {stage.accum} x {stage.micro_bs}" + (", rare classes weighted" if weighted else ""))
        fit_stage(learn, cfg, out, idx, stage, weighted, start, cbs)
    report.plot_confusion(learn, out / "confusion.png")
    probs = predict(learn, cfg, test, undecodable)
    write_csv(probs, out / "probs.csv")
    vocab = list(learn.dls.vocab)
    pred = dict(zip(probs[cfg.id_col], [vocab[i] for i in probs[vocab].to_numpy().argmax(1)]))
    sub = make_submission(pred, vocab, sample, cfg.id_col, cfg.label_col)
    path = write_csv(sub, out / "submission.csv")
    log(f"wrote {path} ({len(sub)} rows)")
    return path


def main(argv: list[str]) -> None:
    cfg, _ = parse_args(argv)
    run(cfg)


if __name__ == "__main__":
    cli(main)
