"""`build.py submit` and `status`, end to end: the real kaggle client against the stand-in Kaggle, as
test_push.

Two tests push for real, then submit: to a file competition (Paddy Doctor) and to a code competition. The
others start from one build made once for the module, with Kaggle as push leaves it (the dataset there, the
training kernel's run started): they are about what submit does next, and a build takes half a minute.
Those runs go through `python build.py` in a subprocess where the process matters (a submit killed midway;
the push-then-submit paths, as the user types them); the one-line faults and limits run build.py's main in
this process (test_push's `here`), as test_push's fault cases do.
"""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kaggle_standin import CODE, INFER, PADDY, TRAIN, USERNAME, inference_output
from test_push import (DATASET, PUSH, ROOT, env, fails, here, kaggle, ok, repo, run,  # noqa: F401 (fixtures)
                       server)

MARK = f"[paddy-kernel-kit {TRAIN} v1 via {INFER} v1]"  # through the inference kernel's first run
TRAINED = f"[paddy-kernel-kit {TRAIN} v1]"  # a file made here from the training run's probabilities
# the training run's probs.csv (kaggle_standin.training_output), each id's most probable class
AVERAGED = b"image_id,label\n100001.jpg,normal\n100002.jpg,blast\n"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A build folder, built once as push builds it."""
    home = tmp_path_factory.mktemp("built")
    skip = shutil.ignore_patterns(".*", "build", "output", "sample", "__pycache__")
    shutil.copytree(ROOT, home / "repo", ignore=skip)
    (home / "home").mkdir()
    (home / "tmp").mkdir()
    ok(run(home / "repo", "build", *PUSH[1:]))
    return home / "repo" / "build"


def training_run(kaggle) -> None:
    """A push of the training kernel, as far as Kaggle can tell: a new version, which starts running."""
    kaggle.SaveKernel(USERNAME, {"slug": TRAIN, "newTitle": TRAIN.split("/")[1],
                                 "datasetDataSources": [DATASET],
                                 "competitionDataSources": [PADDY], "enableGpu": True})


def as_pushed(kaggle, repo: Path, built: Path) -> None:
    """The build in REPO, and Kaggle as `build.py push` leaves it: the dataset ready, the training kernel
    running. Runs take one status call less than by default: these tests are about what follows."""
    shutil.copytree(built, repo / "build")
    kaggle.run_states["*"] = ["RUNNING", "COMPLETE"]
    version = {"number": 1, "notes": "", "files": {}, "status": "READY", "polls": 0}
    kaggle.datasets[DATASET] = {"title": DATASET.split("/")[1], "description": "", "license": "CC0-1.0",
                                "private": True, "versions": [version]}
    training_run(kaggle)


def test_push_then_submit_to_a_file_competition_runs_no_inference_kernel(kaggle, repo):
    ok(run(repo, *PUSH))
    said = ok(run(repo, "submit", "--message", "first try"))

    # no second GPU session: the submission is made here from the training run's probabilities
    assert [r["slug"] for r in kaggle.received("SaveKernel")] == [TRAIN] and INFER not in kaggle.kernels
    assert sorted(kaggle.downloads) == [f"{TRAIN}/1/probs.csv", f"{TRAIN}/1/submission.csv"]
    # Kaggle said how the competition takes submissions, and how many are left, before anything was sent
    assert kaggle.received("GetCompetition") == [{"competitionName": PADDY}]
    assert kaggle.calls.index("GetSubmissionLimits") < kaggle.calls.index("StartSubmissionUpload")
    (start,) = kaggle.received("StartSubmissionUpload")
    assert start["competitionName"] == PADDY and start["fileName"] == "submission.csv"
    (create,) = kaggle.received("CreateSubmission")
    assert create["submissionDescription"] == f"first try {TRAINED}"
    (s,) = kaggle.submissions
    assert s["file"] == AVERAGED and "CreateCodeSubmission" not in kaggle.calls
    assert f"submission {s['ref']} to {PADDY}: complete, public score 0.97412" in said

    # run again: nothing pushed, nothing submitted; the score again
    calls = len(kaggle.calls)
    said = ok(run(repo, "submit"))
    assert "made already" in said and "public score 0.97412" in said
    assert not {"SaveKernel", "StartSubmissionUpload", "CreateSubmission"} & set(kaggle.calls[calls:])
    assert len(kaggle.submissions) == 1


def test_infer_runs_the_inference_kernel_for_a_file_competition(kaggle, repo, built):
    as_pushed(kaggle, repo, built)
    said = ok(run(repo, "submit", "--infer", "--message", "first try"))

    # the inference kernel, pushed once the training run was complete, with that run's output attached
    (save,) = kaggle.received("SaveKernel")
    assert save["slug"] == INFER and save["kernelDataSources"] == [TRAIN] and not save.get("enableInternet")
    assert save["competitionDataSources"] == [PADDY] and save["datasetDataSources"] == [DATASET]
    assert kaggle.kernels[INFER]["versions"][0]["kernels"] == {TRAIN: (1, "COMPLETE")}
    (create,) = kaggle.received("CreateSubmission")
    assert create["submissionDescription"] == f"first try {MARK}"
    (s,) = kaggle.submissions
    assert s["file"] == inference_output()["submission.csv"] and s["fileName"] == "submission.csv"
    assert kaggle.downloads == [f"{INFER}/1/submission.csv"]  # the one file it needs
    assert f"submission {s['ref']} to {PADDY}: complete, public score 0.97412" in said


def test_push_then_submit_to_a_code_competition(kaggle, repo):
    template = json.loads((repo / "kernel-metadata.json").read_text())
    (repo / "kernel-metadata.json").write_text(json.dumps({**template, "competition_sources": [CODE]}))
    ok(run(repo, *PUSH))
    said = ok(run(repo, "submit"))

    assert kaggle.received("SaveKernel")[1]["kernelDataSources"] == [TRAIN]
    assert kaggle.kernels[INFER]["versions"][0]["kernels"] == {TRAIN: (1, "COMPLETE")}
    assert kaggle.received("GetCompetition") == [{"competitionName": CODE}]
    (create,) = kaggle.received("CreateCodeSubmission")
    assert create == {"competitionName": CODE, "kernelOwner": USERNAME, "kernelSlug": INFER.split("/")[1],
                      "kernelVersion": 1, "fileName": "submission.csv",
                      "submissionDescription": f"trained by {TRAIN} v1 {MARK}"}
    assert not {"StartSubmissionUpload", "CreateSubmission"} & set(kaggle.calls) and not kaggle.downloads
    assert f"submission {kaggle.submissions[0]['ref']} to {CODE}: complete, public score 0.97412" in said


def test_cut_off_after_the_submission_was_made_a_rerun_does_not_submit_again(kaggle, here, tmp_path,
                                                                              built):
    as_pushed(kaggle, tmp_path, built)
    kaggle.fail("CreateSubmission", after=True)  # Kaggle makes the submission; its answer never arrives
    fails(here("submit"), "cannot reach Kaggle while submitting submission.csv",
          "rerun `python build.py submit`", "nothing is pushed or submitted twice")
    assert len(kaggle.submissions) == 1

    said = ok(here("submit"))
    assert "made already" in said and "public score 0.97412" in said
    assert len(kaggle.submissions) == 1 and kaggle.calls.count("CreateSubmission") == 1
    assert INFER not in kaggle.kernels


def _kill_when(proc: subprocess.Popen, done, what: str) -> None:
    """Kill `proc` (SIGKILL: no clean-up of its own) once `done()`, as a closed laptop lid would stop it."""
    for _ in range(600):
        if done() or proc.poll() is not None: break
        time.sleep(0.1)
    assert proc.poll() is None, f"submit ended before {what}: {proc.communicate()}"
    proc.kill()
    proc.communicate()


def test_killed_while_inference_runs_or_while_scoring_a_rerun_pushes_and_submits_nothing_again(kaggle, repo,
                                                                                                built):
    as_pushed(kaggle, repo, built)
    kaggle.run_states[INFER] = ["RUNNING"] * 50 + ["COMPLETE"]  # far longer than we wait below
    kaggle.scoring = ["PENDING"] * 1000
    submit = lambda: subprocess.Popen([sys.executable, "build.py", "submit", "--infer"], cwd=repo,
                                      env=env(repo),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    infer = INFER.split("/")[1]
    waiting = lambda: [r for r in kaggle.received("GetKernelSessionStatus") if r["kernelSlug"] == infer]
    _kill_when(submit(), waiting, "waiting for the inference run")
    kaggle.kernels[INFER]["versions"][0]["states"] = ["RUNNING", "COMPLETE"]
    _kill_when(submit(), lambda: kaggle.submissions, "submitting")
    assert len(kaggle.kernels[INFER]["versions"]) == 1

    kaggle.submissions[0]["states"] = kaggle.scoring = ["PENDING", "COMPLETE"]  # Kaggle scores it
    said = ok(run(repo, "submit", "--infer"))
    assert "made already" in said and "public score 0.97412" in said
    assert len(kaggle.submissions) == 1 and len(kaggle.kernels[INFER]["versions"]) == 1

    # a new training run (push again) is a new inference run and a new submission
    training_run(kaggle)
    kaggle.run_states[INFER] = ["COMPLETE"]
    assert "public score" in ok(run(repo, "submit", "--infer"))
    assert kaggle.kernels[INFER]["versions"][1]["kernels"] == {TRAIN: (2, "COMPLETE")}
    assert [s["description"] for s in kaggle.submissions] == [
        f"trained by {TRAIN} v1 {MARK}", f"trained by {TRAIN} v2 [paddy-kernel-kit {TRAIN} v2 via {INFER} v2]"]


def test_a_submission_kaggle_cannot_score_is_one_line_with_kaggles_error(kaggle, here, tmp_path, built):
    as_pushed(kaggle, tmp_path, built)
    kaggle.scoring = ["PENDING", "ERROR"]
    kaggle.scoring_error = "Evaluation Exception: Submission must have 3469 rows"
    for _ in range(2):  # and a rerun says it again, without submitting again
        fails(here("submit"), "could not score submission",
              "Evaluation Exception: Submission must have 3469 rows")
    assert len(kaggle.submissions) == 1


@pytest.mark.parametrize("competition", [PADDY, CODE])
def test_the_daily_limit_is_asked_first_and_stops_submit_before_anything_is_pushed_or_sent(kaggle, here,
                                                                                          tmp_path, built,
                                                                                          competition):
    as_pushed(kaggle, tmp_path, built)
    if competition == CODE:
        for k in ("kernel", "infer"):
            path = tmp_path / "build" / k / "kernel-metadata.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "competition_sources": [CODE]}))
    kaggle.daily_limit = 2
    for i in range(2): kaggle.submitted(competition, f"by hand {i}", public="0.9")
    line = fails(here("submit"), f"daily submission limit for {competition} is reached",
                 "2 made today, none left", "midnight UTC", "nothing was pushed or sent")
    assert "GetSubmissionLimits" in kaggle.calls and len(kaggle.submissions) == 2
    assert not {"StartSubmissionUpload", "CreateSubmission", "CreateCodeSubmission"} & set(kaggle.calls)
    assert INFER not in kaggle.kernels and not kaggle.downloads, line  # no inference run, nothing fetched

    for s in kaggle.submissions: s["date"] = "2020-01-01T10:00:00.000Z"  # the next day
    said = ok(here("submit"))
    assert "public score 0.97412" in said and len(kaggle.submissions) == 3
    assert (INFER in kaggle.kernels) == (competition == CODE)


def test_a_lifetime_cap_says_it_never_resets(kaggle, here, tmp_path, built):
    as_pushed(kaggle, tmp_path, built)
    kaggle.total_limit = 1
    kaggle.submitted(PADDY, "by hand", public="0.9", date="2020-01-01T10:00:00.000Z")
    fails(here("submit"), "used all its submissions to paddy-disease-classification (1",
          "lifetime cap", "Kaggle takes no more")
    assert not {"StartSubmissionUpload", "CreateSubmission"} & set(kaggle.calls)


@pytest.mark.parametrize("style", ["real", "friendly"])
def test_the_daily_limit_reached_between_asking_and_submitting_is_recognised(kaggle, here, tmp_path, built,
                                                                            style):
    kaggle.style = style
    as_pushed(kaggle, tmp_path, built)
    kaggle.daily_limit = 2
    for i in range(2): kaggle.submitted(PADDY, f"by hand {i}", public="0.9")
    # Kaggle said one was left, then someone on the team used it
    kaggle.fail("GetSubmissionLimits", body={"numToday": 1, "numTotal": 1, "numAllowedNow": 1})
    fails(here("submit"), "daily submission limit for paddy-disease-classification is reached",
          "daily Submission allowance (2)", "midnight UTC")
    assert len(kaggle.submissions) == 2


def test_failed_runs_timeouts_and_faults_are_one_line(kaggle, here, tmp_path, built):
    fails(here("submit"), "no kernel built under build", "python build.py push")
    shutil.copytree(built, tmp_path / "build")
    fails(here("submit"), f"kernel {TRAIN} is not on Kaggle", "push it first")
    shutil.rmtree(tmp_path / "build")

    kaggle.run_states[TRAIN], kaggle.failure_messages[TRAIN] = ["RUNNING", "ERROR"], "CUDA out of memory"
    as_pushed(kaggle, tmp_path, built)
    fails(here("submit"), f"training kernel {TRAIN} v1 failed (CUDA out of memory)",
          "python build.py push")

    kaggle.run_states[TRAIN] = ["RUNNING"]  # a run that takes longer than we wait
    training_run(kaggle)
    fails(here("submit", "--timeout", "1"), f"training kernel {TRAIN} v2 is still running", "--timeout")

    kaggle.run_states[TRAIN] = ["COMPLETE"]
    kaggle.run_states[INFER], kaggle.failure_messages[INFER] = ["ERROR"], "No model found in /kaggle/input"
    training_run(kaggle)
    fails(here("submit", "--infer"), f"inference kernel {INFER} v1 failed (No model found",
          "rerun `python build.py submit`")
    kaggle.run_states[INFER] = ["COMPLETE"]

    kaggle.stop()  # network down
    fails(here("submit"), "cannot reach Kaggle", "internet connection")
    kaggle.start()
    fails(here("submit", KAGGLE_KEY="not-the-key"), "refused your credentials (401)")
    kaggle.fail("CreateSubmission", 403, "Permission 'competitions.submit' was denied")
    fails(here("submit", "--infer"), "denied submitting",
          "403: Permission 'competitions.submit' was denied",
          "accept the competition's rules")
    assert not kaggle.submissions

    # the failed inference run is pushed again, once; then it goes through
    assert "public score" in ok(here("submit", "--infer"))
    assert len(kaggle.kernels[INFER]["versions"]) == 2 and len(kaggle.submissions) == 1


def test_status_shows_the_run_and_the_latest_submissions_with_their_scores(kaggle, here, tmp_path, built):
    as_pushed(kaggle, tmp_path, built)
    kaggle.submitted(PADDY, "oldest", public="0.5")
    kaggle.submitted(PADDY, "resnet26d, 10 epochs", public="0.96121", private="0.95870")
    kaggle.submitted(PADDY, "wrong columns", status="ERROR",
                     error="Submission must have columns image_id,label")
    kaggle.submitted(PADDY, "still scoring", status="PENDING")
    for i in range(2): kaggle.submitted(PADDY, f"newer {i}", public="0.9")
    said = ok(here("status")).splitlines()
    assert said[:2] == [f"kernel {TRAIN}: running", "  no epoch finished yet"]  # in its log so far
    assert said[2] == "GPU quota this week: 27.5 h left of 30.0 h (2.5 h used, refreshes 2026-12-05 00:00 UTC)"
    rows = said[4:]
    # the 5 latest, newest first
    assert len(rows) == 5 and "newer 1" in rows[0] and "oldest" not in "".join(said)
    row = lambda text: next(r for r in rows if text in r)
    assert ("complete" in row("resnet26d")
            and "public score 0.96121, private score 0.95870" in row("resnet26d"))
    assert ("error" in row("wrong columns")
            and "Submission must have columns image_id,label" in row("wrong columns"))
    assert "pending" in row("still scoring")


FAULTS = ({"status": 500}, {"drop": True}, {"status": 429})


@pytest.mark.parametrize("method", ["GetKernel", "GetCompetition", "ListSubmissions", "GetSubmissionLimits",
                                    "GetKernelSessionStatus", "ListKernelSessionOutput",
                                    "StartSubmissionUpload",
                                    "Upload", "CreateSubmission"])
def test_a_fault_at_each_call_of_submit_is_one_line_and_a_rerun_sends_nothing_twice(kaggle, here, tmp_path,
                                                                                    built,
                                                                                    method):
    as_pushed(kaggle, tmp_path, built)
    for fault in FAULTS:  # a server error, a dropped connection, rate limiting: each once, in turn
        kaggle.fail(method, **fault)
        r = here("submit")
        assert not kaggle.faults[method], f"{method} was not called"
        # the client resumed the upload itself; a submit goes ahead without the allowance (a warning); a wait
        # waits through a fault
        if r.returncode == 0 and method in ("Upload", "GetSubmissionLimits", "GetKernelSessionStatus"): break
        fails(r, "rerun `python build.py submit`")
    else:
        assert "public score 0.97412" in ok(here("submit"))
    (s,) = kaggle.submissions
    assert s["file"] == AVERAGED and kaggle.bytes_received == len(AVERAGED)  # the file went up once
