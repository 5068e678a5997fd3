"""Predict the test images with exported models, without training: the inference kernel's whole job.

    python -m kernel.predict --models DIR [DIR ...] --data DIR --out DIR [--tta N]

Each DIR is an exported model (model.json + model.safetensors) or a folder holding some: a training run's
output (a single model in OUT itself, an ensemble's members in OUT/members/*), e.g. a training kernel's
output attached to the inference kernel. Their probabilities (after TTA) are averaged, with the members'
weights from the ensemble.json a training run leaves beside them, and submission.csv is written through
the same checks as in training. Training predicts through this module too, from its own export, so a
model and its export cannot disagree.
"""
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat
from fastai.torch_core import set_seed

from . import data, model
from .config import Config, Parser
from .errors import UserError, cli
from .submission import average, write_csv, write_submission

ENSEMBLE = "ensemble.json"  # {"members": {name: weight}} beside OUT/members/


def read_meta(folder: Path) -> dict:
    try: return json.loads((Path(folder) / model.META).read_text())
    except (OSError, ValueError): return {}


def exported(folder: Path, fingerprint: str) -> bool:
    """`folder` holds a whole exported model, trained under this config fingerprint."""
    return (Path(folder) / model.WEIGHTS).is_file() and read_meta(folder).get("fingerprint") == fingerprint


def inference_bs(requested: int, arch: str, n_out: int, size: tuple[int, int], fallback: int, *,
                 resident: bool = True) -> int:
    """The validation/prediction batch: `requested`, else on a GPU the largest the memory estimate lets fit
    (capped at 4 training batches), else `fallback`. `resident`: training's gradients and optimiser state
    are on the GPU beside the model (validation); else the model alone (prediction, training released)."""
    if requested: return requested
    if not torch.cuda.is_available(): return fallback
    from . import memory
    return memory.largest_batch(arch, n_out, size, torch.cuda.get_device_properties(0).total_memory,
                                limit=4 * fallback, resident=resident)


def predict(folder: Path, test: pd.DataFrame, undecodable: list[str], tta: int | None = None, val_bs: int = 0,
            num_workers: int = 0, correct: bool | None = None, cbs=(), log=print) -> pd.DataFrame:
    """Class probabilities of the exported model in `folder` for every test image (multi-label: each label's
    own, a sigmoid's); images that do not decode get the training class frequencies. `tta` augmented passes,
    the batch (`val_bs`) and the weighted-epochs correction (`correct`) as the exported model says, unless
    given; `cbs` are fastai callbacks for the prediction."""
    net, meta = model.load(Path(folder))
    cfg = Config.make(None, **{**meta["config"], "num_workers": num_workers})
    vocab, size, stats = meta["vocab"], tuple(meta["size"]), (meta["mean"], meta["std"])
    tta = cfg.tta if tta is None else tta
    correct = cfg.weighted_correction if correct is None else correct
    # the batch the model was exported with: TTA draws its augmentations batch by batch, so another batch
    # size (another GPU, or what training left resident) would give other probabilities
    bs = val_bs or meta.get("predict_bs") or \
        inference_bs(0, meta["arch"], len(vocab), size, 64, resident=False)
    # The loaders are the training pipeline at the final size (TTA augments as training did), built on the
    # test images themselves: prediction needs no training data.
    items = test.assign(**{cfg.label_col: vocab[0]})
    multilabel = bool(meta.get("multilabel"))
    dls = data.dataloaders(replace(cfg, valid_pct=0.0), size, bs, bs, items, vocab, stats,
                           multilabel=multilabel)
    # the loss only names the activation get_preds applies: softmax over the classes, or a sigmoid per label
    loss = BCEWithLogitsLossFlat() if multilabel else CrossEntropyLossFlat()
    learn = Learner(dls, net, loss_func=loss, cbs=list(cbs))
    if torch.cuda.is_available(): learn.to_fp16()
    set_seed(cfg.seed)  # TTA's random augmentations, the same on every run
    dl = dls.test_dl(test, bs=bs)
    with learn.no_bar(), learn.no_logging():
        probs = (learn.tta(dl=dl, n=tta)[0] if tta else learn.get_preds(dl=dl)[0]).float().numpy()
    # The model's memory back before the next model loads: the Learner and its callbacks refer to one another,
    # so the model would otherwise stay (on the GPU) until the garbage collector runs, and models pile up.
    del net
    learn.model = None
    if torch.cuda.is_available(): torch.cuda.empty_cache()
    if meta.get("scale") and correct:
        probs = probs * np.array(meta["scale"])
        probs /= probs.sum(1, keepdims=True)
        log(f"{folder}: weighted epochs drew rare classes more often than they occur; test probabilities "
            "rescaled to the true class frequencies (--no-weighted_correction keeps them as they are)")
    rows = np.vstack([probs, np.tile(meta["prior"], (len(undecodable), 1))])
    df = pd.DataFrame(rows, columns=vocab)
    df.insert(0, cfg.id_col, [*test[cfg.id_col], *undecodable])
    log(f"predicted {len(df)} test images with {folder} ({meta['arch']}, {size[0]}x{size[1]}, "
        f"{f'TTA x{tta}' if tta else 'no TTA'})")
    return df


def threshold(models: dict[Path, float]) -> float | None:
    """The threshold that makes multi-label submissions from the mean probabilities of `models` ({exported
    model folder: weight}): None if they are single-label, else their thresholds' mean with the same weights.
    Not chosen again: the members' validation splits differ, so no one split can score their average."""
    metas = {f: read_meta(f) for f in models}
    multi = {f for f, m in metas.items() if m.get("multilabel")}
    if not multi: return None
    if len(multi) < len(metas):
        single = next(f for f in metas if f not in multi)
        raise UserError(f"{single} is single-label and {next(iter(multi))} multi-label; average models "
                        "trained on the same train.csv")
    return sum(w * metas[f]["threshold"] for f, w in models.items()) / sum(models.values())


def find(roots: list[str | Path]) -> dict[Path, float]:
    """{exported model folder: ensemble weight} under each root (the root itself, or any folder below)."""
    found = {}
    for root in map(Path, roots):
        if not root.is_dir(): raise UserError(f"--models {root}: no such folder")
        weights = json.loads((root / ENSEMBLE).read_text())["members"] if (root / ENSEMBLE).is_file() else {}
        for meta in sorted(root.rglob(model.META)):
            found[meta.parent] = float(weights.get(meta.parent.name, 1.0))
    if not found: raise UserError(f"no exported model ({model.META}) under {', '.join(map(str, roots))}; "
                                  "point --models at a training run's output folder")
    return found


def run(models: list[str | Path], data_dir: str | Path, out: str | Path, tta: int | None = None,
        val_bs: int = 0, num_workers: int = 0, log=print) -> Path:
    """Predict `data_dir`'s test images with every exported model under `models`, average, write
    OUT/probs.csv and OUT/submission.csv; returns the submission's path."""
    found = find(models)
    first = read_meta(next(iter(found)))
    cfg = Config.make(None, **{**first["config"], "data": str(data_dir), "out": str(out), "members": ()})
    test, undecodable, sample = data.checked_test(cfg, log)
    frames = {str(f): predict(f, test, undecodable, tta, val_bs, num_workers, log=log) for f in found}
    probs = average(frames, {str(f): w for f, w in found.items()}, cfg.id_col)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(probs, out / "probs.csv")
    t = threshold(found)
    path = write_submission(probs, sample, cfg.id_col, cfg.label_col, out / "submission.csv", t)
    log(f"wrote {path}: {len(probs)} rows, the mean of {len(frames)} model(s)"
        + (f"; labels at or above {t:.3f}, their thresholds' mean" if t is not None else ""))
    return path


def main(argv: list[str]) -> None:
    p = Parser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="exported models, or folders holding them")
    p.add_argument("--data", required=True,
                   help="the competition folder (test_images/, sample_submission.csv)")
    p.add_argument("--out", required=True, help="where to write probs.csv and submission.csv")
    p.add_argument("--tta", type=int, default=None,
                   help="augmented passes (default: each model's own setting)")
    p.add_argument("--val_bs", type=int, default=0,
                   help="batch size (default: the exported model's, which reproduces training's TTA)")
    p.add_argument("--num_workers", type=int, default=0)
    a = p.parse_args(argv)
    run(a.models, a.data, a.out, a.tta, a.val_bs, a.num_workers)


if __name__ == "__main__":
    cli(main)
