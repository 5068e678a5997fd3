"""The generated sample competition: Paddy's layout, consistent, deterministic."""
import filecmp
import subprocess
import sys

import pandas as pd
import pytest
from PIL import Image

from conftest import kernel_subprocess
from kernel.sample import PADDY_COUNTS, accuracy, class_counts, make_sample

pytestmark = pytest.mark.kernel  # runs inside the notebook: also tested on Kaggle's versions (tests/run)


def test_sample_is_consistent_and_byte_identical(tmp_path):
    a = make_sample(tmp_path / "a", n_train=60, n_test=12)
    r = subprocess.run([sys.executable, "-m", "kernel.sample", str(tmp_path / "b"),
                        "--n-train", "60", "--n-test", "12"],
                       capture_output=True, text=True, **kernel_subprocess())
    assert r.returncode == 0, r.stderr
    b = tmp_path / "b"
    train = pd.read_csv(a / "train.csv")
    assert list(train.columns) == ["image_id", "label", "variety", "age"]
    assert set(train.label) == set(PADDY_COUNTS)
    for image_id, label in zip(train.image_id, train.label):
        assert (a / "train_images" / label / image_id).is_file()
    assert sum(1 for _ in (a / "train_images").rglob("*.jpg")) == len(train)
    sub = pd.read_csv(a / "sample_submission.csv")
    assert list(sub.columns) == ["image_id", "label"]
    assert sorted(sub.image_id) == sorted(p.name for p in (a / "test_images").iterdir())
    answers = pd.read_csv(a / "test_answers.csv")
    assert list(answers.image_id) == list(sub.image_id) and answers.label.isin(PADDY_COUNTS).all()
    with Image.open(next((a / "test_images").iterdir())) as im:
        assert (im.format, im.size) == ("JPEG", (480, 640))
    cmp = filecmp.dircmp(a, b)
    files = [p.relative_to(a) for p in a.rglob("*") if p.is_file()]
    assert all(filecmp.cmp(a / f, b / f, shallow=False) for f in files)
    assert not cmp.left_only and not cmp.right_only


def test_sample_never_replaces_a_folder_that_is_not_a_sample(tmp_path):
    precious = tmp_path / "competition"
    precious.mkdir()
    (precious / "train.csv").write_text("image_id,label\n")
    r = subprocess.run([sys.executable, "-m", "kernel.sample", str(precious)],
                       capture_output=True, text=True, **kernel_subprocess())
    assert r.returncode == 2 and "is not a generated sample" in r.stderr and "Traceback" not in r.stderr
    assert (precious / "train.csv").read_text() == "image_id,label\n"


def test_class_counts_follow_paddy_imbalance():
    counts = class_counts(300)
    assert counts["normal"] > counts["tungro"] > counts["bacterial_panicle_blight"] >= 3
    assert abs(sum(counts.values()) - 300) <= 5


def test_accuracy_matches_on_image_id(tmp_path):
    pd.DataFrame({"image_id": ["1.jpg", "2.jpg", "3.jpg"], "label": ["a", "b", "c"]}).to_csv(
        tmp_path / "ans.csv", index=False)
    pd.DataFrame({"image_id": ["3.jpg", "1.jpg", "2.jpg"], "label": ["c", "a", "x"]}).to_csv(
        tmp_path / "sub.csv", index=False)
    assert accuracy(tmp_path / "sub.csv", tmp_path / "ans.csv") == 2 / 3
