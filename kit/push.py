"""`build.py push` and `output`: laptop to a running Kaggle kernel, through kit/kaggle.py, every action
written in the ledger (kit/ledger.py) before it is made.

    push(out)     build; check the metadata; settle what an earlier push left pending; bring each dataset up
                  to date on Kaggle (the code dataset, and one weights dataset per architecture), each uploaded
                  only if its content changed; wait (bounded) until Kaggle has processed them; push the
                  training kernel(s) attached to them, each with a fresh run token in a copy of its notebook
    output(dest)  what the user needs of its output once the run is over (no checkpoints); `wait` polls,
                  bounded

Rerun it freely. A push that did not finish (a lost answer, a refusal, a session that waits) is carried on by
the next `push`: what Kaggle started is found by its run token (GetKernel returns each version's notebook) and
kept, what it never got is pushed. A push after one that finished is a new run, and says which of your earlier
runs still run: Kaggle keeps an older version running when a newer one is pushed, and bills it.

With `--sessions N` (kit/sessions.py) at most two start at once, the others wait in the ledger (Kaggle's
refusal of a third, in either form it sends it, is one line, and that session waits too); `push_waiting`
(`push --wait`) and submit push them as ours end; `push(session=K)` pushes session K alone again.

Whether a dataset changed is decided by a content hash kept on Kaggle, not here: every version we upload holds
a small file whose name carries the hash of the other files, `paddy-kernel-kit-content-<sha256>.txt`, which
Kaggle's file listing returns without a download. Not in the description: Kaggle may keep a dataset's old
description on a new version. A push from another clone, or after deleting the build folder, still knows
what Kaggle has. A dataset created or versioned in the last minutes may not show yet (Kaggle answers 403/404
while it processes it): the ledger knows we made it, so push waits for it rather than making it again.

The weights live in datasets of their own, so a code change uploads the wheel (a few hundred KB), never the
weights (~200 MB for convnext_small); an architecture's weights go up once and are attached to every kernel
that trains it. Files that arrived before a failed create call are not sent again (the kaggle client's
resumable uploads, kept for the same path and modification time, so we upload from a staging folder beside
the build folder whose files change only when their content does).
"""
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

from kernel.atomic import atomic_write
from kernel.errors import UserError

from . import kaggle, ledger, metadata, notebook, sessions
from .kaggle import Api

MARKER = "paddy-kernel-kit-content-"  # + sha256 + ".txt": the content hash, in a file name
MARKED = re.compile(re.escape(MARKER) + r"([0-9a-f]{64})\.txt")
# how long push waits for Kaggle to process the datasets before giving up (a rerun resumes)
DATASET_WAIT_S = 600
# how long after we made a dataset version Kaggle may still hide it (403/404) or show the one before
PROCESSING_S = 3600
OUTPUT_WAIT_S = 12 * 3600  # a Kaggle GPU session lasts at most 12 hours


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""): h.update(block)
    return h.hexdigest()


def dataset_files(dataset: Path) -> dict[str, str]:
    """{name: sha256} of the files the client uploads from a dataset folder (top level, not the metadata)."""
    return {p.name: _sha256(p) for p in sorted(dataset.iterdir())
            if p.is_file() and p.name != metadata.DATASET_FILE}


def content_hash(files: dict[str, str]) -> str:
    """One hash for the dataset's content: its files' names and bytes."""
    return hashlib.sha256("".join(f"{name}\0{digest}\n"
                                  for name, digest in sorted(files.items())).encode()).hexdigest()


def stage(dataset: Path, folder: Path, files: dict[str, str], digest: str) -> Path:
    """Mirror the built dataset into the staging folder `folder`, with the content marker beside its files.

    The build replaces OUT whole, so its files are new every time; the kaggle client only resumes an upload
    (and reuses a file that already arrived) for the same path and modification time. Here a file is
    re-linked only when its content changed. Hard links: no copies of large weights unless across disks.
    """
    folder.mkdir(parents=True, exist_ok=True)
    marker = f"{MARKER}{digest}.txt"
    for p in folder.iterdir():
        if p.name not in files and p.name not in (marker, metadata.DATASET_FILE):
            p.unlink()  # dropped from the build, an old marker, a leftover of an interrupted link
    for name, sha in files.items():
        src, dst = dataset / name, folder / name
        if dst.exists() and (os.path.samefile(src, dst) or _sha256(dst) == sha): continue
        tmp = folder / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        try: os.link(src, tmp)
        except OSError: shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    if not (folder / marker).exists():
        with atomic_write(folder / marker) as tmp:
            tmp.write_text("paddy-kernel-kit: the sha256 in this file's name is the hash of the other files; "
                           "push compares it with the build's to upload only what changed\n")
    meta = (dataset / metadata.DATASET_FILE).read_text()
    if not (folder / metadata.DATASET_FILE).exists() or (folder / metadata.DATASET_FILE).read_text() != meta:
        with atomic_write(folder / metadata.DATASET_FILE) as tmp: tmp.write_text(meta)
    return folder


def remote_hash(api: Api, ref: str) -> tuple[bool, str | None]:
    """(whether dataset `ref` exists on Kaggle, the content hash its latest version's marker carries)."""
    names = kaggle.dataset_files(api, ref)
    if names is None: return False, None
    found = [m[1] for n in names if (m := MARKED.fullmatch(n))]
    return True, found[0] if len(found) == 1 else None


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def upload_dataset(api: Api, dataset: Path, staging: Path, book: ledger.Ledger,
                   timeout: float) -> tuple[str, int]:
    """Create or version the dataset built in DATASET unless Kaggle has its content; (its id, bytes sent).
    One we created minutes ago may still be hidden (Kaggle answers 403/404 while it processes it): CreateDataset
    then says its slug is in use, makes nothing, and the ledger tells that it is ours: wait for it (at most
    `timeout`), never make it twice."""
    ref = json.loads((dataset / metadata.DATASET_FILE).read_text())["id"]
    files = dataset_files(dataset)
    digest = content_hash(files)
    exists, remote = remote_hash(api, ref)
    key = f"{ref}@{digest}"
    pending = [e for e in book.find("dataset", key=key) if e["state"] == "pending"]
    if exists and remote == digest:
        for e in pending: book.settle(e, "done")  # its answer was lost: Kaggle has it
        if kaggle.dataset_status(api, ref) != "failed":
            print(f"dataset {ref}: unchanged on Kaggle (content {digest[:12]}), nothing uploaded")
            return ref, 0
    elif pending and exists:  # its answer was lost: Kaggle may still show the version before, for a while
        left = min(timeout, 5 * kaggle.LOOKUP_GRACE_S - (time.time() - pending[-1]["at"]))
        if look_for(lambda: remote_hash(api, ref)[1] == digest, f"looking on Kaggle for dataset {ref}'s new "
                    "version, whose answer was lost", left, "push"):
            return upload_dataset(api, dataset, staging, book, timeout)
        for e in pending: book.settle(e, "lost")  # not shown in all that time: it never arrived
    folder = stage(dataset, staging, files, digest)
    entry = book.intend("dataset", key, ref=ref, new=not exists)
    try:
        kaggle.create_dataset(api, folder, ref, new=not exists, notes=f"paddy-kernel-kit {digest[:12]}")
    except kaggle.Transient as e:
        if not e.lost: book.settle(entry, "refused")
        raise  # lost: pending, and the next push looks for its content before making anything
    except kaggle.SlugInUse:
        book.settle(entry, "refused")
        ours = [x for x in book.find("dataset", ref=ref) if x["state"] in ("done", "pending")
                and time.time() - x["at"] < PROCESSING_S]
        if not ours: raise
        ago = time.time() - ours[-1]["at"]
        if kaggle.poll(f"waiting for Kaggle to show dataset {ref}, made {ago:.0f} s ago",
                       lambda: "shown" if remote_hash(api, ref)[0] else "not yet",
                       lambda state: state == "shown", timeout, "push") != "shown":
            raise UserError(f"dataset {ref}, made {ago / 60:.0f} min ago, is still not shown by Kaggle (it "
                            "answers 403/404 while it processes a new dataset); rerun `python build.py push` "
                            "later: it is not made again") from None
        return upload_dataset(api, dataset, staging, book, timeout)
    except UserError:
        book.settle(entry, "refused")
        raise
    book.settle(entry, "done")
    size = sum((dataset / n).stat().st_size for n in files)
    print(f"dataset {ref}: {'new version' if exists else 'created'}, "
          f"uploaded {', '.join(files)} ({_size(size)})")
    return ref, size


def wait_ready(api: Api, ref: str, timeout: float) -> None:
    """Wait until Kaggle has processed dataset `ref`; one line if it failed or takes longer than `timeout`."""
    state = kaggle.poll(f"waiting for Kaggle to process dataset {ref}",
                        lambda: kaggle.dataset_status(api, ref), lambda s: s in ("ready", "failed"), timeout,
                        "push")
    if state == "failed":
        raise UserError(f"Kaggle failed to process dataset {ref}; "
                        "rerun `python build.py push` to upload it again")
    if state != "ready":
        raise UserError(f"dataset {ref} is still not ready after {timeout:.0f} s (Kaggle says {state!r}); "
                        "rerun `python build.py push` later (it is not uploaded again), "
                        "or give it longer with --timeout SECONDS")


def datasets(out: Path) -> list[Path]:
    """The dataset folders a build made: the code dataset, then each weights dataset."""
    return [out / "dataset", *sorted(p for p in (out / "weights").glob("*") if p.is_dir())]


def push_datasets(api: Api, out: Path, timeout: float) -> int:
    """Bring every dataset built under OUT up to date on Kaggle and wait until all are ready; bytes sent."""
    staging = out.parent / f".{out.name}-kaggle-upload"
    sent, refs, book = 0, [], ledger.Ledger(out)
    for d in datasets(out):
        ref, n = upload_dataset(api, d, staging / d.relative_to(out), book, timeout)
        refs.append(ref)
        sent += n
    for ref in refs: wait_ready(api, ref, timeout)
    return sent


def warn_quota(api: Api, time_limit: float, what: str = "") -> None:
    """One line when the run may take longer than the GPU time left this week (a warning: Kaggle not saying
    stops nothing). `what` names the limit and its verb: several sessions' wall clocks add up."""
    try: quota = kaggle.gpu_quota(api, "push")
    except UserError as e:
        print(f"warning: {str(e).split(';')[0]}; pushing anyway", file=sys.stderr)
        return
    if quota is None: return
    used, total, _ = quota
    what = what or f"the run's time limit ({time_limit / 3600:.1f} h) is"
    if time_limit and time_limit / 3600 > total - used:
        print(f"warning: {what} more than your GPU quota left "
              f"this week ({max(0.0, total - used):.1f} h of {total:.1f} h): Kaggle stops it when the quota "
              "runs out; lower --time_limit, or push after the quota refreshes", file=sys.stderr)


def settle_pushes(api: Api, out: Path, rerun: str = "push") -> None:
    """Every push whose answer was lost, settled by asking Kaggle for the version that holds its run token:
    started (that version), or lost (not shown kaggle.LOOKUP_GRACE_S after it was sent: it never arrived;
    until then it is asked again every few seconds)."""
    book = ledger.Ledger(out)
    for e in book.pending("push"):
        version = look_for(lambda: kaggle.find_run(api, e["kernel"], e["key"], rerun),
                           f"looking on Kaggle for the push of {e['kernel']} whose answer was lost",
                           kaggle.LOOKUP_GRACE_S - (time.time() - e["at"]), rerun)
        book.settle(e, "started" if version else "lost", version=version)
        if version:
            print(f"kernel {e['kernel']}: version {version}, whose answer was lost, is found on Kaggle; "
                  "not pushed again")


def look_for(find, what: str, seconds: float, rerun: str):
    """`find()` until it finds something (what it found) or `seconds` pass (None); at least once."""
    found = {}

    def look() -> str:
        found["it"] = find()
        return "found" if found["it"] else "not shown yet"
    kaggle.poll(what, look, lambda state: state == "found", max(0.0, seconds), rerun)
    return found.get("it")


def start(api: Api, out: Path, s: dict, op: str, rerun: str = "push", **values) -> dict:
    """Push session `s` (or the inference kernel: `s` names its folder and kernel, `values` what it is for)
    with a fresh run token written into a copy of its notebook, written in the ledger first; its entry:
    started (with Kaggle's version), waiting (Kaggle runs as many GPU sessions of the account as it may: one
    line), or an error line (refused; or the answer lost: the next run settles it)."""
    token = sessions.token()
    folder = notebook.stamp(out / s["folder"], out.parent / f".{out.name}-kaggle-push" / s["folder"], rerun,
                            run_token=token, **values)
    book = ledger.Ledger(out)
    entry = book.intend("push", token, role="infer" if s["folder"] == "infer" else "train", op=op,
                        folder=s["folder"], session=s.get("session"), kernel=s["kernel"],
                        members=s.get("members"), fingerprint=s.get("fingerprint"), version=None, **values)
    lost = None
    try:
        r = kaggle.push_kernel(api, folder, s["kernel"], rerun=rerun)
    except kaggle.Transient as e:
        if not e.lost:
            book.settle(entry, "refused")
            raise
        r, lost = kaggle.Pushed(s["kernel"], 0, "", [], ""), e
    except UserError:
        book.settle(entry, "refused")
        raise
    ref = s["kernel"]
    if r.error and kaggle.is_session_limit(r.error):
        book.settle(entry, "waiting")
        why = r.error.strip().rstrip(".")
        print(f"session {s.get('session') or 1}: Kaggle did not start kernel {ref}: {why} (an account runs "
              f"{sessions.RUNNING_MAX} at once); it waits, and `python build.py push --wait` or "
              "`python build.py submit` pushes it when a session ends", file=sys.stderr)
        return entry
    if r.error:
        book.settle(entry, "refused")
        raise UserError(f"Kaggle refused kernel {ref}: {r.error.rstrip('.')}; check kernel-metadata.json, "
                        f"then rerun `python build.py {rerun}`")
    if r.version:
        entry = book.settle(entry, "started", version=r.version, problems="; ".join(r.problems))
    else:  # the answer lost, or one that named no version: Kaggle may run it; find it by its token now
        try: settle_pushes(api, out, rerun)
        except UserError:
            if lost: raise lost from None  # still no answer: it stays pending, and the next run asks
            raise
        entry = ledger.Ledger(out).last("push", key=token)
        if entry["state"] != "started":
            if lost: raise lost from None  # it never arrived: the next run pushes it
            raise UserError(f"Kaggle took kernel {ref} without saying which version it runs; rerun "
                            f"`python build.py {rerun}` in a minute (it finds the run, and does not push it "
                            "again)")
        if r.problems: entry = book.settle(entry, "started", problems="; ".join(r.problems))
    if r.problems:  # Kaggle saved and started the kernel, but without these: its run will fail
        raise UserError(f"Kaggle started kernel {ref} v{entry['version']} without its {'; '.join(r.problems)} "
                        "(unknown to Kaggle, or not yours), so that run will fail: check kernel-metadata.json "
                        "and that you accepted the competition's rules, then rerun `python build.py push`"
                        + (" (the datasets are not uploaded again)" if rerun == "push" else ""))
    print(f"kernel {ref}: version {entry['version']} pushed and running{', ' + r.url if r.url else ''}")
    return entry


def still_running(api: Api, entries: list[dict], rerun: str = "push") -> list[str]:
    """Those of `entries` (started pushes) whose run is not over: one line each."""
    lines = []
    for e in entries:
        if e["state"] != "started": continue
        state = kaggle.kernel_state(api, f"{e['kernel']}/{e['version']}", rerun)[0]
        if state not in FINISHED:
            hours = (time.time() - e["at"]) / 3600
            lines.append(f"{e['kernel']} v{e['version']} is {state} ({hours:.1f} h since push), billed until it "
                         f"ends: stop it at https://www.kaggle.com/code/{e['kernel']} if you no longer need it")
    return lines


def push(out: Path, overrides: dict | None = None, weights: str | None = None, pretrained: bool = True,
         user: str | None = None, wheels: list[str] = (), timeout: float = DATASET_WAIT_S,
         session: int | None = None) -> str:
    """Build under OUT, check it, bring the datasets up to date on Kaggle, push the kernel(s); returns the
    (first) kernel's id. A push that did not finish is carried on (see the module's docstring). With
    sessions: push the first two, the others wait (`push_waiting` pushes them as sessions end); `session` K:
    push that session alone again (the others' runs are kept)."""
    from kernel.config import Config

    from .bundle import build
    api = kaggle.client("push")
    settle_pushes(api, out)
    last, kept = ledger.Ledger(out).last("op"), ledger.pushed(out)  # kept across the build, which replaces OUT
    if session is not None and sessions.folder(session) not in kept:
        raise UserError(f"--session {session}: no such session was pushed from {out} (pushed: "
                        f"{', '.join(sorted(kept)) or 'none'}); give one of those, or push them all")
    # The build checks the metadata as Kaggle would (and the config, and GPU memory): everything that would
    # fail is refused before any upload.
    build(out, overrides, weights=weights, pretrained=pretrained, user=user or api.user, wheels=wheels)
    plan = sessions.read_plan(out) or [sessions.single(out)]
    now = {s["folder"]: (s["members"], s["fingerprint"]) for s in plan}
    same = all(now.get(f) == (p.get("members"), p.get("fingerprint")) for f, p in kept.items())
    if session is not None and not same:  # the sessions kept running must be the ones this build fans in
        raise UserError(f"--session {session}: these options split the members otherwise than the push "
                        "whose sessions run; give the options (--preset, --members, ...) you pushed with")
    carry = session is None and last is not None and last["state"] == "pending" and same  # did not finish
    if session is not None: todo = [plan[session - 1]]
    elif carry: todo = [s for s in plan if not _kept(api, kept.get(s["folder"]))]
    else: todo = plan
    limit = Config.make("kaggle", **(overrides or {})).time_limit
    warn_quota(api, limit * len(todo), f"the {len(todo)} sessions' time limits ({len(todo)} x "
                                       f"{limit / 3600:.1f} h, each billed once) are" if len(todo) > 1 else "")
    book = ledger.Ledger(out)
    if session is not None or carry:
        op = book.settle(last, "pending")
    else:  # a new run: the earlier ones go on running unless stopped
        op = book.intend("op", sessions.token())
    sent = push_datasets(api, out, timeout)
    if op["key"] != (last or {}).get("key"):
        for line in still_running(api, list(kept.values())): print(f"note: your earlier run {line}")
    for s in todo:
        started = [p for f, p in ledger.pushed(out).items() if p["state"] == "started" and f != s["folder"]]
        if session or len(started) < sessions.RUNNING_MAX:
            start(api, out, s, op["key"])
        else:
            book.intend("push", sessions.token(), role="train", op=op["key"], folder=s["folder"],
                        session=s["session"], kernel=s["kernel"], members=s["members"],
                        fingerprint=s["fingerprint"], version=None, state="waiting")
            print(f"kernel {s['kernel']} (session {s['session']}): waits for a free slot (an account runs "
                  f"{sessions.RUNNING_MAX} GPU sessions at once); `python build.py push --wait` or "
                  "`python build.py submit` pushes it when one ends")
    book.settle(op, "done")
    if len(plan) == 1:
        print(f"  uploaded {_size(sent)} in all; follow the run with `python build.py status`; "
              "`python build.py submit` waits for it, then submits it for a score; "
              "`python build.py output --wait` fetches its submission.csv, models and plots")
    else:
        print(f"  uploaded {_size(sent)} in all; follow the sessions with `python build.py status`; "
              "`python build.py submit` waits for them all (pushing those that wait), then submits the "
              "ensemble")
    return plan[0]["kernel"]


def _kept(api: Api, entry: dict | None) -> bool:
    """Whether a carried-on push keeps this session's entry rather than pushing it: started (or waiting) as
    asked. One that Kaggle started without its sources is pushed again once its doomed run is over; while
    it still runs, one line (no second session beside it)."""
    if entry is None or entry["state"] not in ("started", "waiting"): return False
    if not entry.get("problems"): return True
    if still_running(api, [entry]):
        raise UserError(f"kernel {entry['kernel']} v{entry['version']}, started without its "
                        f"{entry['problems']}, is still running; stop it at "
                        f"https://www.kaggle.com/code/{entry['kernel']} (or let it fail), then rerun "
                        "`python build.py push`: it is not pushed beside it")
    return False


def advance(api: Api, out: Path, plan: list[dict], rerun: str, start_waiting: bool = True) -> dict[str, str]:
    """One look at every session pushed from OUT: {folder: state}, "waiting" for those not started (waiting
    for a slot, or whose push never arrived); such a one is pushed when fewer than two of ours run
    (`start_waiting`). A push whose answer was lost is settled first: never pushed beside itself."""
    settle_pushes(api, out, rerun)
    runs = ledger.pushed(out)
    if missing := [s["session"] for s in plan if s["folder"] not in runs]:
        raise UserError(f"session {missing[0]} was never pushed: the last push did not finish; rerun "
                        "`python build.py push` (it carries on)")
    states = {s["folder"]: kaggle.kernel_state(api, sessions.run_ref(s, runs), rerun)[0]
              if runs[s["folder"]]["state"] == "started" else "waiting" for s in plan}
    for s in plan:
        running = sum(v not in FINISHED and v != "waiting" for v in states.values())
        if start_waiting and states[s["folder"]] == "waiting" and running < sessions.RUNNING_MAX:
            if start(api, out, s, runs[s["folder"]]["op"], rerun.split()[0])["state"] == "started":
                states[s["folder"]] = "queued"
    return states


def summary(states: dict[str, str]) -> str:
    counts = {}
    for v in states.values(): counts[v] = counts.get(v, 0) + 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))


def push_waiting(out: Path, timeout: float = OUTPUT_WAIT_S) -> dict[str, str]:
    """`push --wait`: carry on the last push from OUT, building nothing: push each session that waits as one
    of ours ends, until none waits (at most `timeout` seconds); {folder: state}."""
    if not any(p["state"] == "waiting" for p in ledger.pushed(out).values()):
        print(f"no session pushed from {out} waits; follow them with `python build.py status`")
        return {}
    states = carry_on(kaggle.client("push --wait"), out, timeout, "push --wait")
    print(f"every session is pushed ({summary(states)}); `python build.py submit` waits for them and submits")
    return states


def carry_on(api: Api, out: Path, timeout: float, rerun: str) -> dict[str, str]:
    """Push the sessions that wait as ours end, until none waits (at most `timeout` seconds)."""
    plan, found = sessions.read_plan(out) or [sessions.single(out)], {}

    def get() -> str:
        found["states"] = advance(api, out, plan, rerun)
        return summary(found["states"])
    kaggle.poll("sessions", get, lambda _: "waiting" not in found["states"].values(), timeout, rerun)
    if "waiting" in found["states"].values():
        raise UserError(f"sessions still wait after {timeout:.0f} s ({summary(found['states'])}); rerun "
                        f"`python build.py {rerun}` later")
    return found["states"]


def built(out: Path, kernel: str = "kernel") -> dict:
    """The metadata of a kernel built under OUT (`kernel`: the training one, or `infer`): what push pushed."""
    meta = out / kernel / metadata.KERNEL_FILE
    try: return json.loads(meta.read_text())
    except (OSError, ValueError):
        raise UserError(f"no kernel built under {out} ({meta} is missing); run `python build.py push` first, "
                        "or pass the --build folder you pushed from") from None


FINISHED = ("complete", "error", "cancel_acknowledged")
# What `output` fetches of a training run, at the top of its output or under members/<name>/: submission.csv,
# probs.csv, history.csv, the plots, the exported models (model.safetensors, model.json, ensemble.json), the
# members' log.txt; not checkpoints/ (the optimiser's state besides the model's: large, and only a resume on
# Kaggle needs it), nor .lock. The kaggle client matches it (re.search) against each name the server lists and
# downloads only those: the server is not sent the pattern, so it lists every file, but only wanted bytes
# travel.
WANTED = r"^(?!(.*/)?checkpoints/).*\.(csv|png|json|safetensors|txt)$"


def fetch_output(api: Api, ref: str, dest: Path, pattern: str, rerun: str) -> list[Path]:
    """Download the files of kernel `ref`'s output whose names match `pattern`, and its log, into DEST: all
    of them land there, or none."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        kaggle.kernel_output(api, ref, tmp, pattern, rerun)
        got = []
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                got.append(dest / p.relative_to(tmp))
                got[-1].parent.mkdir(parents=True, exist_ok=True)
                os.replace(p, got[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return got


def output(dest: Path, wait: bool = False, out: Path = Path("build"),
           timeout: float = OUTPUT_WAIT_S) -> list[Path]:
    """Download what the user needs of the output of the kernel pushed from OUT (WANTED) and its log into DEST
    once its run is over.

    With `wait`, poll until it is (at most `timeout` seconds). Files land in DEST only when all have arrived.
    """
    rerun = "output --wait" if wait else "output"
    ref, api = built(out)["id"], kaggle.client(rerun)
    if wait:
        state = kaggle.poll(f"kernel {ref}", lambda: kaggle.kernel_state(api, ref, rerun)[0],
                            lambda s: s in FINISHED, timeout, rerun)
    else:
        state = kaggle.kernel_state(api, ref, rerun)[0]
    if state not in FINISHED:
        raise UserError(f"kernel {ref} is {state}, not finished" + (f" after {timeout:.0f} s" if wait else "")
                        + "; wait for it with `python build.py output --wait`")
    got = fetch_output(api, ref, dest, WANTED, rerun)
    print(f"kernel {ref}: {state}; downloaded {', '.join(str(p) for p in got) or 'nothing'}")
    if state != "complete":
        failure = kaggle.kernel_state(api, ref, rerun)[1] if state == "error" else "cancelled"
        raise UserError(f"kernel {ref} did not finish ({state}: {failure or 'no message'}); "
                        f"read its log in {dest}, fix, and push again")
    return got
