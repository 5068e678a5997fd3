"""Are the real sets learnable but not trivial? fastai's stock recipe on each, at two small sizes.

    python bench/realsets_stock.py [--data DIR] [--epochs 5] [--sizes 64x48,96x72] [--sets digits,textures]

For each set of bench/realsets.py (written to a temp folder, or read from DIR/<set> if it is there):
DataBlock + ImageBlock + Resize + aug_transforms with the set's augmentation dict,
`vision_learner(resnet18, pretrained=False)`, `fit_one_cycle`, bs 32, num_workers 0; prints test
accuracy and seconds. As a floor, it also prints what a logistic regression on each image's mean and
spread of colour scores: a set that this separates is a colour set, not an image set. Not a CI test:
the numbers depend on the machine.

Measured (2 CPU cores shared with other work, load 6-9, so seconds are inflated; 5 epochs):

    set       model                       size  test acc  valid acc  wall s  CPU s
    digits    mean/std colour, logistic      -     0.304          -
    digits    stock resnet18             64x48     0.516      0.480     883    337
    digits    stock resnet18             96x72     0.560      0.533     840    366
    digits    chance (commonest class)       -     0.168
    textures  mean/std colour, logistic      -     0.412          -
    textures  stock resnet18             64x48     0.339      0.400     750    457
    textures  stock resnet18             96x72     0.329      0.345     634    460
    textures  chance (commonest class)       -     0.169
"""
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import pandas as pd
from fastai.vision.all import (CategoryBlock, ColReader, DataBlock, ImageBlock, RandomSplitter, Resize, accuracy,
                               aug_transforms, resnet18, vision_learner)
from PIL import Image

import realsets


def colour_floor(data: Path) -> float:
    """Test accuracy of a logistic regression on per-image mean and std of R, G, B (fit on train)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def stats(paths: list[Path]) -> np.ndarray:
        out = []
        for p in paths:
            with Image.open(p) as im:
                im.draft("RGB", (im.width // 8, im.height // 8))
                a = np.asarray(im.convert("RGB"), dtype=np.float32).reshape(-1, 3)
            out.append(np.concatenate([a.mean(0), a.std(0)]))
        return np.array(out)

    train, answers = pd.read_csv(data / "train.csv"), pd.read_csv(data / "test_answers.csv")
    x = stats([data / "train_images" / l / i for i, l in zip(train.image_id, train.label)])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, train.label)
    return float((model.predict(stats([data / "test_images" / i for i in answers.image_id])) == answers.label).mean())


def stock(data: Path, aug: dict, size: tuple[int, int], epochs: int) -> tuple[float, float, float, float]:
    """fastai's stock recipe on `data` at `size` (h, w): (test accuracy, valid accuracy, wall s, CPU s).

    CPU seconds (this process's, all threads) say the cost even when other work shares the machine.
    """
    train = pd.read_csv(data / "train.csv")
    train["path"] = [str(data / "train_images" / l / i) for i, l in zip(train.image_id, train.label)]
    tfms = aug_transforms(size=size, min_scale=aug["min_scale"], do_flip=aug["flip"], flip_vert=aug["flip_vert"],
                          max_rotate=aug["max_rotate"], min_zoom=aug["min_zoom"], max_zoom=aug["max_zoom"],
                          max_warp=aug["max_warp"], max_lighting=aug["max_lighting"])
    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ColReader("path"), get_y=ColReader("label"),
                      splitter=RandomSplitter(0.2, seed=42), item_tfms=Resize(size), batch_tfms=tfms)
    t0, c0 = time.time(), time.process_time()
    dls = block.dataloaders(train, bs=32, num_workers=0)
    learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 3e-3)
    valid = float(learn.validate()[1])
    answers = pd.read_csv(data / "test_answers.csv")
    probs = learn.get_preds(dl=dls.test_dl([str(data / "test_images" / i) for i in answers.image_id]))[0]
    pred = [dls.vocab[i] for i in probs.argmax(1)]
    acc = float((np.array(pred) == answers.label.to_numpy()).mean())
    return acc, valid, time.time() - t0, time.process_time() - c0


def main(argv: list[str]) -> None:
    opts = dict(zip(argv[::2], argv[1::2]))
    epochs = int(opts.get("--epochs", 5))
    sizes = [tuple(int(v) for v in s.split("x")) for s in opts.get("--sizes", "64x48,96x72").split(",")]
    names = opts.get("--sets", ",".join(realsets.SETS)).split(",")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(opts.get("--data", tmp))
        rows = []
        for name in names:
            data = root / name
            if not (data / realsets.PROVENANCE).is_file():
                t0 = time.time(); realsets.SETS[name](data); print(f"{name}: built in {time.time() - t0:.1f} s")
            aug = getattr(realsets, f"{name.upper()}_AUG")
            rows.append((name, "mean/std colour, logistic", "-", colour_floor(data), float("nan"), 0.0, 0.0))
            print(rows[-1], flush=True)
            for size in sizes:
                acc, valid, wall, cpu = stock(data, aug, size, epochs)
                rows.append((name, f"stock resnet18, {epochs} epochs", f"{size[0]}x{size[1]}", acc, valid, wall, cpu))
                print(rows[-1], flush=True)
            rows.append((name, "chance (commonest class)", "-",
                         pd.read_csv(data / "test_answers.csv").label.value_counts(normalize=True).iloc[0],
                         float("nan"), 0.0, 0.0))
    print(f"\n{'set':<9} {'model':<28} {'size':>6} {'test acc':>9} {'valid acc':>10} {'wall s':>7} {'CPU s':>7}")
    for name, model, size, acc, valid, wall, cpu in rows:
        print(f"{name:<9} {model:<28} {size:>6} {acc:>9.3f} {valid:>10.3f} {wall:>7.0f} {cpu:>7.0f}")


if __name__ == "__main__":
    main(sys.argv[1:])
