"""Members of any shape: how an image is fitted to a stage's size (`resize`: squish, crop, pad), on real
pixels, through every loader a member has; fixed-size models (Swin) at their native size."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.callback.core import Callback
from fastai.vision.all import Normalize
from PIL import Image
from timm.models import register_model
from timm.models.swin_transformer import _create_swin_transformer

from kernel import Config, UserError, data, plan, predict
from kernel.config import parse_args
from kernel.sample import make_sample
from kernel.train import run

pytestmark = pytest.mark.kernel  # runs inside the notebook: also tested on Kaggle's versions (tests/run)

RED, BLUE, BLACK = (230, 20, 20), (20, 20, 230), (0, 0, 0)


def quiet(*_): pass


def banded(w: int = 480, h: int = 640, band: int = 64) -> Image.Image:
    """Paddy's shape (480 wide, 640 high): blue, with red bands `band` rows high at the top and bottom."""
    a = np.empty((h, w, 3), np.uint8)
    a[:] = BLUE
    a[:band] = a[-band:] = RED
    return Image.fromarray(a)


def colour(px: np.ndarray) -> str:
    """The colour a pixel (0-255 RGB) is closest to, of red, blue and black; 'mix' for a pixel about
    halfway between two (an edge, resampled)."""
    names = {"red": RED, "blue": BLUE, "black": BLACK}
    dist = {n: np.abs(px.astype(float) - c).sum() for n, c in names.items()}
    best = min(dist, key=dist.get)
    return best if dist[best] < 200 else "mix"


def rows(a: np.ndarray) -> str:
    """Each row's colour along the middle column, run-length coded, edges left out: 'red 6, blue 52, red 6'.
    """
    names = [c for y in range(a.shape[0]) if (c := colour(a[y, a.shape[1] // 2])) != "mix"]
    runs = []
    for n in names:
        if runs and runs[-1][0] == n: runs[-1][1] += 1
        else: runs.append([n, 1])
    return ", ".join(f"{n} {k}" for n, k in runs if k > 1)  # a lone row between two runs is their edge


@pytest.fixture(scope="module")
def jpeg(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("img") / "banded.jpg"
    banded().save(path, quality=95)
    return path


def test_each_mode_fits_the_image_as_it_claims_decoded_no_larger_than_needed(jpeg, tmp_path):
    """64x64 from 480x640 with bands 64 rows high: squish keeps both bands squeezed (6.4 rows each); a
    centre crop cuts the image to its middle 480x480 (no band); a crop at the top keeps the top band whole
    (64 wide x 85 high, cut at row 0: the band's 8.5 rows); pad keeps the whole image 48 wide, between black
    bars 8 columns wide."""
    load = lambda *a: np.asarray(data.load_image(jpeg, (64, 64), *a))
    squish = load("squish")
    assert squish.shape == (64, 64, 3) and rows(squish) == "red 6, blue 52, red 6"
    assert rows(load("crop")) == "blue 64" == rows(load("crop", (0.5, 0.5)))
    top = rows(load("crop", (0.0, 0.5)))
    assert top == "red 8, blue 55"  # the band's 8.5 rows: 8, the edge row half of each
    pad = load("pad")
    assert pad.shape == (64, 64, 3) and rows(pad) == "red 6, blue 52, red 6"
    assert {colour(pad[y, x]) for y in range(64) for x in [*range(8), *range(56, 64)]} == {"black"}
    assert colour(pad[32, 8]) == colour(pad[32, 55]) == "blue"
    # a landscape image (640 wide) padded into a portrait size: 48 x 36, bars of 14 rows above and below
    banded(640, 480).save(tmp_path / "wide.jpg", quality=95)
    wide = rows(np.asarray(data.load_image(tmp_path / "wide.jpg", (64, 48), "pad")))
    assert wide.startswith("black 14, red") and wide.endswith("red 5, black 14")


def test_a_bad_mode_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"--resize 'stretch' must be one of squish, crop, pad"):
        Config.make(None, resize="stretch")
    with pytest.raises(UserError, match=r"--resize 'fill' must be one of"):
        plan.models(Config.make(None, members="a resize=fill"))


@pytest.fixture(scope="module")
def banded_comp(tmp_path_factory) -> Path:
    """A competition in Paddy's layout whose every image is the banded one."""
    comp = make_sample(tmp_path_factory.mktemp("comp") / "banded", n_train=20, n_test=6, seed=3)
    for p in [*comp.glob("train_images/*/*.jpg"), *comp.glob("test_images/*.jpg")]:
        banded().save(p, quality=95)
    return comp


class Seen(Callback):
    """The batches every learner of a run sees, as images again (Normalize undone), by where they were:
    train, valid (training's validation) or predict (the prediction's learner)."""
    order = 100

    def __init__(self, seen: dict): self.seen = seen

    def before_batch(self):
        fitting = any(type(c).__name__ == "EpochEnd" for c in self.learn.cbs)
        where = ("train" if self.training else "valid") if fitting else "predict"
        norm = next(t for t in self.dls.after_batch.fs if isinstance(t, Normalize))
        x = norm.decode(self.xb[0]).clamp(0, 1)
        self.seen.setdefault(where, []).extend(
            (x * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy())


def still(**kw) -> dict:
    """No random augmentation: what reaches the batch is what the loader decoded."""
    return dict(flip=False, max_rotate=0, min_zoom=1, max_zoom=1, max_warp=0, max_lighting=0, min_scale=1,
                **kw)


def test_a_members_mode_reaches_its_training_validation_prediction_and_exported_model(banded_comp, tmp_path):
    """Two members, crop and pad, each run as the ensemble runs it (its config through the command line a
    member's process gets): a crop is cut at random in training and TTA's augmented passes (the bands
    show, top or bottom) and at the centre in validation and the plain pass of prediction, in training and
    from the exported model (no band); pad shows its black bars in all of them."""
    cfg = Config.make("cpu-scratch", data=str(banded_comp), arch="test_resnet", stages="64x64:1:4:1", tta=1,
                      valid_pct=0.25, members="c resize=crop; p resize=pad", **still())
    test, undecodable, _ = data.checked_test(cfg, quiet)
    for m in cfg.members:
        out = tmp_path / m.name
        member = parse_args(plan.member(cfg, m, str(out)).to_args())  # what its process is given
        assert member.resize == {"c": "crop", "p": "pad"}[m.name]
        seen: dict = {}
        run(member, cbs=[Seen(seen)], log=quiet)
        predict.predict(out, test, undecodable, cbs=[Seen(seen)], log=quiet)
        assert set(seen) == {"train", "valid", "predict"}
        assert len(seen["predict"]) == 2 * 2 * 6  # TTA 1 + the plain pass, 6 images, in training and after
        for where, images in seen.items():
            bars = [rows(a) for a in images]
            if m.name == "p":
                assert all(colour(a[32, 2]) == "black" == colour(a[32, 61]) for a in images), where
                odd = [b for b in bars if [r.split()[0] for r in b.split(", ")] != ["red", "blue", "red"]]
                assert not odd, (where, sorted(set(odd)))  # the whole image, resampled by fastai's affine
            elif where == "valid":
                assert all(b == "blue 64" for b in bars), bars
            else:  # training and TTA's augmented passes (fastai's tta augments as training does)
                plain = bars[6:12] + bars[18:] if where == "predict" else []  # each call's last pass
                assert all(b == "blue 64" for b in plain), plain
                cut = bars[:6] + bars[12:18] if where == "predict" else bars
                assert sum("red" in b for b in cut) >= len(cut) // 2, cut  # cut at random: a band shows


@register_model
def pkk_test_swin(pretrained: bool = False, **kwargs):
    """A Swin that takes 64x64 images only (timm's Swin-T, its pretrained config said 64x64, in 2 tiny
    stages): a fixed-size model that trains on a CPU in seconds."""
    overlay = kwargs.get("pretrained_cfg_overlay") or {}
    kwargs["pretrained_cfg_overlay"] = {**overlay, "input_size": (3, 64, 64)}
    return _create_swin_transformer("swin_tiny_patch4_window7_224", pretrained, img_size=64, window_size=4,
                                    embed_dim=16, depths=(1, 1), num_heads=(1, 2), **kwargs)


def test_a_fixed_size_model_trains_at_its_own_size_unless_a_member_gives_it_other_stages(tmp_path):
    """A Swin (64x64 only) with the run's stages (two, at other sizes) trains one stage of their epochs at
    64x64, batch and accumulation of the last, and predicts; a member's own stages at another size are
    refused in one line naming the member and the fix; stages at its size are kept. swin_tiny itself
    (224x224) is recognised from timm's config, on the meta device."""
    small = make_sample(tmp_path / "small", n_train=30, n_test=4, seed=1)
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="pkk_test_swin",
                      stages="64x48:1:8:1,96x72:1:8:2", tta=0, valid_pct=0.2)
    lines: list[str] = []
    run(cfg, log=lines.append)
    h = pd.read_csv(tmp_path / "out" / "history.csv")
    assert list(h["size"]) == ["64x64", "64x64"] and len(pd.read_csv(tmp_path / "out" / "probs.csv")) == 4
    assert any("takes only 64x64 images: one stage 64x64:2:8:2" in line for line in lines)
    with pytest.raises(UserError, match=r"^member s: swin_tiny_patch4_window7_224 takes only 224x224 images, "
                                        r"not the stages 64x48:1:8:1; give it stages at 224x224"):
        plan.models(Config.make(None, members="s arch=swin_tiny_patch4_window7_224 stages=64x48:1:8:1"))
    own = plan.models(Config.make(None, members="s arch=swin_tiny_patch4_window7_224 stages=224x224:3:32:4"))
    assert [str(s) for s in own[0].stages] == ["224x224:3:32:4"]
