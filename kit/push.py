"""`build.py push`, `status` and `output`: laptop to a running Kaggle kernel, through the kaggle client.

    push(out)     build; check the metadata; create the dataset, or version it only if its content changed;
                  wait (bounded) until Kaggle has processed it; push the training kernel attached to it
    status(out)   the pushed kernel's run state, your latest submissions to the competition and their scores
    output(dest)  what the user needs of its output once the run is over (no checkpoints); `wait` polls,
                  bounded

(`build.py submit`, which builds on the helpers here, is kit/submit.py.)

Whether the dataset changed is decided by a content hash kept on Kaggle, not here: every version we upload
carries `paddy-kernel-kit content sha256:<hash>` in the dataset's description, read back with the client's
`dataset_metadata`. A push from another clone, or after deleting the build folder, still knows what
Kaggle has.

Every failure is one line saying what to do, and a rerun picks up where the last push stopped: the dataset is
skipped once its content is on Kaggle, and files that arrived before a failed create call are not sent again
(the kaggle client's resumable uploads, kept for the same path and modification time, so we upload from a
staging folder beside the build folder whose files change only when their content does).
"""
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import requests

from kernel.atomic import atomic_write
from kernel.errors import UserError, first_line

from . import metadata

# importing kaggle authenticates, and prints a page of help when there are no credentials; _api() says it
# in one line
with contextlib.redirect_stdout(io.StringIO()):
    from kaggle.api.kaggle_api_extended import KaggleApi
    from kagglesdk import KaggleClient

T = TypeVar("T")
MARKER = "paddy-kernel-kit content sha256:"
# how long push waits for Kaggle to process the dataset before giving up (a rerun resumes)
DATASET_WAIT_S = 600
OUTPUT_WAIT_S = 12 * 3600  # a Kaggle GPU session lasts at most 12 hours
POLL_MAX_S = 30  # polls start at 1 s and double up to this: quick when Kaggle is, gentle when it is not


class Api(KaggleApi):
    """The kaggle client, talking to the Kaggle that KAGGLE_API_ENVIRONMENT names.

    KaggleApi 2.2.5 builds its clients for production unless given --local/--staging/--admin; left to itself
    (env=None) kagglesdk reads KAGGLE_API_ENVIRONMENT, including TEST, http://localhost:7777, where the tests'
    stand-in listens. verbose stays off whatever the environment says: it prints the Authorization header.
    """

    def build_kaggle_client(self) -> KaggleClient:
        c = self.config_values
        return KaggleClient(env=None, verbose=False, username=c.get(self.CONFIG_NAME_USER),
                            password=c.get(self.CONFIG_NAME_KEY), api_token=c.get(self.CONFIG_NAME_TOKEN),
                            response_processor=self.get_response_processor())


def _api() -> Api:
    """An authenticated client, with credentials found where the kaggle client looks: kaggle.json in its
    config folder, KAGGLE_USERNAME and KAGGLE_KEY, KAGGLE_API_TOKEN or ~/.kaggle/access_token, or
    `kaggle auth login`."""
    api, said = Api(), io.StringIO()
    try:
        with contextlib.redirect_stdout(said): api.authenticate()
    except SystemExit:  # the client's way to say "no credentials", after a page of help we swallowed
        raise UserError(f"no Kaggle credentials: create an API token at https://www.kaggle.com/settings/api "
                        f"and save kaggle.json as {api.config}, or set KAGGLE_USERNAME and KAGGLE_KEY "
                        "(or KAGGLE_API_TOKEN)") from None
    except requests.RequestException as e:  # a token is checked with Kaggle as it is read
        raise UserError(f"could not check your Kaggle token with Kaggle ({type(e).__name__}): "
                        "check your internet connection and rerun") from None
    if said.getvalue().strip():
        print(said.getvalue().strip(), file=sys.stderr)  # e.g. "kaggle.json is readable by others"
    return api


def _call(what: str, fn: Callable[..., T], *args, rerun: str = "push", **kwargs) -> T:
    """`fn(*args, **kwargs)`, a kaggle client call; whatever goes wrong becomes one line saying what to do."""
    again = f"rerun `python build.py {rerun}`" + {
        "push": ": what already arrived is not uploaded again",
        "submit": ": nothing is pushed or submitted twice"}.get(rerun, "")
    try:
        return fn(*args, **kwargs)
    except UserError:
        raise
    except Exception as e:
        # the client turns some HTTP errors into a ValueError of its own; the status code is on the original
        http = e if isinstance(e, requests.HTTPError) else e.__context__
        code = (http.response.status_code
                if isinstance(http, requests.HTTPError) and http.response is not None else None)
        said = first_line(http if code else e)
        if code == 401:
            line = (f"Kaggle refused your credentials (401) while {what}: create a new API token at "
                    f"https://www.kaggle.com/settings/api and save kaggle.json as {KaggleApi.config}, or fix "
                    "KAGGLE_USERNAME/KAGGLE_KEY, then " + again)
        elif code == 403:
            line = (f"Kaggle denied {what} (403: {said}): the id must belong to the account of your "
                    "credentials; for a competition kernel, accept the competition's rules on its page and "
                    "verify your phone number (needed for GPU), then " + again)
        elif code == 404:
            line = (f"{what}: Kaggle has no such thing (404: {said}); check the id, or push it first with "
                    "`python build.py push`")
        elif code == 409:
            line = (f"Kaggle reported a conflict while {what} (409: {said}): if another dataset or notebook "
                    "of yours already has this slug, change \"id\" and \"title\" in the metadata template; "
                    "otherwise wait a minute and " + again)
        elif code == 429:
            line = f"Kaggle is rate-limiting you (429) while {what}: wait a few minutes, then " + again
        elif code and code >= 500:
            line = (f"Kaggle failed with a server error while {what} ({code}: {said}): "
                    "try again in a few minutes; " + again)
        elif code:
            line = f"Kaggle refused {what} ({code}: {said}); " + again
        elif isinstance(e, (requests.ConnectionError, requests.Timeout, ConnectionError)):
            line = (f"cannot reach Kaggle while {what} ({type(e).__name__}): "
                    "check your internet connection, then " + again)
        else:
            line = f"{what} failed: {said}; " + again
        raise UserError(line) from None


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


def stage(dataset: Path, out: Path, files: dict[str, str], digest: str) -> Path:
    """Mirror the built dataset into a staging folder beside OUT, its description carrying the content hash.

    The build replaces OUT whole, so its files are new every time; the kaggle client only resumes an upload
    (and reuses a file that already arrived) for the same path and modification time. Here a file is
    re-linked only when its content changed. Hard links: no copies of large weights unless across disks.
    """
    folder = out.parent / f".{out.name}-kaggle-upload"
    folder.mkdir(exist_ok=True)
    for p in folder.iterdir():
        if p.name not in files: p.unlink()  # dropped from the build (and any leftover of an interrupted link)
    for name, sha in files.items():
        src, dst = dataset / name, folder / name
        if dst.exists() and (os.path.samefile(src, dst) or _sha256(dst) == sha): continue
        tmp = folder / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        try: os.link(src, tmp)
        except OSError: shutil.copy2(src, tmp)
        os.replace(tmp, dst)
    meta = json.loads((dataset / metadata.DATASET_FILE).read_text())
    meta["description"] = f"{meta.get('description') or ''}\n\n{MARKER}{digest}".lstrip()
    with atomic_write(folder / metadata.DATASET_FILE) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def _remote(api: Api, ref: str) -> tuple[str | None, str | None]:
    """(status, content hash) of the dataset on Kaggle; (None, None) when it does not exist."""
    try:
        state = api.dataset_status(ref)
    except requests.HTTPError as e:
        if e.response is not None and e.response.status_code == 404: return None, None
        raise
    with tempfile.TemporaryDirectory(prefix="pkk-meta-") as tmp:
        info = json.loads(Path(api.dataset_metadata(ref, tmp)).read_text())
    # kaggle 2.2.5 writes the whole response, {"info": {...}}, not just the info
    info = info.get("info", info)
    m = re.search(re.escape(MARKER) + r"([0-9a-f]{64})", info.get("description") or "")
    return state, m and m[1]


def _poll(what: str, get: Callable[[], str], done: Callable[[str], bool], timeout: float) -> str:
    """Call `get()` until `done(state)` or `timeout` seconds pass, showing one progress line; the last
    state."""
    start, pause, shown = time.monotonic(), 1.0, ""
    while True:
        state = get()
        elapsed = time.monotonic() - start
        line = f"{what}: {state} ({elapsed:.0f} s)"
        print("\r" + line.ljust(len(shown)), end="", file=sys.stderr, flush=True)
        shown = line
        if done(state) or elapsed >= timeout: break
        time.sleep(min(pause, timeout - elapsed))
        pause = min(2 * pause, POLL_MAX_S)
    print(file=sys.stderr)
    return state


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def push_dataset(api: Api, out: Path, timeout: float) -> str:
    """Create or version the dataset built under OUT unless Kaggle has its content; wait until it is ready."""
    dataset = out / "dataset"
    ref = json.loads((dataset / metadata.DATASET_FILE).read_text())["id"]
    files = dataset_files(dataset)
    digest = content_hash(files)
    state, remote = _call(f"looking up dataset {ref}", _remote, api, ref)
    if state is None or remote != digest or state == "failed":
        folder = stage(dataset, out, files, digest)
        if state is None:
            r = _call(f"creating dataset {ref}", api.dataset_create_new, str(folder), public=False,
                      quiet=False)
        else:
            r = _call(f"uploading a new version of dataset {ref}", api.dataset_create_version, str(folder),
                      f"paddy-kernel-kit {digest[:12]}", quiet=False)
        if r.error:
            raise UserError(f"Kaggle refused dataset {ref}: {r.error.rstrip('.')}; "
                            "fix dataset-metadata.json, then rerun `python build.py push`")
        size = sum((dataset / n).stat().st_size for n in files)
        print(f"dataset {ref}: {'created' if state is None else 'new version'}, "
              f"uploaded {', '.join(files)} ({_size(size)})")
    else:
        print(f"dataset {ref}: unchanged on Kaggle (content {digest[:12]}), nothing uploaded")
    state = _poll(f"waiting for Kaggle to process dataset {ref}",
                  lambda: _call(f"checking dataset {ref}", api.dataset_status, ref),
                  lambda s: s in ("ready", "failed"), timeout)
    if state == "failed":
        raise UserError(f"Kaggle failed to process dataset {ref}; "
                        "rerun `python build.py push` to upload it again")
    if state != "ready":
        raise UserError(f"dataset {ref} is still not ready after {timeout:.0f} s (Kaggle says {state!r}); "
                        "rerun `python build.py push` later (it is not uploaded again), "
                        "or give it longer with --timeout SECONDS")
    return ref


def push_kernel(api: Api, kernel: Path, rerun: str = "push") -> tuple[str, int]:
    """Push the kernel in the folder KERNEL (OUT/kernel, or OUT/infer): a new version, which Kaggle runs.
    Returns its id and version number."""
    ref = json.loads((kernel / metadata.KERNEL_FILE).read_text())["id"]
    r = _call(f"pushing kernel {ref}", api.kernels_push, str(kernel), rerun=rerun)
    problems = [f"{what} {', '.join(bad)}" for what, bad in (
        ("dataset sources", r.invalid_dataset_sources),
        ("competition sources", r.invalid_competition_sources),
        ("kernel sources", r.invalid_kernel_sources), ("model sources", r.invalid_model_sources)) if bad]
    if r.error:
        raise UserError(f"Kaggle refused kernel {ref}: {r.error.rstrip('.')}; check kernel-metadata.json, "
                        f"then rerun `python build.py {rerun}`")
    if problems:  # Kaggle saved the kernel, but without these: its run would fail
        raise UserError(f"Kaggle pushed kernel {ref} without its {'; '.join(problems)} "
                        "(unknown to Kaggle, or not yours): "
                        "check kernel-metadata.json and that you accepted the competition's rules, "
                        f"then rerun `python build.py {rerun}`"
                        + (" (the dataset is not uploaded again)" if rerun == "push" else ""))
    print(f"kernel {ref}: version {r.version_number} pushed and running, {r.url}")
    return ref, r.version_number


def push(out: Path, overrides: dict | None = None, weights: str | None = None, pretrained: bool = True,
         user: str | None = None, wheels: list[str] = (), timeout: float = DATASET_WAIT_S) -> str:
    """Build under OUT, check it, bring the dataset up to date on Kaggle, push the kernel; returns the
    kernel's id."""
    from .bundle import build
    api = _api()
    # The build checks the metadata as Kaggle would (and the config, and GPU memory): everything that would
    # fail is refused before any upload.
    build(out, overrides, weights=weights, pretrained=pretrained,
          user=user or api.get_config_value(api.CONFIG_NAME_USER), wheels=wheels)
    push_dataset(api, out, timeout)
    ref, _ = push_kernel(api, out / "kernel")
    print("  follow it with `python build.py status`; `python build.py submit` waits for it, then submits it "
          "for a score; `python build.py output --wait` fetches its submission.csv, models and plots")
    return ref


def built(out: Path, kernel: str = "kernel") -> dict:
    """The metadata of a kernel built under OUT (`kernel`: the training one, or `infer`): what push pushed."""
    meta = out / kernel / metadata.KERNEL_FILE
    try: return json.loads(meta.read_text())
    except (OSError, ValueError):
        raise UserError(f"no kernel built under {out} ({meta} is missing); run `python build.py push` first, "
                        "or pass the --build folder you pushed from") from None


def _state(api: Api, ref: str, rerun: str) -> tuple[str, str]:
    """(run state, failure message) of kernel `ref`: "owner/slug", or "owner/slug/<version>" for that run."""
    r = _call(f"getting the status of kernel {ref}", api.kernels_status, ref, rerun=rerun)
    return r.status.name.lower(), r.failure_message or ""


def status(out: Path = Path("build"), shown: int = 5) -> str:
    """Print and return the run state of the kernel pushed from OUT (queued, running, complete, error, ...),
    then your `shown` latest submissions to its competition, with their scores."""
    from .submit import show_submissions  # submit builds on the helpers here
    meta, api = built(out), _api()
    state, failure = _state(api, meta["id"], "status")
    print(f"kernel {meta['id']}: {state}" + (f" ({failure})" if failure else ""))
    show_submissions(api, metadata.competition(meta), shown)
    return state


FINISHED = ("complete", "error", "cancel_acknowledged")
# What `output` fetches of a training run, at the top of its output or under members/<name>/: submission.csv,
# probs.csv, history.csv, the plots, the exported models (model.safetensors, model.json, ensemble.json), the
# members' log.txt; not checkpoints/ (the optimiser's state besides the model's: large, and only a resume on
# Kaggle needs it), nor .lock. The kaggle client matches it (re.search) against each name the server lists and
# downloads only those: the server is not sent the pattern, so it lists every file, but only wanted bytes
# travel.
WANTED = r"^(?!(.*/)?checkpoints/).*\.(csv|png|json|safetensors|txt)$"


def output(dest: Path, wait: bool = False, out: Path = Path("build"),
           timeout: float = OUTPUT_WAIT_S) -> list[Path]:
    """Download what the user needs of the output of the kernel pushed from OUT (WANTED) and its log into DEST
    once its run is over.

    With `wait`, poll until it is (at most `timeout` seconds). Files land in DEST only when all have arrived.
    """
    ref, api = built(out)["id"], _api()
    rerun = "output --wait" if wait else "output"
    if wait:
        state = _poll(f"kernel {ref}", lambda: _state(api, ref, rerun)[0], lambda s: s in FINISHED, timeout)
    else:
        state = _state(api, ref, rerun)[0]
    if state not in FINISHED:
        raise UserError(f"kernel {ref} is {state}, not finished" + (f" after {timeout:.0f} s" if wait else "")
                        + "; wait for it with `python build.py output --wait`")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        _call(f"downloading the output of kernel {ref}", api.kernels_output, ref, str(tmp),
              file_pattern=WANTED, force=True, quiet=True, rerun=rerun)
        got = []
        for p in sorted(tmp.rglob("*")):
            if p.is_file():
                got.append(dest / p.relative_to(tmp))
                got[-1].parent.mkdir(parents=True, exist_ok=True)
                os.replace(p, got[-1])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"kernel {ref}: {state}; downloaded {', '.join(str(p) for p in got) or 'nothing'}")
    if state != "complete":
        failure = _state(api, ref, rerun)[1] if state == "error" else "cancelled"
        raise UserError(f"kernel {ref} did not finish ({state}: {failure or 'no message'}); "
                        f"read its log in {dest}, fix, and push again")
    return got
