"""`build.py push`, `status` and `output`, end to end: the real kaggle client against the stand-in Kaggle.

The commands run with a temp HOME, fake credentials and KAGGLE_API_ENVIRONMENT=TEST, which points the client
at the stand-in on 127.0.0.1:7777. A test whose point needs a fresh process runs `python build.py ...` as the
user does, in a subprocess, in a copy of the repo: it changes the package (a new wheel), reads the hub cache
(HF_HOME is read at import), or checks what happens at import or start-up (the client's version, no network,
the credentials' path). The fault cases run build.py's own `main` in this process (`here`), through the same
`kernel.errors.cli` that turns a UserError into one line and exit status 2: a subprocess would prove nothing
more there, and would import torch and redo the memory preflight (~10 s) for each of some forty pushes.
Builds ship no pretrained weights (no test reaches the Hugging Face hub) and train a small architecture,
whose memory preflight is quick (PUSH).
"""
import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

import build
from conftest import lay_out_hub
from kaggle_standin import KEY, PADDY, TRAIN, USERNAME, KaggleStandin, training_output
from kernel.errors import cli
from kit.notebook import parameters
from kit.weights import lay_out_hub as lay_out

ROOT = Path(__file__).resolve().parents[1]
DATASET, KERNEL = f"{USERNAME}/paddy-kernel-kit", TRAIN
PUSH = ("push", "--no-pretrained", "--arch", "resnet10t")
# the key, and as an auth header carries it
SECRETS = (KEY, base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode())


@pytest.fixture(scope="module")
def server():
    standin = KaggleStandin()
    standin.start()
    yield standin
    standin.stop()


@pytest.fixture
def kaggle(server):
    """The stand-in, answering as real Kaggle does."""
    server.reset()
    # a test that stopped it (network down) may have failed before restarting
    if server.server is None: server.start()
    return server


@pytest.fixture(params=["real", "friendly"])
def styled(kaggle, request):
    """The stand-in answering as real Kaggle does (403 for what does not exist yet, errors in the body, the
    old description kept on a new version), then as kagglesdk's types suggest (404, a top-level code, the
    description updated)."""
    kaggle.style = request.param
    return kaggle


@pytest.fixture
def repo(tmp_path):
    """A copy of the repo to push from, with a temp HOME holding nothing but what a test puts there."""
    dst = tmp_path / "repo"
    shutil.copytree(ROOT, dst,
                    ignore=shutil.ignore_patterns(".*", "build", "output", "sample", "__pycache__", "*.pth"))
    (tmp_path / "home").mkdir()
    (tmp_path / "tmp").mkdir()
    return dst


def env(repo: Path, **changes) -> dict:
    """The user's environment: fake credentials in KAGGLE_USERNAME/KAGGLE_KEY, Kaggle = the stand-in."""
    home = repo.parent / "home"
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("KAGGLE_", "XDG_")) and "PROXY" not in k.upper()}
    e.update(HOME=str(home), KAGGLE_CONFIG_DIR=str(home / ".kaggle"), KAGGLE_API_ENVIRONMENT="TEST",
             KAGGLE_USERNAME=USERNAME, KAGGLE_KEY=KEY, TMPDIR=str(repo.parent / "tmp"),
             PYTHONWARNINGS="ignore")
    e.update(changes)
    return {k: v for k, v in e.items() if v is not None}


def run(repo: Path, *args: str, **changes) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "build.py", *args], cwd=repo, env=env(repo, **changes),
                       capture_output=True, text=True, timeout=180)
    said = r.stdout + r.stderr
    assert not any(s in said for s in SECRETS), "credentials were printed"
    assert "Traceback" not in said, said
    return r


@pytest.fixture
def here(kaggle, tmp_path, monkeypatch, capsys):
    """`python build.py ARGS` in this process: build.main through kernel.errors.cli, as build.py runs it, in
    the environment env() gives a subprocess (fake credentials, Kaggle = the stand-in, a temp HOME and temp
    folder: the client keeps its resumable uploads' state there), with tmp_path as the working directory.
    Returns what a subprocess would: the exit status, stdout, stderr."""
    for k in list(os.environ):
        if k.startswith(("KAGGLE_", "XDG_")) or "PROXY" in k.upper(): monkeypatch.delenv(k)
    for d in ("home", "tmp"): (tmp_path / d).mkdir()
    for k, v in dict(HOME=str(tmp_path / "home"), KAGGLE_CONFIG_DIR=str(tmp_path / "home" / ".kaggle"),
                     KAGGLE_API_ENVIRONMENT="TEST", KAGGLE_USERNAME=USERNAME, KAGGLE_KEY=KEY).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # what TMPDIR is to a new process
    # Kaggle's grace to show what a call whose answer was lost made: the stand-in shows it at once, or after
    # `kernel_lag` look-ups; a minute would only slow the cases where it was never made
    monkeypatch.setattr("kit.kaggle.LOOKUP_GRACE_S", 5)
    monkeypatch.setattr("kit.kaggle.POLL_FIRST_S", 0.1)  # the stand-in moves a step a call: no need to wait 1 s
    monkeypatch.chdir(tmp_path)

    def main(*args: str, **changes) -> subprocess.CompletedProcess:
        with monkeypatch.context() as m:
            for k, v in changes.items(): m.setenv(k, v) if v is not None else m.delenv(k, raising=False)
            try:
                cli(build.main, list(args))
                code = 0
            except SystemExit as e:
                code = e.code
        out, err = capsys.readouterr()
        assert not any(s in out + err for s in SECRETS), "credentials were printed"
        return subprocess.CompletedProcess(["build.py", *args], code, out, err)
    return main


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def fails(r: subprocess.CompletedProcess, *words: str) -> str:
    """The one `error:` line of a failed command, checked to name `words`."""
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1 and r.stderr.strip().endswith(errors[0]), r.stderr
    assert all(w in errors[0] for w in words), errors[0]
    return errors[0]


def wheel(repo: Path) -> Path:
    return next((repo / "build" / "dataset").glob("paddy_kernel_kit-*.whl"))


def notebook_parameters(repo: Path) -> dict:
    return parameters(repo / "build" / "kernel")


def content(kaggle, ref: str, version: int = -1) -> dict[str, bytes]:
    """The files of a dataset version on the stand-in, without the content marker (checked to name the hash
    of the others)."""
    files = dict(kaggle.dataset_files(ref, version))
    (marker,) = [n for n in files if n.startswith("paddy-kernel-kit-content-")]
    del files[marker]
    digest = hashlib.sha256("".join(f"{n}\0{hashlib.sha256(b).hexdigest()}\n"
                                    for n, b in sorted(files.items())).encode()).hexdigest()
    assert marker == f"paddy-kernel-kit-content-{digest}.txt"
    return files


def test_push_creates_then_uploads_only_what_changed(styled, repo):
    kaggle = styled
    # credentials from kaggle.json this time, and decoys where a careless build would pick them up
    cred = json.dumps({"username": USERNAME, "key": KEY})
    (repo.parent / "home" / ".kaggle").mkdir()
    for p in (repo.parent / "home" / ".kaggle" / "kaggle.json", repo / "kaggle.json",
              repo / "kernel" / "kaggle.json"):
        p.write_text(cred)
        p.chmod(0o600)
    push = lambda: run(repo, *PUSH, KAGGLE_USERNAME=None, KAGGLE_KEY=None)
    kaggle.run_states["*"] = ["COMPLETE"]  # each run over before the next push: no session limit here

    said = ok(push())
    assert ("dataset pkk-tester/paddy-kernel-kit: created" in said
            and "/code/pkk-tester/paddy-kernel-kit-train" in said)
    ds, k = kaggle.datasets[DATASET], kaggle.kernels[KERNEL]
    assert ds["private"] and content(kaggle, DATASET) == {wheel(repo).name: wheel(repo).read_bytes()}
    v1 = k["versions"][0]
    assert v1["datasets"] == {DATASET: (1, True)}  # attached, and pushed only once the dataset was ready
    assert (v1["competitions"] == ["paddy-disease-classification"] and v1["enableGpu"]
            and not v1["enableInternet"])
    # the built notebook, and the run token push injects after its parameters (the client sends each cell's
    # source as one string)
    source = lambda nb: ["".join(c["source"]) for c in nb["cells"] if c.get("id") != "injected-parameters"]
    assert (source(json.loads(v1["text"]))
            == source(json.loads((repo / "build" / "kernel" / "kernel.ipynb").read_text())))
    ledger = json.loads((repo / "build" / "ledger.json").read_text())["entries"]
    (started,) = [e for e in ledger if e["kind"] == "push"]
    assert (started["state"], started["version"]) == ("started", 1)
    assert f"run_token = {started['key']!r}" in v1["text"]

    # nothing changed: no dataset bytes, no new dataset version; the kernel runs again
    sent, calls = kaggle.bytes_received, len(kaggle.calls)
    assert "nothing uploaded" in ok(push())
    assert kaggle.bytes_received == sent and len(ds["versions"]) == 1
    assert not {"StartBlobUpload", "CreateDataset", "CreateDatasetVersion"} & set(kaggle.calls[calls:])
    assert [v["datasets"] for v in k["versions"]] == [{DATASET: (1, True)}] * 2

    # a change to the package: a new dataset version holding the new wheel, and a new kernel version using it
    with open(repo / "kernel" / "__init__.py", "a") as f: f.write("# a change\n")
    assert "dataset pkk-tester/paddy-kernel-kit: new version" in ok(push())
    assert len(ds["versions"]) == 2 and kaggle.bytes_received > sent
    assert (content(kaggle, DATASET) == {wheel(repo).name: wheel(repo).read_bytes()}
            != content(kaggle, DATASET, 0))
    # whichever way Kaggle treats the description of a new version: the marker is in the files
    assert "paddy-kernel-kit-content" not in ds["description"]

    # another clone (no build folder, no staging folder) knows that nothing changed
    other = repo.parent / "clone"
    shutil.copytree(repo, other, ignore=shutil.ignore_patterns("build", ".*"))
    sent = kaggle.bytes_received
    assert "unchanged on Kaggle" in ok(run(other, *PUSH))
    assert kaggle.bytes_received == sent and len(ds["versions"]) == 2
    assert k["versions"][-1]["datasets"] == {DATASET: (2, True)}

    # the dataset deleted on Kaggle: push asks Kaggle, not a local note, so it creates it again
    del kaggle.datasets[DATASET]
    assert "created" in ok(push())
    assert content(kaggle, DATASET, 0) == {wheel(repo).name: wheel(repo).read_bytes()}

    # no credentials in what was built, nor in anything that reached Kaggle
    built = [p for p in (repo / "build").rglob("*") if p.is_file()]
    assert not [p for p in built if p.name == "kaggle.json"]
    assert not [n for n in zipfile.ZipFile(wheel(repo)).namelist() if "kaggle.json" in n]
    arrived = [data for d in kaggle.datasets.values() for v in d["versions"] for data in v["files"].values()]
    arrived += [p.read_bytes() for p in built] + [v["text"].encode() for v in k["versions"]]
    assert not [b for b in arrived for s in SECRETS if s.encode() in b]


def test_each_fault_gives_one_line_and_a_rerun_finishes_without_resending(kaggle, here, tmp_path):
    kaggle.stop()  # network down
    fails(here(*PUSH), "cannot reach Kaggle", "internet connection", "rerun `python build.py push`")
    kaggle.start()

    fails(here(*PUSH, KAGGLE_KEY="not-the-key"), "refused your credentials (401)", "kaggle.json")
    assert DATASET not in kaggle.datasets

    kaggle.fail("CreateDataset", 409, "slug in use")  # after the wheel arrived
    fails(here(*PUSH), "conflict", "creating dataset pkk-tester/paddy-kernel-kit", "slug in use")
    staged = tmp_path / ".build-kaggle-upload" / "dataset"  # the wheel and the content marker, as uploaded
    size = sum(p.stat().st_size for p in staged.iterdir() if p.name != "dataset-metadata.json")
    assert DATASET not in kaggle.datasets and kaggle.bytes_received == size

    kaggle.not_ready_polls = 10**6  # Kaggle takes its time over the dataset
    fails(here(*PUSH, "--timeout", "2"), "still not ready after 2 s", "rerun")
    assert kaggle.bytes_received == size, "the wheel that arrived before the conflict was uploaded again"
    assert DATASET in kaggle.datasets and KERNEL not in kaggle.kernels
    kaggle.datasets[DATASET]["versions"][-1]["polls"] = 0  # ... and then it is done

    kaggle.fail("SaveKernel", drop=True)  # the network goes between the dataset and the kernel
    fails(here(*PUSH), "cannot reach Kaggle while pushing kernel pkk-tester/paddy-kernel-kit-train")
    kaggle.fail("SaveKernel", 403, "Permission 'kernels.create' was denied")
    fails(here(*PUSH), "denied pushing kernel", "403", "competition's rules")
    assert KERNEL not in kaggle.kernels

    said = ok(here(*PUSH))
    assert "unchanged on Kaggle" in said and "version 1 pushed" in said
    assert kaggle.bytes_received == size and len(kaggle.datasets[DATASET]["versions"]) == 1
    assert kaggle.calls.count("CreateDataset") == 2 and "CreateDatasetVersion" not in kaggle.calls
    assert kaggle.kernels[KERNEL]["versions"][0]["datasets"] == {DATASET: (1, True)}


def test_status_and_output_fetch_what_the_user_needs_not_the_checkpoints(kaggle, repo, tmp_path):
    kernel = repo / "build" / "kernel"
    kernel.mkdir(parents=True)
    (kernel / "kernel-metadata.json").write_text(json.dumps({"id": KERNEL, "competition_sources": [PADDY]}))
    kaggle.SaveKernel(USERNAME, {"slug": KERNEL, "newTitle": "paddy-kernel-kit-train"})  # as if pushed

    said = ok(run(repo, "status"))
    assert f"kernel {KERNEL}: queued" in said and f"no submissions to {PADDY} yet" in said
    fails(run(repo, "output"), "is running, not finished", "--wait")
    r = run(repo, "output", "--wait", "--out", str(tmp_path / "got"))
    assert f"kernel {KERNEL}: complete" in ok(r) and "complete" in r.stderr  # the progress line
    # everything but the checkpoints and the lock, from both pages of the listing (21 files, 20 to a page)
    wanted = {n: b for n, b in training_output().items()
              if "checkpoints/" not in n and not n.endswith(".lock")}
    got = {str(p.relative_to(tmp_path / "got")): p.read_bytes()
           for p in (tmp_path / "got").rglob("*") if p.is_file()}
    assert got == {**wanted, "paddy-kernel-kit-train.log": kaggle.log.encode()}
    assert {"members/a/model.safetensors", "members/b/log.txt", "submission.csv", "ensemble.json"} <= set(got)
    assert (sorted(kaggle.downloads)
            == sorted(f"{KERNEL}/1/{n}" for n in wanted)), "checkpoints were downloaded"
    # no partial download left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["got", "home", "repo", "tmp"]

    fails(run(repo, "status", KAGGLE_USERNAME=None, KAGGLE_KEY=None), "no Kaggle credentials",
          str(repo.parent / "home" / ".kaggle" / "kaggle.json"), "KAGGLE_USERNAME")


@pytest.mark.parametrize("how", ["refused", "silent"])
def test_no_network_to_kaggle_is_one_whole_line_at_once(kaggle, repo, how):
    """Kaggle's address refuses connections, or takes them and never answers (a socket listening on its port
    that never accepts): one line within seconds, before anything is built."""
    kaggle.stop()
    silent = None
    if how == "silent":
        silent = socket.socket()
        silent.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        silent.bind(("127.0.0.1", 7777))
        silent.listen(64)
    try:
        start = time.monotonic()
        line = fails(run(repo, *PUSH), "cannot reach Kaggle at http://localhost:7777",
                     "check your internet connection")
        took = time.monotonic() - start
    finally:
        if silent: silent.close()
        kaggle.start()
    # the client's own retries took ~46 s; 15 s leaves room for a loaded machine's start-up of build.py
    assert took < 15, took
    assert line.endswith("rerun `python build.py push`") and not (repo / "build").exists()


def test_weights_go_up_once_in_a_dataset_of_their_own_and_a_code_change_uploads_the_wheel(kaggle, repo,
                                                                                          tmp_path):
    arch = "test_resnet.r160_in1k"
    weights_ds, name = f"{USERNAME}/test-resnet-r160-in1k-weights", f"{arch}.safetensors"
    state = lay_out_hub(tmp_path / "hf", arch)
    kaggle.run_states["*"] = ["COMPLETE"]  # each run over before the next push: no session limit here
    push = lambda: ok(run(repo, "push", "--arch", arch, HF_HOME=str(tmp_path / "hf")))
    shipped = lambda: (repo / "build" / "weights" / "test-resnet-r160-in1k-weights" / name).read_bytes()
    marker = lambda ref: next(b for n, b in kaggle.dataset_files(ref).items() if n.startswith("paddy-kernel"))

    push()
    first = kaggle.bytes_received
    assert content(kaggle, weights_ds) == {name: shipped()}
    assert content(kaggle, DATASET) == {wheel(repo).name: wheel(repo).read_bytes()}
    assert first == (wheel(repo).stat().st_size + len(shipped())
                     + len(marker(DATASET)) + len(marker(weights_ds)))
    k = kaggle.kernels[KERNEL]
    assert k["versions"][-1]["datasets"] == {DATASET: (1, True), weights_ds: (1, True)}
    assert (notebook_parameters(repo)["weights_datasets"]
            == [f"/kaggle/input/datasets/{weights_ds}"])

    # a code change: the wheel (and the marker naming its hash) is all that goes up
    with open(repo / "kernel" / "__init__.py", "a") as f: f.write("# a change\n")
    push()
    code_only = kaggle.bytes_received - first
    assert code_only == wheel(repo).stat().st_size + len(marker(DATASET)) < len(shipped()) / 10
    assert k["versions"][-1]["datasets"] == {DATASET: (2, True), weights_ds: (1, True)}

    # new weights for the architecture: only they go up
    lay_out(tmp_path / "hf", arch, {key: v + 1 if v.is_floating_point() else v for key, v in state.items()})
    push()
    weights_only = kaggle.bytes_received - first - code_only
    assert weights_only == len(shipped()) + len(marker(weights_ds))
    assert k["versions"][-1]["datasets"] == {DATASET: (2, True), weights_ds: (2, True)}
    print(f"\nbytes uploaded: first push {first:,}, code-only {code_only:,} "
          f"(wheel {wheel(repo).stat().st_size:,}), weights-only {weights_only:,}")


@pytest.mark.parametrize("answer", ["403", "slug in use"])
def test_someone_elses_id_and_a_slug_in_use_are_one_line_naming_the_fix(kaggle, here, answer):
    if answer == "403":  # a dataset id of another account: Kaggle's 403 is a refusal, not "not there yet"
        fails(here(*PUSH, "--user", "someone-else"),
              "Kaggle denied listing the files of dataset someone-else/paddy-kernel-kit (403: "
              "Permission 'datasets.get' was denied)", "the id must belong to the account of your credentials")
        assert not kaggle.datasets
    else:  # Kaggle hides a dataset that holds the slug (403), then the client finds it there
        kaggle.datasets[DATASET] = {"title": "paddy-kernel-kit", "description": "", "license": "CC0-1.0",
                                    "private": True, "versions": [{"number": 1, "files": {}, "polls": 0,
                                                                   "status": "READY", "notes": ""}]}
        kaggle.fail("ListDatasetFiles", 403, "Permission 'datasets.get' was denied")
        fails(here(*PUSH), f"the slug of dataset {DATASET} is already in use",
              "change \"id\" and \"title\" in dataset-metadata.json")
    assert KERNEL not in kaggle.kernels


@pytest.mark.parametrize("body", [b"<html><body><h1>502 Bad Gateway</h1></body></html>", b""])
def test_an_html_or_empty_error_body_is_still_one_line(kaggle, here, body):
    kaggle.fail("SaveKernel", 502, raw=body)
    line = fails(here(*PUSH), "server error while pushing kernel", "502 Bad Gateway")
    assert "<" not in line and ("an empty answer" if not body else "text/html") in line


# each call push makes, with a fault in turn: a server error, a dropped connection, rate limiting, and for the
# calls that make something on Kaggle, the answer lost after it was made
PUSH_FAULTS = [("GetAcceleratorQuotaStatistics", {"status": 500}), ("ListDatasetFiles", {"drop": True}),
               ("StartBlobUpload", {"status": 429}), ("Upload", {"status": 500}), ("Upload", {"drop": True}),
               ("GetDatasetStatus", {"status": 429}), ("CreateDataset", {"drop": True}),
               ("CreateDataset", {"after": True}), ("SaveKernel", {"status": 500}),
               ("SaveKernel", {"status": 429}), ("SaveKernel", {"after": True})]


@pytest.mark.parametrize("method,fault", PUSH_FAULTS,
                         ids=[f"{m}-{k}-{v}" for m, f in PUSH_FAULTS for k, v in f.items()])
def test_a_fault_at_each_call_of_push_is_one_line_and_a_rerun_resends_nothing(kaggle, here, tmp_path, method,
                                                                              fault):
    kaggle.fail(method, **fault)
    r = here(*PUSH)
    assert not kaggle.faults[method], f"{method} was not called"
    if r.returncode or KERNEL not in kaggle.kernels:
        fails(r, "rerun `python build.py push`")
        said = ok(here(*PUSH))
    else:  # the client retries uploads itself (and takes any error of its own status check before a create
        # for "not there yet"); a wait waits through a fault; a kernel pushed whose answer was lost is found at
        # once by its run token; a quota Kaggle does not tell is a warning
        said = r.stdout
        assert (method in ("StartBlobUpload", "Upload", "CreateDataset", "GetDatasetStatus", "SaveKernel")
                or "warning" in r.stderr), r.stderr
        assert len(kaggle.kernels[KERNEL]["versions"]) == 1
    assert "pushed and running" in said
    marker = next(b for n, b in kaggle.dataset_files(DATASET).items() if n.startswith("paddy-kernel"))
    assert kaggle.bytes_received == wheel(tmp_path).stat().st_size + len(marker)  # every byte went up once
    assert len(kaggle.datasets[DATASET]["versions"]) == 1


def test_a_machine_shape_your_account_cannot_use_is_one_line(kaggle, here):
    line = fails(here(*PUSH, "--accelerator", "NvidiaH100"), "denied pushing kernel",
                 "Permission denied for machine shape NvidiaH100", "--accelerator NvidiaTeslaT4")
    assert KERNEL not in kaggle.kernels, line


def test_a_kaggle_client_too_old_is_one_line(kaggle, repo, tmp_path):
    """An older client (a dist-info found first on the path says 1.7.4) is named, with the fix."""
    old = tmp_path / "old-client" / "kaggle-1.7.4.dist-info"
    old.mkdir(parents=True)
    (old / "METADATA").write_text("Metadata-Version: 2.1\nName: kaggle\nVersion: 1.7.4\n")
    line = fails(run(repo, *PUSH, PYTHONPATH=str(old.parent)), "needs the kaggle client 2.2.5 or newer",
                 "1.7.4 is installed", "pip install 'kaggle>=2.2.5'")
    assert not kaggle.calls and not (repo / "build").exists(), line


def test_push_warns_when_the_runs_time_limit_is_more_than_the_weeks_gpu_quota_left(kaggle, here):
    kaggle.gpu_used_s = 25 * 3600  # 5 h left of 30: the kaggle preset's run may take 11.5 h
    r = here(*PUSH)
    assert r.returncode == 0, r.stdout + r.stderr
    warned = [l for l in r.stderr.splitlines() if "more than your GPU quota left" in l]
    assert warned == ["warning: the run's time limit (11.5 h) is more than your GPU quota left this week "
                      "(5.0 h of 30.0 h): Kaggle stops it when the quota runs out; lower --time_limit, or push "
                      "after the quota refreshes"]
    kaggle.gpu_used_s = 2.5 * 3600  # 27.5 h left: nothing to say
    assert "GPU quota" not in here(*PUSH, "--time_limit", "3600").stderr
