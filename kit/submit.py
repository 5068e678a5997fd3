"""`build.py submit`: a pushed training run -> a scored submission.

    submit(out)   settle what an earlier submit or push left pending; ask Kaggle how many submissions are left
                  today (none: one line, nothing spent); wait (bounded) for the training run push started
                  (pushing it first if it waits for a free GPU slot); then
                  - a file competition (Paddy Doctor): download the run's probs.csv, average it on the laptop
                    (one session's case of averaging several) into submission.csv, upload it: no second GPU
                    session;
                  - a code competition, or `infer=True` (--infer): push the inference kernel built in
                    OUT/infer, which Kaggle attaches to that run's output (kernel_sources), unless one was
                    pushed for this very run already; wait for it; submit it (a code competition) or its
                    submission.csv;
                  then wait for the score, print it

With `--sessions N` (`submit_sessions`): wait for every session (pushing those that wait as slots free); a
failed one is one line naming `push --session K`, unless `partial`; then fan in: a file competition downloads
each session's members' probs.csv and averages every member with its weight here (`average_outputs`, each
output first checked by its manifest.json to be the run push started); a code competition pushes the
inference kernel with every finished session's output attached and the tokens they must carry.

How the competition takes submissions is Kaggle's to say: its `is_kernels_submissions_only` (GetCompetition);
`code=True/False` (--code/--file) says it instead.

Never twice. Kaggle caps submissions per day, and a submit can be cut off anywhere, so each action is written
in the ledger (kit/ledger.py) before it is made, with a key Kaggle gives back:
- the submission: its description ends with a marker naming the training run(s) it comes from,
  `[paddy-kernel-kit <owner>/<slug> v<N>]` (`... via <inference kernel> v<M>]` when it went through one).
  Your latest submissions to the competition (ListSubmissions) are searched for it first; found, it is not
  submitted again, only waited for. This holds when the answer to the submission was lost, and from another
  clone or after the build folder is gone. Its file's upload token is kept on its entry until it is settled
  (at most 6 days, as the client keeps an upload's resume state): a rerun sends the bytes once.
- the inference run: pushed with `for_runs` (the training runs it predicts from) in its notebook; a rerun
  for the same training runs finds it, in the ledger or on Kaggle (GetKernel returns each version's notebook),
  and waits for it instead of pushing again, unless it failed.
"""
import hashlib
import re
import tempfile
import time
from pathlib import Path
from typing import Callable

from kernel.errors import UserError
from kernel.submission import average_outputs

from . import kaggle, ledger, metadata, sessions
from .kaggle import Api, ApiSubmission
from .push import FINISHED, advance, built, carry_on, fetch_output, look_for, settle_pushes, start, summary

SUBMISSION, PROBS = "submission.csv", "probs.csv"
SUBMIT_WAIT_S = 13 * 3600  # a Kaggle GPU session lasts at most 12 hours; then inference and scoring
UPLOAD_KEEP_S = 6 * 24 * 3600  # the kaggle client drops an upload's resume state after 6 days; so do we


def marker(runs: str, via: str = "") -> str:
    """What a submission's description ends with: the training run(s) it comes from (what a rerun finds it
    by: `find`), and the inference run it went through."""
    return f"[paddy-kernel-kit {runs}" + (f" via {via}" if via else "") + "]"


def find(subs: list[ApiSubmission], runs: str) -> ApiSubmission | None:
    """The submission of training run(s) `runs`, whichever way it was made."""
    keys = (marker(runs), marker(runs)[:-1] + " via ")
    return next((s for s in subs if any(k in (s.description or "") for k in keys)), None)


def wait_run(api: Api, ref: str, version: int, deadline: float, what: str, fix: str) -> None:
    """Wait until the run of `ref` v`version` is over; refuse in one line unless it completed."""
    run = f"{ref}/{version}"
    state = kaggle.poll(f"{what} kernel {ref} v{version}", lambda: kaggle.kernel_state(api, run, "submit")[0],
                        lambda s: s in FINISHED, deadline - time.monotonic())
    if state == "complete": return
    if state == "error":
        failure = kaggle.kernel_state(api, run, "submit")[1] or "no message"
        raise UserError(f"{what} kernel {ref} v{version} failed ({failure}); {fix}")
    if state in FINISHED:
        raise UserError(f"{what} kernel {ref} v{version} was cancelled; {fix}")
    raise UserError(f"{what} kernel {ref} v{version} is still {state} when the --timeout runs out; rerun "
                    "`python build.py submit` later (it carries on where it stopped), or give it longer")


def runs_key(runs: str) -> str:
    """What the inference notebook pushed for training run(s) `runs` carries (`for_runs`): a hex digest, found
    in its source as Kaggle returns it however that is escaped."""
    return "for-runs-" + hashlib.sha256(runs.encode()).hexdigest()[:16]


def inference_run(api: Api, out: Path, runs: str, values: dict) -> tuple[str, int]:
    """The inference run on training run(s) `runs`: one pushed for them already (in the ledger, or found on
    Kaggle by its `for_runs`), unless it failed, else a new push of OUT/infer with `values` injected (the
    outputs to average and the tokens they must carry). Returns (inference kernel id, version)."""
    infer, key = built(out, "infer")["id"], runs_key(runs)
    known = [e for e in ledger.Ledger(out).find("push", role="infer", for_runs=key)
             if e["state"] == "started"]
    version = known[-1]["version"] if known else kaggle.find_run(api, infer, key, "submit")
    if version:
        state, _ = kaggle.kernel_state(api, f"{infer}/{version}", "submit")
        if state not in FINISHED or state == "complete":
            print(f"kernel {infer}: version {version}, pushed for this training run already, is {state}; "
                  "not pushed again")
            return infer, version
    entry = start(api, out, {"folder": "infer", "kernel": infer}, sessions.token(), "submit", for_runs=key,
                  **values)
    if entry["state"] != "started":
        raise UserError(f"the inference kernel {infer} waits for a free GPU slot (an account runs "
                        f"{sessions.RUNNING_MAX} at once); rerun `python build.py submit` when one of your "
                        "sessions ends")
    return infer, entry["version"]


def averaged_submission(api: Api, train: str, version: int, dest: Path) -> Path:
    """DEST/submission.csv made here from the probs.csv of training run `train` v`version`: the one-session
    case of averaging several sessions' probabilities, rows in the order of the run's own submission.csv
    (the competition's sample_submission order), checked by id."""
    from kernel.submission import average, write_submission  # pandas: only when a file is submitted
    import pandas as pd
    run = f"{train}/{version}"
    wanted = rf"^({re.escape(PROBS)}|{re.escape(SUBMISSION)})$"
    got = {p.name: p for p in fetch_output(api, run, dest / "output", wanted, "submit")}
    if PROBS not in got or SUBMISSION not in got:
        raise UserError(f"training kernel {train} v{version} completed without writing "
                        f"{' and '.join(n for n in (PROBS, SUBMISSION) if n not in got)}; read its log with "
                        "`python build.py output`, fix, and push again")
    order = pd.read_csv(got[SUBMISSION], dtype=str)
    id_col, label_col = order.columns[:2]
    probs = average({run: pd.read_csv(got[PROBS], dtype={id_col: str})}, {run: 1.0}, id_col)
    return write_submission(probs, got[SUBMISSION], id_col, label_col, dest / SUBMISSION)


def wait_score(api: Api, competition: str, runs: str, deadline: float) -> ApiSubmission:
    """Wait until Kaggle has scored the submission of `runs`: the submission, complete or in error."""
    found = {}

    def state() -> str:
        found["s"] = find(kaggle.submissions(api, competition), runs)  # just made, it may not be listed yet
        return found["s"].status.name.lower() if found["s"] else "pending"

    kaggle.poll(f"submission to {competition}", state, lambda s: s != "pending", deadline - time.monotonic())
    s = found["s"]
    if s is None or s.status.name == "PENDING":
        raise UserError(f"Kaggle is still scoring the submission to {competition} when the --timeout runs "
                        "out; see its score with `python build.py status`, or rerun `python build.py submit` "
                        "to wait for it (it is not submitted again)")
    return s


def scored(api: Api, competition: str, runs: str, deadline: float) -> ApiSubmission:
    """Wait for the score of the submission of `runs`, print it; a submission Kaggle could not score is one
    line with Kaggle's error."""
    s = wait_score(api, competition, runs, deadline)
    if s.status.name == "ERROR":
        why = (s.error_description or "no message").strip()
        raise UserError(f"Kaggle could not score submission {s.ref} to {competition}: {why}; fix that, then "
                        "push and submit again (a rerun of submit only reports this submission again)")
    print(f"submission {s.ref} to {competition}: complete, {kaggle.scores(s)}")
    return s


def submit(out: Path = Path("build"), message: str | None = None, code: bool | None = None,
           timeout: float = SUBMIT_WAIT_S, infer: bool = False, partial: bool = False) -> ApiSubmission:
    """Submit the training run pushed from OUT; returns the scored submission. The waits together take at
    most `timeout` seconds. A rerun carries on where the last one stopped and never submits twice. With
    sessions, every session's (`partial`: those that finished)."""
    deadline = time.monotonic() + timeout
    meta, api = built(out), kaggle.client("submit")
    train, competition = meta["id"], metadata.competition(meta)
    last = ledger.Ledger(out).last("op")
    if last is not None and last["state"] == "pending":
        raise UserError(f"the last push from {out} did not finish; rerun `python build.py push` (it carries on "
                        "without pushing again what started), then `python build.py submit`")
    about = kaggle.competition(api, competition)
    code = about.is_kernels_submissions_only if code is None else code
    settle_pushes(api, out, "submit")
    plan = sessions.read_plan(out)
    if plan is not None:
        runs = submit_sessions(api, out, plan, competition, message=message, code=code, infer=code or infer,
                               partial=partial, deadline=deadline, entered=about.user_has_entered)
        return scored(api, competition, runs, deadline)
    version = training_version(api, out, train, deadline)
    runs = f"{train} v{version}"
    earlier = find(kaggle.submissions(api, competition), runs)
    if earlier:
        made_already(out, earlier, competition, runs)
    else:
        kaggle.allowance(api, competition, about.user_has_entered)  # none left: one line, nothing spent
        wait_run(api, train, version, deadline, "training",
                 "read its log with `python build.py output`, fix, and push again with `python build.py push`")
        make(api, out, competition, runs, code=code, infer=code or infer, deadline=deadline,
             message=message or f"trained by {runs}", values={},
             laptop=lambda dest: (averaged_submission(api, train, version, dest), []))
    return scored(api, competition, runs, deadline)


def training_version(api: Api, out: Path, train: str, deadline: float) -> int:
    """The version of the training run push started from OUT: the ledger's (pushed first if it waits for a
    free GPU slot); from another clone, or a build pushed before the ledger, the kernel's latest."""
    run = ledger.pushed(out).get("kernel")
    if run is None: return kaggle.latest_version(api, train)
    if run["state"] == "waiting":
        carry_on(api, out, deadline - time.monotonic(), "submit")
        run = ledger.pushed(out)["kernel"]
    if run["state"] != "started":
        raise UserError(f"the last push of {train} did not start a run (Kaggle {run['state']} it); rerun "
                        "`python build.py push`, then `python build.py submit`")
    return run["version"]


def made_already(out: Path, s: ApiSubmission, competition: str, runs: str) -> None:
    book = ledger.Ledger(out)
    for e in book.find("submission", runs=runs):
        if e["state"] != "done": book.settle(e, "done", ref=s.ref, upload=None)
    print(f"submission {s.ref} to {competition} {marker(runs)} was made already; not submitting again")


def send(api: Api, out: Path, competition: str, runs: str, description: str, what: str, *,
         path: Path | None = None, kernel: str = "", version: int = 0) -> int:
    """Make the submission of `runs`: the file at `path`, or the code of `kernel` v`version`; written in the
    ledger first, its upload token kept there until it is settled (a rerun reuses it: the bytes go up once).
    One sent whose answer was lost is looked for (ListSubmissions may lag) before it is sent again. Its ref."""
    book = ledger.Ledger(out)
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path else None
    entry = book.last("submission", runs=runs, competition=competition)
    if entry is not None and entry["state"] == "pending" and entry.get("sent"):
        made = look_for(lambda: find(kaggle.submissions(api, competition), runs),
                        f"looking on Kaggle for the submission to {competition} whose answer was lost",
                        kaggle.LOOKUP_GRACE_S - (time.time() - entry["sent"]), "submit")
        if made:
            book.settle(entry, "done", ref=made.ref, upload=None)
            return made.ref
        book.settle(entry, "pending", sent=None)  # never arrived: its upload can still be used
    if entry is None or entry["state"] == "done" or entry.get("digest") != digest:
        entry = book.intend("submission", marker(runs), runs=runs, competition=competition, digest=digest)
    try:
        if path is None:
            book.settle(entry, "pending", sent=time.time())
            ref = kaggle.submit_code(api, competition, kernel, version, description, SUBMISSION)
        else:
            token = entry.get("upload") if time.time() - (entry.get("uploaded") or 0) < UPLOAD_KEEP_S else None
            if token is None:
                token = kaggle.upload_submission(api, competition, path, what)
                book.settle(entry, "pending", upload=token, uploaded=time.time())
            book.settle(entry, "pending", sent=time.time())
            ref = kaggle.submit_file(api, competition, token, description, what)
    except kaggle.Transient as e:
        if not e.lost: book.settle(entry, "refused", sent=None)  # rate-limited: the upload still serves
        raise
    except UserError:
        book.settle(entry, "refused", sent=None, upload=None)  # refused: the next try uploads afresh
        raise
    book.settle(entry, "done", ref=ref, upload=None)
    return ref


def make(api: Api, out: Path, competition: str, runs: str, *, code: bool, infer: bool, deadline: float,
         message: str, values: dict, laptop: Callable[[Path], tuple[Path, list[str]]]) -> None:
    """Make the submission of training run(s) `runs` (see submit): `laptop(dest)` makes its file here (and
    names the members missing), or the inference kernel runs with `values`."""
    with tempfile.TemporaryDirectory(prefix="pkk-submission-") as tmp:
        if not infer:
            path, missing = laptop(Path(tmp))
            mark = marker(runs)
            what = f"{SUBMISSION} from the probabilities of {runs}"
            ref = send(api, out, competition, runs, f"{message} {mark}", what, path=path)
        else:
            kernel, run = inference_run(api, out, runs, values)
            wait_run(api, kernel, run, deadline, "inference",
                     f"read its log on Kaggle (https://www.kaggle.com/code/{kernel}), then rerun "
                     "`python build.py submit` to run it again")
            mark, missing = marker(runs, f"{kernel} v{run}"), []
            if code:
                what = f"the code of {kernel} v{run}"
                ref = send(api, out, competition, runs, f"{message} {mark}", what, kernel=kernel, version=run)
            else:
                got = fetch_output(api, f"{kernel}/{run}", Path(tmp) / "inferred",
                                   rf"^{re.escape(SUBMISSION)}$", "submit")
                if Path(tmp) / "inferred" / SUBMISSION not in got:
                    raise UserError(f"kernel {kernel} v{run} completed without writing {SUBMISSION}; read its "
                                    "log on Kaggle, fix, and push again with `python build.py push`")
                what = f"{SUBMISSION} of {kernel} v{run}"
                ref = send(api, out, competition, runs, f"{message} {mark}", what,
                           path=Path(tmp) / "inferred" / SUBMISSION)
    print(f"submission {ref} to {competition}: {what}, {f'{message} {mark}'!r}"
          + (f"; missing members: {', '.join(missing)}" if missing else ""))


# ---- an ensemble split over several sessions (build --sessions N)

# what the laptop needs: the members' weights come from the build's plan (sessions.json), not ensemble.json
FAN_IN = r"^(manifest\.json|submission\.csv|members/[^/]+/probs\.csv)$"


def wait_sessions(api: Api, out: Path, plan: list[dict], deadline: float, partial: bool) -> dict[str, str]:
    """Wait until every session pushed from OUT is over, pushing those that wait as slots free (`partial`: none
    is pushed, those that wait are left out); {folder: state}."""
    found = {}

    def get() -> str:
        found["states"] = advance(api, out, plan, "submit", start_waiting=not partial)
        return summary(found["states"])
    over = lambda _: all(v in FINISHED or (partial and v == "waiting") for v in found["states"].values())
    kaggle.poll("sessions", get, over, deadline - time.monotonic(), "submit")
    if not over(None):
        raise UserError(f"the sessions are not over when the --timeout runs out ({summary(found['states'])}); "
                        "rerun `python build.py submit` later (it carries on where it stopped), or give it "
                        "longer")
    return found["states"]


def _run(s: dict, pushed: dict) -> str:
    """How session `s`'s pushed run is called: "<kernel> v<version>"."""
    return f"{s['kernel']} v{pushed[s['folder']]['version']}"


def _runs(plan: list[dict], pushed: dict) -> str:
    return " + ".join(_run(s, pushed) for s in plan)


def fan_in(api: Api, plan: list[dict], pushed: dict, dest: Path) -> tuple[Path, list[str]]:
    """Download what the fan-in needs of each session's output (FAN_IN: the members' probabilities, not their
    models) and average it here (`average_outputs`) into DEST/submission.csv; (its path, the members
    missing)."""
    got = {s["folder"]: dest / "output" / s["folder"] for s in plan}
    for s in plan: fetch_output(api, sessions.run_ref(s, pushed), got[s["folder"]], FAN_IN, "submit")
    return average_outputs(plan, got, {s["folder"]: pushed[s["folder"]]["key"] for s in plan}, dest,
                           {s["folder"]: _run(s, pushed) for s in plan})


def submit_sessions(api: Api, out: Path, plan: list[dict], competition: str, *, message: str | None, code: bool,
                    infer: bool, partial: bool, deadline: float, entered: bool) -> str:
    """submit() for an ensemble split over sessions: wait for them all (pushing those that wait), then fan in
    (the inference kernel attached to every session, or here from their probabilities) and submit; the
    training runs the submission names."""
    states = wait_sessions(api, out, plan, deadline, partial)
    runs_of = ledger.pushed(out)
    failed = [s for s in plan if states[s["folder"]] in FINISHED and states[s["folder"]] != "complete"]
    if failed and not partial:
        s = failed[0]
        why = kaggle.kernel_state(api, sessions.run_ref(s, runs_of), "submit")[1] or states[s["folder"]]
        raise UserError(f"session {s['session']} ({_run(s, runs_of)}, members "
                        f"{', '.join(s['names'])}) failed ({why}); rerun it alone with `python build.py push "
                        f"--session {s['session']}`, then `python build.py submit` (or submit what finished "
                        "with `python build.py submit --partial`)")
    done = [s for s in plan if states[s["folder"]] == "complete"]
    if not done:
        raise UserError("no session finished; see `python build.py status`, fix, and push again")
    left_out = [n for s in plan if s not in done for n in s["names"]]
    runs = _runs(done, runs_of)
    earlier = find(kaggle.submissions(api, competition), runs)
    if earlier:
        made_already(out, earlier, competition, runs)
        return runs

    def laptop(dest: Path) -> tuple[Path, list[str]]:
        path, missing = fan_in(api, done, runs_of, dest)
        return path, left_out + missing
    kaggle.allowance(api, competition, entered)  # none left: one line, before the inference run or an upload
    values = {"models": [f"/kaggle/input/{s['kernel'].split('/')[1]}" for s in done],
              "tokens": [runs_of[s["folder"]]["key"] for s in done]}
    make(api, out, competition, runs, code=code, infer=infer, deadline=deadline,
         message=message or f"trained by {runs}", values=values, laptop=laptop)
    return runs
