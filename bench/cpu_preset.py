"""Does `--preset cpu` learn? Against fastai's stock `vision_learner(resnet18, pretrained=False)`, same time.

    python bench/cpu_preset.py [--n 1000] [--seconds 60]

On a generated sample of about a thousand 480x640 JPEGs (kernel.sample), runs `kernel.train.run` with
the CPU preset, then trains fastai's stock pipeline (DataBlock + Resize + aug_transforms, torchvision
resnet18 from scratch, fit_one_cycle) for as many epochs as fit in the same wall time, and prints both
test accuracies. Not a CI test: numbers depend on the machine.
"""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import pandas as pd
from fastai.vision.all import (CategoryBlock, ColReader, DataBlock, ImageBlock, RandomSplitter, Resize, aug_transforms,
                               error_rate, resnet18, vision_learner)

from kernel import Config
from kernel.data import test_items, train_items
from kernel.sample import accuracy, make_sample
from kernel.submission import make_submission, write_csv
from kernel.train import run


def stock(cfg: Config, seconds: float, out: Path) -> tuple[float, int]:
    """fastai's stock recipe at the preset's last size, epochs chosen to fill `seconds`; (accuracy, epochs)."""
    items, (test, _) = train_items(cfg, print), test_items(cfg, print)
    size = cfg.stages[-1].size
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ColReader("path"), get_y=ColReader("label"),
                      splitter=RandomSplitter(cfg.valid_pct, seed=cfg.seed), item_tfms=Resize(size),
                      batch_tfms=aug_transforms(size=size, min_scale=0.75))
    dls = block.dataloaders(items, bs=32, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=error_rate)
    t0 = time.time(); learn.fit_one_cycle(1, 3e-3); per_epoch = time.time() - t0
    epochs = max(1, round((seconds - per_epoch) / per_epoch))
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=error_rate)
    learn.fit_one_cycle(epochs, 3e-3)
    probs = learn.get_preds(dl=dls.test_dl(test))[0]
    pred = dict(zip(test.image_id, [dls.vocab[i] for i in probs.argmax(1)]))
    sub = write_csv(make_submission(pred, list(dls.vocab), Path(cfg.data) / "sample_submission.csv"), out / "stock.csv")
    return accuracy(sub, Path(cfg.data) / "test_answers.csv"), epochs


def main(argv: list[str]) -> None:
    opts = dict(zip(argv[::2], argv[1::2]))
    n = int(opts.get("--n", 1000))
    with tempfile.TemporaryDirectory() as tmp:
        data = make_sample(Path(tmp) / "sample", n_train=n, n_test=n // 3)
        cfg = Config.make("cpu", data=str(data), out=str(Path(tmp) / "ours"))
        t0 = time.time()
        ours = accuracy(run(cfg), data / "test_answers.csv")
        secs = float(opts.get("--seconds", time.time() - t0))
        theirs, epochs = stock(cfg, secs, Path(tmp))
    print(f"\n{'pipeline':<44} {'seconds':>8} {'test accuracy':>14}")
    print(f"{'kit --preset cpu (' + cfg.arch + ', ' + ','.join(map(str, cfg.stages)) + ')':<44} {secs:>8.0f} {ours:>14.3f}")
    print(f"{f'fastai stock resnet18, {epochs} epochs':<44} {secs:>8.0f} {theirs:>14.3f}")
    print(f"ratio (kit / stock): {ours / max(theirs, 1e-9):.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
