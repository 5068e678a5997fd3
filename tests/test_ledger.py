"""The ledger (kit/ledger.py): every Kaggle action with a cost made once, whatever fails when. The real kaggle
client against the stand-in, which answers as Kaggle does: answers lost after the action was taken, older
versions that keep running, a version number left out, the session limit as an HTTP error, no allowance
figure without a team, a new dataset hidden while Kaggle processes it, transient faults during waits.

build.py's main runs in this process (test_push's `here`); the submit cases start from the build made once
for test_submit's module, with Kaggle as push leaves it (`as_pushed`).
"""
import json
import shutil
import time
from pathlib import Path

import pytest

from kaggle_standin import CODE, INFER, PADDY, TRAIN, USERNAME
from test_push import DATASET, PUSH, fails, here, kaggle, ok, server, styled  # noqa: F401 (fixtures)
from test_submit import AVERAGED, as_pushed, built, training_run  # noqa: F401 (fixtures)


def entries(build: Path, kind: str) -> list[dict]:
    return [e for e in json.loads((build / "ledger.json").read_text())["entries"] if e["kind"] == kind]


def saved(kaggle, slug: str = TRAIN) -> int:
    """How many SaveKernel calls for `slug` reached Kaggle: each one a GPU session started."""
    return sum(r["slug"] == slug for r in kaggle.received("SaveKernel"))


# ---- push

@pytest.mark.parametrize("method", ["CreateDataset", "CreateDatasetVersion", "SaveKernel"])
def test_an_answer_lost_at_each_call_of_push_that_makes_something_is_settled_not_made_again(styled, here,
                                                                                          tmp_path, method):
    kaggle = styled
    kaggle.run_states["*"] = ["COMPLETE"]
    if method == "CreateDatasetVersion":  # the dataset there, with other content: push versions it
        ok(here(*PUSH))
        kaggle.datasets[DATASET]["versions"][-1]["files"] = {f"paddy-kernel-kit-content-{'0' * 64}.txt": b""}
    kaggle.fail(method, after=True)  # Kaggle makes it, and its answer never arrives ...
    kaggle.fail("GetKernel", drop=True, times=10 ** 6)  # ... nor any answer to the look-ups after it
    fails(here(*PUSH), "cannot reach Kaggle", "rerun `python build.py push`")
    pending = [e for kind in ("dataset", "push") for e in entries(tmp_path / "build", kind)
               if e["state"] == "pending"]
    assert len(pending) == 1, "the action was not written down before it was made"
    kaggle.faults["GetKernel"].clear()  # the network is back

    said = ok(here(*PUSH))
    assert kaggle.calls.count(method) == 1, f"{method} was made twice"
    assert len(kaggle.datasets[DATASET]["versions"]) == 1 + (method == "CreateDatasetVersion")
    assert saved(kaggle) == 1 + (method == "CreateDatasetVersion")
    assert ("whose answer was lost, is found on Kaggle; not pushed again" in said if method == "SaveKernel"
            else "unchanged on Kaggle" in said and "pushed and running" in said)
    assert not [e for kind in ("dataset", "push") for e in entries(tmp_path / "build", kind)
                if e["state"] == "pending"]


@pytest.mark.parametrize("lag", [0, 2])
def test_an_answer_lost_is_looked_up_at_once_and_a_version_kaggle_shows_late_is_waited_for(styled, here,
                                                                                          tmp_path, lag):
    kaggle = styled
    kaggle.kernel_lag = lag  # GetKernel shows the new version only after this many look-ups (403 till then)
    kaggle.fail("SaveKernel", after=True)
    kaggle.fail("GetKernel", drop=True)  # one blip while looking
    said = ok(here(*PUSH))  # found by its run token: no error, no second session
    assert saved(kaggle) == 1 and "version 1, whose answer was lost, is found on Kaggle" in said


def test_a_lost_answer_is_found_behind_a_newer_version_and_one_never_made_is_pushed(kaggle, here, tmp_path):
    kaggle.run_states["*"] = ["COMPLETE"]
    ok(here(*PUSH))
    kaggle.fail("SaveKernel", after=True)
    kaggle.fail("GetKernel", drop=True, times=10 ** 6)
    fails(here(*PUSH), "cannot reach Kaggle")  # v2 runs; no one knows yet
    kaggle.faults["GetKernel"].clear()
    kaggle.SaveKernel(USERNAME, {"slug": TRAIN, "enableGpu": True})  # v3, pushed from elsewhere meanwhile
    said = ok(here(*PUSH))
    assert "version 2, whose answer was lost, is found on Kaggle" in said and saved(kaggle) == 2
    assert len(kaggle.kernels[TRAIN]["versions"]) == 3
    kaggle.fail("SaveKernel", drop=True)  # lost on the way there: Kaggle never had it
    kaggle.fail("GetKernel", drop=True, times=10 ** 6)
    fails(here(*PUSH), "cannot reach Kaggle")
    kaggle.faults["GetKernel"].clear()
    said = ok(here(*PUSH))  # not shown within the grace: taken as never made, pushed
    assert "version 4 pushed and running" in said and len(kaggle.kernels[TRAIN]["versions"]) == 4


def test_a_version_number_left_out_is_found_by_the_run_token(kaggle, here, tmp_path):
    kaggle.omit_version = True  # kagglesdk reads it as 0
    said = ok(here(*PUSH))
    assert "version 1 pushed and running" in said
    (run,) = entries(tmp_path / "build", "push")
    assert (run["state"], run["version"]) == ("started", 1) and saved(kaggle) == 1


def test_a_push_started_without_its_sources_is_not_pushed_beside_its_run(styled, here, tmp_path):
    kaggle = styled
    kaggle.run_states["*"] = ["RUNNING"]
    competition = kaggle.competitions.pop(PADDY)  # Kaggle saves and runs it, without the competition's data
    fails(here(*PUSH), f"Kaggle started kernel {TRAIN} v1 without its competition sources "
          "paddy-disease-classification", "that run will fail")
    (run,) = entries(tmp_path / "build", "push")
    assert (run["state"], run["version"]) == ("started", 1)  # written down: it costs GPU time
    kaggle.competitions[PADDY] = competition  # the user fixes it, reruns; the doomed run still runs
    fails(here(*PUSH), f"kernel {TRAIN} v1, started without its competition sources",
          "is still running", f"https://www.kaggle.com/code/{TRAIN}", "not pushed beside it")
    assert saved(kaggle) == 1
    kaggle.kernels[TRAIN]["versions"][0]["states"] = ["ERROR"]  # it failed, as it had to
    assert "version 2 pushed and running" in ok(here(*PUSH))
    assert saved(kaggle) == 2


def test_a_new_push_names_the_earlier_runs_that_still_run(kaggle, here, tmp_path):
    kaggle.run_states["*"] = ["RUNNING"]
    ok(here(*PUSH))
    said = ok(here(*PUSH))  # a deliberate new push, after one that finished: a new run
    assert saved(kaggle) == 2
    assert (f"note: your earlier run {TRAIN} v1 is running" in said
            and f"stop it at https://www.kaggle.com/code/{TRAIN} if you no longer need it" in said)


def test_a_new_dataset_hidden_while_kaggle_processes_it_is_waited_for_not_made_again(styled, here):
    kaggle = styled
    kaggle.hidden_lookups = 10 ** 6  # 403 (real) or 404 (friendly) for every look-up, for now
    fails(here(*PUSH, "--timeout", "2"), f"dataset {DATASET} is still not ready after 2 s")
    # the rerun finds nothing it may see: Kaggle's CreateDataset says the slug is in use (and makes nothing),
    # which for the dataset the ledger says we made is not "change the id" but "wait"
    line = fails(here(*PUSH, "--timeout", "2"), f"dataset {DATASET}, made", "still not shown by Kaggle",
                 "it is not made again")
    assert "already in use" not in line and len(kaggle.datasets[DATASET]["versions"]) == 1
    kaggle.datasets[DATASET]["hidden"] = 0  # processed
    said = ok(here(*PUSH))
    assert "unchanged on Kaggle" in said and saved(kaggle) == 1
    assert len(kaggle.datasets[DATASET]["versions"]) == 1 and "CreateDatasetVersion" not in kaggle.calls


def test_a_push_kaggle_refuses_for_the_session_limit_waits_and_submit_pushes_and_submits_it(kaggle, here,
                                                                                          tmp_path):
    kaggle.run_states["*"] = ["RUNNING", "COMPLETE"]
    training_run(kaggle)  # an earlier run of ours, over
    kaggle.kernels[TRAIN]["versions"][0]["states"] = ["COMPLETE"]
    for other in ("a", "b"):  # two GPU sessions of the account run elsewhere
        kaggle.SaveKernel(USERNAME, {"slug": f"{USERNAME}/{other}", "enableGpu": True})
        kaggle.kernels[f"{USERNAME}/{other}"]["versions"][0]["states"] = ["RUNNING"]
    r = here(*PUSH)
    assert r.returncode == 0 and "Maximum batch GPU session count of 2 reached" in r.stderr
    assert [e["state"] for e in entries(tmp_path / "build", "push")] == ["waiting"] and saved(kaggle) == 1
    assert f"kernel {TRAIN}: waiting" in ok(here("status"))
    for other in ("a", "b"): kaggle.kernels[f"{USERNAME}/{other}"]["versions"][0]["states"] = ["COMPLETE"]
    said = ok(here("submit"))  # pushes it now that slots are free, waits for it, submits that run
    assert saved(kaggle) == 2 and "version 2 pushed and running" in said
    (s,) = kaggle.submissions
    assert s["description"].endswith(f"[paddy-kernel-kit {TRAIN} v2]")


# ---- submit

def test_a_code_submission_is_found_from_another_clone(styled, here, tmp_path, built):
    kaggle = styled
    def lay_out():  # a fresh clone's build: no ledger
        shutil.rmtree(tmp_path / "build", ignore_errors=True)
        shutil.copytree(built, tmp_path / "build")
        for k in ("kernel", "infer"):
            path = tmp_path / "build" / k / "kernel-metadata.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "competition_sources": [CODE]}))
    as_pushed(kaggle, tmp_path, built)
    shutil.rmtree(tmp_path / "build")
    lay_out()
    kaggle.fail("CreateCodeSubmission", 403, "Permission 'competitions.submit' was denied")
    fails(here("submit"), "denied submitting")
    assert len(kaggle.kernels[INFER]["versions"]) == 1

    lay_out()  # the inference run is found on Kaggle by the training run in its notebook
    said = ok(here("submit"))
    assert "pushed for this training run already" in said and len(kaggle.kernels[INFER]["versions"]) == 1
    assert len(kaggle.submissions) == 1

    lay_out()  # and the submission by its description
    said = ok(here("submit"))
    assert "made already" in said and len(kaggle.submissions) == 1
    assert len(kaggle.kernels[INFER]["versions"]) == 1
    assert kaggle.submissions[0]["description"].endswith(f"[paddy-kernel-kit {TRAIN} v1 via {INFER} v1]")


@pytest.mark.parametrize("entered", [True, False])
def test_no_allowance_figure_without_a_team_is_a_first_submission_not_a_limit(kaggle, here, tmp_path, built,
                                                                           entered):
    as_pushed(kaggle, tmp_path, built)
    kaggle.teams = set()  # GetSubmissionLimits: all zero
    if not entered: kaggle.entered = set()
    r = here("submit")
    if entered:
        assert r.returncode == 0 and "public score 0.97412" in r.stdout, r.stderr
        assert "Kaggle gave no submission allowance" in r.stderr and len(kaggle.submissions) == 1
    else:
        fails(r, f"you have not joined {PADDY}", f"https://www.kaggle.com/competitions/{PADDY}/rules")
        assert not kaggle.submissions and not kaggle.downloads


def test_the_allowance_unanswered_is_a_warning_and_kaggles_own_limit_still_one_line(kaggle, here, tmp_path,
                                                                                    built):
    as_pushed(kaggle, tmp_path, built)
    kaggle.daily_limit = 1
    kaggle.submitted(PADDY, "by hand", public="0.9")
    kaggle.fail("GetSubmissionLimits", 503)
    r = here("submit")
    assert "warning: Kaggle did not say how many submissions" in r.stderr
    fails(r, f"daily submission limit for {PADDY} is reached", "daily Submission allowance (1)")
    assert len(kaggle.submissions) == 1


def test_waits_go_through_transient_faults_and_say_how_long_they_tried(kaggle, here, tmp_path, built,
                                                                      monkeypatch):
    from kit import kaggle as kit_kaggle
    as_pushed(kaggle, tmp_path, built)
    monkeypatch.setattr(kit_kaggle, "HTTP_TIMEOUT_S", (2, 2))  # a half-open connection: given up on in 2 s
    kaggle.fail("GetKernelSessionStatus", 503)
    kaggle.fail("GetKernelSessionStatus", 429, retry_after=1)
    kaggle.fail("GetKernelSessionStatus", drop=True)
    kaggle.fail("GetKernelSessionStatus", hang=4)  # shorter than the wait below; see the next test
    kaggle.fail("ListSubmissions", 503, skip=1)  # while waiting for the score (not the look before it)
    said = ok(here("submit"))
    assert "public score 0.97412" in said and len(kaggle.submissions) == 1
    assert not kaggle.faults["GetKernelSessionStatus"] and not kaggle.faults["ListSubmissions"]

    training_run(kaggle)
    kaggle.fail("GetKernelSessionStatus", 503, times=10 ** 6)  # Kaggle down for longer than we wait
    line = fails(here("submit", "--timeout", "3"), "Kaggle did not answer for", "503",
                 "rerun `python build.py submit` later: it carries on where this stopped")
    assert len(kaggle.submissions) == 1, line


@pytest.mark.parametrize("competition", [PADDY, CODE])
def test_a_lost_submission_answer_is_looked_for_while_kaggle_does_not_list_it_yet(kaggle, here, tmp_path,
                                                                                built, competition):
    as_pushed(kaggle, tmp_path, built)
    if competition == CODE:
        for k in ("kernel", "infer"):
            path = tmp_path / "build" / k / "kernel-metadata.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), "competition_sources": [CODE]}))
    create = "CreateCodeSubmission" if competition == CODE else "CreateSubmission"
    kaggle.fail(create, after=True)  # made; the answer lost
    kaggle.submission_lag = 2  # and not listed for the next two looks
    fails(here("submit"), "cannot reach Kaggle while submitting")
    said = ok(here("submit"))
    assert len(kaggle.submissions) == 1 and kaggle.calls.count(create) == 1, said
    assert "public score 0.97412" in said and kaggle.bytes_received == (len(AVERAGED) if competition == PADDY else 0)


def test_a_lost_answer_to_the_inference_push_is_settled_by_the_next_submit(kaggle, here, tmp_path, built):
    as_pushed(kaggle, tmp_path, built)
    kaggle.fail("SaveKernel", after=True)
    # after the two look-ups before it (the training run's version; no inference run yet), no answers
    kaggle.fail("GetKernel", drop=True, times=10 ** 6, skip=2)
    fails(here("submit", "--infer"), "cannot reach Kaggle while pushing kernel")
    kaggle.faults["GetKernel"].clear()
    said = ok(here("submit", "--infer"))
    assert "whose answer was lost, is found on Kaggle" in said and saved(kaggle, INFER) == 1
    assert len(kaggle.kernels[INFER]["versions"]) == 1 and len(kaggle.submissions) == 1


def test_a_half_open_connection_is_given_up_on_and_tried_again(kaggle, here, tmp_path, built, monkeypatch):
    from kit import kaggle as kit_kaggle
    as_pushed(kaggle, tmp_path, built)
    kaggle.run_states[TRAIN] = ["COMPLETE"]
    training_run(kaggle)
    monkeypatch.setattr(kit_kaggle, "HTTP_TIMEOUT_S", (2, 2))
    kaggle.fail("GetKernelSessionStatus", hang=120)  # Kaggle takes the request and never answers
    start = time.monotonic()
    assert "public score 0.97412" in ok(here("submit"))
    assert time.monotonic() - start < 60  # without a timeout it would wait the whole 120 s


def test_an_upload_token_is_used_for_its_own_submission_only(kaggle, here, tmp_path, built):
    as_pushed(kaggle, tmp_path, built)
    kaggle.fail("CreateSubmission", 500)  # the file arrived; the submission call failed: not made
    fails(here("submit"), "server error while submitting")
    ok(here("submit"))  # the bytes are not sent again
    assert kaggle.calls.count("StartSubmissionUpload") == 1 and kaggle.bytes_received == len(AVERAGED)
    training_run(kaggle)  # a new run, whose file has the same bytes: its own upload
    ok(here("submit"))
    assert kaggle.calls.count("StartSubmissionUpload") == 2 and kaggle.bytes_received == 2 * len(AVERAGED)
    assert [s["description"].endswith(f"[paddy-kernel-kit {TRAIN} v{v}]")
            for s, v in zip(kaggle.submissions, (1, 2))] == [True, True]
    assert not [e for e in entries(tmp_path / "build", "submission") if e.get("upload")]


def test_a_ledger_that_cannot_be_read_is_one_line_not_a_fresh_start(kaggle, here, tmp_path, built):
    as_pushed(kaggle, tmp_path, built)
    (tmp_path / "build" / "ledger.json").write_text('{"entries": [')  # cut short
    fails(here("submit"), "build/ledger.json cannot be read", "restore it")
    assert not kaggle.submissions and "GetKernel" not in kaggle.calls
