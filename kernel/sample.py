"""A small, deterministic competition in Paddy Doctor's layout, for tests and the dry run.

    python -m kernel.sample OUT [--n-train 300] [--n-test 100]

Ten classes named and imbalanced as Paddy's; 480x640 portrait JPEGs; each class is a shape (ring,
bars, cross, ...) drawn large, a few times per image, at random places, sizes and colours over a
noisy leaf-green background, so a small CNN can learn it but no single pixel colour gives it away.
The test answers go to `test_answers.csv`, apart from what a kernel reads.
"""
import io
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from .errors import UserError, cli

# Paddy Doctor's classes and their train counts (10,407 images in all).
PADDY_COUNTS = {"normal": 1764, "blast": 1738, "hispa": 1594, "dead_heart": 1442, "tungro": 1088,
                "brown_spot": 965, "downy_mildew": 620, "bacterial_leaf_blight": 479,
                "bacterial_leaf_streak": 380, "bacterial_panicle_blight": 337}
VARIETIES = ["ADT45", "KarnatakaPonni", "Ponni", "AtchayaPonni", "Zonal", "AndraPonni", "Onthanel", "RR"]
WIDTH, HEIGHT = 480, 640


def _shape(draw: ImageDraw.ImageDraw, kind: int, cx: float, cy: float, r: float, colour: tuple, angle: float):
    """Draw shape number `kind` centred at (cx, cy) with radius r."""
    w = max(8, int(r / 3))  # thick strokes survive shrinking to 64x48
    pts = lambda n, a0: [(cx + r * math.cos(a0 + 2 * math.pi * k / n),
                          cy + r * math.sin(a0 + 2 * math.pi * k / n)) for k in range(n)]
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == 0: draw.ellipse(box, fill=colour)                                   # disc
    elif kind == 1: draw.ellipse(box, outline=colour, width=w)                     # ring
    elif kind == 2: draw.polygon(pts(3, angle), fill=colour)                       # triangle
    elif kind == 3: draw.polygon(pts(4, angle), outline=colour, width=w)           # hollow square
    elif kind == 4:                                                                # horizontal bars
        for k in (-1, 0, 1):
            draw.rectangle([cx - r, cy + k * r / 1.5 - w / 2, cx + r, cy + k * r / 1.5 + w / 2], fill=colour)
    elif kind == 5:                                                                # vertical bars
        for k in (-1, 0, 1):
            draw.rectangle([cx + k * r / 1.5 - w / 2, cy - r, cx + k * r / 1.5 + w / 2, cy + r], fill=colour)
    elif kind == 6:                                                                # X
        draw.line([cx - r, cy - r, cx + r, cy + r], fill=colour, width=w)
        draw.line([cx - r, cy + r, cx + r, cy - r], fill=colour, width=w)
    elif kind == 7:                                                                # plus
        draw.line([cx - r, cy, cx + r, cy], fill=colour, width=w)
        draw.line([cx, cy - r, cx, cy + r], fill=colour, width=w)
    elif kind == 8: draw.polygon(pts(6, angle), fill=colour)                       # hexagon
    else:                                                                          # dots grid
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                draw.ellipse([cx + dx * r / 1.4 - w, cy + dy * r / 1.4 - w,
                              cx + dx * r / 1.4 + w, cy + dy * r / 1.4 + w], fill=colour)


def draw_image(kind: int, rng: np.random.Generator) -> bytes:
    """One 480x640 JPEG of class `kind`, as bytes."""
    base = np.array([60, 120, 50]) + rng.integers(-25, 25, 3)
    noise = rng.normal(0, 18, (HEIGHT // 8, WIDTH // 8, 3))  # blotchy, like leaves out of focus
    bg = np.clip(base + noise.repeat(8, 0).repeat(8, 1) + rng.normal(0, 6, (HEIGHT, WIDTH, 3)), 0, 255)
    img = Image.fromarray(bg.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 3))):  # one or two large shapes: visible even at 1/10 scale
        r = float(rng.uniform(100, 160))
        cx, cy = rng.uniform(r, WIDTH - r), rng.uniform(r, HEIGHT - r)
        colour = tuple(int(c) for c in rng.integers(150, 256, 3))
        _shape(draw, kind, cx, cy, r, colour, float(rng.uniform(0, math.pi)))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def class_counts(n: int) -> dict[str, int]:
    """Paddy's class balance scaled to n images, at least 3 a class."""
    total = sum(PADDY_COUNTS.values())
    return {k: max(3, round(n * v / total)) for k, v in PADDY_COUNTS.items()}


def make_sample(out: str | Path, n_train: int = 300, n_test: int = 100, seed: int = 0) -> Path:
    """Write the sample competition to `out` (replacing it whole) and return its path."""
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()) and not (out / "test_answers.csv").is_file():
        raise UserError(f"{out} exists and is not a generated sample (it would be replaced whole); "
                        "pick another folder")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    rng = np.random.default_rng(seed)
    classes = list(PADDY_COUNTS)
    train_labels = [c for c, k in class_counts(n_train).items() for _ in range(k)]
    test_labels = list(rng.choice(classes, n_test,
                                  p=np.array(list(PADDY_COUNTS.values())) / sum(PADDY_COUNTS.values())))
    rows, answers = [], []
    for i, label in enumerate(train_labels):
        image_id = f"{100000 + i}.jpg"
        (tmp / "train_images" / label).mkdir(parents=True, exist_ok=True)
        (tmp / "train_images" / label / image_id).write_bytes(draw_image(classes.index(label), rng))
        rows.append((image_id, label, VARIETIES[int(rng.integers(len(VARIETIES)))],
                     int(rng.integers(45, 83))))
    (tmp / "test_images").mkdir(parents=True)
    for i, label in enumerate(test_labels):
        image_id = f"{200000 + i}.jpg"
        (tmp / "test_images" / image_id).write_bytes(draw_image(classes.index(label), rng))
        answers.append((image_id, label))
    pd.DataFrame(rows, columns=["image_id", "label", "variety", "age"]).to_csv(tmp / "train.csv", index=False)
    # Rows in an order of their own, as a real sample_submission may be: a submission must follow it by id.
    sub = pd.DataFrame(answers, columns=["image_id", "label"]).sample(frac=1, random_state=seed)
    sub.assign(label="").to_csv(tmp / "sample_submission.csv", index=False)
    sub.to_csv(tmp / "test_answers.csv", index=False)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def accuracy(submission: str | Path, answers: str | Path) -> float:
    """Accuracy of a submission.csv against answers, matched on the id, the answers' first column (as Kaggle
    grades); the label is their second."""
    sub, ans = pd.read_csv(submission, dtype=str), pd.read_csv(answers, dtype=str)
    id_col, label_col = ans.columns[:2]
    merged = ans.merge(sub, on=id_col, how="left", suffixes=("", "_pred"))
    return float((merged[label_col] == merged[f"{label_col}_pred"]).mean())


def mean_f1(submission: str | Path, answers: str | Path) -> float:
    """Multi-label: the mean over the answers' images of the F1-score of the submission's labels (separated by
    spaces) against theirs, matched on the id as `accuracy` (Plant Pathology 2021's metric)."""
    sub, ans = pd.read_csv(submission, dtype=str), pd.read_csv(answers, dtype=str)
    id_col, label_col = ans.columns[:2]
    said = dict(zip(sub[id_col], sub[label_col].fillna("")))
    scores = []
    for i, truth in zip(ans[id_col], ans[label_col]):
        pred, truth = set(said.get(i, "").split()), set(truth.split())
        scores.append(2 * len(pred & truth) / (len(pred) + len(truth)))
    return float(np.mean(scores))


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        raise UserError("usage: python -m kernel.sample OUT [--n-train N] [--n-test N]")
    opts = dict(zip(argv[1::2], argv[2::2]))
    try:
        n_train, n_test = int(opts.pop("--n-train", 300)), int(opts.pop("--n-test", 100))
    except ValueError:
        raise UserError("--n-train and --n-test take whole numbers") from None
    if opts:
        raise UserError(f"unknown option {next(iter(opts))}; use --n-train N or --n-test N")
    out = make_sample(argv[0], n_train, n_test)
    print(f"sample competition written to {out} ({n_train} train, {n_test} test images)")


if __name__ == "__main__":
    cli(main)
