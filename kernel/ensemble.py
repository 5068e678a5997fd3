"""The whole job: one model, or an ensemble whose members train side by side, one per GPU, and average.

A member is a name and the Config fields it changes (`--members "a seed=42; b seed=43 arch=..."`). Each
trains in its own process, `python -m kernel.train` with CUDA_VISIBLE_DEVICES set to its device, into
OUT/members/<name>/ (history, plots, exported model, probs.csv; its checkpoint outside OUT, see
kernel.checkpoint): a member that runs
out of memory at hour 5 takes nothing of the others' with it. Members start longest first (kernel/cost.py's
estimate), the next on whichever device frees up; without a GPU they run one after another. Under a time
limit each starts with its share of the time left, by estimated cost, leaving the members still waiting
theirs (see `time_share`). Each member's lines stream here with
its name in front; a failed member is one line, and the ensemble is made from the members that finished.
OUT/probs.csv is the weighted mean of their probabilities and OUT/submission.csv its argmax (multi-label:
the labels at or above the members' thresholds' weighted mean, kernel.predict.threshold).

Run again after a crash (or after the time budget stopped a member): finished members are not trained
again, unfinished ones resume.
"""
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from . import cost, data, layout, manifest, plan, predict, report, train
from .atomic import atomic_write
from .config import Config, cpu_cores
from .errors import INTERRUPTED, Interrupted, UserError, first_line
from .lock import locked
from .submission import average, write_csv, write_submission

MARGIN = 60.0  # seconds of the time limit kept for starting a member's process and averaging at the end


def slots(devices: str) -> list[str]:
    """Where members run at once: `auto` is every visible CUDA device, else one CPU slot; or a list
    like `0,1` (CUDA device numbers) or `cpu,cpu` (two concurrent CPU processes, as the tests use)."""
    if devices != "auto": return [d.strip() for d in devices.split(",") if d.strip()]
    import torch
    n = torch.cuda.device_count()
    if not n: return ["cpu"]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # numbering as the children will see it
    return visible.split(",")[:n] if visible else [str(i) for i in range(n)]


def _prctl():
    """libc's prctl, looked up here in the parent: the child runs between fork and exec, where opening a
    library (from one of several threads) is not safe."""
    try: return ctypes.CDLL("libc.so.6").prctl if sys.platform == "linux" else None
    except OSError: return None


PRCTL = _prctl()


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the parent dies (Linux), so that no orphan trains on."""
    PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def predicted(cfg: Config) -> bool:
    """The member exported a model under this very config and predicted the test images with it."""
    return predict.exported(Path(cfg.out), cfg.fingerprint()) and (Path(cfg.out) / "probs.csv").is_file()


def finished(cfg: Config) -> bool:
    """The member has nothing left to do: predicted, and its plan ran to the end (the time budget may have
    stopped it early: a rerun resumes it)."""
    return predicted(cfg) and predict.read_meta(Path(cfg.out)).get("complete") is True


def member_env(cfg: Config, slot: str) -> dict[str, str]:
    """The environment of a member's process on `slot`: its device, its share of the cores, and CUDA's
    allocator growing its segments rather than keeping fixed blocks (`expandable_segments`: less memory
    lost to fragmentation across a run's changing batch shapes) unless set otherwise."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": "" if slot == "cpu" else slot,
           # the child imports the same kernel package as this process (the dry run installs it elsewhere)
           "PYTHONPATH": os.pathsep.join([str(Path(train.__file__).parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    env["OMP_NUM_THREADS"] = str(cfg.threads)  # its share of the cores (Config.shared), as torch's threads
    env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # read as CUDA starts there
    return env


STOPPED = "interrupted"  # what train_member says of a member Ctrl-C stopped (its finished epochs saved)
CHILDREN: set[subprocess.Popen] = set()  # the members' processes running now
SPAWN = threading.Lock()  # a member's process starts, or those running are told to stop: never both at once


def costs(members: dict[str, Config], n_train: int, n_test: int, log) -> dict[str, float]:
    """Each member's estimated seconds (kernel/cost.py). The estimate traces each model on the meta device;
    should that fail, one warning, and equal costs: the members in their listed order, with equal shares."""
    try: return {name: cost.seconds(c, n_train, n_test) for name, c in members.items()}
    except Exception as e:
        log(f"warning: cost estimate failed ({type(e).__name__}: {first_line(e, 200)}); members run in "
            "their listed order, with equal shares of the time")
        return dict.fromkeys(members, 1.0)


@contextlib.contextmanager
def sigint_ignored():
    """Ctrl-C ignored for a while, in the main thread: a second one (pressed twice, or a terminal's beside
    Jupyter's interrupt) would cut the stopping of the members short. By a handler that does nothing, not
    SIG_IGN: a member's process started meanwhile would inherit SIG_IGN, and no Ctrl-C would ever stop it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try: yield
    finally: signal.signal(signal.SIGINT, old)


def train_member(name: str, cfg: Config, slot: str, log, *, stop: threading.Event,
                 left: float | None = None) -> str | None:
    """Train one member in a child process on `slot`, streaming its lines; None, or why it failed (STOPPED:
    interrupted). `left`: the seconds left to the ensemble, of which its `time_limit` is its share.
    `stop`, once set (Ctrl-C, under SPAWN): the member does not start, and its end, whatever its status, is a
    stop."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    env = member_env(cfg, slot)
    cmd = [sys.executable, "-m", "kernel.train", *cfg.to_args(), "--progress", "lines"]
    share = f", {cfg.time_limit:.0f} s of the {left:.0f} s left (its share by estimated cost)" if left else ""
    with SPAWN:  # started and known to CHILDREN at once: a Ctrl-C now reaches it, or it does not start
        if stop.is_set(): return STOPPED
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 bufsize=1, preexec_fn=_die_with_parent if PRCTL else None)
        CHILDREN.add(child)
    log(f"[{name}] started on {'the CPU' if slot == 'cpu' else f'GPU {slot}'}{share}")
    last, error = "", None
    with open(out / "log.txt", "a") as f, child:
        for line in child.stdout:
            f.write(line)
            f.flush()
            line = line.rstrip()
            if not line: continue
            log(f"[{name}] {line}")
            last = line
            if line.startswith("error: "): error = line.removeprefix("error: ")
    CHILDREN.discard(child)
    if child.returncode == 0: return None
    if child.returncode in (INTERRUPTED, -signal.SIGINT): return STOPPED
    if stop.is_set(): return STOPPED  # Ctrl-C'd before it could say so (still importing)
    return error or last or f"exit status {child.returncode}"


def run(cfg: Config, log=print, token: str | None = None) -> Path:
    """Train every member (or the one model) and write OUT/submission.csv; returns its path. `token`: the run
    token push wrote into the notebook, named in OUT/manifest.json once the run is over (for the fan-in of
    an ensemble split over sessions, see kernel.manifest)."""
    path = _run(cfg, log)
    if token is not None: manifest.write(cfg.out, cfg, token)
    return path


def _run(cfg: Config, log) -> Path:
    if not cfg.members: return train.run(cfg, log=log)
    cfg = layout.resolved(cfg)  # the columns found, passed on to every member
    t0, out = time.time(), Path(cfg.out)
    lock, say = threading.Lock(), log

    def log(line: str) -> None:  # one whole line at a time from the members' threads
        with lock: say(line)

    with locked(out):
        # The competition is checked once here, in one line, rather than once per member.
        items = data.train_items(cfg, log)
        test, _, sample = data.checked_test(cfg, log)
        members = {m.name: plan.member(cfg, m, str(out / "members" / m.name), log) for m in cfg.members}
        with atomic_write(out / predict.ENSEMBLE) as tmp:
            tmp.write_text(json.dumps({"members": {m.name: m.weight for m in cfg.members}}, indent=1) + "\n")
        todo = []
        for name, mcfg in members.items():
            if finished(mcfg) and not cfg.restart: log(f"[{name}] finished earlier: not trained again")
            else: todo.append(name)
        # Longest first, by kernel/cost.py's estimate: the member started last has the least time left.
        seconds = costs({n: members[n] for n in todo}, len(items), len(test), log)
        todo.sort(key=lambda n: -seconds[n])  # stable: equal costs keep their listed order
        failed: dict[str, str] = {}
        deadline = t0 + cfg.time_limit if cfg.time_limit else None
        places = slots(cfg.devices)
        at_once = max(1, min(len(places), len(todo)))
        waiting = todo[at_once:]  # the first start at once, one a slot; the others as slots free up
        take = threading.Lock()
        share = cfg.shared(at_once)  # each member's loader workers, torch threads and RAM share, unless set
        log(f"each member: {share.num_workers} loader workers, {share.threads} torch threads, "
            f"{share.cache_share:.2g} of the free RAM for a stage's decoded images "
            f"({cpu_cores()} CPU cores, {at_once} member{'s' * (at_once > 1)} at a time)")

        def time_share(name: str, left: float) -> float:
            """The seconds of the `left` that member `name`, starting now, may take: its part by estimated
            cost beside the members still waiting, whose cost is spread over the slots,
                left * own cost / (own cost + cost of the members waiting / slots).
            On one slot each member leaves those after it their part, and the last takes all that is left;
            time a member does not use (it finished early, or failed) goes to those after it."""
            with take: rest = sum(seconds[n] for n in waiting)
            return left * seconds[name] / (seconds[name] + rest / len(places))

        def start(slot: str, name: str) -> None:
            mcfg = replace(members[name], num_workers=share.num_workers, threads=share.threads,
                           cache_share=share.cache_share)
            left = None if deadline is None else deadline - time.time() - MARGIN
            if left is not None:
                if left <= 0:
                    failed[name] = "no time left before the time limit"
                    log(f"[{name}] not started: no time left before the time limit")
                    return
                mcfg = Config.make(None, **{**mcfg.to_dict(), "time_limit": time_share(name, left)})
            why = train_member(name, mcfg, slot, log, stop=stopping, left=left)
            if why == STOPPED:
                failed[name] = why
                log(f"[{name}] interrupted, its finished epochs saved")
            elif why:
                failed[name] = why
                log(f"member {name} failed: {why} (its log: {out / 'members' / name / 'log.txt'}); "
                    "the others go on")
            elif finished(mcfg):
                log(f"[{name}] finished")
            else:
                log(f"[{name}] stopped by the time budget before the end of its schedule; "
                    "its predictions count, and a rerun resumes it")

        # The main thread waits on `over`, never on Thread.join: a Ctrl-C that breaks into a join marks the
        # thread as ended while it runs (CPython <= 3.12, threading.py's bpo-45274 branch): a second join then
        # returns at once, and Jupyter closes the still-running thread's output (a ZMQError into the cell).
        pairs = list(zip(places, todo))  # a worker a slot, while members wait
        over, running, stopping = threading.Event(), [len(pairs)], threading.Event()
        if not pairs: over.set()  # every member finished earlier

        def worker(slot: str, name: str | None) -> None:
            try:
                while name is not None:
                    try: start(slot, name)
                    except Exception as e:  # this member's failure, not the others'
                        failed[name] = f"{type(e).__name__}: {first_line(e, 200)}"
                        log(f"member {name} failed: {failed[name]}; the others go on")
                    with take: name = waiting.pop(0) if waiting else None
            finally:
                with take:
                    running[0] -= 1
                    if not running[0]: over.set()

        with sigint_ignored():  # a Ctrl-C while they start would leave the workers running unwatched
            for s, n in pairs: threading.Thread(target=worker, args=(s, n), daemon=True).start()
        try:
            over.wait()
        except KeyboardInterrupt:  # Ctrl-C: no new member starts, and those running stop (and save) too
            with sigint_ignored():  # a second one must not leave the members' lines to outlive the cell
                with take: waiting.clear()
                with SPAWN:
                    stopping.set()
                    for child in list(CHILDREN): child.send_signal(signal.SIGINT)
                over.wait()
            failed.update({n: STOPPED for n in members if n not in failed and not finished(members[n])})
        stopped = sorted(n for n, why in failed.items() if why == STOPPED)
        if stopped:
            raise Interrupted(f"members {', '.join(stopped)} of {out} stopped during training, every finished "
                              "epoch saved: rerun the same command to resume them (finished members are kept)")

        done = {n: pd.read_csv(Path(c.out) / "probs.csv", dtype={cfg.id_col: str}) for n, c in members.items()
                if n not in failed and predicted(c)}
        missing = [n for n in members if n not in done]
        if not done:
            raise UserError(f"no member finished ({'; '.join(f'{n}: {w}' for n, w in failed.items())}); "
                            "fix the cause and rerun: finished members are kept")
        weights = {m.name: m.weight for m in cfg.members}
        probs = average(done, weights, cfg.id_col)
        write_csv(probs, out / "probs.csv")
        threshold = predict.threshold({Path(members[n].out): weights[n] for n in done})
        path = write_submission(probs, sample, cfg.id_col, cfg.label_col, out / "submission.csv", threshold)
        log(f"wrote {path}: the mean of {', '.join(done)}"
            + (f"; missing: {', '.join(missing)}" if missing else "")
            + (f"; labels at or above {threshold:.3f}, the members' thresholds' mean" if threshold else ""))
        report.plot_history(out, log)  # one line per member
    return path
