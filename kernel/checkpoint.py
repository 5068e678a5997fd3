"""The checkpoint: the index of the next epoch to run, the plan as the time budget left it, and every state
a resumed run needs to go on as if it had never stopped.

    model, optimiser (fastai's Adam state), GradScaler   where training left them
    random states                                         python, numpy, torch, CUDA, and the training
                                                          loader's own (fastai's DataLoader shuffles with a
                                                          `random.Random` of its own)

A resume must survive a device. fastai's `Optimizer.load_state_dict` keeps each state tensor where it was
loaded, and fastai moves the model to its device only when the fit starts: loaded on the CPU, Adam's
`grad_avg` would meet CUDA gradients at the first step. So the model goes to the loaders' device first,
then its state is loaded, and the optimiser's state is moved onto each parameter's own device
(fastai's `Learner.load` maps to `dls.device` for the same reason).
"""
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from fastai.learner import Learner

from . import model
from .atomic import atomic_write
from .config import RESUME_FIELDS, Config
from .errors import UserError
from .plan import Epoch

CHECKPOINT = "checkpoints/last.pth"


def rng_states(train_dl) -> dict:
    """Every random stream training draws from, as it stands now."""
    return dict(python=random.getstate(), numpy=np.random.get_state(), torch=torch.get_rng_state(),
                cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                loader=train_dl.rng.getstate())


def set_rng_states(states: dict, train_dl) -> None:
    """Put every random stream back where `rng_states` found it (CUDA's when the GPUs are as many)."""
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    train_dl.rng.setstate(states["loader"])


def save(out: Path, learn: Learner, scaler, *, epoch: int, epochs: list[Epoch], cfg: Config,
         vocab: list[str], pretrained: bool) -> Path:
    """Write OUT/checkpoints/last.pth atomically: `epoch` is the index of the next epoch to run."""
    path = out / CHECKPOINT
    path.parent.mkdir(parents=True, exist_ok=True)
    state = dict(model=learn.model.state_dict(), opt=learn.opt.state_dict(),
                 scaler=scaler.state_dict() if scaler else None, rng=rng_states(learn.dls.train),
                 epoch=epoch, plan=[asdict(e) for e in epochs], pretrained=pretrained,
                 fingerprint=cfg.fingerprint(), config=cfg.to_dict(), vocab=vocab)
    with atomic_write(path) as tmp: torch.save(state, tmp)
    return path


def load(out: Path, cfg: Config, log=print) -> dict | None:
    """The last checkpoint if this config may resume from it (its plan as `Epoch`s); refuses a changed
    config. With `restart`, removes what a previous run left instead."""
    path = out / CHECKPOINT
    if cfg.restart:
        for p in (path, out / "history.csv", out / model.META, out / model.WEIGHTS): p.unlink(missing_ok=True)
        return None
    if not path.exists(): return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"checkpoint {path} cannot be read ({type(e).__name__}); "
                        "add --restart to start over") from None
    if state.get("fingerprint") != cfg.fingerprint():
        changed = [k for k, v in cfg.to_dict().items()
                   if k in RESUME_FIELDS and str(state.get("config", {}).get(k)) != str(v)]
        raise UserError(f"{path} was made with a different config "
                        f"(changed: {', '.join(changed) or 'version'}); "
                        "rerun with the same options to resume, or add --restart to start over")
    if "plan" not in state:
        raise UserError(f"{path} was written by an older version of the kit; add --restart to start over")
    state["plan"] = epochs = [Epoch(**e) for e in state["plan"]]
    i = state["epoch"]
    if i < len(epochs):
        e = epochs[i]
        n = len(cfg.stages)
        what = "weighted epochs" if e.stage == n else f"stage {e.stage + 1}/{n}"
        log(f"resuming from {path}: epoch {i + 1} of {len(epochs)} ({what}, epoch {e.epoch + 1}), "
            + ("fine-tuning pretrained weights" if state["pretrained"] else "trained from scratch"))
    return state


def restore(learn: Learner, state: dict, scaler=None) -> None:
    """Load a checkpoint's states into `learn` on the loaders' device, and put every random stream back where
    it was when the checkpoint was written. As timm's train.py: the model to its device first, then the
    optimiser made over the parameters there, then the states."""
    device = learn.dls.device or torch.device("cpu")
    learn.model.to(device)  # before its state: fastai would move it only when the fit starts
    learn.create_opt()  # over the moved parameters: a move may replace them, and an older optimiser keeps those
    learn.model.load_state_dict(state["model"])
    learn.opt.load_state_dict(state["opt"])
    for p, s in learn.opt.state.items():  # fastai keeps the state where it was loaded: onto the parameter's
        for k, v in s.items():
            if torch.is_tensor(v): s[k] = v.to(p.device)
    # the GradScaler's state is its scale and growth count; its tensors are made on the loss's device
    if scaler is not None and state.get("scaler"): scaler.load_state_dict(state["scaler"])
    set_rng_states(state["rng"], learn.dls.train)
