"""`build.py submit`: a pushed training run -> a scored submission.

    submit(out)   ask Kaggle how many submissions are left today (none: one line, nothing spent); wait
                  (bounded) for the training kernel's latest run; then
                  - a file competition (Paddy Doctor): download the run's probs.csv, average it on the laptop
                    (one session's case of averaging several) into submission.csv, upload it: no second GPU
                    session;
                  - a code competition, or `infer=True` (--infer): push the inference kernel built in
                    OUT/infer, which Kaggle attaches to that run's output (kernel_sources), unless an earlier
                    submit pushed it for this very run; wait for it; submit it (a code competition) or its
                    submission.csv;
                  then wait for the score, print it

With `--sessions N` (`submit_sessions`): wait for every session (pushing those that wait as slots free); a
failed one is one line naming `push --session K`, unless `partial`; then fan in: a file competition downloads
each session's members' probs.csv and averages every member with its weight here (`average_outputs`, each
output first checked by its manifest.json to be the run push started); a code competition pushes the
inference kernel with every finished session's output attached and the tokens they must carry.

How the competition takes submissions is Kaggle's to say: its `is_kernels_submissions_only` (GetCompetition);
`code=True/False` (--code/--file) says it instead.

Never twice. Kaggle caps submissions per day, and a submit can be cut off anywhere, so it first asks whether
a chore is done already:
- the submission: its description ends with a marker naming the run it comes from,
  `[paddy-kernel-kit <owner>/<slug> v<N>]` (the training run for a file made here, the inference run
  otherwise). Your latest submissions to the competition (ListSubmissions) are searched for it; found, it is
  not submitted again, only waited for. This holds when the answer to the submission was lost, and from
  another clone.
- the inference run: the version pushed for a training run is noted in OUT/inference.json as soon as the
  push returns. A rerun for the same training run waits for that version instead of pushing again, unless
  it failed. A new build (push makes one) drops the note: a new training run, or a new inference notebook,
  needs a new inference run. Cut off between Kaggle saving the push and its answer arriving, the note is
  missing and a rerun pushes once more: one needless inference run, never a second submission.
"""
import json
import re
import tempfile
import time
from pathlib import Path

from kernel.atomic import atomic_write
from kernel.errors import UserError

from . import kaggle, metadata, notebook, sessions
from .kaggle import Api, ApiSubmission
from .push import FINISHED, advance, built, fetch_output, push_kernel, summary

RECORD = "inference.json"  # in OUT: {"training": "<id>/<version>", "inference": "<id>/<version>"}
SUBMISSION, PROBS = "submission.csv", "probs.csv"
UPLOADED = "submission-upload.json"  # in OUT: the competition, hash and upload token of the file sent last
SUBMIT_WAIT_S = 13 * 3600  # a Kaggle GPU session lasts at most 12 hours; then inference and scoring


def marker(kernel: str, version: int) -> str:
    """What a submission's description ends with: which run it comes from, for a rerun to find."""
    return f"[paddy-kernel-kit {kernel} v{version}]"


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


def _record(out: Path) -> dict:
    try: return json.loads((out / RECORD).read_text())
    except (OSError, ValueError): return {}


def noted_inference(out: Path, training: str) -> int | None:
    """The version of the inference kernel an earlier submit pushed for training run `training`, if any."""
    noted = _record(out)
    if noted.get("training") == training and noted.get("inference", "").rpartition("/")[0] == \
            built(out, "infer")["id"]:
        return int(noted["inference"].rpartition("/")[2])
    return None


def inference_run(api: Api, out: Path, training: str, folder: Path | None = None) -> tuple[str, int]:
    """The inference run on training run `training` ("<id>/<version>", or several): the one an earlier submit
    pushed for it, unless that failed, else a new push of OUT/infer (or of `folder`, OUT/infer stamped with
    the runs' tokens). Returns (inference kernel id, version)."""
    infer = built(out, "infer")["id"]
    version = noted_inference(out, training)
    if version is not None:
        state, _ = kaggle.kernel_state(api, f"{infer}/{version}", "submit")
        if state not in FINISHED or state == "complete":
            print(f"kernel {infer}: version {version}, pushed for this training run already, is {state}; "
                  "not pushed again")
            return infer, version
    ref, version = push_kernel(api, folder or out / "infer", rerun="submit")
    with atomic_write(out / RECORD) as tmp:
        tmp.write_text(json.dumps({"training": training, "inference": f"{ref}/{version}"}) + "\n")
    return ref, version


def find(subs: list[ApiSubmission], mark: str) -> ApiSubmission | None:
    return next((s for s in subs if mark in (s.description or "")), None)


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


def _scores(s: ApiSubmission) -> str:
    private = f", private score {s.private_score}" if s.private_score else ""
    return f"public score {s.public_score or '-'}{private}"


def wait_score(api: Api, competition: str, mark: str, deadline: float) -> ApiSubmission:
    """Wait until Kaggle has scored the submission marked `mark`: the submission, complete or in error."""
    found = {}

    def state() -> str:
        found["s"] = find(kaggle.submissions(api, competition), mark)  # just made, it may not be listed yet
        return found["s"].status.name.lower() if found["s"] else "pending"

    kaggle.poll(f"submission to {competition}", state, lambda s: s != "pending", deadline - time.monotonic())
    s = found["s"]
    if s is None or s.status.name == "PENDING":
        raise UserError(f"Kaggle is still scoring the submission to {competition} when the --timeout runs "
                        "out; see its score with `python build.py status`, or rerun `python build.py submit` "
                        "to wait for it (it is not submitted again)")
    return s


def submit(out: Path = Path("build"), message: str | None = None, code: bool | None = None,
           timeout: float = SUBMIT_WAIT_S, infer: bool = False, partial: bool = False) -> ApiSubmission:
    """Submit the training run pushed from OUT; returns the scored submission. The waits together take at
    most `timeout` seconds. A rerun carries on where the last one stopped and never submits twice. With
    sessions, every session's (`partial`: those that finished)."""
    deadline = time.monotonic() + timeout
    meta, api = built(out), kaggle.client("submit")
    train, competition = meta["id"], metadata.competition(meta)
    plan = sessions.read_plan(out)
    if code is None:
        code = kaggle.takes_code(api, competition)
    if plan is not None:
        mark = submit_sessions(api, out, plan, competition, message=message, code=code, infer=code or infer,
                               partial=partial, deadline=deadline)
        return scored(api, competition, mark, deadline)
    version = kaggle.latest_version(api, train)
    infer = code or infer  # through the inference kernel: a second GPU session
    noted = noted_inference(out, f"{train}/{version}") if infer else None
    mark = marker(built(out, "infer")["id"], noted) if noted else None if infer else marker(train, version)
    earlier = mark and find(kaggle.submissions(api, competition), mark)
    if earlier:
        print(f"submission {earlier.ref} to {competition} {mark} was made already; not submitting again")
    else:
        mark = _make(api, out, competition, train, version, code=code, infer=infer, deadline=deadline,
                     message=message or f"trained by {train} v{version}")
    return scored(api, competition, mark, deadline)


def scored(api: Api, competition: str, mark: str, deadline: float) -> ApiSubmission:
    """Wait for the score of the submission marked `mark`, print it; a submission Kaggle could not score is
    one line with Kaggle's error."""
    s = wait_score(api, competition, mark, deadline)
    if s.status.name == "ERROR":
        why = (s.error_description or "no message").strip()
        raise UserError(f"Kaggle could not score submission {s.ref} to {competition}: {why}; fix that, then "
                        "push and submit again (a rerun of submit only reports this submission again)")
    print(f"submission {s.ref} to {competition}: complete, {_scores(s)}")
    return s


def _make(api: Api, out: Path, competition: str, train: str, version: int, *, code: bool, infer: bool,
          deadline: float, message: str) -> str:
    """Make the submission of training run `train` v`version` (see submit); its marker."""
    kaggle.allowance(api, competition)  # none left: one line, before any GPU session or upload
    wait_run(api, train, version, deadline, "training",
             "read its log with `python build.py output`, fix, and push again with `python build.py push`")
    if not infer:
        mark = marker(train, version)
        with tempfile.TemporaryDirectory(prefix="pkk-submission-") as tmp:
            path = averaged_submission(api, train, version, Path(tmp))
            what = f"{SUBMISSION} from the probabilities of {train} v{version}"
            ref = kaggle.submit_file(api, competition, path, f"{message} {mark}", what, out / UPLOADED)
        print(f"submission {ref} to {competition}: {what}, {f'{message} {mark}'!r}")
        return mark
    kernel, run = inference_run(api, out, f"{train}/{version}")
    wait_run(api, kernel, run, deadline, "inference",
             f"read its log on Kaggle (https://www.kaggle.com/code/{kernel}), then rerun "
             "`python build.py submit` to run it again")
    mark = marker(kernel, run)
    earlier = find(kaggle.submissions(api, competition), mark)
    if earlier:
        print(f"submission {earlier.ref} to {competition} {mark} was made already; not submitting again")
    elif code:
        ref = kaggle.submit_code(api, competition, kernel, run, f"{message} {mark}", SUBMISSION)
        print(f"submission {ref} to {competition}: the code of {kernel} v{run}, {f'{message} {mark}'!r}")
    else:
        with tempfile.TemporaryDirectory(prefix="pkk-submission-") as tmp:
            got = fetch_output(api, f"{kernel}/{run}", Path(tmp), rf"^{re.escape(SUBMISSION)}$", "submit")
            if Path(tmp) / SUBMISSION not in got:
                raise UserError(f"kernel {kernel} v{run} completed without writing {SUBMISSION}; read its log "
                                "on Kaggle, fix, and push again with `python build.py push`")
            what = f"{SUBMISSION} of {kernel} v{run}"
            ref = kaggle.submit_file(api, competition, Path(tmp) / SUBMISSION, f"{message} {mark}", what,
                                     out / UPLOADED)
        print(f"submission {ref} to {competition}: {what}, {f'{message} {mark}'!r}")
    return mark


def show_submissions(api: Api, competition: str, shown: int = 5) -> None:
    """Print your `shown` latest submissions to the competition: date, state, scores or error, description."""
    subs = kaggle.submissions(api, competition, rerun="status")[:shown]
    if not subs:
        print(f"no submissions to {competition} yet; make one with `python build.py submit`")
        return
    print(f"your latest submissions to {competition}:")
    for s in subs:
        when = s.date.strftime("%Y-%m-%d %H:%M") if s.date else "?"
        state = s.status.name.lower()
        result = {"complete": _scores(s), "error": (s.error_description or "").strip()}.get(state, "")
        print(f"  {s.ref}  {when}  {state:8}  {result}  {s.description or ''}".rstrip())


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
    kaggle.poll("sessions", get, over, deadline - time.monotonic())
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
    return average_outputs(plan, got, {s["folder"]: pushed[s["folder"]]["token"] for s in plan}, dest,
                           {s["folder"]: _run(s, pushed) for s in plan})


def average_outputs(plan: list[dict], folders: dict[str, Path], tokens: dict[str, str | None], dest: Path,
                    names: dict[str, str] | None = None) -> tuple[Path, list[str]]:
    """DEST/submission.csv (and DEST/probs.csv) from the sessions' outputs in `folders` ({folder: where}), each
    first checked to be the run push started (its manifest's token, the build's fingerprint): every member's
    probabilities averaged with its weight (as one session averages its own members), rows in a session's
    submission.csv order; (its path, the members missing). `names`: how to call each session's run."""
    from kernel import manifest
    from kernel.submission import average, write_csv, write_submission  # pandas: only when a file is made
    import pandas as pd
    for s in plan:
        run = (names or {}).get(s["folder"], folders[s["folder"]])
        manifest.check(folders[s["folder"]], tokens[s["folder"]],
                       f"the output of session {s['session']} ({run})",
                       f"rerun that session with `python build.py push --session {s['session']}`",
                       s["fingerprint"])
    first = next((folders[s["folder"]] / SUBMISSION for s in plan
                  if (folders[s["folder"]] / SUBMISSION).is_file()), None)
    if first is None:
        raise UserError(f"no session wrote its {SUBMISSION}; read the logs (`python build.py status`), fix, "
                        "and push again")
    id_col, label_col = pd.read_csv(first, dtype=str).columns[:2]
    frames, weights = {}, {}
    for s in plan:
        where = folders[s["folder"]]
        weights.update(s["weights"])  # as built: a session that died before its ensemble.json still counts
        for name in s["names"]:
            if (where / "members" / name / PROBS).is_file():
                frames[name] = pd.read_csv(where / "members" / name / PROBS, dtype={id_col: str})
    if not frames:
        raise UserError(f"no member wrote its {PROBS}; read the logs (`python build.py status`), fix, and push "
                        "again")
    missing = [n for s in plan for n in s["names"] if n not in frames]
    probs = average(frames, {n: float(weights[n]) for n in frames}, id_col)
    write_csv(probs, dest / PROBS)
    return write_submission(probs, first, id_col, label_col, dest / SUBMISSION), missing


def submit_sessions(api: Api, out: Path, plan: list[dict], competition: str, *, message: str | None, code: bool,
                    infer: bool, partial: bool, deadline: float) -> str:
    """submit() for an ensemble split over sessions: wait for them all (pushing those that wait), then fan in
    (the inference kernel attached to every session, or here from their probabilities) and submit; the
    submission's marker."""
    states = wait_sessions(api, out, plan, deadline, partial)
    pushed = sessions.read_pushed(out)
    failed = [s for s in plan if states[s["folder"]] in FINISHED and states[s["folder"]] != "complete"]
    if failed and not partial:
        s = failed[0]
        why = kaggle.kernel_state(api, sessions.run_ref(s, pushed), "submit")[1] or states[s["folder"]]
        raise UserError(f"session {s['session']} ({_run(s, pushed)}, members "
                        f"{', '.join(s['names'])}) failed ({why}); rerun it alone with `python build.py push "
                        f"--session {s['session']}`, then `python build.py submit` (or submit what finished "
                        "with `python build.py submit --partial`)")
    done = [s for s in plan if states[s["folder"]] == "complete"]
    if not done:
        raise UserError("no session finished; see `python build.py status`, fix, and push again")
    left_out = [n for s in plan if s not in done for n in s["names"]]
    runs = _runs(done, pushed)
    mark = f"[paddy-kernel-kit {runs}]"
    message = message or f"trained by {runs}"
    earlier = find(kaggle.submissions(api, competition), mark)
    if earlier:
        print(f"submission {earlier.ref} to {competition} {mark} was made already; not submitting again")
    else:
        kaggle.allowance(api, competition)  # none left: one line, before the inference run or an upload
        with tempfile.TemporaryDirectory(prefix="pkk-submission-") as tmp:
            if infer:
                stamped = notebook.stamp(out / "infer", Path(tmp) / "infer", "submit",
                                         models=[f"/kaggle/input/{s['kernel'].split('/')[1]}" for s in done],
                                         tokens=[pushed[s["folder"]]["token"] for s in done])
                kernel, run = inference_run(api, out, runs, stamped)
                wait_run(api, kernel, run, deadline, "inference",
                         f"read its log on Kaggle (https://www.kaggle.com/code/{kernel}), then rerun "
                         "`python build.py submit` to run it again")
                missing = left_out
                if code:
                    ref = kaggle.submit_code(api, competition, kernel, run, f"{message} {mark}", SUBMISSION)
                    what = f"the code of {kernel} v{run}"
                else:
                    path = Path(tmp) / "inferred" / SUBMISSION
                    wanted = rf"^{re.escape(SUBMISSION)}$"
                    if path not in fetch_output(api, f"{kernel}/{run}", path.parent, wanted, "submit"):
                        raise UserError(f"kernel {kernel} v{run} completed without writing {SUBMISSION}; read "
                                        "its log on Kaggle, fix, and rerun `python build.py submit`")
                    what = f"{SUBMISSION} of {kernel} v{run}"
                    ref = kaggle.submit_file(api, competition, path, f"{message} {mark}", what, out / UPLOADED)
            else:
                path, missing = fan_in(api, done, pushed, Path(tmp))
                missing = left_out + missing
                what = f"{SUBMISSION} from the members' probabilities of {runs}"
                ref = kaggle.submit_file(api, competition, path, f"{message} {mark}", what, out / UPLOADED)
        print(f"submission {ref} to {competition}: {what}, {f'{message} {mark}'!r}"
              + (f"; missing members: {', '.join(missing)}" if missing else ""))
    return mark
