"""bench/realsets.py: real bundled images in Paddy's layout and imbalance, deterministic, never clobbering."""
import hashlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import realsets  # noqa: E402
from kernel.errors import UserError  # noqa: E402
from kernel.sample import class_counts  # noqa: E402

N_TRAIN, N_TEST = 60, 20
SMALL = (realsets.WIDTH // 4, realsets.HEIGHT // 4)
NAMES = {"digits": realsets.DIGIT_NAMES, "textures": list(realsets.TEXTURE_SOURCES),
         "scenes": list(realsets.SCENE_SOURCES)}
SOURCES = {"textures": realsets.TEXTURE_SOURCES, "scenes": realsets.SCENE_SOURCES}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("realsets")
    return {name: make(root / name, n_train=N_TRAIN, n_test=N_TEST) for name, make in realsets.SETS.items()}


def grey(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"), dtype=np.float64).ravel()


def corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", list(realsets.SETS))
def test_layout_is_paddys(sets, name):
    data = sets[name]
    train = pd.read_csv(data / "train.csv")
    assert list(train.columns) == ["image_id", "label", "variety", "age"]
    assert train.image_id.is_unique and set(train.label) == set(NAMES[name])
    for image_id, label in zip(train.image_id, train.label):
        assert (data / "train_images" / label / image_id).is_file()
    assert sum(1 for _ in (data / "train_images").rglob("*")  if _.is_file()) == len(train)
    sub = pd.read_csv(data / "sample_submission.csv")
    assert list(sub.columns) == ["image_id", "label"] and sub.label.isna().all()
    assert sorted(sub.image_id) == sorted(p.name for p in (data / "test_images").iterdir())
    assert list(sub.image_id) != sorted(sub.image_id)  # shuffled, as kernel.sample's
    answers = pd.read_csv(data / "test_answers.csv")
    assert list(answers.image_id) == list(sub.image_id) and answers.label.isin(NAMES[name]).all()
    assert not set(answers.image_id) & set(train.image_id)
    for path in [next((data / "test_images").iterdir()),
                 data / "train_images" / train.label[0] / train.image_id[0]]:
        with Image.open(path) as im:
            assert (im.format, im.size, im.mode) == ("JPEG", (realsets.WIDTH, realsets.HEIGHT), "RGB")


@pytest.mark.parametrize("name", list(realsets.SETS))
def test_imbalance_follows_paddys_order(sets, name):
    train = pd.read_csv(sets[name] / "train.csv").label.value_counts()
    answers = pd.read_csv(sets[name] / "test_answers.csv").label.value_counts()
    names = NAMES[name]
    assert [train[n] for n in names] == list(class_counts(N_TRAIN).values())
    assert [answers[n] for n in names] == list(class_counts(N_TEST).values())
    assert train[names[0]] == train.max() > train.min() == train[names[-1]]
    assert all(train[a] >= train[b] for a, b in zip(names, names[1:]))


@pytest.mark.parametrize("name", list(realsets.SETS))
def test_same_seed_same_bytes_other_seed_other_images(tmp_path, name):
    make = realsets.SETS[name]
    a, b = make(tmp_path / "a", 30, 10, seed=3), make(tmp_path / "b", 30, 10, seed=3)
    assert files(a) == files(b)
    c = make(tmp_path / "c", 30, 10, seed=4)
    assert set(files(a).values()) != set(files(c).values())


def test_digits_are_the_bundled_scans(sets):
    """Each image holds the scan its provenance names (the best match among all 1,797), of its label."""
    from sklearn.datasets import load_digits
    scans = load_digits()
    flat = scans.images.reshape(len(scans.images), -1)
    flat = (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-9)
    data = sets["digits"]
    prov = pd.read_csv(data / realsets.PROVENANCE)
    assert len(prov) == sum(class_counts(N_TRAIN).values()) + sum(class_counts(N_TEST).values())
    assert prov.source.is_unique  # no scan used twice
    for row in prov.itertuples():
        folder = data / "train_images" / row.label if row.split == "train" else data / "test_images"
        with Image.open(folder / row.image_id) as im:
            box = im.convert("L").crop((row.x, row.y, row.x + row.side, row.y + row.side))
        ink = 255 - grey(box.resize((8, 8), Image.BOX))
        ink = (ink - ink.mean()) / (ink.std() + 1e-9)
        index = int(row.source.split("[")[1].rstrip("]"))
        assert int(np.argmax(flat @ ink)) == index and realsets.DIGIT_NAMES[scans.target[index]] == row.label
        assert corr(ink, flat[index]) > 0.95
    hashes = [hashlib.sha256(p.read_bytes()).digest() for p in data.rglob("*.jpg")]
    assert len(set(hashes)) == len(hashes)


@pytest.mark.parametrize("name", list(SOURCES))
def test_photo_patches_come_from_their_own_photo(sets, name):
    """Recut from the provenance, each patch matches its photo far better than the same cut of any other."""
    data, sources = sets[name], SOURCES[name]
    prov = pd.read_csv(data / realsets.PROVENANCE)
    assert (prov.groupby("label").source.nunique() == 1).all() and prov.source.nunique() == 10
    photos = {label: realsets.load_photo(source) for label, source in sources.items()}
    for row in prov.itertuples():
        assert row.source == "/".join(sources[row.label])
        band = round(photos[row.label].width * (1 - realsets.TEST_BAND))
        assert (row.x >= band) if row.split == "test" else (row.x + row.w <= band)  # test band kept apart
        folder = data / "train_images" / row.label if row.split == "train" else data / "test_images"
        with Image.open(folder / row.image_id) as im:
            patch = grey(im.resize(SMALL, Image.BOX))  # compared at 60x80: as telling, 16 times cheaper
        scores = {}
        for label, photo in photos.items():
            x, y = min(row.x, photo.width - row.w), min(row.y, photo.height - row.h)
            if x < 0 or y < 0: continue  # this window does not fit that photo
            cut = photo.crop((x, y, x + row.w, y + row.h))
            if row.turn: cut = cut.transpose(Image.ROTATE_90)
            if row.flip_h: cut = ImageOps.mirror(cut)
            if row.flip_v: cut = ImageOps.flip(cut)
            scores[label] = corr(patch, grey(cut.resize(SMALL, Image.BOX)))
        # a scene's smallest views are enlarged 3x from the photo: blurrier than a texture's
        assert max(scores, key=scores.get) == row.label and scores[row.label] > (0.9 if name == "textures"
                                                                                  else 0.8), (row, scores)


def test_scenes_stay_upright_in_their_own_colours_at_many_scales(sets):
    """Scenes are views, not textures: never turned or flipped upside down, a colour photo's views in
    colour, a grey one's grey; windows from a third of the largest that fits to the whole of it."""
    prov = pd.read_csv(sets["scenes"] / realsets.PROVENANCE)
    assert not prov.turn.any() and not prov.flip_v.any() and 0.3 < prov.flip_h.mean() < 0.7
    grey = {label: realsets.load_photo(src).mode == "L" for label, src in realsets.SCENE_SOURCES.items()}
    assert (prov.grey == prov.label.map(grey)).all() and 0 < sum(grey.values()) < len(grey)
    photos = {label: realsets.load_photo(src).size for label, src in realsets.SCENE_SOURCES.items()}
    largest = prov.label.map({k: min(round(w * realsets.TEST_BAND), h) for k, (w, h) in photos.items()})
    scale = prov.h / largest
    assert scale.min() < 0.4 and scale.max() > 0.9
    colour = prov[~prov.grey.astype(bool)].iloc[0]
    folder = sets["scenes"] / ("train_images/" + colour.label if colour.split == "train" else "test_images")
    with Image.open(folder / colour.image_id) as im:
        a = np.asarray(im, dtype=np.float64)
    assert np.abs(a - a.mean(2, keepdims=True)).mean() > 3  # colour, not grey written as RGB


def test_texture_mean_colour_does_not_name_the_photo(sets):
    """Patches of one photo differ in greyness, exposure and tint, and mean colour varies as much
    within a class as between classes (one-way ANOVA F near 1; the photos' own means give F ~ 30)."""
    from scipy.stats import f_oneway
    data = sets["textures"]
    prov = pd.read_csv(data / realsets.PROVENANCE)
    colour = prov[~prov.label.isin(["grass", "gravel", "brick"])]
    # half the patches of colour photos are made grey (p = 0.5), and every patch of a grey photo is
    assert abs(colour.grey.mean() - 0.5) < 0.1 and prov[prov.label == "grass"].grey.all()
    means = []
    for row in prov.itertuples():
        folder = data / "train_images" / row.label if row.split == "train" else data / "test_images"
        with Image.open(folder / row.image_id) as im:
            means.append(np.asarray(im.resize(SMALL, Image.BOX), dtype=np.float64).reshape(-1, 3).mean(0))
    means = np.array(means)
    grass = means[prov.label == "grass"]
    # exposure, tint
    assert np.ptp(grass.mean(1)) > 30 and np.abs(grass - grass.mean(1, keepdims=True)).max() > 5
    for channel in range(3):
        assert f_oneway(*[means[prov.label == c, channel] for c in realsets.TEXTURE_SOURCES]).statistic < 4


def test_refuses_to_replace_a_folder_that_is_not_one_of_its_sets(tmp_path, capsys):
    precious = tmp_path / "competition"
    precious.mkdir()
    (precious / "train.csv").write_text("image_id,label\n")
    sample = tmp_path / "sample"  # kernel.sample's marker is not ours: its samples are not replaced either
    sample.mkdir()
    (sample / "test_answers.csv").write_text("image_id,label\n")
    for make in realsets.SETS.values():
        for folder in (precious, sample):
            with pytest.raises(UserError, match="not a set written by bench/realsets.py"):
                make(folder, 30, 10)
    with pytest.raises(UserError): realsets.digits(precious / "train.csv", 30, 10)  # a file, not a folder
    assert sorted(p.name for p in precious.iterdir()) == ["train.csv"]
    assert (precious / "train.csv").read_text() == "image_id,label\n"
    assert sorted(p.name for p in sample.iterdir()) == ["test_answers.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["competition", "sample"]  # no temp folder left
    (tmp_path / "cli" / "textures").mkdir(parents=True)  # the second set: the first must not be written
    (tmp_path / "cli" / "textures" / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit:
        realsets.cli(realsets.main, [str(tmp_path / "cli")])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith("error: ") and "not a set written by" in err
    assert (tmp_path / "cli" / "textures" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["textures"]


def test_cli_writes_every_set_and_prints_its_class_counts(tmp_path, capsys):
    realsets.main([str(tmp_path), "--seed", "1", "--n_train", "30", "--n_test", "10"])
    printed = capsys.readouterr().out
    n_train, n_test = sum(class_counts(30).values()), sum(class_counts(10).values())
    assert f"digits: {n_train} train, {n_test} test" in printed and f"textures: {n_train} train" in printed
    assert f"zero {class_counts(30)['normal']}, one" in printed and "grass" in printed
    for name in realsets.SETS:
        assert len(pd.read_csv(tmp_path / name / "train.csv")) == n_train
        assert len(pd.read_csv(tmp_path / name / "test_answers.csv")) == n_test


def test_replaces_its_own_set_whole_or_not_at_all(tmp_path, monkeypatch):
    out = realsets.textures(tmp_path / "t", 30, 10, seed=0)
    before = files(out)
    realsets.textures(out, 30, 10, seed=1)  # its own set: replaced
    assert files(out) != before
    after = files(out)
    calls = []
    save = Image.Image.save

    def dies_mid_way(self, *args, **kwargs):  # PIL's save, failing at the sixth image: a crash mid-write
        calls.append(1)
        if len(calls) > 5: raise OSError("killed mid-way")
        return save(self, *args, **kwargs)
    monkeypatch.setattr(Image.Image, "save", dies_mid_way)
    with pytest.raises(OSError): realsets.textures(out, 30, 10, seed=2)
    assert len(calls) == 6 and files(out) == after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t"]  # no temp folder left


def test_too_many_digits_is_one_clear_error(tmp_path):
    with pytest.raises(UserError, match="ask for fewer images"):
        realsets.digits(tmp_path / "d", n_train=1500, n_test=300)
    assert not (tmp_path / "d").exists()
