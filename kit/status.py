"""`build.py status`: what runs on Kaggle from a build, your GPU quota, your latest submissions and scores.

It only reads: it settles nothing and pushes nothing (push and submit do), so it is safe at any time.
"""
import time
from pathlib import Path

from . import kaggle, ledger, metadata, sessions
from .kaggle import Api
from .push import FINISHED, built, summary


def status(out: Path = Path("build"), shown: int = 5) -> str:
    """Print and return the run state of the kernel(s) pushed from OUT (queued, running, complete, error,
    ...), your GPU quota left this week, then your `shown` latest submissions to its competition, with their
    scores."""
    meta, api = built(out), kaggle.client("status")
    plan = sessions.read_plan(out)
    if plan is None:
        run = ledger.pushed(out).get("kernel")  # the run push started; another clone: the kernel's latest
        version = run.get("version") if run else None
        if run and not version:
            state, failure = run["state"], "not running: `python build.py push` or `submit` carries it on"
        else:
            state, failure = kaggle.kernel_state(api, f"{meta['id']}/{version}" if version else meta["id"],
                                                 "status")
        print(f"kernel {meta['id']}" + (f" v{version}" if version else "") + f": {state}"
              + (f" ({failure})" if failure else ""))
    else:
        state = summary({s["folder"]: show_session(api, out, s) for s in plan})
    print(kaggle.quota_line(kaggle.gpu_quota(api, "status")))
    show_submissions(api, metadata.competition(meta), shown)
    return state


def show_session(api: Api, out: Path, s: dict) -> str:
    """Print one line for session `s`: its kernel and version, state, members done, time used; its state."""
    runs = ledger.pushed(out)
    p, head = runs.get(s["folder"], {}), f"session {s['session']} {s['kernel']}"
    if not p.get("version"):
        print(f"{head}: waiting (not pushed yet), members {', '.join(s['names'])}")
        return "waiting"
    run = sessions.run_ref(s, runs)
    state, failure = kaggle.kernel_state(api, run, "status")
    if state in FINISHED:
        names, seconds = kaggle.output_files(api, run, "status")
        done = [n for n in s["names"] if f"members/{n}/probs.csv" in names]
        used = f"{seconds / 3600:.1f} h" if seconds is not None else "?"
        members = f"members done {len(done)}/{len(s['names'])}: {', '.join(done) or 'none'}"
        fix = f"; rerun it alone with `python build.py push --session {s['session']}`" \
            if state != "complete" else ""
    else:
        used = f"{(time.time() - p['at']) / 3600:.1f} h since push"
        members, fix = f"members {', '.join(s['names'])}", ""
    print(f"{head} v{p['version']}: {state}" + (f" ({failure})" if failure else "")
          + f", {members}, time used {used}{fix}")
    return state


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
        result = {"complete": kaggle.scores(s), "error": (s.error_description or "").strip()}.get(state, "")
        print(f"  {s.ref}  {when}  {state:8}  {result}  {s.description or ''}".rstrip())
