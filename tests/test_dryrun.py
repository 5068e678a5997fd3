"""`build.py dry-run`: the built notebooks themselves run here on CPU, install the wheel offline into a
throwaway folder, train with a line per epoch in the terminal, write a valid submission.csv, and the inference
notebook predicts the same from the exported models; pretrained weights from the hub cache reach the run;
failures are one line naming the cell."""
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from conftest import as_a_terminal_job, lay_out_hub
from kernel.errors import UserError
from kernel.sample import accuracy
from kernel.config import Config
from kernel.data import checked_test
from kernel.sample import make_sample
from kit import dryrun
from kit.dryrun import EXECUTED, INFERRED, dry_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import realsets  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# One short stage keeps the test quick; passing them also proves that --field value reaches the kernel. Its
# accumulation is `auto`, as the cpu preset's last stage: resolved in each member by the code the GPU runs.
# One epoch frozen, as fastai's fine_tune and the kaggle preset have it (the cpu preset has none): the dry
# run shows the frozen epoch's line.
SMALL = ["--stages", "64x48:2:32:auto", "--tta", "0", "--freeze_epochs", "1"]


def dry_cli(tmp: Path, *args: str, **env) -> subprocess.CompletedProcess:
    """The dry run as a user without Kaggle credentials types it (and, as in every test, without the hub)."""
    env = {**os.environ, "KAGGLE_CONFIG_DIR": str(tmp / "nokaggle"), **env}
    env.pop("KAGGLE_USERNAME", None)
    return subprocess.run([sys.executable, str(ROOT / "build.py"), "dry-run", *args],
                          capture_output=True, text=True, env=env, cwd=tmp, timeout=900)


@pytest.fixture(scope="module")
def dry(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The dry run on the generated sample, through the real CLI; the hub is out of reach,
    nothing is cached."""
    tmp = tmp_path_factory.mktemp("dry")
    done = dry_cli(tmp, "--out", str(tmp / "build"), *SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    return tmp / "build", done


def test_dry_run_trains_with_a_line_per_epoch_and_writes_a_valid_submission(dry):
    out, done = dry
    sub = pd.read_csv(out / "submission.csv", dtype=str)
    sample = pd.read_csv(out / "sample" / "sample_submission.csv", dtype=str)
    classes = set(pd.read_csv(out / "sample" / "train.csv")["label"])
    assert list(sub.columns) == ["image_id", "label"] and list(sub.image_id) == list(sample.image_id)
    assert sub.label.notna().all() and set(sub.label) <= classes
    printed = float(re.search(r"accuracy on the sample's answers: ([0-9.]+)", done.stdout)[1])
    assert printed == round(accuracy(out / "submission.csv", out / "sample" / "test_answers.csv"), 3)
    assert re.search(r"dry run finished in \d+m\d\ds", done.stdout)
    # the cpu preset: two members side by side, the auto stage resolved against the T4's memory, the first
    # epoch of the pretrained body frozen (SMALL); their lines in the terminal as they happen, one per epoch
    for m in ("a", "b"):
        assert re.search(rf"\[{m}\] stage 64x48:2:32:auto: accumulation 1 \(micro-batch 32\) fits 14.7 GiB",
                         done.stdout)  # a T4's 15,095 MiB
        epochs = re.findall(rf"^    \[{m}\] stage 1/1 64x48 epoch (\d)/2( \(body frozen\))?: "
                            r"train_loss [0-9.]+ valid_loss [0-9.]+ error_rate [0-9.]+", done.stdout, re.M)
        assert epochs == [("1", " (body frozen)"), ("2", "")], done.stdout
        for name in ("probs.csv", "history.csv", "history.png", "confusion.png", "model.safetensors",
                     "model.json"):
            assert (out / "members" / m / name).is_file(), name
    started = [i for i, l in enumerate(done.stdout.splitlines()) if l.endswith("started on the CPU")]
    first_epoch = [i for i, l in enumerate(done.stdout.splitlines()) if "epoch 1/2" in l]
    assert len(started) == 2 and max(started) < min(first_epoch)  # side by side, not one after the other
    # the executed notebook shows the learning curves beside the confusion matrix, as written: the members'
    # one line each (OUT/history.png), then each member's curves before its confusion matrix
    ran = nbformat.read(out / EXECUTED, as_version=4)
    shown = "".join(o.get("data", {}).get("text/html", "")
                    for c in ran.cells if c.id == "plots" for o in c.outputs)
    pngs = [out / "history.png"] + [out / "members" / m / n for m in "ab"
                                    for n in ("history.png", "confusion.png")]
    pictures = [base64.b64encode(p.read_bytes()).decode() for p in pngs]
    assert all(p in shown for p in pictures) and [shown.index(p) for p in pictures] == \
        sorted(shown.index(p) for p in pictures)


def test_the_inference_notebook_predicts_what_training_did_from_the_exported_models(dry):
    out, done = dry
    assert ((out / INFERRED).is_file() and "inference:" in done.stdout
            and "the same as training's" in done.stdout)
    ran = nbformat.read(out / INFERRED, as_version=4)
    values = {}
    exec(next(c for c in ran.cells if c.id == "injected-parameters").source, values)
    assert [Path(m) for m in values["models"]] == [out.resolve()]
    assert Path(values["out"]) == (out / "inference").resolve()
    predicted = "".join(o.get("text", "") for c in ran.cells if c.id == "predict" for o in c.outputs)
    assert "predicted 100 test images with" in predicted
    pd.testing.assert_frame_equal(pd.read_csv(out / "inference" / "submission.csv"),
                                  pd.read_csv(out / "submission.csv"))
    # TTA is off here: the same arithmetic on the same inputs (test_ensemble checks it with TTA on)
    pd.testing.assert_frame_equal(pd.read_csv(out / "inference" / "probs.csv"),
                                  pd.read_csv(out / "probs.csv"), atol=1e-6)


def test_dry_run_ran_the_built_notebook_with_only_parameters_injected(dry):
    out, done = dry
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
    assert values["preset"] == "cpu" and values["overrides"] == {"stages": "64x48:2:32:auto", "tta": "0",
                                                                 "freeze_epochs": "1", "progress": "lines"}
    assert (Path(values["data"]) == out.resolve() / "sample"
            and Path(values["dataset"]) == out.resolve() / "dataset")
    # no hub and nothing cached: the Kaggle build has no weights, and says so; the run here fine-tunes the
    # ImageNet weights a package ships, from a dry-run file outside the dataset that push uploads
    assert ("no pretrained weights: cannot get the pretrained weights of convnext_small.fb_in22k"
            in done.stdout)
    assert not list((out / "dataset").glob("*.safetensors")) and not (out / "weights").exists()
    local = (out / "dry-run-weights" / "tf_efficientnet_lite0.safetensors").resolve()
    assert values["weights"] == str(local)
    assert "(a dry-run file: the Kaggle dataset holds what push uploads)" in done.stdout
    assert re.search(r"\[a\] loaded pretrained weights for tf_efficientnet_lite0 from "
                     rf"{re.escape(str(local))}: all \d+ tensors of the body", done.stdout)
    # the build's memory preflight is for the Kaggle config it built
    assert re.search(r"convnext_small.fb_in22k +64x48 +batch 32 = 1 x 32 +[0-9.]+ GiB  fits", done.stdout)
    # a user without credentials gets placeholder ids
    assert (json.loads((out / "dataset" / "dataset-metadata.json").read_text())["id"]
            == "local/paddy-kernel-kit")
    assert all(c.execution_count for c in ran.cells if c.cell_type == "code")


def test_wheel_was_installed_offline_into_a_throwaway_target(dry):
    out, _ = dry
    ran = nbformat.read(out / EXECUTED, as_version=4)
    install = "".join(o.get("text", "") for o in next(c for c in ran.cells if c.id == "install").outputs)
    assert "Successfully installed paddy-kernel-kit-0.2.0" in install
    assert re.search(r"python 3\.\d+\.\d+, torch \S+, fastai \S+, timm \S+", install) and "GPUs:" in install
    origin = Path(re.search(r"kernel 0\.2\.0 from (\S+)", install)[1])
    assert origin.name == "kernel" and ROOT not in origin.parents and "pkk-dry-run-site" in str(origin)
    assert not origin.exists()  # thrown away after the run
    with pytest.raises(importlib_metadata.PackageNotFoundError):  # and this environment never had it
        importlib_metadata.version("paddy-kernel-kit")


def test_failing_cell_is_one_line_naming_it(dry, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(dry[0] / "sample", data)
    sub = pd.read_csv(data / "sample_submission.csv")
    sub.iloc[:-1].to_csv(data / "sample_submission.csv", index=False)  # test_images/ holds one more
    with pytest.raises(UserError) as e:
        dry_run(tmp_path / "out", data=str(data), overrides={"stages": "64x48:1:8:1"}, user="alice",
                pretrained=False)
    msg = str(e.value)
    # --no-pretrained: the from-scratch recipe, and the dry run says so
    assert ("no pretrained weights for tf_efficientnet_lite0 here (--no-pretrained): the dry run trains from "
            "scratch, with the cpu-scratch preset") in capsys.readouterr().out
    assert re.fullmatch(r"notebook cell 5 \(import kernel.ensemble\) failed: "
                        r"UserError: test images do not match .*"
                        r"; see .*dry-run\.ipynb", msg), msg
    assert ("\n" not in msg and (tmp_path / "out" / EXECUTED).is_file()
            and not (tmp_path / "out" / "submission.csv").exists())


@pytest.mark.parametrize("layout,message", [
    ({}, "no train.csv in"),
    ({"train.csv": "image_id,label\n1.jpg,a\n"}, "no train image folder"),
])
def test_data_in_the_wrong_layout_is_refused_before_building(tmp_path, layout, message):
    data = tmp_path / "data"
    data.mkdir()
    for name, text in layout.items(): (data / name).write_text(text)
    with pytest.raises(UserError, match=f"--data {re.escape(str(data))}: {message}"):
        dry_run(tmp_path / "out", data=str(data), user="alice")
    assert not (tmp_path / "out").exists()


def test_a_code_competition_folder_dry_runs_on_a_subset_and_rehearses_the_hidden_rerun(tmp_path, monkeypatch,
                                                                                        capsys):
    """Cassava's layout with its one visible test image: the dry run trains on a class-stratified subset (a
    dry run on a real folder stays minutes long), then the inference notebook predicts held-apart training
    images mounted in the test folder's place, and says how accurate it was there."""
    monkeypatch.setattr(dryrun, "SUBSET", 40)  # of the 62 images, as 400 of a real competition's thousands
    sample = make_sample(tmp_path / "sample", n_train=60, n_test=12, seed=1)
    data = realsets.relay(sample, tmp_path / "cassava", "cassava", visible=1)
    monkeypatch.chdir(tmp_path)  # --out as a user gives it, relative (the notebooks run inside it)
    sub = dry_run(Path("out"), data=str(data), user="alice", pretrained=False,
                  overrides={"stages": "64x48:1:8:1", "tta": "0"})
    said = capsys.readouterr().out
    assert "dry run on 40 of 62 training images (a class-stratified subset" in said
    kept = pd.read_csv(tmp_path / "out" / dryrun.DRY_DATA / "train.csv", dtype=str)
    train = pd.read_csv(data / "train.csv", dtype=str)
    assert len(kept) == 40 and set(kept.label) == set(train.label)  # every class kept
    assert list(pd.read_csv(sub, dtype=str).columns) == ["image_id", "label"] and len(pd.read_csv(sub)) == 1
    answers = pd.read_csv(tmp_path / "out" / dryrun.HIDDEN / "test_answers.csv", dtype=str)
    assert len(answers) == 22 and not set(answers.image_id) & set(kept.image_id)  # held apart from training
    rerun = pd.read_csv(tmp_path / "out" / "hidden-rerun" / "submission.csv", dtype=str)
    assert list(rerun.image_id) == list(answers.image_id) and set(rerun.label) <= set(train.label)
    assert re.search(r"hidden rerun: the inference notebook on 22 held-apart training images .* accuracy "
                     r"\d\.\d{3}", said), said[-1500:]


def test_a_dry_runs_subset_of_a_real_folder_is_a_competition_the_kernel_reads_as_the_whole(tmp_path,
                                                                                           monkeypatch):
    """APTOS's layout (ids without extension, test.csv beside sample_submission.csv): the subset keeps every
    class, and its test images, sample_submission.csv, test.csv and answers are cut to the same ids, in
    their order, so that the kernel's own checks pass on it."""
    monkeypatch.setattr(dryrun, "SUBSET", 30)
    monkeypatch.setattr(dryrun, "TEST_SUBSET", 5)
    monkeypatch.setattr(dryrun, "TINY_TEST", 10)
    sample = make_sample(tmp_path / "sample", n_train=60, n_test=12, seed=1)
    data = realsets.relay(sample, tmp_path / "aptos", "aptos")
    (tmp_path / "out").mkdir()
    dry, hidden = dryrun._subset(data, tmp_path / "out", Config.make("cpu"))
    assert hidden is None  # 12 visible test images, not a tiny set: no rerun to rehearse
    counts = pd.read_csv(data / "train.csv", dtype=str).diagnosis.value_counts()
    kept = pd.read_csv(dry / "train.csv", dtype=str).diagnosis.value_counts()
    assert kept.to_dict() == {c: max(1, round(n * 30 / 62)) for c, n in counts.items()}  # each class its share
    order = list(pd.read_csv(data / "sample_submission.csv", dtype=str).id_code[:5])
    for name in ("sample_submission.csv", "test_answers.csv"):
        assert list(pd.read_csv(dry / name, dtype=str).id_code) == order, name
    assert sorted(pd.read_csv(dry / "test.csv", dtype=str).id_code) == sorted(order)
    assert sorted(p.name for p in (dry / "test_images").iterdir()) == sorted(f"{i}.png" for i in order)
    test, undecodable, ids = checked_test(Config.make("cpu", data=str(dry)), log=lambda *_: None)
    assert sorted(test.id_code) == sorted(order) and not undecodable and ids == dry / "sample_submission.csv"


def test_a_build_that_stops_leaves_no_half_drawn_sample_behind(tmp_path, monkeypatch):
    """The sample is drawn by a second process while the build runs; a build that stops ends that process,
    and nothing of it stays beside OUT or in it."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    started, popen = [], subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(popen(*a, **k)) or started[-1])
    with pytest.raises(UserError, match="is not a build folder"):
        dry_run(tmp_path / "out", user="alice", pretrained=False)
    assert len(started) == 1 and started[0].poll() is not None  # drawing, then ended with the build
    assert not Path(started[0].args[-1]).parent.exists()  # its folder outside OUT is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("args,message", [
    (["--arch", "no_such_net"], "unknown timm architecture 'no_such_net'"),
    (["--stages", "32x24:1:8:1"], "stage 32x24:1:8:1: convnext_small.fb_in22k cannot train at 32x24"),
])
def test_what_the_kernel_cannot_run_is_refused_before_building(tmp_path, args, message):
    done = dry_cli(tmp_path, "--out", str(tmp_path / "out"), *args)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(f"error: {message}"), done.stderr[-1000:]
    assert not (tmp_path / "out").exists()


def test_a_two_session_dry_run_on_hub_weights_fans_in_both_outputs_to_the_members_average(tmp_path):
    """--sessions 2 with pretrained weights from the hub cache: both training notebooks (one member each) load
    them from the weights dataset, then the inference notebook over both outputs and the laptop's average; each
    equal to the weighted mean of the members' own probabilities. One dry run: each takes a minute of CI."""
    lay_out_hub(tmp_path / "hf", "test_resnet.r160_in1k")
    out = tmp_path / "build"
    done = dry_cli(tmp_path, "--out", str(out), "--arch", "test_resnet.r160_in1k", "--sessions", "2",
                   "--members", "a seed=1; b seed=2 weight=3", "--stages", "32x24:2:8:1", "--tta", "0",
                   "--freeze_epochs", "1", HF_HOME=str(tmp_path / "hf"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    said = done.stdout
    assert "dry run of 2 sessions finished" in said and re.search(
        r"largest difference 0\.0e\+00 \(laptop\), \d\.\de[-+]\d\d \(inference notebook\)", said), said
    ran = [nbformat.read(out / f"dry-run-{k}.ipynb", as_version=4) for k in ("kernel", "kernel-2")]
    values = [{}, {}]
    for v, nb in zip(values, ran): exec(next(c for c in nb.cells if c.id == "injected-parameters").source, v)
    assert [v["overrides"]["members"] for v in values] == ["a seed=1", "b seed=2 weight=3"]
    for nb in ran:  # the hub's weights from the weights dataset, gathered (linked) in one folder as on Kaggle
        trained = "".join(o.get("text", "") for c in nb.cells if c.id == "train" for o in c.outputs)
        found = re.search(r"loaded pretrained weights for test_resnet.r160_in1k from (\S+): "
                          r"all \d+ tensors of the body", trained)
        assert found and Path(found[1]).resolve() == (out / "weights" / "test-resnet-r160-in1k-weights"
                                                      / "test_resnet.r160_in1k.safetensors").resolve(), trained
        # fastai's fine_tune (--freeze_epochs 1): the first epoch trains the head alone
        assert "epoch 1/2 (body frozen)" in trained, trained
    # each output names the run it was started as; the inference notebook checked those tokens
    from kernel import manifest
    tokens = [manifest.read(out / "sessions" / k)["token"] for k in ("kernel", "kernel-2")]
    assert tokens == [v["run_token"] for v in values] and None not in tokens
    # the submission is the weighted mean of the members' own probabilities, in both fan-ins
    probs = {n: pd.read_csv(out / "sessions" / k / "members" / n / "probs.csv").set_index("image_id")
             for k, n in (("kernel", "a"), ("kernel-2", "b"))}
    mean = (probs["a"] + 3 * probs["b"]) / 4
    for path in (out / "probs.csv", out / "inference" / "probs.csv"):
        got = pd.read_csv(path).set_index("image_id").loc[mean.index, mean.columns]
        assert np.allclose(got, mean, atol=1e-6)
    assert pd.read_csv(out / "submission.csv").equals(pd.read_csv(out / "inference" / "submission.csv"))


def processes_in(folder: Path) -> list[str]:
    """The command lines of the processes that name `folder` in theirs or work in it (the notebook's kernel,
    the members)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if proc.name.isdigit() and (str(folder) in cmd or cwd.startswith(str(folder))): found.append(cmd)
    return found


def test_ctrl_c_in_a_dry_run_is_one_line_leaves_no_process_and_the_rerun_resumes(tmp_path):
    """Ctrl-C as a terminal sends it (SIGINT to the foreground process group) once the members have finished
    an epoch: one line, status 130, no traceback, nothing left running; the same command then resumes."""
    out, args = tmp_path / "build", ["--stages", "64x48:3:32:1", "--tta", "0"]
    env = {**os.environ, "KAGGLE_CONFIG_DIR": str(tmp_path / "nokaggle")}
    env.pop("KAGGLE_USERNAME", None)
    log = tmp_path / "terminal.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, str(ROOT / "build.py"), "dry-run", "--out", str(out), *args],
                                stdout=f, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path,
                                start_new_session=True, preexec_fn=as_a_terminal_job)
    # both members' first epoch saved (kernel/checkpoint.py: beside OUT)
    saved = [tmp_path / ".build-checkpoints" / m / "last.pth" for m in "ab"]
    start = time.monotonic()
    try:
        while not all(p.exists() for p in saved) and proc.poll() is None and time.monotonic() - start < 600:
            time.sleep(0.2)
        assert proc.poll() is None and all(p.exists() for p in saved), log.read_text()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None: os.killpg(proc.pid, signal.SIGKILL)  # a failed test leaves nothing running
    said = log.read_text() + err
    assert proc.returncode == 130 and "Traceback" not in said, said
    assert err.strip().splitlines() == [
        "interrupted: the dry run stopped in notebook cell 5 (import kernel.ensemble): members a, b of "
        f"{out.resolve()} stopped during training, every finished epoch saved: rerun the same command to resume "
        "them (finished members are kept)"], err
    assert not processes_in(tmp_path), processes_in(tmp_path)
    assert not (out / "submission.csv").exists()  # nothing half-made
    done = dry_cli(tmp_path, "--out", str(out), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\[a\] resuming from .*: epoch [23] of 3", done.stdout), done.stdout
