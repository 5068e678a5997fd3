"""`build.py submit`: a pushed training run -> an inference run on its output -> a scored submission.

    submit(out)   wait (bounded) for the training kernel's latest run; push the inference kernel built in
                  OUT/infer, which Kaggle attaches to that run's output (kernel_sources), unless an earlier
                  submit pushed it for this very run; wait for it; submit it; wait for the score, print it

How the competition takes submissions is Kaggle's to say: its `is_kernels_submissions_only` (GetCompetition).
A code competition gets a code submission of the inference kernel's version (Kaggle reruns it on the hidden
test set and scores the submission.csv it writes); any other, Paddy Doctor among them, gets the submission.csv
of the inference run, uploaded as a file. `code=True/False` (--code/--file) says it instead.

Never twice. Kaggle caps submissions per day, and a submit can be cut off anywhere, so it first asks whether
a chore is done already:
- the submission: its description ends with a marker naming the inference kernel and version,
  `[paddy-kernel-kit <owner>/<slug> v<N>]`. Your latest submissions to the competition (ListSubmissions) are
  searched for it; found, it is not submitted again, only waited for. This holds when the answer to the
  submission was lost, and from another clone.
- the inference run: the version pushed for a training run is noted in OUT/inference.json as soon as the
  push returns. A rerun for the same training run waits for that version instead of pushing again, unless
  it failed. A new build (push makes one) drops the note: a new training run, or a new inference notebook,
  needs a new inference run. Cut off between Kaggle saving the push and its answer arriving, the note is
  missing and a rerun pushes once more: one needless inference run, never a second submission.
"""
import contextlib
import io
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

import requests
from kagglesdk.competitions.types.competition_api_service import (ApiCreateSubmissionResponse,
                                                                  ApiGetCompetitionRequest, ApiSubmission)
from kagglesdk.kernels.types.kernels_api_service import ApiGetKernelRequest

from kernel.atomic import atomic_write
from kernel.errors import UserError

from . import metadata
from .push import FINISHED, Api, _api, _call, _poll, _state, built, push_kernel

RECORD = "inference.json"  # in OUT: {"training": "<id>/<version>", "inference": "<id>/<version>"}
SUBMISSION = "submission.csv"
SUBMIT_WAIT_S = 13 * 3600  # a Kaggle GPU session lasts at most 12 hours; then inference and scoring
DAILY = re.compile(r"\bdaily\b", re.I)  # how Kaggle's refusals of a submission over the daily limit read


def marker(infer: str, version: int) -> str:
    """What a submission's description ends with: which inference run it is, for a rerun to find."""
    return f"[paddy-kernel-kit {infer} v{version}]"


def latest_version(api: Api, ref: str) -> int:
    """The number of kernel `ref`'s latest version: the run its last push started (GetKernel)."""
    owner, slug = ref.split("/")
    request = ApiGetKernelRequest()
    request.user_name, request.kernel_slug = owner, slug
    with api.build_kaggle_client() as kaggle:
        return kaggle.kernels.kernels_api_client.get_kernel(request).metadata.current_version_number


def wait_run(api: Api, ref: str, version: int, deadline: float, what: str, fix: str) -> None:
    """Wait until the run of `ref` v`version` is over; refuse in one line unless it completed."""
    run = f"{ref}/{version}"
    state = _poll(f"{what} kernel {ref} v{version}", lambda: _state(api, run, "submit")[0],
                  lambda s: s in FINISHED, deadline - time.monotonic())
    if state == "complete": return
    if state == "error":
        failure = _state(api, run, "submit")[1] or "no message"
        raise UserError(f"{what} kernel {ref} v{version} failed ({failure}); {fix}")
    if state in FINISHED:
        raise UserError(f"{what} kernel {ref} v{version} was cancelled; {fix}")
    raise UserError(f"{what} kernel {ref} v{version} is still {state} when the --timeout runs out; rerun "
                    "`python build.py submit` later (it carries on where it stopped), or give it longer")


def _record(out: Path) -> dict:
    try: return json.loads((out / RECORD).read_text())
    except (OSError, ValueError): return {}


def inference_run(api: Api, out: Path, training: str) -> tuple[str, int]:
    """The inference run on training run `training` ("<id>/<version>"): the one an earlier submit pushed
    for it, unless that failed, else a new push of OUT/infer. Returns (inference kernel id, version)."""
    infer = built(out, "infer")["id"]
    noted = _record(out)
    if noted.get("training") == training and noted.get("inference", "").rpartition("/")[0] == infer:
        state, _ = _state(api, noted["inference"], "submit")
        version = int(noted["inference"].rpartition("/")[2])
        if state not in FINISHED or state == "complete":
            print(f"kernel {infer}: version {version}, pushed for this training run already, is {state}; "
                  "not pushed again")
            return infer, version
    ref, version = push_kernel(api, out / "infer", rerun="submit")
    with atomic_write(out / RECORD) as tmp:
        tmp.write_text(json.dumps({"training": training, "inference": f"{ref}/{version}"}) + "\n")
    return ref, version


def takes_code(api: Api, competition: str) -> bool:
    """Whether the competition takes code submissions only (a code competition): Kaggle's GetCompetition."""
    request = ApiGetCompetitionRequest()
    request.competition_name = competition
    with api.build_kaggle_client() as kaggle:
        return kaggle.competitions.competition_api_client.get_competition(request).is_kernels_submissions_only


def submissions(api: Api, competition: str, rerun: str = "submit") -> list[ApiSubmission]:
    """Your team's latest submissions to the competition, newest first (ListSubmissions: the client's first
    page, 20: a rerun comes soon after, and Kaggle's daily limits are smaller)."""
    got = _call(f"listing your submissions to {competition}", api.competition_submissions, competition,
                rerun=rerun)
    return [s for s in got or [] if s]


def find(subs: list[ApiSubmission], mark: str) -> ApiSubmission | None:
    return next((s for s in subs if mark in (s.description or "")), None)


def _daily_limit(competition: str, said: str) -> UserError:
    return UserError(f"Kaggle's daily submission limit for {competition} is reached "
                     f"({said.strip().rstrip('.')}); rerun `python build.py submit` when it resets (midnight "
                     "UTC): the inference run is reused, and nothing is submitted twice")


def _made(submit: Callable[[], ApiCreateSubmissionResponse], competition: str) -> int:
    """Make a submission; its ref. Kaggle refuses with an HTTP error, or with an answer that names no
    submission and whose message says why (the client's own failed upload too): either way one line, the
    daily limit told apart."""
    try:
        with contextlib.redirect_stdout(io.StringIO()): r = submit()  # it prints a failed upload's error
    except requests.HTTPError as e:
        if DAILY.search(str(e)):
            raise _daily_limit(competition, str(e)) from None
        raise
    if r.ref: return r.ref
    why = (r.message or "no reason given").strip()
    if DAILY.search(why):
        raise _daily_limit(competition, why)
    raise UserError(f"Kaggle did not take the submission to {competition} ({why.rstrip('.')}); rerun "
                    "`python build.py submit`")


def submit_code(api: Api, competition: str, infer: str, version: int, description: str) -> int:
    """A code submission: Kaggle reruns inference kernel v`version` on the hidden test set."""
    send = lambda: api.competition_submit_code(SUBMISSION, description, competition, infer, version,
                                               quiet=True)
    return _call(f"submitting {infer} v{version} to {competition}", _made, send, competition, rerun="submit")


def submit_file(api: Api, competition: str, infer: str, version: int, description: str) -> int:
    """A file submission: the submission.csv that inference kernel v`version` wrote, fetched, uploaded."""
    with tempfile.TemporaryDirectory(prefix="pkk-submission-") as tmp:
        _call(f"downloading {SUBMISSION} of kernel {infer} v{version}", api.kernels_output,
              f"{infer}/{version}", tmp, file_pattern=rf"^{re.escape(SUBMISSION)}$", force=True, quiet=True,
              rerun="submit")
        path = Path(tmp) / SUBMISSION
        if not path.is_file():
            raise UserError(f"kernel {infer} v{version} completed without writing {SUBMISSION}; read its log "
                            "on Kaggle, fix, and push again with `python build.py push`")
        send = lambda: api.competition_submit(str(path), description, competition, quiet=True)
        return _call(f"submitting {SUBMISSION} of {infer} v{version} to {competition}", _made, send,
                     competition, rerun="submit")


def wait_score(api: Api, competition: str, mark: str, deadline: float) -> ApiSubmission:
    """Wait until Kaggle has scored the submission marked `mark`: the submission, complete or in error."""
    found = {}

    def state() -> str:
        found["s"] = find(submissions(api, competition), mark)  # just made, it may not be listed yet
        return found["s"].status.name.lower() if found["s"] else "pending"

    _poll(f"submission to {competition}", state, lambda s: s != "pending", deadline - time.monotonic())
    s = found["s"]
    if s is None or s.status.name == "PENDING":
        raise UserError(f"Kaggle is still scoring the submission to {competition} when the --timeout runs "
                        "out; see its score with `python build.py status`, or rerun `python build.py submit` "
                        "to wait for it (it is not submitted again)")
    return s


def _scores(s: ApiSubmission) -> str:
    private = f", private score {s.private_score}" if s.private_score else ""
    return f"public score {s.public_score or '-'}{private}"


def submit(out: Path = Path("build"), message: str | None = None, code: bool | None = None,
           timeout: float = SUBMIT_WAIT_S) -> ApiSubmission:
    """Submit the training run pushed from OUT through the inference kernel built beside it; returns the
    scored submission. The waits together take at most `timeout` seconds. A rerun carries on where the
    last one stopped and never submits twice."""
    deadline = time.monotonic() + timeout
    meta, api = built(out), _api()
    train, competition = meta["id"], metadata.competition(meta)
    version = _call(f"looking up kernel {train}", latest_version, api, train, rerun="submit")
    wait_run(api, train, version, deadline, "training",
             "read its log with `python build.py output`, fix, and push again with `python build.py push`")
    infer, infer_version = inference_run(api, out, f"{train}/{version}")
    wait_run(api, infer, infer_version, deadline, "inference",
             f"read its log on Kaggle (https://www.kaggle.com/code/{infer}), then rerun "
             "`python build.py submit` to run it again")
    mark = marker(infer, infer_version)
    earlier = find(submissions(api, competition), mark)
    if earlier:
        print(f"submission {earlier.ref} to {competition} of {infer} v{infer_version} was made already; "
              "not submitting again")
    else:
        if code is None:
            code = _call(f"looking up competition {competition} (or say how it takes submissions: --code "
                         "or --file)", takes_code, api, competition, rerun="submit")
        description = f"{message or f'trained by {train} v{version}'} {mark}"
        ref = (submit_code if code else submit_file)(api, competition, infer, infer_version, description)
        what = "the code" if code else SUBMISSION
        print(f"submission {ref} to {competition}: {what} of {infer} v{infer_version}, {description!r}")
    s = wait_score(api, competition, mark, deadline)
    if s.status.name == "ERROR":
        why = (s.error_description or "no message").strip()
        raise UserError(f"Kaggle could not score submission {s.ref} to {competition}: {why}; fix that, then "
                        "push and submit again (a rerun of submit only reports this submission again)")
    print(f"submission {s.ref} to {competition}: complete, {_scores(s)}")
    return s


def show_submissions(api: Api, competition: str, shown: int = 5) -> None:
    """Print your `shown` latest submissions to the competition: date, state, scores or error, description."""
    subs = submissions(api, competition, rerun="status")[:shown]
    if not subs:
        print(f"no submissions to {competition} yet; make one with `python build.py submit`")
        return
    print(f"your latest submissions to {competition}:")
    for s in subs:
        when = s.date.strftime("%Y-%m-%d %H:%M") if s.date else "?"
        state = s.status.name.lower()
        result = {"complete": _scores(s), "error": (s.error_description or "").strip()}.get(state, "")
        print(f"  {s.ref}  {when}  {state:8}  {result}  {s.description or ''}".rstrip())
