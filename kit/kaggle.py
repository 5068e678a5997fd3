"""The one kit-side module that talks to Kaggle: the kaggle client, its credentials, every call the kit makes,
and what Kaggle's answers mean, each failure one line.

Kaggle is taken as it answers, not as kagglesdk's types suggest (tests/kaggle_standin.py models each way):
- an error's text is in the body, `{"error": {"code", "message", "status"}}`; kagglesdk copies it into its
  HTTPError only when the body has a top-level "code", so `said()` reads the body itself (an HTML or empty
  body, a proxy's answer, still gives one line);
- a dataset or kernel that does not exist yet is often 403, not 404: `missing()` decides by whose it is;
- the daily submission limit is a 400 whose text says "daily Submission allowance"; `allowance()` asks
  GetSubmissionLimits before anything is spent;
- a push beyond the account's concurrent batch GPU sessions is answered 200, with the error in the body's
  "error" ("Maximum batch GPU session count of 2 reached.", which kaggle-cli prints after "Kernel push error:"),
  or as an HTTP error with that text: `is_session_limit()` tells it apart, and the kernel is not saved;
- GetSubmissionLimits answers all zero while the user has no team yet (the client's docstring of
  competition_get_submission_limits): no figure, not "none left";
- SaveKernel may answer without a version number (kagglesdk reads it as 0).

No network is found out at once (`client()` asks the endpoint for an answer within a few seconds) instead of
after the client's retries. Every API request has a timeout (kagglesdk sends them with none, so a half-open
connection would hang for ever; the client's file uploads use a session of their own, which has none); a fault
that may pass (429, 5xx, a dropped or timed-out connection) is a `Transient`, which `poll` waits through;
whether the call may still have taken effect is its `lost`. The calls that make something (CreateDataset,
CreateDatasetVersion) are sent once: the client would retry them after a dropped connection and make a second
version; the ledger (kit/ledger.py) settles them instead.
"""
import contextlib
import io
import json
import re
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable, TypeVar

import requests
import urllib3
from requests.adapters import HTTPAdapter

from kernel.errors import UserError, first_line

from .net import unreachable

# versionLabel (a kernel's output of one version, "/N"), GetSubmissionLimits and quota_view need 2.2.5
MIN_CLIENT = (2, 2, 5)


def check_client() -> None:
    """Refuse a kaggle client older than the calls the kit makes need (or none), in one line."""
    need = ".".join(map(str, MIN_CLIENT))
    try: version = importlib_metadata.version("kaggle")
    except importlib_metadata.PackageNotFoundError: version = None
    if version is None or tuple(int(x) for x in re.findall(r"\d+", version)[:3]) < MIN_CLIENT:
        have = "it is not installed" if version is None else f"{version} is installed"
        raise UserError(f"the kit needs the kaggle client {need} or newer (kernel output by version, "
                        f"submission limits, GPU quota), and {have}; "
                        f"run `pip install 'kaggle>={need}'` (or rerun setup.sh)")


check_client()  # before the client is imported: an older one may lack what is imported next
# importing kaggle authenticates, and prints a page of help when there are no credentials; client() says it
# in one line
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    from kaggle.api.kaggle_api_extended import KaggleApi, ResumableUploadResult
    from kagglesdk import KaggleClient
    from kagglesdk.competitions.types.competition_api_service import (ApiCompetition,
                                                                      ApiCreateSubmissionRequest,
                                                                      ApiGetCompetitionRequest,
                                                                      ApiStartSubmissionUploadRequest,
                                                                      ApiSubmission)
    from kagglesdk.kaggle_env import get_endpoint, get_env
    from kagglesdk.kernels.types.kernels_api_service import (ApiGetKernelRequest,
                                                             ApiGetKernelSessionLogsStreamRequest,
                                                             ApiListKernelSessionOutputRequest)

T = TypeVar("T")
# polls start at POLL_FIRST_S and double up to POLL_MAX_S: quick when Kaggle is, gentle when it is not
POLL_FIRST_S, POLL_MAX_S = 1.0, 30
HTTP_TIMEOUT_S = (10, 120)  # connect, read: a request that hears nothing for this long is a Transient
# how long after a call whose answer was lost Kaggle may not show what it made yet: a kernel version (GetKernel),
# a submission (ListSubmissions); a dataset version (its file listing) gets 5 times as long. Only then is it
# taken as never made, and made again.
LOOKUP_GRACE_S = 60
DAILY = re.compile(r"daily submission allowance|daily submission limit", re.I)
SESSIONS = re.compile(r"maximum batch gpu session count", re.I)
# A running session's log is a stream that stays open while it runs: what came before LOG_IDLE_S of silence
# (the read timeout of its request) is its log so far, read for LOG_READ_MAX_S at most (Kaggle may send
# keep-alives). LOG_URL_WAIT_S: how long Kaggle may wait for a session's log to be published before it
# answers: status asks only for a running session's, published already (the default, 60 s, would stall it).
LOG_IDLE_S, LOG_READ_MAX_S, LOG_URL_WAIT_S = 5.0, 20.0, 1


class Api(KaggleApi):
    """The kaggle client, talking to the Kaggle that KAGGLE_API_ENVIRONMENT names.

    KaggleApi 2.2.5 builds its clients for production unless given --local/--staging/--admin; left to itself
    (env=None) kagglesdk reads KAGGLE_API_ENVIRONMENT, including TEST, http://localhost:7777, where the tests'
    stand-in listens. verbose stays off whatever the environment says: it prints the Authorization header.
    """

    def build_kaggle_client(self) -> KaggleClient:
        c = self.config_values
        kc = KaggleClient(env=None, verbose=False, username=c.get(self.CONFIG_NAME_USER),
                          password=c.get(self.CONFIG_NAME_KEY), api_token=c.get(self.CONFIG_NAME_TOKEN),
                          response_processor=self.get_response_processor())
        # kagglesdk makes its requests.Session lazily and sends with no timeout: make it now, and mount an
        # adapter that gives every request one
        http = kc.http_client()
        http._init_session()
        for prefix in ("http://", "https://"): http._session.mount(prefix, _Timeout())
        return kc

    def with_retry(self, func, *args, **kwargs):
        """The client's retry after a connection error, except for the calls that make something: a retry of
        a create whose answer was lost makes it twice (a second dataset version); the ledger settles those."""
        if getattr(func, "__name__", "").startswith("create_"): return func
        return super().with_retry(func, *args, **kwargs)

    @property
    def user(self) -> str:
        return self.get_config_value(self.CONFIG_NAME_USER) or ""


class _Timeout(HTTPAdapter):
    """Every request it sends has a timeout: its own, else HTTP_TIMEOUT_S (read when it sends)."""

    def __init__(self, timeout: tuple[float, float] | None = None):
        super().__init__()
        self.timeout = timeout

    def send(self, request, timeout=None, **kwargs):
        return super().send(request, timeout=timeout or self.timeout or HTTP_TIMEOUT_S, **kwargs)


class Transient(UserError):
    """A fault that may pass: 429, a 5xx, a dropped or timed-out connection. `lost`: the call may have
    taken effect on Kaggle (its answer never arrived), so what it made is settled by asking, not redone.
    `retry_after`: the seconds a 429 asked us to wait, if it said."""

    def __init__(self, line: str, *, lost: bool, retry_after: float | None = None):
        super().__init__(line)
        self.lost, self.retry_after = lost, retry_after


def client(rerun: str = "push") -> Api:
    """An authenticated client, once the client's version and the network are checked. Credentials are found
    where the kaggle client looks: kaggle.json in its config folder, KAGGLE_USERNAME and KAGGLE_KEY,
    KAGGLE_API_TOKEN or ~/.kaggle/access_token, or `kaggle auth login`."""
    endpoint = get_endpoint(get_env())
    if why := unreachable(endpoint):
        raise UserError(f"cannot reach Kaggle at {endpoint} ({why}); check your internet connection, then "
                        f"rerun `python build.py {rerun}`")
    api, said_ = Api(), io.StringIO()
    try:
        with contextlib.redirect_stdout(said_): api.authenticate()
    except SystemExit:  # the client's way to say "no credentials", after a page of help we swallowed
        raise UserError(f"no Kaggle credentials: create an API token at https://www.kaggle.com/settings/api "
                        f"and save kaggle.json as {api.config}, or set KAGGLE_USERNAME and KAGGLE_KEY "
                        "(or KAGGLE_API_TOKEN)") from None
    except requests.RequestException as e:  # a token is checked with Kaggle as it is read
        raise UserError(f"could not check your Kaggle token with Kaggle ({type(e).__name__}): "
                        "check your internet connection and rerun") from None
    if said_.getvalue().strip():
        print(said_.getvalue().strip(), file=sys.stderr)  # e.g. "kaggle.json is readable by others"
    return api


def _http(e: BaseException) -> requests.HTTPError | None:
    """The HTTPError behind `e` (the client turns some into a ValueError of its own)."""
    for x in (e, e.__cause__, e.__context__):
        if isinstance(x, requests.HTTPError) and x.response is not None: return x
    return None


def status_code(e: BaseException) -> int | None:
    http = _http(e)
    return http.response.status_code if http is not None else None


def said(e: BaseException) -> str:
    """What Kaggle said: the message in the body (`{"error": {"message"}}` or `{"message"}`), else the
    exception's first line; an HTML or empty body gives the HTTP reason, never a page of markup."""
    http = _http(e)
    if http is None: return first_line(e)
    r = http.response
    try:
        body = r.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        err = body.get("error")
        text = (err.get("message") if isinstance(err, dict) else err if isinstance(err, str)
                else body.get("message"))
        if text: return " ".join(str(text).split())
    kind = "an empty answer" if not r.content else f"a {r.headers.get('Content-Type', 'non-JSON')} answer"
    return f"{r.status_code} {r.reason or ''}".strip() + f", {kind}"


def missing(e: BaseException, ref: str, api: Api) -> bool:
    """Whether `e` says that `ref` (owner/slug) does not exist: 404, or 403 on one of your own ids (Kaggle
    denies looking up what is not there yet). A 403 on someone else's id is a real refusal."""
    code = status_code(e)
    return code == 404 or (code == 403 and ref.split("/")[0].lower() == api.user.lower())


def is_daily_limit(text: str) -> bool:
    return bool(DAILY.search(text or ""))


def is_session_limit(text: str) -> bool:
    """Whether Kaggle refused a push because the account runs as many GPU sessions as it may at once."""
    return bool(SESSIONS.search(text or ""))


def call(what: str, fn: Callable[..., T], *args, rerun: str = "push", **kwargs) -> T:
    """`fn(*args, **kwargs)`, a kaggle client call; whatever goes wrong becomes one line saying what to do,
    with Kaggle's own words."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the client prints progress and its own errors
            return fn(*args, **kwargs)
    except UserError:
        raise
    except Exception as e:
        raise error(what, e, rerun) from None


def error(what: str, e: BaseException, rerun: str = "push") -> UserError:
    """The one line for exception `e` of a kaggle client call: what failed, Kaggle's words, what to do."""
    again = f"rerun `python build.py {rerun}`" + {
        "push": ": what already arrived is not uploaded again",
        "submit": ": nothing is pushed or submitted twice"}.get(rerun, "")
    code, text = status_code(e), said(e)
    if code == 401:
        line = (f"Kaggle refused your credentials (401) while {what}: create a new API token at "
                f"https://www.kaggle.com/settings/api and save kaggle.json as {KaggleApi.config}, or fix "
                "KAGGLE_USERNAME/KAGGLE_KEY, then " + again)
    elif code == 403:
        line = (f"Kaggle denied {what} (403: {text}): the id must belong to the account of your "
                "credentials; for a competition kernel, accept the competition's rules on its page and "
                "verify your phone number (needed for GPU); for an accelerator, your account must be "
                "allowed it (else pass --accelerator NvidiaTeslaT4); then " + again)
    elif code == 404:
        line = (f"{what}: Kaggle has no such thing (404: {text}); check the id, or push it first with "
                "`python build.py push`")
    elif code == 409:
        line = (f"Kaggle reported a conflict while {what} (409: {text}): if another dataset or notebook "
                "of yours already has this slug, change \"id\" and \"title\" in the metadata template; "
                "otherwise wait a minute and " + again)
    elif code == 429:
        after = _http(e).response.headers.get("Retry-After", "")
        return Transient(f"Kaggle is rate-limiting you (429: {text}) while {what}: wait a few minutes, then "
                         + again, lost=False, retry_after=float(after) if after.isdigit() else None)
    elif code and code >= 500:
        return Transient(f"Kaggle failed with a server error while {what} ({code}: {text}): "
                         "try again in a few minutes; " + again, lost=True)
    elif code:
        line = f"Kaggle refused {what} ({code}: {text}); " + again
    elif isinstance(e, (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)):
        return Transient(f"cannot reach Kaggle while {what} ({type(e).__name__}): "
                         "check your internet connection, then " + again, lost=True)
    else:
        line = f"{what} failed: {text}; " + again
    return UserError(line)


def poll(what: str, get: Callable[[], str], done: Callable[[str], bool], timeout: float,
         rerun: str = "submit", progress: bool = True) -> str:
    """Call `get()` until `done(state)` or `timeout` seconds pass, showing one progress line (unless not
    `progress`: `get` prints lines of its own); the last state. A Transient fault (429, 5xx, a dropped
    connection) is waited through with backoff (a 429's Retry-After heeded); when it lasts until `timeout`,
    one line says how long it was tried."""
    start, pause, shown, state, fault = time.monotonic(), POLL_FIRST_S, "", None, None
    while True:
        try:
            state, fault = get(), None
        except Transient as e:
            fault = e
        elapsed = time.monotonic() - start
        line = f"{what}: {state if fault is None else 'Kaggle not answering, trying again'} ({elapsed:.0f} s)"
        if progress: print("\r" + line.ljust(len(shown)), end="", file=sys.stderr, flush=True)
        shown = line
        if (fault is None and done(state)) or elapsed >= timeout: break
        wait = fault.retry_after if fault is not None and fault.retry_after else pause
        time.sleep(max(0.0, min(wait, timeout - elapsed)))
        pause = min(2 * pause, POLL_MAX_S)
    if progress: print(file=sys.stderr)
    if fault is not None:
        raise UserError(f"{what}: Kaggle did not answer for {elapsed:.0f} s ({str(fault).split(';')[0]}); "
                        f"rerun `python build.py {rerun}` later: it carries on where this stopped")
    return state


# ---- datasets

def dataset_files(api: Api, ref: str, rerun: str = "push") -> list[str] | None:
    """The names of the files in dataset `ref`'s latest version; None when it does not exist (yet)."""
    names, token = [], None
    while True:
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                r = api.dataset_list_files(ref, page_token=token, page_size=200)
        except Exception as e:
            if missing(e, ref, api): return None
            raise error(f"listing the files of dataset {ref}", e, rerun) from None
        if r.error_message:
            raise UserError(f"Kaggle could not list the files of dataset {ref} ({r.error_message}); "
                            f"rerun `python build.py {rerun}`")
        names += [f.name for f in r.dataset_files or [] if f.name]
        token = r.next_page_token
        if not token: return names


def dataset_status(api: Api, ref: str, rerun: str = "push") -> str:
    """The processing state of dataset `ref`: ready, pending, failed, ...; "not visible yet" while Kaggle
    answers 403/404 for it (for a while after it is created)."""
    try:
        with contextlib.redirect_stdout(io.StringIO()): return api.dataset_status(ref)
    except Exception as e:
        if missing(e, ref, api): return "not visible yet"
        raise error(f"checking dataset {ref}", e, rerun) from None


class SlugInUse(UserError):
    """Kaggle says a dataset holds the slug: someone else's, or ours while it is hidden being processed."""


def create_dataset(api: Api, folder: Path, ref: str, *, new: bool, notes: str) -> None:
    """Create dataset `ref` from `folder` (its dataset-metadata.json and files), or a new version of it. The
    client resumes uploads of files that already arrived (same path and modification time)."""
    if new:
        r = call(f"creating dataset {ref}", api.dataset_create_new, str(folder), public=False, quiet=True)
    else:
        r = call(f"uploading a new version of dataset {ref}", api.dataset_create_version, str(folder), notes,
                 quiet=True)
    if r.error and "already in use" in r.error:
        raise SlugInUse(f"Kaggle says the slug of dataset {ref} is already in use ({r.error.rstrip('.')}), "
                        "though it is not a dataset of yours Kaggle shows: change \"id\" and \"title\" in "
                        "dataset-metadata.json to a slug of your own, then rerun `python build.py push`")
    if r.error:
        raise UserError(f"Kaggle refused dataset {ref}: {r.error.rstrip('.')}; "
                        "fix dataset-metadata.json, then rerun `python build.py push`")


# ---- kernels

@dataclass
class Pushed:
    ref: str
    version: int
    url: str
    problems: list[str]  # sources Kaggle did not attach: the run would fail
    error: str


def push_kernel(api: Api, folder: Path, ref: str, rerun: str = "push") -> Pushed:
    """Push the kernel in `folder`: a new version, which Kaggle runs. Kaggle's refusal for the session limit
    comes back in `error` whichever way it was sent (a 200 body's "error", or an HTTP error's text);
    `version` 0 when Kaggle's answer named none. Raises Transient when the answer was lost."""
    try:
        with contextlib.redirect_stdout(io.StringIO()): r = api.kernels_push(str(folder))
    except Exception as e:
        if is_session_limit(said(e)): return Pushed(ref, 0, "", [], said(e))
        raise error(f"pushing kernel {ref}", e, rerun) from None
    problems = [f"{what} {', '.join(bad)}" for what, bad in (
        ("dataset sources", r.invalid_dataset_sources),
        ("competition sources", r.invalid_competition_sources),
        ("kernel sources", r.invalid_kernel_sources), ("model sources", r.invalid_model_sources)) if bad]
    return Pushed(r.ref or ref, r.version_number or 0, r.url or "", problems, r.error or "")


def _get_kernel(api: Api, ref: str, version: int | None = None):
    owner, slug = ref.split("/")
    request = ApiGetKernelRequest()
    request.user_name, request.kernel_slug = owner, slug
    if version: request.version_label = f"v{version}"
    with api.build_kaggle_client() as kaggle:
        return kaggle.kernels.kernels_api_client.get_kernel(request)


def find_run(api: Api, ref: str, key: str, rerun: str = "push", back: int = 5) -> int | None:
    """The version of kernel `ref` whose notebook holds `key` (a run token), among its `back` latest; None
    when none does, or the kernel is not there (yet). GetKernel returns each version's source, so a push
    whose answer was lost is found by what it sent. A version that is gone (deleted) is passed over."""
    def get(version: int | None):
        try:
            with contextlib.redirect_stdout(io.StringIO()): return _get_kernel(api, ref, version)
        except Exception as e:
            if missing(e, ref, api) or (version and status_code(e) == 404): return None
            raise error(f"looking up the versions of kernel {ref}", e, rerun) from None
    r = get(None)
    if r is None: return None
    latest = r.metadata.current_version_number
    if key in (r.blob.source or ""): return latest
    for version in range(latest - 1, max(0, latest - back), -1):
        r = get(version)
        if r is not None and key in (r.blob.source or ""): return version
    return None


def kernel_state(api: Api, ref: str, rerun: str) -> tuple[str, str]:
    """(run state, failure message) of kernel `ref`: "owner/slug", or "owner/slug/<version>" for that run."""
    try:
        with contextlib.redirect_stdout(io.StringIO()): r = api.kernels_status(ref)
    except Exception as e:
        if missing(e, "/".join(ref.split("/")[:2]), api): _not_pushed(ref, rerun)
        raise error(f"getting the status of kernel {ref}", e, rerun) from None
    return r.status.name.lower(), r.failure_message or ""


def _not_pushed(ref: str, rerun: str) -> None:
    raise UserError(f"kernel {ref} is not on Kaggle (not yours, or not pushed yet); push it first with "
                    "`python build.py push`" + (f", then rerun `python build.py {rerun}`"
                                               if rerun != "push" else ""))


def latest_version(api: Api, ref: str, rerun: str = "submit") -> int:
    """The number of kernel `ref`'s latest version: the run its last push started (GetKernel)."""
    try:
        return _get_kernel(api, ref).metadata.current_version_number
    except Exception as e:
        if missing(e, ref, api): _not_pushed(ref, rerun)
        raise error(f"looking up kernel {ref}", e, rerun) from None


def output_files(api: Api, ref: str, rerun: str) -> tuple[list[str], float | None]:
    """(the names of the files in kernel `ref`'s output, the seconds its log ran for) without downloading
    anything; `ref` is "owner/slug/<version>" (or "owner/slug": its latest run). Empty while the run goes on
    (Kaggle lists nothing yet)."""
    owner, slug, *version = ref.split("/")
    names, token, seconds = [], None, None
    while True:
        request = ApiListKernelSessionOutputRequest()
        request.user_name, request.kernel_slug = owner, slug
        if version: request.version_label = f"v{version[0]}"
        request.page_size = 200
        if token: request.page_token = token

        def get():
            with api.build_kaggle_client() as kaggle:
                return kaggle.kernels.kernels_api_client.list_kernel_session_output(request)
        r = call(f"listing the output of kernel {ref}", get, rerun=rerun)
        names += [f.file_name for f in r.files or [] if f.file_name]
        try: seconds = max(float(e.get("time", 0)) for e in json.loads(r.log or "[]")) if r.log else seconds
        except (ValueError, TypeError, AttributeError): pass
        token = r.next_page_token
        if not token: return names, seconds


def session_log(api: Api, ref: str, rerun: str = "status") -> list[str]:
    """The lines of kernel run `ref`'s log so far ("owner/slug/<version>", or "owner/slug": its latest run):
    GetKernelSessionLogsStream. Once the run is over, Kaggle answers the log as saved (application/json: a
    list of entries {"stream_name", "time", "data"}, as ListKernelSessionOutput's log); while it runs, a
    stream (text/event-stream) of such entries, one an event (`data: {...}`), that stays open to a
    `data: END_OF_LOG` (kagglesdk's docstring of get_kernel_session_logs_stream): read until that, or until
    it is quiet for LOG_IDLE_S. Each answer holds the log from its start."""
    owner, slug, *version = ref.split("/")
    request = ApiGetKernelSessionLogsStreamRequest()
    request.user_name, request.kernel_slug = owner, slug
    if version: request.version_label = f"v{version[0]}"
    request.wait_for_logs_url_seconds = LOG_URL_WAIT_S

    def get() -> list[str]:
        with api.build_kaggle_client() as kaggle:
            for prefix in ("http://", "https://"):  # its own read timeout: a quiet stream is its end for now
                kaggle.http_client()._session.mount(prefix, _Timeout((HTTP_TIMEOUT_S[0], LOG_IDLE_S)))
            with kaggle.kernels.kernels_api_client.get_kernel_session_logs_stream(request) as r:
                if "json" in r.headers.get("Content-Type", ""): return _lines(r.json())
                return _lines(_events(r))
    return call(f"reading the log of kernel {ref}", get, rerun=rerun)


def _events(r: requests.Response) -> list[dict]:
    """The log entries of a log stream, as far as it goes now (see session_log)."""
    entries, rest, end = [], b"", time.monotonic() + LOG_READ_MAX_S
    try:
        while time.monotonic() < end and (chunk := r.raw.read1(1 << 16)):  # what has come, not a full block
            *whole, rest = (rest + chunk).split(b"\n")
            for line in whole:
                data = line.decode("utf-8", "replace").removeprefix("data:").strip()
                if data == "END_OF_LOG": return entries
                if data.startswith("{"):  # an entry, not an SSE comment, an event's other field, a keep-alive
                    with contextlib.suppress(ValueError): entries.append(json.loads(data))
    except (urllib3.exceptions.HTTPError, OSError):  # quiet for LOG_IDLE_S, or dropped: what came is the log
        pass
    return entries


def _lines(entries: list) -> list[str]:
    """The text lines of log entries: their "data" in order (an entry may hold part of a line, or several)."""
    return "".join(e.get("data", "") for e in entries if isinstance(e, dict)).splitlines()


def kernel_output(api: Api, ref: str, dest: Path, pattern: str, rerun: str) -> None:
    """Download the files of kernel `ref`'s output (`owner/slug` or `owner/slug/<version>`) whose names match
    `pattern` (re.search), and its log, into `dest`. Only matching files are fetched."""
    call(f"downloading the output of kernel {ref}", api.kernels_output, ref, str(dest), file_pattern=pattern,
         force=True, quiet=True, rerun=rerun)


# ---- competitions and submissions

def competition(api: Api, name: str) -> ApiCompetition:
    """Kaggle's GetCompetition: how it takes submissions (is_kernels_submissions_only), whether you entered
    it (user_has_entered: its rules accepted)."""
    request = ApiGetCompetitionRequest()
    request.competition_name = name

    def get() -> ApiCompetition:
        with api.build_kaggle_client() as kaggle:
            return kaggle.competitions.competition_api_client.get_competition(request)
    return call(f"looking up competition {name} (or say how it takes submissions: --code or --file)", get,
                rerun="submit")


def submissions(api: Api, competition: str, rerun: str = "submit") -> list[ApiSubmission]:
    """Your team's latest submissions to the competition, newest first (ListSubmissions: the client's first
    page, 20: a rerun comes soon after, and Kaggle's daily limits are smaller)."""
    got = call(f"listing your submissions to {competition}", api.competition_submissions, competition,
               rerun=rerun)
    return [s for s in got or [] if s]


def scores(s: ApiSubmission) -> str:
    """A scored submission's scores, as status and submit print them."""
    private = f", private score {s.private_score}" if s.private_score else ""
    return f"public score {s.public_score or '-'}{private}"


def daily_limit(competition: str, text: str) -> UserError:
    return UserError(f"Kaggle's daily submission limit for {competition} is reached "
                     f"({text.strip().rstrip('.')}); rerun `python build.py submit` when it resets (midnight "
                     "UTC): nothing was pushed or sent, and nothing is submitted twice")


def allowance(api: Api, competition: str, entered: bool) -> None:
    """Refuse in one line when your team has no submission left to make to the competition today (or ever:
    a lifetime cap), before any GPU session is spent: Kaggle's GetSubmissionLimits. All zero is no figure
    (no team yet): go ahead if you `entered` the competition, else one line to accept its rules. The question
    failing is a warning: Kaggle's own refusal of the submission is still one line."""
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            limits = api.competition_get_submission_limits(competition)
    except Exception as e:
        code = status_code(e)
        print(f"warning: Kaggle did not say how many submissions to {competition} you have left "
              f"({f'{code}: {said(e)}' if code else type(e).__name__}); submitting anyway: Kaggle refuses one "
              "over the limit itself", file=sys.stderr)
        return
    if limits.num_allowed_now > 0: return
    if not (limits.num_today or limits.num_total or limits.limited_by_total):
        if not entered:
            raise UserError(f"you have not joined {competition}: accept its rules at "
                            f"https://www.kaggle.com/competitions/{competition}/rules, then rerun "
                            "`python build.py submit` (nothing was pushed or sent)")
        print(f"Kaggle gave no submission allowance for {competition} (all zero: no team yet, until your first "
              "submission); submitting", file=sys.stderr)
        return
    if limits.limited_by_total:
        raise UserError(f"your team has used all its submissions to {competition} ({limits.num_total}, the "
                        "competition's lifetime cap): Kaggle takes no more, so nothing was pushed or sent")
    now = datetime.now(timezone.utc)
    hours = 24 - now.hour - now.minute / 60
    raise daily_limit(competition, f"{limits.num_today} made today, none left; it resets at midnight UTC, "
                                   f"in {hours:.1f} hours")


def _submitted(send: Callable[[], object], competition: str, what: str) -> int:
    """Make a submission; its ref. Kaggle refuses with an HTTP error, or with an answer that names no
    submission and whose message says why (the client's own failed upload too): either way one line, the
    daily limit told apart."""
    try:
        r = call(what, send, rerun="submit")
    except UserError as e:
        if is_daily_limit(str(e)): raise daily_limit(competition, str(e).split("(", 1)[-1]) from None
        raise
    if r.ref: return r.ref
    why = (r.message or "no reason given").strip()
    if is_daily_limit(why): raise daily_limit(competition, why)
    raise UserError(f"Kaggle did not take the submission to {competition} ({why.rstrip('.')}); rerun "
                    "`python build.py submit`")


def submit_code(api: Api, competition: str, kernel: str, version: int, description: str,
                output: str = "submission.csv") -> int:
    """A code submission: Kaggle reruns kernel v`version` on the hidden test set and scores `output`."""
    return _submitted(lambda: api.competition_submit_code(output, description, competition, kernel, version,
                                                          quiet=True),
                      competition, f"submitting {kernel} v{version} to {competition}")


def upload_submission(api: Api, competition: str, path: Path, what: str) -> str:
    """Upload the file at `path` for a submission to the competition; its upload token (what CreateSubmission
    names)."""
    start = ApiStartSubmissionUploadRequest()
    start.competition_name, start.file_name = competition, path.name
    start.content_length = path.stat().st_size
    start.last_modified_epoch_seconds = int(path.stat().st_mtime)

    def upload() -> str:
        with api.build_kaggle_client() as kaggle:
            r = kaggle.competitions.competition_api_client.start_submission_upload(start)
        if api.upload_complete(str(path), r.create_url, True) != ResumableUploadResult.COMPLETE:
            raise ConnectionError("the upload did not complete")
        return r.token
    return call(f"uploading {what}", upload, rerun="submit")


def submit_file(api: Api, competition: str, token: str, description: str, what: str) -> int:
    """A file submission of the file uploaded as `token`; its ref."""
    create = ApiCreateSubmissionRequest()
    create.competition_name, create.blob_file_tokens = competition, token
    create.submission_description = description

    def send():
        with api.build_kaggle_client() as kaggle:
            return kaggle.competitions.competition_api_client.create_submission(create)
    return _submitted(send, competition, f"submitting {what} to {competition}")


# ---- quota

def gpu_quota(api: Api, rerun: str) -> tuple[float, float, datetime | None] | None:
    """(hours used, hours allowed, when it refreshes) of this week's GPU quota (the client's quota_view);
    None when Kaggle does not say."""
    r = call("asking Kaggle for your weekly GPU quota", api.quota_view, rerun=rerun)
    q = r.gpu_quota
    if q is None or q.total_time_allowed is None: return None
    used = (q.time_used.total_seconds() if q.time_used else 0.0) / 3600
    return used, q.total_time_allowed.total_seconds() / 3600, r.quota_refresh_time


def quota_line(quota: tuple[float, float, datetime | None] | None) -> str:
    if quota is None: return "GPU quota: Kaggle did not say"
    used, total, refresh = quota
    when = f", refreshes {refresh:%Y-%m-%d %H:%M} UTC" if refresh else ""
    return (f"GPU quota this week: {max(0.0, total - used):.1f} h left of {total:.1f} h "
            f"({used:.1f} h used{when})")

