"""`build.py status`: what runs on Kaggle from a build, your GPU quota, your latest submissions and scores;
with `--follow`, each member's epoch lines as the runs' logs grow, until the runs end.

It only reads: it settles nothing and pushes nothing (push and submit do), so it is safe at any time.
"""
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from kernel.errors import UserError

from . import kaggle, ledger, metadata, sessions
from .kaggle import Api
from .push import FINISHED, built, summary

# the line kernel/callbacks.py's EpochEnd prints after each epoch ("stage 1/2 224x224 epoch 3/8 (body frozen):
# train_loss 0.4212 ... (95 s)", or "weighted epochs ..."), which kernel/ensemble.py prefixes with "[member] "
EPOCH = re.compile(r"(?:\[(?P<member>[^\]]+)\] )?"
                   r"(?P<line>(?:stage \d+/\d+|weighted epochs) \d+x\d+ epoch \d+/\d+\b.*)")
FOLLOW_MAX_S = 13 * 3600  # a Kaggle session runs 12 hours at most, after its time queued
SHOWN_PLOTS = 3  # learning curves named in a pointer to them; the others counted


@dataclass
class Run:
    """A pushed training run, as status shows and follows it."""
    head: str  # how its lines start: "kernel owner/slug v3", "session 2 owner/slug-2 v1"
    ref: str  # "owner/slug/<version>", or "owner/slug" (its latest run: pushed from another clone)
    names: list[str]  # its members, as the plan names them (none known: those its log names)
    first: bool  # `build.py output` fetches its output (the first session's)
    state: str = ""
    seen: set[str] = field(default_factory=set)  # the epoch lines printed
    note: str = ""  # why Kaggle gave no log, as last said (said once, not at every look)


def status(out: Path = Path("build"), shown: int = 5, follow: bool = False) -> str:
    """Print and return the run state of the kernel(s) pushed from OUT (queued, running, complete, error,
    ...) with each running member's last epoch line, your GPU quota left this week, then your `shown` latest
    submissions to its competition, with their scores. With `follow`, then print each member's new epoch
    lines as they come, and each run's end, until none is queued or running."""
    rerun = "status --follow" if follow else "status"
    meta, api = built(out), kaggle.client(rerun)
    plan, runs = sessions.read_plan(out), []
    if plan is None:
        run = ledger.pushed(out).get("kernel")  # the run push started; another clone: the kernel's latest
        version = run.get("version") if run else None
        if run and not version:
            state, failure = run["state"], "not running: `python build.py push` or `submit` carries it on"
        else:
            runs.append(Run(f"kernel {meta['id']}" + (f" v{version}" if version else ""),
                            f"{meta['id']}/{version}" if version else meta["id"], [], True))
            state, failure = kaggle.kernel_state(api, runs[0].ref, rerun)
        print(f"kernel {meta['id']}" + (f" v{version}" if version else "") + f": {state}"
              + (f" ({failure})" if failure else ""))
        if runs: shown_run(api, runs[0], state, rerun)
    else:
        states = {}
        for s in plan:
            states[s["folder"]], run = show_session(api, out, s, rerun)
            if run: runs.append(run)
        state = summary(states)
    print(kaggle.quota_line(kaggle.gpu_quota(api, rerun)))
    show_submissions(api, metadata.competition(meta), shown, rerun)
    if follow: state = follow_runs(api, runs, rerun) or state
    return state


def show_session(api: Api, out: Path, s: dict, rerun: str = "status") -> tuple[str, Run | None]:
    """Print one line for session `s`: its kernel and version, state, members done, time used (and under it
    each running member's last epoch line); its state, and its run once pushed."""
    runs = ledger.pushed(out)
    p, head = runs.get(s["folder"], {}), f"session {s['session']} {s['kernel']}"
    if not p.get("version"):
        print(f"{head}: waiting (not pushed yet), members {', '.join(s['names'])}")
        return "waiting", None
    run = Run(f"{head} v{p['version']}", sessions.run_ref(s, runs), s["names"], s["session"] == 1)
    state, failure = kaggle.kernel_state(api, run.ref, rerun)
    names: list[str] = []
    if state in FINISHED:
        names, seconds = kaggle.output_files(api, run.ref, rerun)
        done = [n for n in s["names"] if f"members/{n}/probs.csv" in names]
        used = f"{seconds / 3600:.1f} h" if seconds is not None else "?"
        members = f"members done {len(done)}/{len(s['names'])}: {', '.join(done) or 'none'}"
        fix = f"; rerun it alone with `python build.py push --session {s['session']}`" \
            if state != "complete" else ""
    else:
        used = f"{(time.time() - p['at']) / 3600:.1f} h since push"
        members, fix = f"members {', '.join(s['names'])}", ""
    print(f"{run.head}: {state}" + (f" ({failure})" if failure else "")
          + f", {members}, time used {used}{fix}")
    shown_run(api, run, state, rerun, names)
    return state, run


def shown_run(api: Api, run: Run, state: str, rerun: str, names: list[str] | None = None) -> None:
    """Under a run's line: each member's last epoch line while it runs (its log is only read then, so
    status stays quick when nothing runs); once it is over, where its learning curves are (`names`: its
    output's files, listed here when not given)."""
    run.state = state
    if state == "running":
        last: dict[str, str] = {}
        for member, line in new_epochs(api, run, rerun): last[member] = line
        for name in run.names or list(last) or [""]:
            print(f"  {f'[{name}] ' if name else ''}{last.get(name, 'no epoch finished yet')}")
    elif state in FINISHED:
        curves(api, run, rerun, names)


def new_epochs(api: Api, run: Run, rerun: str, waited: bool = False) -> list[tuple[str, str]]:
    """(member, epoch line) of each epoch line in `run`'s log not seen before, in order (a single model's
    has no member: ""). A log Kaggle does not give now is a note, not a failure: the run goes on; with
    `waited`, a transient fault is raised, for kaggle.poll to wait through."""
    try: lines = kaggle.session_log(api, run.ref, rerun)
    except UserError as e:
        if waited and isinstance(e, kaggle.Transient): raise
        if str(e) != run.note: print(f"  {run.head}: no log from Kaggle now ({str(e).split(';')[0]})")
        run.note = str(e)
        return []
    found = []
    for line in lines:
        if (m := EPOCH.fullmatch(line.strip())) and line not in run.seen:
            run.seen.add(line)
            found.append((m["member"] or "", m["line"]))
    return found


def curves(api: Api, run: Run, rerun: str, names: list[str] | None = None) -> None:
    """Point at a finished run's learning curves (history.png, the whole run's and each member's): what
    fetches them."""
    if names is None: names = kaggle.output_files(api, run.ref, rerun)[0]
    plots = sorted((n for n in names if n.rsplit("/", 1)[-1] == "history.png"),
                   key=lambda n: (n.count("/"), n))  # the whole run's first
    if not plots: return
    more = f" and {len(plots) - SHOWN_PLOTS} more" if len(plots) > SHOWN_PLOTS else ""
    where = ("`python build.py output` fetches them" if run.first
             else f"see them in its output at https://www.kaggle.com/code/{run.ref.rsplit('/', 1)[0]}")
    print(f"  learning curves: {', '.join(plots[:SHOWN_PLOTS])}{more}; {where}")


def follow_runs(api: Api, runs: list[Run], rerun: str) -> str | None:
    """`status --follow`: print each member's epoch lines as the runs' logs grow, and each run's end with
    where its learning curves are, until none is queued or running; the runs' states. A transient fault is
    waited through (kaggle.poll); lines already printed are not printed again (each log answer starts from
    the log's start). None when none is queued or running."""
    if all(r.state in FINISHED for r in runs):
        print("no run is queued or running: nothing to follow")
        return None
    print("following the runs' epoch lines until they end (Ctrl-C stops following, not the runs)")

    def step() -> str:
        for run in runs:
            if run.state in FINISHED: continue
            state, failure = kaggle.kernel_state(api, run.ref, rerun)
            if state == "running" or state in FINISHED:  # a queued run has no log yet
                for member, line in new_epochs(api, run, rerun, waited=True):
                    print(f"{run.head}: {f'[{member}] ' if member else ''}{line}")
            if state in FINISHED:
                print(f"{run.head}: {state}" + (f" ({failure})" if failure else ""))
                curves(api, run, rerun)
            run.state = state
        return summary({run.ref: run.state for run in runs})
    return kaggle.poll("following", step, lambda _: all(r.state in FINISHED for r in runs), FOLLOW_MAX_S,
                       rerun, progress=False)


def show_submissions(api: Api, competition: str, shown: int = 5, rerun: str = "status") -> None:
    """Print your `shown` latest submissions to the competition: date, state, scores or error, description."""
    subs = kaggle.submissions(api, competition, rerun=rerun)[:shown]
    if not subs:
        print(f"no submissions to {competition} yet; make one with `python build.py submit`")
        return
    print(f"your latest submissions to {competition}:")
    for s in subs:
        when = s.date.strftime("%Y-%m-%d %H:%M") if s.date else "?"
        state = s.status.name.lower()
        result = {"complete": kaggle.scores(s), "error": (s.error_description or "").strip()}.get(state, "")
        print(f"  {s.ref}  {when}  {state:8}  {result}  {s.description or ''}".rstrip())
