"""`--sessions N`: an ensemble split over several Kaggle training kernels, pushed, waited for and fanned in,
against the stand-in Kaggle with the real kaggle client.

In-process (the push and submit functions build.py calls), not a `build.py` per case: a build takes ~10 s.
The sessions' outputs are real: four tiny members (resnet10t, 32x32, one epoch) are trained here once, and
each training kernel's output is its members' folders, averaged by `kernel.ensemble.run` as on Kaggle, with the
manifest the notebook writes for the run token and overrides it was pushed with. The inference kernel's run
executes the built notebook's own predict cell on the outputs the stand-in attached.
"""
import io
import json
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

from kaggle_standin import CODE, INFER, KEY, TRAIN, USERNAME
from test_push import kaggle, server  # noqa: F401 (fixtures)
from kernel import manifest
from kernel.config import Config
from kernel.errors import UserError
from kit import notebook, sessions
from kit.ledger import pushed
from kit.push import push, push_waiting
from kit.status import status
from kit.submit import fan_in, submit

TRAIN2, TRAIN3 = f"{TRAIN}-2", f"{TRAIN}-3"
# unequal members: a costs as much as b, c and d together (4, 1, 2, 1 epochs at one size)
MEMBERS = "a stages=64x48:4:16:1; b; c stages=64x48:2:16:1; d seed=3 weight=3"
KAGGLE = {"arch": "resnet10t", "stages": "64x48:1:16:1", "members": MEMBERS, "sessions": "2"}
WEIGHTS = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 3.0}
# what the members really train here: tiny, one epoch, no TTA (the fan-in, not the training, is under test)
LOCAL = dict(stages="32x32:1:16:1", tta=0, progress="lines", members="a; b seed=2; c seed=3; d seed=4 weight=3")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """The kaggle client in this process talks to the stand-in, with the fake credentials."""
    mp = pytest.MonkeyPatch()
    for k in list(os.environ):
        if k.startswith("KAGGLE_") or "PROXY" in k.upper(): mp.delenv(k)
    mp.setenv("KAGGLE_API_ENVIRONMENT", "TEST")
    mp.setenv("KAGGLE_USERNAME", USERNAME)
    mp.setenv("KAGGLE_KEY", KEY)
    mp.setenv("KAGGLE_CONFIG_DIR", str(tmp_path_factory.mktemp("kaggle-config")))
    mp.setattr("kit.kaggle.LOOKUP_GRACE_S", 5)  # as test_push's `here`
    mp.setattr("kit.kaggle.POLL_FIRST_S", 0.1)
    yield
    mp.undo()


class Trained:
    """Four members trained here once; a session's output is made from those the pushed notebook names."""

    def __init__(self, home: Path):
        from kernel import train
        from kernel.sample import make_sample
        self.home, self.sample = home, make_sample(home / "sample", n_train=60, n_test=20)
        self.cfg = Config.make("cpu-scratch", data=str(self.sample), out=str(home / "all"), **LOCAL)
        for m in self.cfg.members: train.run(self.cfg.member(m, str(home / "all" / "members" / m.name)),
                                             log=lambda *_: None)

    def probs(self, name: str) -> pd.DataFrame:
        return pd.read_csv(self.home / "all" / "members" / name / "probs.csv", dtype={"image_id": str})

    def expected(self, names=tuple(WEIGHTS)) -> pd.DataFrame:
        """The members' own probabilities, weighted and averaged here with numpy."""
        frames = [self.probs(n).set_index("image_id") for n in names]
        w = np.array([WEIGHTS[n] for n in names])
        return sum(f * wi for f, wi in zip(frames, w)) / w.sum()

    def session(self, names: list[str]) -> Path:
        """The output of a session that trained `names`: their folders, averaged by kernel.ensemble.run."""
        from kernel import ensemble
        out = self.home / "sessions" / "-".join(names)
        if not (out / "submission.csv").is_file():
            for n in names: shutil.copytree(self.home / "all" / "members" / n, out / "members" / n,
                                            dirs_exist_ok=True)
            members = tuple(m for m in self.cfg.members if m.name in names)
            ensemble.run(replace(self.cfg, out=str(out), members=members), log=lambda *_: None)
        return out

    def output(self, token=lambda pushed: pushed):
        """A training kernel's output, as the stand-in makes it from a push: `token` gives the run token its
        manifest carries from the one pushed (a stale output carries another)."""
        def made(request: dict, attached: dict) -> dict[str, bytes]:
            values = notebook.values(nbformat.reads(request["text"], as_version=4))
            cfg = Config.make(values["preset"], **values["overrides"])
            out = self.session([m.name for m in cfg.members])
            files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*")
                     if p.is_file() and "checkpoints" not in p.parts}
            with tempfile.TemporaryDirectory() as tmp:
                files[manifest.MANIFEST] = manifest.write(tmp, cfg, token(values["run_token"])).read_bytes()
            return files
        return made

    def inference(self):
        """The inference kernel's run: the built notebook's predict cell, on the outputs Kaggle attached."""
        def made(request: dict, attached: dict) -> dict[str, bytes]:
            nb = nbformat.reads(request["text"], as_version=4)
            values = notebook.values(nb)
            with tempfile.TemporaryDirectory() as tmp:
                for ref, files in attached.items():
                    for name, data in files.items():
                        path = Path(tmp) / "input" / ref.split("/")[1] / name
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(data)
                values.update(models=[f"{tmp}/input/{m.rsplit('/', 1)[1]}" for m in values["models"]],
                              data=str(self.sample), out=f"{tmp}/working")
                exec(next(c.source for c in nb.cells if c.id == "predict"), values)
                return {n: (Path(tmp) / "working" / n).read_bytes() for n in ("submission.csv", "probs.csv")}
        return made


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    return Trained(tmp_path_factory.mktemp("trained"))


@pytest.fixture
def standin(kaggle, env, trained):
    """The stand-in with every training kernel's output made from the trained members, runs quick."""
    kaggle.run_states["*"] = ["RUNNING", "COMPLETE"]
    for ref in (TRAIN, TRAIN2, TRAIN3): kaggle.outputs[ref] = trained.output()
    kaggle.outputs[INFER] = trained.inference()
    return kaggle


def labels(expected: pd.DataFrame) -> dict[str, str]:
    return dict(zip(expected.index, expected.idxmax(axis=1)))


def submitted(kaggle) -> dict[str, str]:
    """The labels of the last file submitted."""
    from io import StringIO
    df = pd.read_csv(StringIO(kaggle.submissions[-1]["file"].decode()), dtype=str)
    return dict(zip(df.image_id, df.label))


def pushed_values(kaggle, slug: str) -> dict:
    """The parameters (injected ones too) of the last push of kernel `slug`."""
    text = [r for r in kaggle.received("SaveKernel") if r["slug"] == slug][-1]["text"]
    return notebook.values(nbformat.reads(text, as_version=4))


def to_code_competition(out: Path) -> None:
    for k in ("kernel", "kernel-2", "infer"):
        path = out / k / "kernel-metadata.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "competition_sources": [CODE]}))


def test_members_are_split_over_sessions_by_estimated_cost():
    # longest first, each to the lightest session: 4 | 2+1+1, not the halves in order (5 | 3)
    assert sessions.split([4, 1, 2, 1], 2) == [[0], [1, 2, 3]]
    assert sessions.split([4, 1, 2, 1], 3) == [[0], [2], [1, 3]]
    cfg = Config.make("kaggle", **KAGGLE)
    plan = sessions.plan(cfg, TRAIN, "paddy-kernel-kit-train")
    assert [(s["kernel"], s["folder"], s["members"]) for s in plan] == [
        (TRAIN, "kernel", "a stages=64x48:4:16:1"),
        (TRAIN2, "kernel-2", "b; c stages=64x48:2:16:1; d seed=3 weight=3")]
    # by kernel/cost.py's estimate (4, 1, 2 and 1 epochs, and the same prediction each): near halves
    assert abs(plan[0]["share"] - 0.5) < 0.01
    assert plan[0]["share"] + plan[1]["share"] == pytest.approx(1, abs=1e-3)
    # the fingerprint a session's manifest must carry is its own config's, as the kernel computes it
    assert plan[1]["fingerprint"] == Config.make("kaggle", **{**KAGGLE, "members": plan[1]["members"],
                                                            "sessions": 1}).fingerprint()
    with pytest.raises(UserError, match="--sessions 5 needs at least 5 members"):
        sessions.plan(Config.make("kaggle", **{**KAGGLE, "sessions": "5"}), TRAIN, "t")


def test_four_members_over_two_sessions_fanned_in_on_the_laptop(standin, trained, tmp_path, capsys):
    out = tmp_path / "build"
    standin.gpu_used_s = 10 * 3600  # 20 h left: less than the two sessions' 2 x 11.5 h
    push(out, KAGGLE, pretrained=False)
    assert ("warning: the 2 sessions' time limits (2 x 11.5 h, each billed once) are more than your GPU quota "
            "left this week (20.0 h of 30.0 h)") in capsys.readouterr().err
    # two kernels pushed, each with its members and a fresh run token, recorded with Kaggle's version
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2]
    record = pushed(out)
    for slug, folder, members in ((TRAIN, "kernel", "a stages=64x48:4:16:1"),
                                  (TRAIN2, "kernel-2", "b; c stages=64x48:2:16:1; d seed=3 weight=3")):
        values = pushed_values(standin, slug)
        assert values["overrides"]["members"] == members and "sessions" not in values["overrides"]
        assert values["run_token"] == record[folder]["key"] and record[folder]["version"] == 1
    assert record["kernel"]["key"] != record["kernel-2"]["key"]
    # the built notebooks stay as built (no token): the token goes into a pushed copy
    assert notebook.parameters(out / "kernel-2")["run_token"] is None
    # the code dataset went up once, though both kernels attach it
    assert standin.calls.count("CreateDataset") == 1 and standin.calls.count("CreateDatasetVersion") == 0

    submit(out, timeout=120)
    said = capsys.readouterr().out
    (s,) = standin.submissions
    runs = f"{TRAIN} v1 + {TRAIN2} v1"
    assert s["description"] == f"trained by {runs} [paddy-kernel-kit {runs}]"
    assert submitted(standin) == labels(trained.expected())
    assert "complete, public score 0.97412" in said and "missing" not in said
    # no GPU session for the fan-in, and only the members' probabilities came down, not their models
    assert INFER not in standin.kernels
    assert not [d for d in standin.downloads if d.endswith((".safetensors", "model.json"))]
    assert {d.split("/", 3)[3] for d in standin.downloads} == {
        "manifest.json", "submission.csv", *(f"members/{n}/probs.csv" for n in WEIGHTS)}

    # the fan-in's probabilities are the weighted mean of the members' own
    _, missing = fan_in(sessions_api(), sessions.read_plan(out), pushed(out), tmp_path / "fan")
    got = pd.read_csv(tmp_path / "fan" / "probs.csv", dtype={"image_id": str}).set_index("image_id")
    assert missing == [] and np.allclose(got.loc[trained.expected().index], trained.expected(), atol=1e-6)

    # rerun submit: nothing again; push a session again: it alone goes, and nothing is uploaded twice
    submit(out, timeout=60)
    assert "made already" in capsys.readouterr().out and len(standin.submissions) == 1
    sent = standin.bytes_received
    push(out, KAGGLE, pretrained=False, session=2)
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2, TRAIN2]
    assert standin.bytes_received == sent and standin.calls.count("CreateDatasetVersion") == 0
    again = pushed(out)
    assert again["kernel"] == record["kernel"] and again["kernel-2"]["version"] == 2
    assert again["kernel-2"]["key"] != record["kernel-2"]["key"]


def sessions_api():
    from kit import kaggle
    return kaggle.client("submit")


def test_a_code_competition_fans_in_through_the_inference_kernel_attached_to_every_session(standin, trained,
                                                                                          tmp_path, capsys):
    out = tmp_path / "build"
    push(out, KAGGLE, pretrained=False)
    to_code_competition(out)
    submit(out, timeout=120)

    (save,) = [r for r in standin.received("SaveKernel") if r["slug"] == INFER]
    assert save["kernelDataSources"] == [TRAIN, TRAIN2]
    values = pushed_values(standin, INFER)
    record = pushed(out)
    assert values["tokens"] == [record["kernel"]["key"], record["kernel-2"]["key"]]
    # the package averaged all four members, with their weights, from the two attached outputs
    run = standin.kernels[INFER]["versions"][-1]
    assert run["states"] == ["COMPLETE"], run["failure"]
    got = pd.read_csv(io.BytesIO(run["outputs"]["probs.csv"]), dtype={"image_id": str})
    expected = trained.expected()
    assert np.allclose(got.set_index("image_id").loc[expected.index], expected, atol=1e-5)
    (create,) = standin.received("CreateCodeSubmission")
    assert create["kernelSlug"] == INFER.split("/")[1] and create["kernelVersion"] == 1
    assert "public score 0.97412" in capsys.readouterr().out


@pytest.mark.parametrize("competition", ["file", "code"])
def test_a_stale_attached_output_is_refused_in_one_line(standin, trained, tmp_path, competition):
    standin.outputs[TRAIN2] = trained.output(token=lambda pushed: "0ld0ld0ld0ld0ld0")  # an earlier run's
    out = tmp_path / "build"
    push(out, KAGGLE, pretrained=False)
    if competition == "code": to_code_competition(out)
    with pytest.raises(UserError) as e:
        submit(out, timeout=120)
    line = str(e.value)
    assert "\n" not in line and "is not the run push started (it has run token 0ld0ld0ld0ld0ld0" in line
    if competition == "file":
        assert "the output of session 2" in line and "push --session 2" in line
    else:  # the inference notebook refused it on Kaggle: its run failed, saying why
        assert f"inference kernel {INFER} v1 failed" in line and "the output attached at" in line
    assert not standin.submissions


def test_a_failed_session_is_named_then_rerun_alone_and_partial_says_what_is_missing(standin, trained, tmp_path,
                                                                                    capsys):
    standin.fail_session(TRAIN2, "CUDA out of memory")
    out = tmp_path / "build"
    push(out, KAGGLE, pretrained=False)
    with pytest.raises(UserError) as e:
        submit(out, timeout=120)
    assert str(e.value).startswith(f"session 2 ({TRAIN2} v1, members b, c, d) failed (CUDA out of memory); "
                                   "rerun it alone with `python build.py push --session 2`")
    capsys.readouterr()
    status(out)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"session 1 {TRAIN} v1: complete, members done 1/1: a, time used")
    # its learning curves, which `output` fetches (the first session's output); the failed one left none
    assert lines[1] == ("  learning curves: history.png, members/a/history.png; "
                        "`python build.py output` fetches them")
    assert lines[2].startswith(f"session 2 {TRAIN2} v1: error (CUDA out of memory), members done 0/3: none")
    assert lines[2].endswith("rerun it alone with `python build.py push --session 2`")

    submit(out, timeout=60, partial=True)  # what finished: member a alone
    said = capsys.readouterr().out
    assert "missing members: b, c, d" in said and submitted(standin) == labels(trained.expected(["a"]))

    before = pushed(out)
    with pytest.raises(UserError, match="--session 5: no such session was pushed"):
        push(out, KAGGLE, pretrained=False, session=5)
    # other options would split the members otherwise: session 1's run would no longer be fanned in
    with pytest.raises(UserError, match="--session 2: these options split the members otherwise"):
        push(out, {**KAGGLE, "members": "a; b; c; d"}, pretrained=False, session=2)
    assert pushed(out) == before  # what runs is still known, though OUT was rebuilt
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2]
    standin.run_states[TRAIN2], standin.outputs[TRAIN2] = ["RUNNING", "COMPLETE"], trained.output()  # fixed
    push(out, KAGGLE, pretrained=False, session=2)
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2, TRAIN2]
    submit(out, timeout=120)
    assert len(standin.submissions) == 2 and submitted(standin) == labels(trained.expected())
    assert standin.submissions[-1]["description"].endswith(f"[paddy-kernel-kit {TRAIN} v1 + {TRAIN2} v2]")


def test_a_third_session_waits_and_is_pushed_when_a_slot_frees(standin, trained, tmp_path, capsys):
    out = tmp_path / "build"
    push(out, {**KAGGLE, "sessions": "3"}, pretrained=False)
    # two pushed; the third not even tried (Kaggle would refuse it), noted as waiting
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2]
    assert [p["version"] for p in pushed(out).values()] == [1, 1, None]
    assert f"kernel {TRAIN3} (session 3): waits for a free slot" in capsys.readouterr().out
    status(out)
    assert f"session 3 {TRAIN3}: waiting (not pushed yet), members b, d" in capsys.readouterr().out

    standin.fail("SaveKernel", after=True)  # pushing it, the answer is lost; the look-up after it goes through
    submit(out, timeout=120)  # pushes it once one of the first two has ended, then waits for all three
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2, TRAIN3]
    assert pushed(out)["kernel-3"]["version"] == 1
    assert submitted(standin) == labels(trained.expected())


@pytest.mark.parametrize("limit", [None, 400, 429], ids=["200-body", "http-400", "http-429"])
def test_kaggles_refusal_of_a_third_session_is_one_line_and_the_session_waits(standin, trained, tmp_path,
                                                                             capsys, limit):
    # another GPU session of the account is running: Kaggle refuses our second as a third, in a 200 answer's
    # body or as an HTTP error with the same text
    standin.session_limit_status = limit
    other = f"{USERNAME}/something-else"
    standin.SaveKernel(USERNAME, {"slug": other, "enableGpu": True})
    standin.kernels[other]["versions"][-1]["states"] = ["RUNNING"]
    out = tmp_path / "build"
    push(out, KAGGLE, pretrained=False)
    refused = [l for l in capsys.readouterr().err.splitlines() if "Maximum batch GPU session count" in l]
    assert refused == [f"session 2: Kaggle did not start kernel {TRAIN2}: Maximum batch GPU session count of 2 "
                       "reached (an account runs 2 at once); it waits, and `python build.py push --wait` or "
                       "`python build.py submit` pushes it when a session ends"]
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2]
    assert TRAIN2 not in standin.kernels  # nothing runs, nothing is lost: it waits
    assert [p["version"] for p in pushed(out).values()] == [1, None]

    standin.kernels[other]["versions"][-1]["states"] = ["COMPLETE"]  # a slot frees
    push_waiting(out, timeout=120)
    record = pushed(out)
    assert record["kernel-2"]["version"] == 1
    assert pushed_values(standin, TRAIN2)["run_token"] == record["kernel-2"]["key"]


def test_an_answer_lost_at_the_first_session_then_the_rerun_then_submit_start_each_session_once(standin,
                                                                                             trained,
                                                                                             tmp_path):
    out = tmp_path / "build"
    standin.fail("SaveKernel", after=True)  # Kaggle starts session 1; its answer never arrives ...
    standin.fail("GetKernel", drop=True, times=10 ** 6)  # ... nor any answer to the look-ups after it
    with pytest.raises(UserError) as e:
        push(out, KAGGLE, pretrained=False)
    assert "\n" not in str(e.value) and str(e.value).endswith("rerun `python build.py push`: what already "
                                                               "arrived is not uploaded again")
    standin.faults["GetKernel"].clear()  # the network is back
    with pytest.raises(UserError, match="the last push from .* did not finish; rerun `python build.py push`"):
        submit(out, timeout=60)  # not before the push is carried on
    push(out, KAGGLE, pretrained=False)  # the rerun the line asks for: session 1 is found, session 2 pushed
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2]
    submit(out, timeout=120)
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2]
    assert {ref: len(k["versions"]) for ref, k in standin.kernels.items()} == {TRAIN: 1, TRAIN2: 1}
    assert len(standin.submissions) == 1 and submitted(standin) == labels(trained.expected())


def test_a_push_refused_at_session_2_is_carried_on_not_started_again(standin, trained, tmp_path):
    out = tmp_path / "build"
    standin.fail("SaveKernel", 403, "Permission 'kernels.create' was denied", skip=1)
    with pytest.raises(UserError, match="denied pushing kernel"):
        push(out, KAGGLE, pretrained=False)
    push(out, KAGGLE, pretrained=False)  # the rerun: session 1 runs already, session 2 goes
    assert {ref: len(k["versions"]) for ref, k in standin.kernels.items()} == {TRAIN: 1, TRAIN2: 1}
    assert [p["version"] for p in pushed(out).values()] == [1, 1]


def test_a_version_number_left_out_is_found_not_taken_for_a_waiting_session(standin, trained, tmp_path):
    standin.omit_version = True  # kagglesdk reads it as 0
    out = tmp_path / "build"
    push(out, KAGGLE, pretrained=False)
    assert [p["version"] for p in pushed(out).values()] == [1, 1]
    submit(out, timeout=120)
    assert [r["slug"] for r in standin.received("SaveKernel")] == [TRAIN, TRAIN2]
    assert len(standin.submissions) == 1


def test_each_session_attaches_only_its_members_weights_and_the_one_code_dataset(tmp_path):
    from conftest import lay_out_hub
    from kit.bundle import build
    archs = ("test_resnet.r160_in1k", "test_efficientnet.r160_in1k")
    for arch in archs: lay_out_hub(Path(os.environ["HF_HOME"]), arch)
    members = f"a arch={archs[0]} stages=160x160:2:16:1; b arch={archs[1]}; c arch={archs[1]}"
    out = build(tmp_path / "build", {"arch": archs[1], "stages": "160x160:1:16:1", "members": members,
                                     "sessions": "2"}, user="alice")
    meta = {k: json.loads((out / k / "kernel-metadata.json").read_text())
            for k in ("kernel", "kernel-2", "infer")}
    assert meta["kernel"]["dataset_sources"] == ["alice/paddy-kernel-kit",
                                                 "alice/test-resnet-r160-in1k-weights"]
    assert meta["kernel-2"]["dataset_sources"] == ["alice/paddy-kernel-kit",
                                                   "alice/test-efficientnet-r160-in1k-weights"]
    assert [notebook.parameters(out / k)["weights_datasets"] for k in ("kernel", "kernel-2")] == [
        ["/kaggle/input/datasets/alice/test-resnet-r160-in1k-weights"],
        ["/kaggle/input/datasets/alice/test-efficientnet-r160-in1k-weights"]]
    # the inference kernel attaches both training kernels and predicts with both outputs
    assert meta["infer"]["kernel_sources"] == ["alice/paddy-kernel-kit-train", "alice/paddy-kernel-kit-train-2"]
    assert notebook.parameters(out / "infer")["models"] == ["/kaggle/input/paddy-kernel-kit-train",
                                                           "/kaggle/input/paddy-kernel-kit-train-2"]
    # one code dataset, one weights dataset per architecture, the plan kept for push, status and submit
    assert sorted(p.name for p in out.iterdir()) == ["dataset", "infer", "kernel", "kernel-2", "sessions.json",
                                                    "weights"]
    assert [s["names"] for s in sessions.read_plan(out)] == [["a"], ["b", "c"]]
