"""Real image sets that installed packages ship, laid out as Kaggle's Paddy Doctor competition.

    python bench/realsets.py OUT [--seed 0] [--n_train N --n_test N]   # OUT/digits, textures, scenes
    python bench/realsets.py OUT --layout cassava --visible 1          # and OUT/digits-cassava, ...

The generated sample (kernel.sample) tells whether the kit runs; it cannot tell whether the kit learns
real images. These three sets are real pictures that come inside packages already installed (nothing is
downloaded, ever), of three different kinds, cut into Paddy's layout and class imbalance so that
`kernel.train` and stock fastai run on them exactly as on a Kaggle competition:

- `digits`: scans of handwritten digits (scikit-learn's bundled `load_digits`, UCI's 1,797 8x8 scans
  of 43 writers). Class = the digit; orientation carries the class (6 vs 9), so no flips.
- `textures`: patches cut from ten real photographs bundled with scikit-image, scikit-learn and
  matplotlib. Class = the photo; random crops at random scales, random 90-degree turns, flips,
  greyscale, exposure, white balance, contrast and tint, so mean colour does not give the class away
  and a CNN must learn the photo's texture. Test patches come from a band of each photo that no
  train patch touches.
- `scenes`: views of ten other photographs bundled with scikit-image (an astronaut, a cameraman, coins,
  a rocket, a motorcycle, a retina, a printed page, the moon, cells, a clock), upright: no turns, no
  vertical flips, grey photos stay grey and colour ones colour; views span a factor 3.3 in scale (a
  detail to the whole band), under a random exposure. Class = the photo; test views come from a band
  of each photo that no train view touches, as for textures.

All are laid out as Paddy: `train.csv` (image_id,label,variety,age), `train_images/<label>/<id>`,
`test_images/<id>`, `sample_submission.csv` (rows shuffled), plus `test_answers.csv` for scoring with
`kernel.sample.accuracy` and `provenance.csv` saying where each image came from; neither is read by a
kernel. Class sizes follow Paddy's (`kernel.sample.class_counts`), class i of a set taking the place of
Paddy's i-th largest class. `variety` and `age` are drawn at random, as in kernel.sample: they carry
no information here.

Images are 240x320 portrait JPEGs, half Paddy's 480x640 each way: libjpeg's DCT-scale decoding gives
60x80 at 1/4 and 120x160 at 1/2, which cover the CPU stages (64x48, 96x72) at a quarter of Paddy's
decoding cost, while still looking and loading like a competition's photos.
"""
import argparse
import importlib.util
import io
import json
import shutil
import sys
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np
import pandas as pd
from PIL import Image, ImageOps

from kernel.errors import UserError, cli
from kernel.sample import VARIETIES, class_counts

WIDTH, HEIGHT = 240, 320
PROVENANCE = "provenance.csv"  # marks a folder as one of these sets (and says where each image came from)

# Augmentation a user would pick for each set; keys are the kit's Config fields, mapping to fastai's
# aug_transforms(do_flip, flip_vert, max_rotate, min_zoom, max_zoom, max_warp, max_lighting) and the
# random crop's min_scale.
DIGITS_AUG = dict(
    flip=False, flip_vert=False,  # a mirrored 2, 3 or 7 is no digit, and 6 upside down is 9
    max_rotate=10.0,              # writers slant a little, never much
    min_zoom=1.0, max_zoom=1.1,   # zooming out pads with reflections: mirrored ink at the edges
    max_warp=0.1,                 # a little perspective, as a tilted scan
    max_lighting=0.2,             # scans differ in exposure, but only a little
    min_scale=0.9,                # digits sit anywhere on the page: a deep crop would cut strokes off
)
TEXTURES_AUG = dict(
    flip=True, flip_vert=True,    # a texture has no left or right, no up or down
    max_rotate=180.0,             # nor any preferred angle (the patches already come turned by 90s)
    min_zoom=1.0, max_zoom=1.5,   # patches are cut at scales a factor 1.8 apart: zoom is no cue
    max_warp=0.2,
    max_lighting=0.3,             # patches come brightened, darkened and tinted: so may training's
    min_scale=0.5,                # any part of a patch shows the same texture
)
SCENES_AUG = dict(
    flip=True, flip_vert=False,   # a mirrored photo is the same photo; one upside down is not
    max_rotate=10.0,              # a hand-held camera tilts a little
    min_zoom=1.0, max_zoom=1.3,   # views already come at many scales
    max_warp=0.2,
    max_lighting=0.3,             # views come under a random exposure
    min_scale=0.5,
)

# Digit d takes the place of Paddy's d-th largest class: "zero" is the commonest, "nine" the rarest.
DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Class -> (package, file inside it): real photographs inside the installed wheels, read as files, so
# no loader can reach for the network (skimage.data fetches what it lacks with pooch). In Paddy's
# order: "grass" takes the place of Paddy's largest class, "coffee" of its rarest; the three grey
# photos are not all at the top, so that "grey or colour" does not split big classes from small.
TEXTURE_SOURCES = {
    "grass": ("skimage", "data/grass.png"),        # 512x512 grey: blades of grass
    "tissue": ("skimage", "data/ihc.png"),         # 512x512 colour: stained tissue under a microscope
    "gravel": ("skimage", "data/gravel.png"),      # 512x512 grey: pebbles
    "temple": ("sklearn", "datasets/images/china.jpg"),     # 640x427 colour: roofs, trees, sky
    "brick": ("skimage", "data/brick.png"),        # 512x512 grey: a brick wall, courses one way
    "galaxies": ("skimage", "data/hubble_deep_field.jpg"),  # 1000x872 colour: Hubble deep field
    "dahlia": ("sklearn", "datasets/images/flower.jpg"),    # 640x427 colour: petals on green leaves
    "portrait": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),  # 512x600 colour: face, uniform
    "cat": ("skimage", "data/chelsea.png"),        # 451x300 colour: fur, eyes
    "coffee": ("skimage", "data/coffee.png"),      # 600x400 colour: cup on a wooden table
}
# Upright photographs, none of them in TEXTURE_SOURCES: objects and scenes rather than texture.
SCENE_SOURCES = {
    "astronaut": ("skimage", "data/astronaut.png"),    # 512x512 colour: a portrait with a flag
    "camera": ("skimage", "data/camera.png"),          # 512x512 grey: a cameraman on a lawn
    "coins": ("skimage", "data/coins.png"),            # 384x303 grey: coins on a table
    "rocket": ("skimage", "data/rocket.jpg"),          # 640x427 colour: a rocket on its pad
    "motorcycle": ("skimage", "data/motorcycle_left.png"),  # 741x500 colour: a motorcycle indoors
    "retina": ("skimage", "data/retina.jpg"),          # 1411x1411 colour: the back of an eye
    "page": ("skimage", "data/page.png"),              # 384x191 grey: a printed page
    "moon": ("skimage", "data/moon.png"),              # 512x512 grey: the moon's surface
    "cells": ("skimage", "data/cell.png"),             # 550x660 grey: cells under a microscope
    "clock": ("skimage", "data/clock_motion.png"),     # 400x300 grey: a clock, motion-blurred
}
TEST_BAND = 0.35  # test patches come from the right 35% of each photo, train patches from the rest


def package_file(package: str, relative: str) -> Path:
    """A data file shipped inside an installed package, found without importing (or running) it."""
    spec = importlib.util.find_spec(package)
    path = Path(next(iter(spec.submodule_search_locations))) / relative if spec else None
    if path is None or not path.is_file():
        raise UserError(f"{package}'s bundled {relative} not found; install requirements.txt "
                        "(bash setup.sh python bench/realsets.py OUT)")
    return path


def split_counts(n_train: int, n_test: int, names: list[str]) -> dict[str, tuple[int, int]]:
    """Per class, (train, test) counts in Paddy's proportions, `names[i]` standing for Paddy's i-th class."""
    train, test = class_counts(n_train).values(), class_counts(n_test).values()
    return dict(zip(names, zip(train, test)))


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def refuse_foreign(out: Path) -> None:
    """Refuse an `out` holding anything that is not one of these sets: writing replaces `out` whole."""
    if out.exists() and (not out.is_dir() or any(out.iterdir()) and not (out / PROVENANCE).is_file()):
        raise UserError(f"{out} exists and is not a set written by bench/realsets.py "
                        "(it would be replaced whole); pick another folder")


def claim(out: Path) -> Path:
    """A fresh temp folder beside `out`, once `out` is known to be free or one of these sets."""
    refuse_foreign(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "test_images").mkdir(parents=True)
    return tmp


def write_set(out: str | Path, items: list[tuple[str, str, Image.Image, dict]],
              rng: np.random.Generator, seed: int) -> Path:
    """Write `items` (split, label, image, provenance) as a competition at `out`, whole or not at all.

    Ids are given in a shuffled order, so neither an id nor a file's position says its class.
    """
    out = Path(out).resolve()
    tmp = claim(out)
    try:
        order = rng.permutation(len(items))
        rows, answers, provenance = [], [], []
        for n, i in enumerate(order):
            split, label, img, record = items[i]
            image_id = f"{(100000 if split == 'train' else 200000) + n}.jpg"
            if split == "train":
                (tmp / "train_images" / label).mkdir(parents=True, exist_ok=True)
                (tmp / "train_images" / label / image_id).write_bytes(jpeg(img))
                variety, age = VARIETIES[int(rng.integers(len(VARIETIES)))], int(rng.integers(45, 83))
                rows.append((image_id, label, variety, age))
            else:
                (tmp / "test_images" / image_id).write_bytes(jpeg(img))
                answers.append((image_id, label))
            provenance.append({"image_id": image_id, "split": split, "label": label, **record})
        train = pd.DataFrame(rows, columns=["image_id", "label", "variety", "age"])
        train.to_csv(tmp / "train.csv", index=False)
        sub = pd.DataFrame(answers, columns=["image_id", "label"]).sample(frac=1, random_state=seed)
        sub.assign(label="").to_csv(tmp / "sample_submission.csv", index=False)
        sub.to_csv(tmp / "test_answers.csv", index=False)
        pd.DataFrame(provenance).sort_values("image_id").to_csv(tmp / PROVENANCE, index=False)
    except BaseException:  # an error mid-way: nothing of this attempt stays beside `out`
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def digit_image(scan: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, dict]:
    """One 8x8 scan (ink 0..16) as dark ink on white paper, enlarged smoothly, placed on a portrait page.

    Size and place on the page vary (a digit is not always centred, nor always the same size); the
    pixels are the scan's, only enlarged.
    """
    side = int(rng.integers(120, 221))
    x, y = int(rng.integers(0, WIDTH - side + 1)), int(rng.integers(0, HEIGHT - side + 1))
    ink = Image.fromarray((255 - scan * 255 / 16).astype(np.uint8))
    page = Image.new("L", (WIDTH, HEIGHT), 255)
    page.paste(ink.resize((side, side), Image.BICUBIC), (x, y))
    return page.convert("RGB"), {"x": x, "y": y, "side": side}


def digits(out: str | Path, n_train: int = 750, n_test: int = 250, seed: int = 0) -> Path:
    """Write the digits set to `out` and return its path; each of the 1,797 scans is used at most once.

    Paddy's largest class is 17% of it, and "zero" has 178 scans: n_train + n_test up to about 1,050.
    """
    from sklearn.datasets import load_digits  # reads the csv.gz inside scikit-learn; never downloads
    data = load_digits()
    rng = np.random.default_rng(seed)
    items = []
    for d, (name, (k_train, k_test)) in enumerate(split_counts(n_train, n_test, DIGIT_NAMES).items()):
        scans = rng.permutation(np.flatnonzero(data.target == d))
        if k_train + k_test > len(scans):
            raise UserError(f"digits has {len(scans)} scans of {name}, {k_train + k_test} asked; "
                            "ask for fewer images (n_train + n_test up to about 1,050)")
        for k, index in enumerate(scans[:k_train + k_test]):
            img, record = digit_image(data.images[index], rng)
            split = "train" if k < k_train else "test"
            items.append((split, name, img, {"source": f"load_digits[{index}]", **record}))
    return write_set(out, items, rng, seed)


def texture_patch(photo: Image.Image, split: str, rng: np.random.Generator, *, upright: bool = False,
                  smallest: float = 0.55) -> tuple[Image.Image, dict]:
    """A 240x320 patch of `photo`, from its train area (left 65%) or test band (right 35%).

    The window's long side is `smallest`..100% of the largest that fits the test band (0.55: patches of
    one photo span a factor 1.8 in scale); a landscape window is turned by 90 degrees to portrait. Then
    flips, and colour: greyscale (half the patches of colour photos), a random exposure and white
    balance, contrast and tint, so that neither greyness nor mean colour names the photo. `upright`: a
    view of a scene instead: portrait windows only, no turn, no vertical flip, colour photos kept colour.
    """
    w, h = photo.size
    band = round(w * (1 - TEST_BAND))
    x0, x1 = (0, band) if split == "train" else (band, w)
    long = round(float(rng.uniform(smallest, 1.0)) * min(w - band, h))
    turn = not upright and bool(rng.random() < 0.5)
    cw, ch = (long, long * 3 // 4) if turn else (long * 3 // 4, long)
    x, y = int(rng.integers(x0, x1 - cw + 1)), int(rng.integers(0, h - ch + 1))
    patch = photo.crop((x, y, x + cw, y + ch))
    if turn: patch = patch.transpose(Image.ROTATE_90)
    flip_h, flip_v = bool(rng.random() < 0.5), not upright and bool(rng.random() < 0.5)
    if flip_h: patch = ImageOps.mirror(patch)
    if flip_v: patch = ImageOps.flip(patch)
    grey = photo.mode == "L" or not upright and bool(rng.random() < 0.5)
    a = np.asarray(patch.convert("L").convert("RGB") if grey else patch.convert("RGB"), dtype=np.float32)
    # A camera's auto exposure and white balance: each channel's mean set to one random level, then a
    # random tint. The photo's own brightness and colour cast are gone; its texture and colours stay.
    level, contrast = float(rng.uniform(70, 180)), float(rng.uniform(0.75, 1.33))
    tint = rng.uniform(0.85, 1.15, 3)
    a = np.clip((a - a.mean((0, 1))) * contrast + level * tint, 0, 255)
    img = Image.fromarray(a.astype(np.uint8)).resize((WIDTH, HEIGHT), Image.BICUBIC)
    return img, {"x": x, "y": y, "w": cw, "h": ch, "turn": int(turn), "flip_h": int(flip_h),
                 "flip_v": int(flip_v), "grey": int(grey)}


def load_photo(source: tuple[str, str]) -> Image.Image:
    """The bundled photo at `source` (package, file): RGB, or L for greyscale photos."""
    with Image.open(package_file(*source)) as im:
        return im.convert("L" if im.mode in ("L", "I", "I;16") else "RGB")


def photo_set(out: str | Path, sources: dict[str, tuple[str, str]], n_train: int, n_test: int, seed: int,
              **patch) -> Path:
    """Write a set whose class is the photo each patch is cut from (`texture_patch(**patch)`)."""
    rng = np.random.default_rng(seed)
    items = []
    for label, (k_train, k_test) in split_counts(n_train, n_test, list(sources)).items():
        photo = load_photo(sources[label])
        for k in range(k_train + k_test):
            split = "train" if k < k_train else "test"
            img, record = texture_patch(photo, split, rng, **patch)
            items.append((split, label, img, {"source": "/".join(sources[label]), **record}))
    return write_set(out, items, rng, seed)


def textures(out: str | Path, n_train: int = 1000, n_test: int = 300, seed: int = 0) -> Path:
    """Write the textures set to `out` and return its path."""
    return photo_set(out, TEXTURE_SOURCES, n_train, n_test, seed)


def scenes(out: str | Path, n_train: int = 1000, n_test: int = 300, seed: int = 0) -> Path:
    """Write the scenes set to `out` and return its path: upright views, a factor 3.3 apart in scale."""
    return photo_set(out, SCENE_SOURCES, n_train, n_test, seed, upright=True, smallest=0.3)


SETS = {"digits": digits, "textures": textures, "scenes": scenes}

# Real code competitions' layouts (kernel/layout.py reads each with no flag): train.csv's columns, whether
# labels are written as class numbers, the images' folder and format, and whether the ids carry the extension.
LAYOUTS = {
    # Cassava Leaf Disease Classification: flat, integer labels, label_num_to_disease_map.json
    "cassava": dict(id="image_id", target="label", numbers=True, suffix=".jpg", ids_carry=True, test_csv=False),
    # APTOS 2019 Blindness Detection: flat .png, ids without extension, test.csv beside sample_submission.csv
    "aptos": dict(id="id_code", target="diagnosis", numbers=True, suffix=".png", ids_carry=False,
                  test_csv=True),
    # Plant Pathology 2021 - FGVC8: flat .jpg, labels separated by spaces (multi-label). `second`: half the
    # images (by their id) carry that label too, and show it: a rust-brown cast over the whole image
    "plant": dict(id="image", target="labels", numbers=False, suffix=".jpg", ids_carry=True, test_csv=False,
                  second="rust"),
}
RUST = np.array([180, 90, 30], dtype=np.float32)


def rusted(img: Image.Image) -> Image.Image:
    """`img` blended half and half with rust brown: a label a CNN sees at any size (green turns brown)."""
    return Image.fromarray((0.5 * np.asarray(img, dtype=np.float32) + 0.5 * RUST).astype(np.uint8))


def relay(src: str | Path, out: str | Path, layout: str, *, visible: int | None = None) -> Path:
    """Competition `src` (Paddy's layout, from this module or kernel.sample) laid out at `out` as `layout`
    lays its files, whole or not at all. `visible`: only that many test images (in sample_submission's order),
    as a code competition shows while the notebook is written; the rest is what its rerun mounts instead.
    `test_answers.csv` answers the test images there, in the competition's columns. A layout with a `second`
    label (multi-label) gives it to the images whose id hashes even, and rusts them (`rusted`)."""
    src, out, how = Path(src), Path(out).resolve(), LAYOUTS[layout]
    refuse_foreign(out)
    tmp = claim(out)
    try:
        train = pd.read_csv(src / "train.csv", dtype=str)
        classes = sorted(train.label.unique())
        name = lambda i: f"{Path(i).stem}{how['suffix']}"  # the file
        key = lambda i: name(i) if how["ids_carry"] else Path(i).stem  # the id, as train.csv writes it
        second = how.get("second")
        rust = lambda i: second is not None and zlib.crc32(Path(i).stem.encode()) % 2 == 0
        label = lambda c: str(classes.index(c)) if how["numbers"] else c
        labels = lambda i, c: " ".join(sorted([label(c), second])) if rust(i) else label(c)

        def copy(path: Path, i: str, folder: str) -> None:
            img = Image.open(path).convert("RGB")
            (rusted(img) if rust(i) else img).save(tmp / folder / name(i))
        (tmp / "train_images").mkdir()
        for i, c in zip(train.image_id, train.label): copy(src / "train_images" / c / i, i, "train_images")
        targets = map(labels, train.image_id, train.label)
        pd.DataFrame({how["id"]: map(key, train.image_id), how["target"]: targets}).to_csv(
            tmp / "train.csv", index=False)
        answers = pd.read_csv(src / "test_answers.csv", dtype=str).iloc[:visible]
        for i in answers.image_id: copy(src / "test_images" / i, i, "test_images")
        ids = list(map(key, answers.image_id))
        pd.DataFrame({how["id"]: ids, how["target"]: label(classes[0])}).to_csv(
            tmp / "sample_submission.csv", index=False)
        if how["test_csv"]: pd.DataFrame({how["id"]: sorted(ids)}).to_csv(tmp / "test.csv", index=False)
        if how["numbers"]:
            (tmp / "label_num_to_disease_map.json").write_text(json.dumps(dict(enumerate(classes)), indent=1))
        pd.DataFrame({how["id"]: ids, how["target"]: map(labels, answers.image_id, answers.label)}).to_csv(
            tmp / "test_answers.csv", index=False)
        (tmp / PROVENANCE).write_text(f"relaid as {layout} from {src}\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="writes OUT/digits, OUT/textures and OUT/scenes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n_train", type=int, help="train images of each set (default: the set's own)")
    p.add_argument("--n_test", type=int, help="test images of each set (default: the set's own)")
    p.add_argument("--layout", choices=["paddy", *LAYOUTS], default="paddy",
                   help="lay each set out as this competition does (default: Paddy Doctor's)")
    p.add_argument("--visible", type=int, help="test images kept visible, as a code competition shows them")
    args = p.parse_args(argv)
    sizes = {k: v for k, v in vars(args).items() if k.startswith("n_") and v is not None}
    for name in SETS: refuse_foreign(Path(args.out).resolve() / name)  # all or none of the sets written
    for name, make in SETS.items():
        path = make(Path(args.out) / name, seed=args.seed, **sizes)
        if args.layout != "paddy":
            path = relay(path, path.with_name(f"{name}-{args.layout}"), args.layout, visible=args.visible)
        train = pd.read_csv(path / "train.csv", dtype=str)
        n_test = len(pd.read_csv(path / "test_answers.csv"))
        print(f"{name}: {len(train)} train, {n_test} test images at {path}")
        print("  " + ", ".join(f"{k} {v}" for k, v in train.iloc[:, 1].value_counts().items()))


if __name__ == "__main__":
    cli(main)
