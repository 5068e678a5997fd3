"""A stand-in for Kaggle's public API on 127.0.0.1:7777, for tests that drive `build.py push/status/output`.

The real kaggle client reaches it with KAGGLE_API_ENVIRONMENT=TEST (kagglesdk's http://localhost:7777): every call
is a POST of JSON to /api/v1/<service>/<Method>, answered in the wire form of kagglesdk's request and response
classes (camelCase fields, enums by name, default values left out). Errors are an HTTP status with a JSON body
{"code", "message"}, as Kaggle sends them. Files go up by PUT to the createUrl that StartBlobUpload hands out;
kernel output comes down by GET from the urls that ListKernelSessionOutput lists.

It keeps what arrived (datasets with their versions and bytes, kernels with every pushed version), counts the
bytes uploaded, logs the calls, and can be told to fail a call: `standin.fail("SaveKernel", 500)`, or
`standin.fail("SaveKernel", drop=True)` to close the connection unanswered, as a network outage does.
"""
import base64
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST, PORT = "127.0.0.1", 7777
URL = f"http://localhost:{PORT}"  # what kagglesdk's TEST environment calls; the server listens on loopback only
USERNAME, KEY = "pkk-tester", "f4k3-k3y-0123456789abcdef"  # the fake credentials the tests hand the client


@dataclass
class Fault:
    status: int = 500
    message: str = "stand-in fault"
    body: dict | None = None  # answer 200 with this body instead (Kaggle reports some refusals that way)
    drop: bool = False  # close the connection without an answer
    times: int = 1


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class KaggleStandin:
    """The server and its state. `start()` listens, `stop()` closes; `reset()` forgets everything between tests."""

    def __init__(self):
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.accounts = {USERNAME: KEY}
            self.competitions = {"paddy-disease-classification"}
            self.datasets: dict[str, dict] = {}  # "owner/slug" -> title, description, license, private, versions
            self.kernels: dict[str, dict] = {}  # "owner/slug" -> title, versions (what each push sent), states
            self.blobs: dict[str, dict] = {}  # upload token -> name, length, data (None until it arrives)
            self.calls: list[str] = []  # method names, in the order received
            self.bytes_received = 0  # file bytes PUT to upload urls
            self.faults: dict[str, list[Fault]] = {}
            self.not_ready_polls = 1  # GetDatasetStatus answers "not ready yet" this many times per new version
            self.run_states = ["QUEUED", "RUNNING", "COMPLETE"]  # a pushed kernel walks these, one per status call
            self.failure_message = ""
            self.outputs = {"submission.csv": b"image_id,label\n100001.jpg,normal\n100002.jpg,blast\n"}
            self.log = '[{"stream_name":"stdout","time":1.5,"data":"training done\\n"}]'

    def fail(self, method: str, status: int = 500, message: str = "stand-in fault", times: int = 1,
             drop: bool = False, body: dict | None = None) -> None:
        """Make the next `times` calls of `method` (e.g. "CreateDataset", or "Upload" for file PUTs) fail."""
        with self.lock:
            self.faults.setdefault(method, []).append(Fault(status, message, body, drop, times))

    def start(self) -> None:
        self.server = ThreadingHTTPServer((HOST, PORT), _handler(self))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    # ---- what the tests look at

    def dataset_files(self, ref: str, version: int = -1) -> dict[str, bytes]:
        return self.datasets[ref]["versions"][version]["files"]

    # ---- the API, one method per Kaggle call: (authenticated user, request dict) -> response dict

    def _fault(self, method: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(method) or []
            if not queue: return None
            fault = queue[0]
            fault.times -= 1
            if fault.times <= 0: queue.pop(0)
            return fault

    def _own(self, ref: str, user: str, kind: str) -> None:
        if ref.split("/")[0] != user: raise ApiError(403, f"Permission '{kind}' was denied")

    def _dataset(self, owner: str, slug: str, user: str) -> dict:
        ref = f"{owner}/{slug}"
        if ref not in self.datasets: raise ApiError(404, f"Dataset {ref} not found")
        self._own(ref, user, "datasets.get")
        return self.datasets[ref]

    def _files(self, new_files: list[dict]) -> dict[str, bytes]:
        files = {}
        for f in new_files:
            blob = self.blobs.get(f.get("token", ""))
            if blob is None or blob["data"] is None: raise ApiError(400, f"Invalid upload token {f.get('token')!r}")
            files[blob["name"]] = blob["data"]
        return files

    def _version(self, ds: dict, files: dict, notes: str) -> None:
        ds["versions"].append({"number": len(ds["versions"]) + 1, "notes": notes, "files": files,
                               "status": "READY", "polls": self.not_ready_polls})

    def StartBlobUpload(self, user, r):
        token = f"blob-{len(self.blobs) + 1}"
        self.blobs[token] = {"name": r["name"], "length": int(r.get("contentLength", 0)), "data": None}
        return {"token": token, "createUrl": f"{URL}/upload/{token}"}

    def GetDatasetStatus(self, user, r):
        v = self._dataset(r.get("ownerSlug", ""), r.get("datasetSlug", ""), user)["versions"][-1]
        if v["polls"] > 0:
            v["polls"] -= 1
            return {"status": "BLOBS_RECEIVED"}
        return {"status": v["status"]}

    def GetDatasetMetadata(self, user, r):
        ds = self._dataset(r.get("ownerSlug", ""), r.get("datasetSlug", ""), user)
        return {"info": {"datasetSlug": r["datasetSlug"], "ownerUser": r["ownerSlug"], "title": ds["title"],
                         "description": ds["description"], "isPrivate": ds["private"],
                         "licenses": [{"name": ds["license"]}]}}

    def CreateDataset(self, user, r):
        ref = f"{r.get('ownerSlug', '')}/{r.get('slug', '')}"
        self._own(ref, user, "datasets.create")
        if ref in self.datasets:
            return {"status": "error", "error": f"The requested slug \"{r['slug']}\" is already in use by a dataset."}
        ds = {"title": r.get("title", ""), "description": r.get("description", ""), "license": r.get("licenseName", ""),
              "private": r.get("isPrivate", False), "versions": []}
        self._version(ds, self._files(r.get("files", [])), "Initial release")
        self.datasets[ref] = ds
        return {"ref": ref, "url": f"{URL}/datasets/{ref}", "status": "Ok"}

    def CreateDatasetVersion(self, user, r):
        ds = self._dataset(r.get("ownerSlug", ""), r.get("datasetSlug", ""), user)
        body = r.get("body", {})
        self._version(ds, self._files(body.get("files", [])), body.get("versionNotes", ""))
        if "description" in body: ds["description"] = body["description"]
        ref = f"{r['ownerSlug']}/{r['datasetSlug']}"
        return {"ref": ref, "url": f"{URL}/datasets/{ref}", "status": "Ok"}

    def SaveKernel(self, user, r):
        ref = r.get("slug", "")
        self._own(ref, user, "kernels.create")
        sources = r.get("datasetDataSources", [])
        bad = [s for s in sources if s not in self.datasets or s.split("/")[0] != user]
        bad_comps = [c for c in r.get("competitionDataSources", []) if c not in self.competitions]
        k = self.kernels.setdefault(ref, {"title": r.get("newTitle", ""), "versions": []})
        # what the kernel will see: each attached dataset's latest version, and whether it was ready to be read
        attached = {s: (self.datasets[s]["versions"][-1]["number"],
                        self.datasets[s]["versions"][-1]["polls"] == 0) for s in sources if s not in bad}
        k["versions"].append({"number": len(k["versions"]) + 1, "text": r.get("text", ""), "datasets": attached,
                              "competitions": r.get("competitionDataSources", []),
                              **{f: r.get(f, False) for f in ("isPrivate", "enableGpu", "enableInternet")}})
        k["states"] = list(self.run_states)
        answer = {"ref": ref, "url": f"{URL}/code/{ref}", "versionNumber": len(k["versions"])}
        if bad: answer["invalidDatasetSources"] = bad
        if bad_comps: answer["invalidCompetitionSources"] = bad_comps
        return answer

    def _kernel(self, r, user) -> tuple[str, dict]:
        ref = f"{r.get('userName', '')}/{r.get('kernelSlug', '')}"
        if ref not in self.kernels: raise ApiError(404, f"Notebook {ref} not found")
        self._own(ref, user, "kernels.get")
        return ref, self.kernels[ref]

    def GetKernelSessionStatus(self, user, r):
        _, k = self._kernel(r, user)
        state = k["states"].pop(0) if len(k["states"]) > 1 else k["states"][0]
        answer = {"status": state}
        if state == "ERROR": answer["failureMessage"] = self.failure_message
        return answer

    def ListKernelSessionOutput(self, user, r):
        ref, k = self._kernel(r, user)
        if k["states"][0] not in ("COMPLETE", "ERROR"): return {}
        return {"files": [{"url": f"{URL}/output/{ref}/{name}", "fileName": name} for name in self.outputs],
                "log": self.log}


def _handler(standin: KaggleStandin):
    class Handler(BaseHTTPRequestHandler):
        timeout = 30  # a stuck client cannot hold a server thread for longer

        def log_message(self, *args): pass

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode())

        def _user(self) -> str:
            """The account of the Basic auth header (username:key), as Kaggle checks a legacy API key."""
            auth = self.headers.get("Authorization", "")
            try: user, key = base64.b64decode(auth.removeprefix("Basic ")).decode().split(":", 1)
            except ValueError: user, key = "", None
            if not auth.startswith("Basic ") or standin.accounts.get(user) != key:
                raise ApiError(401, "Unauthenticated")
            return user

        def _faulted(self, method: str) -> bool:
            fault = standin._fault(method)
            if fault is None: return False
            if fault.drop: self.close_connection = True  # no answer at all: the client sees the connection drop
            elif fault.body is not None: self._json(200, fault.body)
            else: self._json(fault.status, {"code": fault.status, "message": fault.message})
            return True

        def do_POST(self):
            body = self._body()
            parts = self.path.strip("/").split("/")  # api/v1/<service>/<Method>
            method = parts[-1] if len(parts) == 4 and parts[:2] == ["api", "v1"] else ""
            with standin.lock: standin.calls.append(method)
            if self._faulted(method): return
            try:
                user = self._user()
                call = getattr(standin, method, None) if method[:1].isupper() else None
                if call is None: raise ApiError(404, f"no method {self.path} in the stand-in")
                with standin.lock: answer = call(user, json.loads(body or b"{}"))
                self._json(200, answer)
            except ApiError as e:
                self._json(e.status, {"code": e.status, "message": str(e)})

        def do_PUT(self):
            """A file upload to the url StartBlobUpload handed out (signed, so no auth header)."""
            data = self._body()
            with standin.lock: standin.calls.append("Upload")
            if self._faulted("Upload"): return
            blob = standin.blobs.get(self.path.removeprefix("/upload/"))
            if blob is None: return self._json(404, {"code": 404, "message": "unknown upload"})
            if self.headers.get("Content-Range", "").startswith("bytes */"):  # "how much arrived?" before a resume
                return self._send(200 if blob["data"] is not None else 404, b"")
            with standin.lock:
                blob["data"] = data
                standin.bytes_received += len(data)
            self._send(200, b"")

        def do_GET(self):
            """Kernel output files, at the urls ListKernelSessionOutput lists."""
            name = self.path.rsplit("/", 1)[-1]
            if not self.path.startswith("/output/") or name not in standin.outputs:
                return self._json(404, {"code": 404, "message": "not found"})
            self._send(200, standin.outputs[name], "application/octet-stream")

    return Handler
