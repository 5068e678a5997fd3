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

A checkpoint lives outside the output folder, and goes once the model's export is complete: it holds the
optimiser's state besides the model (about 12 bytes a parameter, 3.6 GB for a ViT-L), which no one downloads,
and a Kaggle session's output (`/kaggle/working`) is capped at 20 GB. On Kaggle it goes to `/kaggle/temp` (or
the system's temp folder): a batch session starts with an empty output, so it could never resume from there
anyway. Elsewhere it sits beside OUT, in `.<OUT's name>-checkpoints/`, where a rerun (after a kill -9)
finds it.
"""
import random
import tempfile
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

KAGGLE_OUTPUT = Path("/kaggle/working")  # what a Kaggle session saves (20 GB at most)
KAGGLE_TEMP = Path("/kaggle/temp")  # what it does not
MEMBERS = "members"  # an ensemble's members train into OUT/members/<name>


def _where(out: Path) -> tuple[Path, str]:
    """The checkpoints' folder of the run `out` belongs to (its ensemble's, for a member), and the member."""
    out = Path(out).absolute()
    root, member = (out.parents[1], out.name) if out.parent.name == MEMBERS else (out, "")
    if root == KAGGLE_OUTPUT or KAGGLE_OUTPUT in root.parents:
        temp = KAGGLE_TEMP if KAGGLE_TEMP.is_dir() else Path(tempfile.gettempdir())
        return temp / "pkk-checkpoints" / root.relative_to(KAGGLE_OUTPUT), member
    return root.parent / f".{root.name}-checkpoints", member


def path(out: Path) -> Path:
    """Where the checkpoint of a model trained into `out` is: never under an output folder."""
    folder, member = _where(out)
    return folder / member / "last.pth"


def remove(out: Path) -> None:
    """Delete `out`'s checkpoint (its export is complete: nothing is left to resume), and its folders once
    they are empty."""
    p = path(out)
    p.unlink(missing_ok=True)
    folder, member = _where(out)
    for d in ([p.parent] if member else []) + [folder]:
        try: d.rmdir()
        except OSError: return  # another member's checkpoint is still there (or it is gone already)


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


def state(learn: Learner, scaler, *, epoch: int, epochs: list[Epoch], cfg: Config, vocab: list[str],
          pretrained: bool) -> dict:
    """What a checkpoint holds: `epoch` is the index of the next epoch to run. The tensors are the
    learner's own (a copy that must outlive training is `copy.deepcopy`'d)."""
    return dict(model=learn.model.state_dict(), opt=learn.opt.state_dict(),
                scaler=scaler.state_dict() if scaler else None, rng=rng_states(learn.dls.train),
                epoch=epoch, plan=[asdict(e) for e in epochs], pretrained=pretrained,
                fingerprint=cfg.fingerprint(), config=cfg.to_dict(), vocab=vocab)


def save(out: Path, learn: Learner, scaler, **what) -> Path:
    """Write the checkpoint (`path(out)`, `state(learn, scaler, **what)`) atomically."""
    where = path(out)
    where.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(where) as tmp: torch.save(state(learn, scaler, **what), tmp)
    return where


def read(out: Path) -> dict:
    """The checkpoint as written (no config check: the run that wrote it reads it back)."""
    return torch.load(path(out), map_location="cpu", weights_only=False)


def load(out: Path, cfg: Config, log=print) -> dict | None:
    """The last checkpoint if this config may resume from it (its plan as `Epoch`s); refuses a changed
    config. With `restart`, removes what a previous run left instead."""
    where = path(out)
    if cfg.restart:
        remove(out)
        for p in (out / "history.csv", out / model.META, out / model.WEIGHTS): p.unlink(missing_ok=True)
        return None
    if not where.exists(): return None
    try:
        state = torch.load(where, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"checkpoint {where} cannot be read ({type(e).__name__}); "
                        "add --restart to start over") from None
    refuse_changed(where, state, cfg)
    try: state["plan"] = epochs = [Epoch(**e) for e in state["plan"]]
    except (KeyError, TypeError):  # no plan, or epochs without their batches: an older kit's
        raise UserError(f"{where} was written by an older version of the kit; add --restart to start over") \
            from None
    i = state["epoch"]
    if i < len(epochs):
        e = epochs[i]
        n = len(cfg.stages)
        what = "weighted epochs" if e.stage == n else f"stage {e.stage + 1}/{n}"
        log(f"resuming from {where}: epoch {i + 1} of {len(epochs)} ({what}, epoch {e.epoch + 1}), "
            + ("fine-tuning pretrained weights" if state["pretrained"] else "trained from scratch"))
    return state


def refuse_changed(where: Path, saved: dict, cfg: Config) -> None:
    """Refuse to go on from what `where` holds (a checkpoint, or an exported model: their `fingerprint` and
    `config`) under a config that trains something else, naming what changed."""
    if saved.get("fingerprint") == cfg.fingerprint(): return
    changed = [k for k, v in cfg.to_dict().items()
               if k in RESUME_FIELDS and str(saved.get("config", {}).get(k)) != str(v)]
    raise UserError(f"{where} was made with a different config (changed: {', '.join(changed) or 'version'}); "
                    "rerun with the same options to go on from it, or add --restart to start over")


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
