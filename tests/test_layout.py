"""Real code competitions' layouts, read with no flag beyond --data (kernel/layout.py): trained on the visible
folder, then the exported model predicts the folder a rerun mounts instead (`kernel.predict`, as the inference
kernel does), in the competition's own columns and label form."""
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import realsets  # noqa: E402
from kernel import layout, predict  # noqa: E402
from kernel.config import Config  # noqa: E402
from kernel.errors import UserError  # noqa: E402
from kernel.sample import make_sample, mean_f1  # noqa: E402
from kernel.submission import THRESHOLDS, choose_threshold, chosen, f1_samples, write_submission  # noqa: E402
from kernel.train import run  # noqa: E402

pytestmark = pytest.mark.kernel


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("comp") / "small", n_train=60, n_test=12, seed=1)


@pytest.mark.parametrize("layout,described", [
    ("cassava", "train_images/<image_id> from train.csv (image_id -> label, 10 classes)"),
    ("aptos", "train_images/<id_code>.png from train.csv (id_code -> diagnosis, 10 classes)"),
])
def test_a_code_competitions_layout_trains_with_only_data_and_its_model_predicts_the_hidden_set(
        small, tmp_path, layout, described):
    how = realsets.LAYOUTS[layout]
    visible = realsets.relay(small, tmp_path / "visible", layout, visible=1)
    hidden = realsets.relay(small, tmp_path / "hidden", layout)
    logged = []
    cfg = Config.make("cpu-scratch", data=str(visible), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:1:8:1", tta=0)
    sub = pd.read_csv(run(cfg, log=logged.append), dtype=str)
    assert any(described in line for line in logged), logged[:3]
    assert list(sub.columns) == [how["id"], how["target"]]
    assert list(sub[how["id"]]) == list(pd.read_csv(visible / "sample_submission.csv", dtype=str)[how["id"]])
    classes = {str(k) for k in range(10)}  # labels written back as the competition writes them: numbers
    assert set(sub[how["target"]]) <= classes
    # the rerun: the same model, the hidden folder mounted in the visible one's place
    path = predict.run([tmp_path / "out"], hidden, tmp_path / "rerun", log=lambda *_: None)
    hid = pd.read_csv(path, dtype=str)
    order = list(pd.read_csv(hidden / "sample_submission.csv", dtype=str)[how["id"]])
    assert list(hid[how["id"]]) == order and len(order) == 12 and len(set(order)) == 12
    assert list(hid.columns) == list(sub.columns) and set(hid[how["target"]]) <= classes


def test_a_folder_the_kit_cannot_read_is_one_line_naming_what_was_found(small, tmp_path):
    d = realsets.relay(small, tmp_path / "d", "aptos", visible=1)
    train = pd.read_csv(d / "train.csv", dtype=str)
    train.assign(id_code="x" + train.id_code).to_csv(d / "train.csv", index=False)
    with pytest.raises(UserError) as e:
        run(Config.make("cpu-scratch", data=str(d), out=str(tmp_path / "out")))
    first = train.diagnosis[0]
    assert str(e.value) == (f"train.csv's first images are not in {d}/train_images/ (looked for "
                            f"{first}/x100000 and x100000, with and without an extension); "
                            "set --id_col to the column of image names")


def test_a_multi_label_competition_trains_thresholds_on_validation_and_beats_the_commonest_label_set(tmp_path):
    """Plant Pathology 2021's layout: labels separated by spaces. Here each image's class, and for half of them
    `rust`, which they show (bench/realsets.py): trained as multi-label with only --data, the threshold chosen
    on the validation split, each image's labels written back sorted and separated by spaces."""
    sample = make_sample(tmp_path / "sample", n_train=120, n_test=40, seed=1)
    d = realsets.relay(sample, tmp_path / "plant", "plant")
    logged = []
    cfg = Config.make("cpu-scratch", data=str(d), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="32x24:3:8:1", tta=0)
    path = run(cfg, log=logged.append)
    assert any("train_images/<image> from train.csv (image -> labels, 11 labels, multi-label)" in line
               for line in logged), logged[:3]
    meta = json.loads((tmp_path / "out" / "model.json").read_text())
    assert meta["multilabel"] is True and meta["threshold"] in THRESHOLDS
    said = [line for line in logged if line.startswith("multi-label threshold")]
    assert len(said) == 1 and said[0].startswith(f"multi-label threshold {meta['threshold']:.2f}: the best")
    sub = pd.read_csv(path, dtype=str)
    assert list(sub.columns) == ["image", "labels"]
    assert list(sub.image) == list(pd.read_csv(d / "sample_submission.csv", dtype=str).image)
    sets = [s.split(" ") for s in sub.labels]
    assert all(s == sorted(set(s)) and set(s) <= set(meta["vocab"]) for s in sets)
    # better than the commonest label set of train.csv on every image (a model that learnt nothing can do that)
    commonest = pd.read_csv(d / "train.csv", dtype=str).labels.value_counts().index[0]
    sub.assign(labels=commonest).to_csv(tmp_path / "commonest.csv", index=False)
    answers = d / "test_answers.csv"
    f1, floor = mean_f1(path, answers), mean_f1(tmp_path / "commonest.csv", answers)
    assert f1 > floor + 0.1, f"mean F1 {f1:.2f}, the commonest label set's {floor:.2f}"
    # the inference kernel's path writes the same labels, from the exported model and its threshold
    again = predict.run([tmp_path / "out"], d, tmp_path / "rerun", log=lambda *_: None)
    pd.testing.assert_frame_equal(pd.read_csv(again, dtype=str), sub)


def test_multi_label_probabilities_become_the_labels_at_or_above_the_threshold_else_the_likeliest(tmp_path):
    probs = pd.DataFrame({"image": ["a.jpg", "b.jpg", "c.jpg"], "scab": [0.9, 0.2, 0.1],
                          "rust": [0.7, 0.3, 0.05], "healthy": [0.1, 0.1, 0.2]})
    sub = pd.read_csv(write_submission(probs, None, "image", "labels", tmp_path / "s.csv", threshold=0.5))
    assert sub.labels.tolist() == ["rust scab", "rust", "healthy"]  # sorted; none passes: the most probable
    single = pd.read_csv(write_submission(probs, None, "image", "labels", tmp_path / "t.csv"))
    assert single.labels.tolist() == ["scab", "rust", "healthy"]
    # the threshold chosen scores the best mean F1 of the grid (ties: the one nearest 0.5)
    truth = np.array([[True, True, False], [False, True, False], [False, False, True]])
    p = probs[["scab", "rust", "healthy"]].to_numpy()
    assert choose_threshold(p, truth) == (0.5, 1.0)
    assert f1_samples(chosen(p, 0.15), truth) == pytest.approx((1 + 2 / 3 + 1) / 3)


def test_class_names_with_spaces_stay_single_labels_and_an_unreadable_target_is_one_line(small, tmp_path):
    """`Early blight` is one class, not two labels: multi-label is a row of several labels each seen alone
    elsewhere, never in class folders (an image sits in one); a label missing, or a sample_submission of one
    column per class, is one line."""
    assert not layout.multilabel(pd.Series(["Early blight", "Late blight", "healthy"]))
    assert layout.multilabel(pd.Series(["scab", "rust", "rust scab"]))
    probs = pd.DataFrame({"image_id": ["a.jpg", "b.jpg"], "Early blight": [0.9, 0.2], "healthy": [0.1, 0.8]})
    sub = pd.read_csv(write_submission(probs, None, "image_id", "label", tmp_path / "s.csv"))
    assert sub.label.tolist() == ["Early blight", "healthy"]
    d = tmp_path / "d"
    shutil.copytree(small, d)
    train = pd.read_csv(d / "train.csv", dtype=str)
    names = {"normal": "normal blast", "blast": "blast"}  # folders: "normal blast" is a class of its own
    for old, new in names.items():
        if old != new: (d / "train_images" / old).rename(d / "train_images" / new)
    train.assign(label=train.label.replace(names)).to_csv(d / "train.csv", index=False)
    assert not layout.read(Config.make("cpu", data=str(d)))[0].multilabel
    train.assign(label=[""] + list(train.label[1:])).to_csv(d / "train.csv", index=False)
    with pytest.raises(UserError, match=r"^1 train.csv rows have no label \(e.g. line 2 of the file\); give"):
        layout.read(Config.make("cpu", data=str(d)))
    pd.DataFrame({"image_id": ["x.jpg"], "healthy": [0.5], "rust": [0.5]}).to_csv(
        d / "sample_submission.csv", index=False)
    with pytest.raises(UserError, match="has 3 columns .*: a submission of one column per class"):
        layout.read(Config.make("cpu", data=str(d)))
