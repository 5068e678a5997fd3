"""Real code competitions' layouts, read with no flag beyond --data (kernel/layout.py): trained on the visible
folder, then the exported model predicts the folder a rerun mounts instead (`kernel.predict`, as the inference
kernel does), in the competition's own columns and label form."""
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import realsets  # noqa: E402
from kernel import predict  # noqa: E402
from kernel.config import Config  # noqa: E402
from kernel.errors import UserError  # noqa: E402
from kernel.sample import make_sample  # noqa: E402
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
