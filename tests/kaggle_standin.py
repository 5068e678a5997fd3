"""A stand-in for Kaggle's public API on 127.0.0.1:7777, for the tests of
`build.py push/submit/status/output`.

The real kaggle client reaches it with KAGGLE_API_ENVIRONMENT=TEST (kagglesdk's http://localhost:7777): every
call is a POST of JSON to /api/v1/<service>/<Method>, answered in the wire form of kagglesdk's request and
response classes (camelCase fields, enums by name, default values left out).

It answers the way real Kaggle is observed to (`style = "real"`, the default), not the way a naive reading of
kagglesdk's types suggests: an error is an HTTP status with the body {"error": {"code", "message", "status"}}
(so kagglesdk's HTTPError says only "403 Client Error: Forbidden for url ..."), a dataset or kernel that does
not exist is 403 (kaggle-cli PR #951), and a new dataset version keeps the old description (kaggle-cli issue
#995). `style = "friendly"` answers as kagglesdk's types suggest: a top-level {"code", "message"} body, 404
for what does not exist, the description of a new version taken (issue #447); the tests run both.

Files go up by PUT to the createUrl that StartBlobUpload
(datasets) or StartSubmissionUpload (a submission file) hands out; kernel output comes down by GET from the
urls that ListKernelSessionOutput lists, 20 to a page by default, as the client asks.

It keeps what arrived (datasets with their versions and bytes; kernels with every pushed version, each with
its own run, its own output and what was attached to it; submissions), counts the bytes uploaded, logs the
calls and the downloads, and can be told to fail a call: `standin.fail("SaveKernel", 500)`,
`standin.fail("SaveKernel", drop=True)` to close the connection unanswered, as a network outage does, or
`after=True` to make the call and then drop the answer (the work done on Kaggle, the news of it lost).

Several sessions: each pushed version runs on its own (its states, its output, its log). A GPU version counts
as a batch session while it runs, an older version too: a newer push does not stop it (kaggle-cli issue #388).
An account runs at most `gpu_sessions` (2) at once, and Kaggle answers a push beyond that with HTTP 200 and
the error in the body, which kaggle-cli prints as "Kernel push error: Maximum batch GPU session count of 2
reached." (kaggle-cli issue #185; adapter-hub/playground PR #4), or, with `session_limit_status` set, as an
HTTP error of that status carrying the same text: the kernel is not saved and nothing runs. With
`omit_version`, SaveKernel answers without its versionNumber (kagglesdk then reads 0); with `kernel_lag`,
GetKernel shows a new version only after that many look-ups (the one before, or 403/404 for a new kernel), and with
`submission_lag` ListSubmissions lists a new submission only after that many calls. A
kernel attached to another (kernelDataSources) is served as Kaggle serves it: the output of its latest version
that completed, whatever the version. A kernel's output may be a function of the push and of those attached
outputs (`outputs[ref] = lambda request, attached: {...}`), so a test can run the real inference code on what
was attached; if it raises, that run ends in ERROR with its message. `fail_session(ref, message)` makes the
runs of `ref` end in ERROR.

A dataset that was just created hides for a while (kaggle-cli issue #890): its first `hidden_lookups` lookups
(ListDatasetFiles, GetDatasetStatus, GetDatasetMetadata) answer as for what does not exist, and a new version
of it is refused with 403 while it hides (kagglehub PR #182).

A run's log: GetKernelSessionLogsStream answers as kagglesdk's docstring of get_kernel_session_logs_stream
says Kaggle does. While the run goes on, Server-Sent Events (text/event-stream): each log entry an event,
`data: {"stream_name", "time", "data"}` (the saved log's entries, as kagglesdk's users see them), from the
log's start; the stream stays open (`log_hold` seconds here, then it closes) and ends with `data: END_OF_LOG`
when the run does. Once the run is over, the saved log (application/json: the list of entries, the log that
ListKernelSessionOutput carries). `log_lines[ref]`: the lines a run of `ref` prints; each call while it runs
shows one line more, and the run goes on until the call that shows the last one, which ends the run (in its
last state) and the stream.

Teams: GetSubmissionLimits answers all zero for a user with no team yet (the kaggle client's docstring of
competition_get_submission_limits: "All zero if the user is not on a team yet"); `teams` holds who has one
(a first submission makes it), `entered` who accepted the rules (GetCompetition's userHasEntered; a
submission of anyone else is refused with 403).

The daily submission limit: Kaggle's public API does not document how it refuses a submission over the limit.
The stand-in answers CreateSubmission and CreateCodeSubmission with HTTP 400 and the text users have long
seen from Kaggle ("Submission not allowed: Your team has used its daily Submission allowance (5) today, ..."),
counting the team's submissions to that competition since midnight UTC against `daily_limit`.
"""
import base64
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, unquote

HOST, PORT = "127.0.0.1", 7777
# what kagglesdk's TEST environment calls; the server listens on loopback only
URL = f"http://localhost:{PORT}"
USERNAME, KEY = "pkk-tester", "f4k3-k3y-0123456789abcdef"  # the fake credentials the tests hand the client
# the kit's ids
TRAIN, INFER = f"{USERNAME}/paddy-kernel-kit-train", f"{USERNAME}/paddy-kernel-kit-train-infer"
# a file competition, a code competition
PADDY, CODE = "paddy-disease-classification", "image-code-competition"


def training_output() -> dict[str, bytes]:
    """What a training run of an ensemble of two leaves in /kaggle/working: 21 files, more than one page."""
    files = {"submission.csv": b"image_id,label\n100001.jpg,normal\n100002.jpg,blast\n",
             "probs.csv": b"image_id,blast,normal\n100001.jpg,0.1,0.9\n100002.jpg,0.8,0.2\n",
             "ensemble.json": b'{"members": {"a": 1.0, "b": 1.0}}\n'}
    for m in "ab":
        files.update({f"members/{m}/{name}": f"{m} {name}\n".encode() for name in (
            "model.safetensors", "model.json", "history.csv", "probs.csv", "history.png", "confusion.png",
            "log.txt")})
        files[f"members/{m}/checkpoints/last.pth"] = b"optimiser state " * 4096
        files[f"members/{m}/.lock"] = b""
    return files


def inference_output() -> dict[str, bytes]:
    return {"submission.csv": b"image_id,label\n100001.jpg,hispa\n100002.jpg,blast\n",
            "probs.csv": b"image_id,blast,hispa\n100001.jpg,0.3,0.7\n100002.jpg,0.6,0.4\n"}


@dataclass
class Fault:
    status: int = 500
    message: str = "stand-in fault"
    body: dict | None = None  # answer 200 with this body instead (Kaggle reports some refusals that way)
    raw: bytes | None = None  # answer `status` with this body, as text/html (a proxy's page; b"": empty)
    drop: bool = False  # close the connection without an answer
    after: bool = False  # with drop: make the call first, then close the connection without its answer
    times: int = 1
    retry_after: int | None = None  # a Retry-After header on the error (429's way to say when)
    hang: float = 0  # hold the connection this many seconds without a word, then close it (half-open)
    skip: int = 0  # let this many calls through first


@dataclass
class Stream:
    """A log stream's answer: these entries, each an event, then END_OF_LOG if `over`, else silence."""
    entries: list[dict]
    over: bool


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class KaggleStandin:
    """The server and its state. `start()` listens, `stop()` closes; `reset()` forgets everything
    between tests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.style = "real"  # or "friendly": see the module's docstring
            self.accounts = {USERNAME: KEY}
            self.competitions = {
                PADDY: {"title": "Paddy Doctor: Paddy Disease Classification", "code": False},
                CODE: {"title": "An image code competition", "code": True}}
            # "owner/slug" -> title, description, license, private, versions
            self.datasets: dict[str, dict] = {}
            # "owner/slug" -> title, versions (what each push sent, its run)
            self.kernels: dict[str, dict] = {}
            self.blobs: dict[str, dict] = {}  # upload token -> name, length, data (None until it arrives)
            self.submissions: list[dict] = []  # every submission made, oldest first
            self.calls: list[str] = []  # method names, in the order received
            # (method, request body) of each call that reached the API
            self.requests: list[tuple[str, dict]] = []
            self.downloads: list[str] = []  # output files fetched: "owner/slug/version/name"
            self.bytes_received = 0  # file bytes PUT to upload urls
            self.faults: dict[str, list[Fault]] = {}
            # GetDatasetStatus answers "not ready yet" this many times per new version
            self.not_ready_polls = 1
            # a pushed version's run walks these states, one per status call, and ends with that output and
            # log; per kernel, "*" for any kernel not named
            self.run_states = {"*": ["QUEUED", "RUNNING", "COMPLETE"]}
            self.failure_messages: dict[str, str] = {}  # kernel -> failureMessage of a run that ends in ERROR
            self.outputs = {TRAIN: training_output(), INFER: inference_output(), "*": {}}
            self.log = '[{"stream_name":"stdout","time":1.5,"data":"training done\\n"}]'
            # per kernel, the lines its runs print (their log), shown one more per log call while one runs
            self.log_lines: dict[str, list[str]] = {}
            self.log_hold = 0.3  # seconds a log stream stays open, silent, after what it sent, then closes
            # a new submission walks these states, one per ListSubmissions call, and ends with these scores or
            # this error
            self.scoring = ["PENDING", "COMPLETE"]
            self.public_score, self.private_score, self.scoring_error = "0.97412", "0.96830", ""
            self.daily_limit = 5
            self.gpu_sessions = 2  # batch GPU sessions an account may run at once
            self.session_limit_status: int | None = None  # None: the limit in a 200 body; else this HTTP error
            self.omit_version = False  # SaveKernel's answer without its versionNumber
            self.kernel_lag = 0  # GetKernel shows a new version only after this many look-ups
            self.submission_lag = 0  # ListSubmissions lists a new submission only after this many calls
            self.hidden_lookups = 0  # a new dataset's first lookups answer "does not exist" (processing)
            self.entered, self.teams = {USERNAME}, {USERNAME}  # accepted the rules; has a team
            # machine shapes an ordinary account may not ask for (some are for certain competitions or admins)
            self.restricted_shapes = {"NvidiaH100", "NvidiaRtxPro6000", "NvidiaTeslaA100", "NvidiaL4"}
            self.total_limit: int | None = None  # a lifetime cap on submissions (limitedByTotal), if any
            # this week's GPU quota (GetAcceleratorQuotaStatistics), seconds
            self.gpu_used_s, self.gpu_total_s = 2.5 * 3600, 30 * 3600

    def fail(self, method: str, status: int = 500, message: str = "stand-in fault", times: int = 1,
             drop: bool = False, body: dict | None = None, after: bool = False,
             raw: bytes | None = None, retry_after: int | None = None, hang: float = 0,
             skip: int = 0) -> None:
        """Make the next `times` calls of `method` (e.g. "CreateDataset", or "Upload" for file PUTs) fail,
        after `skip` calls that go through."""
        with self.lock:
            self.faults.setdefault(method, []).append(
                Fault(status, message, body, raw, drop or after or hang > 0, after, times, retry_after, hang,
                      skip))

    def fail_session(self, ref: str, message: str = "CUDA out of memory", output: dict | None = None) -> None:
        """The next runs of kernel `ref` end in ERROR with `message` (a session that failed), leaving `output`
        (none by default)."""
        with self.lock:
            self.run_states[ref] = ["RUNNING", "ERROR"]
            self.failure_messages[ref] = message
            self.outputs[ref] = output or {}

    def running(self, user: str) -> list[str]:
        """The GPU sessions of `user` still running, "owner/slug/version": every version, not only the latest
        (a newer push does not stop an older one)."""
        return [f"{ref}/{v['number']}" for ref, k in self.kernels.items() for v in k["versions"]
                if ref.split("/")[0] == user and v["enableGpu"]
                and v["states"][0] not in ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED")]

    def served(self, ref: str) -> tuple[int, dict[str, bytes]] | None:
        """What Kaggle attaches of kernel `ref`: (version, output) of its latest version that completed."""
        done = [v for v in self.kernels.get(ref, {}).get("versions", []) if v["states"][0] == "COMPLETE"]
        return (done[-1]["number"], done[-1]["outputs"]) if done else None

    def error_body(self, status: int, message: str) -> dict:
        """An error's JSON body, in the style answered."""
        if self.style == "friendly": return {"code": status, "message": message}
        names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED"}
        return {"error": {"code": status, "message": message, "status": names.get(status, "INTERNAL")}}

    def _missing(self, what: str, ref: str, kind: str) -> "ApiError":
        """What does not exist: 404 as the types suggest, 403 as Kaggle answers."""
        if self.style == "friendly": return ApiError(404, f"{what} {ref} not found")
        return ApiError(403, f"Permission '{kind}' was denied")

    def start(self) -> None:
        self.server = ThreadingHTTPServer((HOST, PORT), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # ---- what the tests look at, and set up

    def dataset_files(self, ref: str, version: int = -1) -> dict[str, bytes]:
        return self.datasets[ref]["versions"][version]["files"]

    def received(self, method: str) -> list[dict]:
        """The request bodies of every `method` call that reached the API, in order."""
        return [r for m, r in self.requests if m == method]

    def submitted(self, competition: str, description: str, status: str = "COMPLETE", public: str = "",
                  private: str = "", error: str = "", date: str | None = None) -> dict:
        """A submission as if made earlier (on the site, by hand), for `status` and the daily limit."""
        with self.lock:
            return self._submission(USERNAME, competition, description, {}, [status], public, private, error,
                                    date)

    # ---- the API, one method per Kaggle call: (authenticated user, request dict) -> response dict

    def _fault(self, method: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(method) or []
            if not queue: return None
            fault = queue[0]
            if fault.skip > 0:
                fault.skip -= 1
                return None
            fault.times -= 1
            if fault.times <= 0: queue.pop(0)
            return fault

    def _own(self, ref: str, user: str, kind: str) -> None:
        if ref.split("/")[0] != user: raise ApiError(403, f"Permission '{kind}' was denied")

    def _dataset(self, owner: str, slug: str, user: str) -> dict:
        ref = f"{owner}/{slug}"
        if ref in self.datasets and self.datasets[ref].get("hidden", 0) > 0:  # still being processed
            self.datasets[ref]["hidden"] -= 1
            raise self._missing("Dataset", ref, "datasets.get")
        if ref not in self.datasets: raise self._missing("Dataset", ref, "datasets.get")
        self._own(ref, user, "datasets.get")
        return self.datasets[ref]

    def _files(self, new_files: list[dict]) -> dict[str, bytes]:
        files = {}
        for f in new_files:
            blob = self.blobs.get(f.get("token", ""))
            if blob is None or blob["data"] is None:
                raise ApiError(400, f"Invalid upload token {f.get('token')!r}")
            files[blob["name"]] = blob["data"]
        return files

    def _version(self, ds: dict, files: dict, notes: str) -> None:
        ds["versions"].append({"number": len(ds["versions"]) + 1, "notes": notes, "files": files,
                               "status": "READY", "polls": self.not_ready_polls})

    def _blob(self, name: str, length) -> dict:
        token = f"blob-{len(self.blobs) + 1}"
        self.blobs[token] = {"name": name, "length": int(length or 0), "data": None}
        return {"token": token, "createUrl": f"{URL}/upload/{token}"}

    def StartBlobUpload(self, user, r):
        return self._blob(r["name"], r.get("contentLength"))

    def GetDatasetStatus(self, user, r):
        v = self._dataset(r.get("ownerSlug", ""), r.get("datasetSlug", ""), user)["versions"][-1]
        if v["polls"] > 0:
            v["polls"] -= 1
            return {"status": "BLOBS_RECEIVED"}
        return {"status": v["status"]}

    def ListDatasetFiles(self, user, r):
        ds = self._dataset(r.get("ownerSlug", ""), r.get("datasetSlug", ""), user)
        names = sorted(ds["versions"][-1]["files"])
        start, size = int(r.get("pageToken") or 0), int(r.get("pageSize") or 20)
        answer = {"datasetFiles": [{"ref": n, "name": n, "totalBytes": len(ds["versions"][-1]["files"][n])}
                                   for n in names[start:start + size]]}
        if start + size < len(names): answer["nextPageToken"] = str(start + size)
        return answer

    def GetDatasetMetadata(self, user, r):
        ds = self._dataset(r.get("ownerSlug", ""), r.get("datasetSlug", ""), user)
        return {"info": {"datasetSlug": r["datasetSlug"], "ownerUser": r["ownerSlug"], "title": ds["title"],
                         "description": ds["description"], "isPrivate": ds["private"],
                         "licenses": [{"name": ds["license"]}]}}

    def CreateDataset(self, user, r):
        ref = f"{r.get('ownerSlug', '')}/{r.get('slug', '')}"
        self._own(ref, user, "datasets.create")
        if ref in self.datasets:
            return {"status": "error",
                    "error": f"The requested slug \"{r['slug']}\" is already in use by a dataset."}
        ds = {"title": r.get("title", ""), "description": r.get("description", ""),
              "license": r.get("licenseName", ""), "private": r.get("isPrivate", False), "versions": []}
        self._version(ds, self._files(r.get("files", [])), "Initial release")
        ds["hidden"] = self.hidden_lookups
        self.datasets[ref] = ds
        return {"ref": ref, "url": f"{URL}/datasets/{ref}", "status": "Ok"}

    def CreateDatasetVersion(self, user, r):
        hidden = self.datasets.get(f"{r.get('ownerSlug', '')}/{r.get('datasetSlug', '')}", {}).get("hidden", 0)
        if hidden > 0: raise ApiError(403, "Permission 'datasets.versions.create' was denied")
        ds = self._dataset(r.get("ownerSlug", ""), r.get("datasetSlug", ""), user)
        body = r.get("body", {})
        self._version(ds, self._files(body.get("files", [])), body.get("versionNotes", ""))
        # Kaggle may keep the description of the version before (kaggle-cli issue #995)
        if "description" in body and self.style == "friendly": ds["description"] = body["description"]
        ref = f"{r['ownerSlug']}/{r['datasetSlug']}"
        return {"ref": ref, "url": f"{URL}/datasets/{ref}", "status": "Ok"}

    def SaveKernel(self, user, r):
        """A new version of the kernel, which starts running. Attached kernels (kernelDataSources) are their
        latest version's output, recorded with that version's number and its run state at the time
        of the push."""
        ref = r.get("slug", "")
        self._own(ref, user, "kernels.create")
        if r.get("machineShape") in self.restricted_shapes:
            raise ApiError(403, f"Permission denied for machine shape {r['machineShape']}")
        sources = r.get("datasetDataSources", [])
        bad = [s for s in sources if s not in self.datasets or s.split("/")[0] != user]
        bad_comps = [c for c in r.get("competitionDataSources", []) if c not in self.competitions]
        kernel_sources = r.get("kernelDataSources", [])
        bad_kernels = [s for s in kernel_sources if s not in self.kernels or s.split("/")[0] != user]
        if r.get("enableGpu") and len(self.running(user)) >= self.gpu_sessions:
            said = f"Maximum batch GPU session count of {self.gpu_sessions} reached."
            if self.session_limit_status: raise ApiError(self.session_limit_status, said)
            return {"error": said}
        k = self.kernels.setdefault(ref, {"title": r.get("newTitle", ""), "versions": []})
        # what the kernel will see: each attached dataset's latest version,
        # and whether it was ready to be read
        attached = {s: (self.datasets[s]["versions"][-1]["number"],
                        self.datasets[s]["versions"][-1]["polls"] == 0) for s in sources if s not in bad}
        kernels = {s: (self.kernels[s]["versions"][-1]["number"],
                       self.kernels[s]["versions"][-1]["states"][0])
                   for s in kernel_sources if s not in bad_kernels}
        k["versions"].append({"number": len(k["versions"]) + 1, "text": r.get("text", ""),
                              "datasets": attached, "kernels": kernels,
                              "competitions": r.get("competitionDataSources", []),
                              **{f: r.get(f, False) for f in ("isPrivate", "enableGpu", "enableInternet")},
                              "states": list(self.run_states.get(ref, self.run_states["*"])),
                              "failure": self.failure_messages.get(ref, ""),
                              "outputs": self.outputs.get(ref, self.outputs["*"]), "log": self.log,
                              "lines": list(self.log_lines.get(ref, [])), "shown": 0})
        v = k["versions"][-1]
        if v["lines"]: v["log"] = json.dumps(self._entries(v["lines"]))
        if callable(v["outputs"]):  # the run's output made from the push and what it was attached
            attached = {s: self.served(s)[1] for s in kernels if self.served(s)}
            try: v["outputs"] = dict(v["outputs"](r, attached))
            except Exception as e:
                v["outputs"], v["states"], v["failure"] = {}, ["RUNNING", "ERROR"], f"{type(e).__name__}: {e}"
        else: v["outputs"] = dict(v["outputs"])
        answer = {"ref": ref, "url": f"{URL}/code/{ref}", "versionNumber": len(k["versions"])}
        if self.omit_version: del answer["versionNumber"]
        k["lag"] = self.kernel_lag
        if bad: answer["invalidDatasetSources"] = bad
        if bad_comps: answer["invalidCompetitionSources"] = bad_comps
        if bad_kernels: answer["invalidKernelSources"] = bad_kernels
        return answer

    def _kernel(self, r, user) -> tuple[str, dict, dict]:
        """(ref, kernel, version) a request names: userName, kernelSlug, versionLabel
        ("v3"; else the latest)."""
        ref = f"{r.get('userName', '')}/{r.get('kernelSlug', '')}"
        if ref not in self.kernels: raise self._missing("Notebook", ref, "kernels.get")
        self._own(ref, user, "kernels.get")
        k, label = self.kernels[ref], r.get("versionLabel")
        if not label: return ref, k, k["versions"][-1]
        if not (label.startswith("v") and label[1:].isdigit() and 1 <= int(label[1:]) <= len(k["versions"])):
            raise ApiError(404, f"Notebook {ref} has no version {label}")
        return ref, k, k["versions"][int(label[1:]) - 1]

    def GetKernel(self, user, r):
        ref, k, v = self._kernel(r, user)
        shown = len(k["versions"])
        if k.get("lag", 0) > 0 and not r.get("versionLabel"):  # the newest version not shown yet
            k["lag"] -= 1
            if shown == 1: raise self._missing("Notebook", ref, "kernels.get")
            shown, v = shown - 1, k["versions"][-2]
        owner, slug = ref.split("/")
        return {"metadata": {"ref": ref, "title": k["title"], "author": owner, "slug": slug,
                             "language": "python", "kernelType": "notebook", "isPrivate": v["isPrivate"],
                             "enableGpu": v["enableGpu"], "enableInternet": v["enableInternet"],
                             "datasetDataSources": list(v["datasets"]),
                             "kernelDataSources": list(v["kernels"]),
                             "competitionDataSources": v["competitions"],
                             "currentVersionNumber": shown},
                "blob": {"source": v["text"], "language": "python", "kernelType": "notebook", "slug": slug}}

    def GetKernelSessionStatus(self, user, r):
        _, _, v = self._kernel(r, user)
        if v["states"][0] == "RUNNING" and v["shown"] < len(v["lines"]):  # it runs until its log ends
            return {"status": "RUNNING"}
        state = v["states"].pop(0) if len(v["states"]) > 1 else v["states"][0]
        answer = {"status": state}
        if state == "ERROR": answer["failureMessage"] = v["failure"]
        return answer

    def ListKernelSessionOutput(self, user, r):
        ref, _, v = self._kernel(r, user)
        if v["states"][0] not in ("COMPLETE", "ERROR"): return {}
        names = sorted(v["outputs"])
        start, size = int(r.get("pageToken") or 0), int(r.get("pageSize") or 20)
        answer = {"files": [{"url": f"{URL}/output/{ref}/{v['number']}/{quote(n)}", "fileName": n}
                            for n in names[start:start + size]], "log": v["log"]}
        if start + size < len(names): answer["nextPageToken"] = str(start + size)
        return answer

    @staticmethod
    def _entries(lines: list[str]) -> list[dict]:
        """A log's entries, one a line, 10 s apart, as Kaggle saves a kernel's log."""
        return [{"stream_name": "stdout", "time": 10.0 * (i + 1), "data": line + "\n"}
                for i, line in enumerate(lines)]

    def GetKernelSessionLogsStream(self, user, r):
        """The run's log (see the module's docstring): the saved log once the run is over, else a Stream."""
        _, _, v = self._kernel(r, user)
        if v["states"][0] in ("COMPLETE", "ERROR", "CANCEL_ACKNOWLEDGED"):
            return json.loads(v["log"])
        if v["states"][0] == "QUEUED": return Stream([], over=False)  # no log yet
        v["shown"] = min(v["shown"] + 1, len(v["lines"]))
        over = bool(v["lines"]) and v["shown"] == len(v["lines"])
        if over: v["states"] = v["states"][-1:]  # the run ends with its last line
        return Stream(self._entries(v["lines"])[:v["shown"]], over)

    # ---- competitions and submissions

    def _competition(self, name: str) -> dict:
        if name not in self.competitions: raise ApiError(404, f"Competition {name!r} not found")
        return self.competitions[name]

    def GetCompetition(self, user, r):
        c = self._competition(r.get("competitionName", ""))
        return {"ref": r["competitionName"], "title": c["title"], "maxDailySubmissions": self.daily_limit,
                "isKernelsSubmissionsOnly": c["code"], "userHasEntered": user in self.entered}

    def _submission(self, user, competition, description, what, states, public, private, error,
                    date=None) -> dict:
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        s = {"ref": 50000 + len(self.submissions) + 1, "user": user, "competition": competition,
             "description": description, "date": date or now, "states": states, "public": public,
             "private": private, "error": error, **what}
        self.submissions.append(s)
        return s

    def _submit(self, user, r, code: bool, what: dict) -> dict:
        """A new submission, refused over the daily limit (see the module's docstring)
        or of the wrong kind."""
        name = r.get("competitionName", "")
        c = self._competition(name)
        if c["code"] != code:
            raise ApiError(400, "This competition only accepts submissions from notebooks" if c["code"]
                           else "This competition does not accept code submissions")
        if user not in self.entered:
            raise ApiError(403, "You must accept this competition's rules before you'll be able to submit")
        if self._today(user, name) >= self.daily_limit:
            now = datetime.now(timezone.utc)
            raise ApiError(400, f"Submission not allowed:  Your team has used its daily Submission allowance "
                                f"({self.daily_limit}) today, please try again tomorrow UTC "
                                f"({24 - now.hour - now.minute / 60:.1f} hours from now).")
        s = self._submission(user, name, r.get("submissionDescription", ""), what, list(self.scoring),
                             self.public_score, self.private_score, self.scoring_error)
        s["lag"] = self.submission_lag
        self.teams.add(user)  # a first submission makes a team of one
        return {"message": "Successfully submitted", "ref": s["ref"]}

    def _today(self, user, name) -> int:
        today = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        return sum(s["user"] == user and s["competition"] == name and s["date"].startswith(today)
                   for s in self.submissions)

    def GetSubmissionLimits(self, user, r):
        name = r.get("competitionName", "")
        self._competition(name)
        if user not in self.teams: return {}  # all zero (defaults are left out of the wire form)
        total = sum(s["user"] == user and s["competition"] == name for s in self.submissions)
        left = self.daily_limit - self._today(user, name)
        capped = self.total_limit is not None and self.total_limit - total < left
        if capped: left = self.total_limit - total
        return {"numToday": self._today(user, name), "numTotal": total, "numAllowedNow": max(0, left),
                "limitedByTotal": capped}

    def GetAcceleratorQuotaStatistics(self, user, r):
        return {"quotaRefreshTime": "2026-12-05T00:00:00Z",
                "gpuQuota": {"timeUsed": f"{self.gpu_used_s:.0f}s",
                             "totalTimeAllowed": f"{self.gpu_total_s:.0f}s"},
                "tpuQuota": {"timeUsed": "0s", "totalTimeAllowed": "72000s"}}

    def StartSubmissionUpload(self, user, r):
        self._competition(r.get("competitionName", ""))
        return self._blob(r.get("fileName", ""), r.get("contentLength"))

    def CreateSubmission(self, user, r):
        blob = self.blobs.get(r.get("blobFileTokens", ""))
        if blob is None or blob["data"] is None: raise ApiError(400, "The submission file did not arrive")
        return self._submit(user, r, False, {"fileName": blob["name"], "file": blob["data"]})

    def CreateCodeSubmission(self, user, r):
        kernel = {"userName": r.get("kernelOwner", ""), "kernelSlug": r.get("kernelSlug", ""),
                  "versionLabel": f"v{r['kernelVersion']}" if r.get("kernelVersion") else None}
        ref, _, v = self._kernel(kernel, user)
        if v["states"][0] != "COMPLETE":
            raise ApiError(400, f"Notebook {ref} version {v['number']} did not complete")
        if r.get("fileName") not in v["outputs"]:
            raise ApiError(400, f"Notebook {ref} version {v['number']} "
                                f"has no output file {r.get('fileName')!r}")
        return self._submit(user, r, True, {"fileName": r["fileName"], "kernel": ref,
                                            "kernelVersion": v["number"]})

    def ListSubmissions(self, user, r):
        """The team's submissions to the competition, newest first;
        each call moves each one a scoring step on."""
        name = r.get("competitionName", "")
        self._competition(name)
        mine = [s for s in reversed(self.submissions) if s["user"] == user and s["competition"] == name]
        for s in [s for s in mine if s.get("lag", 0) > 0]:  # made, not listed yet
            s["lag"] -= 1
            mine.remove(s)
        start, size = int(r.get("pageToken") or 0), int(r.get("pageSize") or 20)
        answer = {"submissions": []}
        for s in mine[start:start + size]:
            state = s["states"].pop(0) if len(s["states"]) > 1 else s["states"][0]
            wire = {"ref": s["ref"], "date": s["date"], "description": s["description"],
                    "fileName": s.get("fileName"), "submittedBy": user, "status": state}
            if state == "COMPLETE": wire.update(publicScore=s["public"], privateScore=s["private"])
            if state == "ERROR": wire["errorDescription"] = s["error"]
            answer["submissions"].append({k: v for k, v in wire.items() if v})
        if start + size < len(mine): answer["nextPageToken"] = str(start + size)
        return answer


def _handler(standin: KaggleStandin):
    class Handler(BaseHTTPRequestHandler):
        timeout = 30  # a stuck client cannot hold a server thread for longer

        def log_message(self, *args): pass

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes, content_type: str = "application/json",
                  headers: dict | None = None) -> None:
            self.send_response(status)
            for k, v in (headers or {}).items(): self.send_header(k, v)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict, headers: dict | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers=headers)

        def _user(self) -> str:
            """The account of the Basic auth header (username:key), as Kaggle checks a legacy API key."""
            auth = self.headers.get("Authorization", "")
            try: user, key = base64.b64decode(auth.removeprefix("Basic ")).decode().split(":", 1)
            except ValueError: user, key = "", None
            if not auth.startswith("Basic ") or standin.accounts.get(user) != key:
                raise ApiError(401, "Unauthenticated")
            return user

        def _faulted(self, fault: Fault | None) -> bool:
            """Answer as the fault says; False when there is none, or it drops the answer after the call."""
            if fault is None or fault.after: return False
            if fault.hang: time.sleep(fault.hang)
            if fault.drop:
                self.close_connection = True  # no answer at all: the client sees the connection drop
            elif fault.body is not None: self._json(200, fault.body)
            elif fault.raw is not None: self._send(fault.status, fault.raw, "text/html; charset=UTF-8")
            else: self._json(fault.status, standin.error_body(fault.status, fault.message),
                             {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {})
            return True

        def do_POST(self):
            body = self._body()
            parts = self.path.strip("/").split("/")  # api/v1/<service>/<Method>
            method = parts[-1] if len(parts) == 4 and parts[:2] == ["api", "v1"] else ""
            with standin.lock: standin.calls.append(method)
            fault = standin._fault(method)
            if self._faulted(fault): return
            try:
                user = self._user()
                call = getattr(standin, method, None) if method[:1].isupper() else None
                if call is None: raise ApiError(404, f"no method {self.path} in the stand-in")
                request = json.loads(body or b"{}")
                with standin.lock:
                    standin.requests.append((method, request))
                    answer = call(user, request)
                if fault: self.close_connection = True  # done, and the answer lost on the way
                elif isinstance(answer, Stream): self._stream(answer)
                else: self._json(200, answer)
            except ApiError as e:
                self._json(e.status, standin.error_body(e.status, str(e)))

        def _stream(self, answer: Stream) -> None:
            """Server-Sent Events, sent as they are ready; no length: the stream ends when it closes."""
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.close_connection = True
            events = [f"data: {json.dumps(e)}" for e in answer.entries] + ["data: END_OF_LOG"] * answer.over
            for event in events: self.wfile.write(f"{event}\n\n".encode())
            self.wfile.flush()
            if not answer.over: time.sleep(standin.log_hold)  # open, with nothing more to say yet

        def do_PUT(self):
            """A file upload to the url StartBlobUpload handed out (signed, so no auth header)."""
            data = self._body()
            with standin.lock: standin.calls.append("Upload")
            if self._faulted(standin._fault("Upload")): return
            blob = standin.blobs.get(self.path.removeprefix("/upload/"))
            if blob is None: return self._json(404, {"code": 404, "message": "unknown upload"})
            # "how much arrived?" before a resume
            if self.headers.get("Content-Range", "").startswith("bytes */"):
                return self._send(200 if blob["data"] is not None else 404, b"")
            with standin.lock:
                blob["data"] = data
                standin.bytes_received += len(data)
            self._send(200, b"")

        def do_GET(self):
            """Kernel output files, at the urls ListKernelSessionOutput lists:
            /output/<owner>/<slug>/<v>/<name>."""
            owner, slug, number, name = (unquote(self.path.removeprefix("/output/")).split("/", 3)
                                         + [""] * 4)[:4]
            k = standin.kernels.get(f"{owner}/{slug}")
            known = k and number.isdigit() and 0 < int(number) <= len(k["versions"])
            v = k["versions"][int(number) - 1] if known else None
            if not self.path.startswith("/output/") or v is None or name not in v["outputs"]:
                return self._json(404, {"code": 404, "message": "not found"})
            with standin.lock: standin.downloads.append(f"{owner}/{slug}/{number}/{name}")
            self._send(200, v["outputs"][name], "application/octet-stream")

    return Handler
