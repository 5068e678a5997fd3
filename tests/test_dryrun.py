"""`build.py dry-run`: the built notebook itself runs here on CPU, installs the wheel offline into a
throwaway folder, and writes a valid submission.csv; failures are one line naming the cell."""
import json
import os
import re
import subprocess
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kernel.errors import UserError
from kit.dryrun import EXECUTED, dry_run

ROOT = Path(__file__).resolve().parents[1]
# One short stage keeps the test quick; passing them also proves that --field value reaches the kernel.
SMALL = ["--stages", "64x48:1:32:1", "--tta", "0"]


@pytest.fixture(scope="module")
def dry(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The dry run on the generated sample, through the real CLI, as a user without Kaggle credentials."""
    tmp = tmp_path_factory.mktemp("dry")
    env = {**os.environ, "KAGGLE_CONFIG_DIR": str(tmp / "nokaggle")}
    env.pop("KAGGLE_USERNAME", None)
    done = subprocess.run([sys.executable, str(ROOT / "build.py"), "dry-run", "--out", str(tmp / "build"), *SMALL],
                          capture_output=True, text=True, env=env, cwd=tmp, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "build", done


def test_dry_run_writes_a_valid_submission(dry):
    out, done = dry
    sub = pd.read_csv(out / "submission.csv", dtype=str)
    sample = pd.read_csv(out / "sample" / "sample_submission.csv", dtype=str)
    classes = set(pd.read_csv(out / "sample" / "train.csv")["label"])
    assert list(sub.columns) == ["image_id", "label"] and list(sub.image_id) == list(sample.image_id)
    assert sub.label.notna().all() and set(sub.label) <= classes
    acc = float(re.search(r"accuracy on the sample's answers: ([0-9.]+)", done.stdout)[1])
    assert 0 <= acc <= 1 and re.search(r"dry run finished in \d+m\d\ds", done.stdout)
    for name in ("probs.csv", "history.csv", "schedule.png", "confusion.png"): assert (out / name).is_file()


def test_dry_run_ran_the_built_notebook_with_only_parameters_injected(dry):
    out, _ = dry
    built = nbformat.read(out / "kernel" / "kernel.ipynb", as_version=4)
    ran = nbformat.read(out / EXECUTED, as_version=4)
    nbformat.validate(ran)
    assert all(c.outputs == [] for c in built.cells if c.cell_type == "code")  # what is pushed stays clean
    injected = [c for c in ran.cells if c.id == "injected-parameters"]
    assert [c.id for c in ran.cells if c.id != "injected-parameters"] == [c.id for c in built.cells]
    assert [c.source for c in ran.cells if c.id != "injected-parameters"] == [c.source for c in built.cells]
    assert ran.cells.index(injected[0]) == 2  # right after the parameters cell, which it overrides
    values = {}
    exec(injected[0].source, values)
    assert values["preset"] == "cpu" and values["overrides"] == {"stages": "64x48:1:32:1", "tta": "0"}
    assert Path(values["data"]) == out.resolve() / "sample" and Path(values["dataset"]) == out.resolve() / "dataset"
    # a user without credentials gets placeholder ids
    assert json.loads((out / "dataset" / "dataset-metadata.json").read_text())["id"] == "local/paddy-kernel-kit"
    assert all(c.execution_count for c in ran.cells if c.cell_type == "code")


def test_wheel_was_installed_offline_into_a_throwaway_target(dry):
    out, _ = dry
    ran = nbformat.read(out / EXECUTED, as_version=4)
    install = "".join(o.get("text", "") for o in next(c for c in ran.cells if c.id == "install").outputs)
    assert "Successfully installed paddy-kernel-kit-0.1.0" in install
    origin = Path(re.search(r"kernel 0\.1\.0 from (\S+)", install)[1])
    assert origin.name == "kernel" and ROOT not in origin.parents and "pkk-dry-run-site" in str(origin)
    assert not origin.exists()  # thrown away after the run
    with pytest.raises(importlib_metadata.PackageNotFoundError):  # and this environment never had it
        importlib_metadata.version("paddy-kernel-kit")


def test_failing_cell_is_one_line_naming_it(dry, tmp_path):
    sample = dry[0] / "sample"
    with pytest.raises(UserError) as e:
        dry_run(tmp_path / "out", data=str(sample), overrides=["--arch", "no_such_net"], user="alice")
    msg = str(e.value)
    assert re.fullmatch(r"notebook cell 5 \(import kernel\.train\) failed: UserError: unknown timm architecture 'no_such_net'.*; see .*dry-run\.ipynb", msg)
    assert "\n" not in msg and (tmp_path / "out" / EXECUTED).is_file() and not (tmp_path / "out" / "submission.csv").exists()


@pytest.mark.parametrize("layout,message", [
    ({}, "train.csv not found"),
    ({"train.csv": "image_id,label\n1.jpg,a\n"}, "train_images/ not found"),
])
def test_data_in_the_wrong_layout_is_refused_before_building(tmp_path, layout, message):
    data = tmp_path / "data"
    data.mkdir()
    for name, text in layout.items(): (data / name).write_text(text)
    with pytest.raises(UserError, match=f"--data {re.escape(str(data))}: {message}"):
        dry_run(tmp_path / "out", data=str(data), user="alice")
    assert not (tmp_path / "out").exists()


def test_unknown_field_is_refused_before_building(tmp_path):
    with pytest.raises(UserError, match="unknown config field 'epochz'"):
        dry_run(tmp_path / "out", overrides=["--epochz", "3"], user="alice")
    assert not (tmp_path / "out").exists()
