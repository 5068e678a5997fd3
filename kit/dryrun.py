"""`build.py dry-run`: build, then run exactly the built notebook here, on CPU, and check what it wrote.

The notebook is executed with nbclient on this interpreter's ipykernel. Only a cell injected after the
`parameters` cell differs from what is pushed: local paths instead of /kaggle ones, the CPU preset,
and a throwaway install target, so the install cell really installs the built wheels offline
(`pip --no-index`) without touching this environment. By default it runs on a generated sample
competition, whose answers give the accuracy.
"""
import json
import os
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError

from kernel.config import Config, parse_args
from kernel.data import test_items, train_items
from kernel.errors import UserError
from kernel.sample import accuracy, make_sample

from . import bundle, metadata, notebook

EXECUTED, LOG = "dry-run.ipynb", "dry-run.log"  # in OUT: the executed notebook (with outputs), the kernel's log


def _overrides(argv: list[str], weights: bool) -> tuple[str, dict]:
    """`--field value ...` -> (preset, {field: value as typed}), checked by kernel.Config itself."""
    _, given = parse_args(list(argv), extra=("preset", *Config.__dataclass_fields__))
    preset = given.pop("preset", "cpu")
    if weights and "arch" not in given:  # the weights are for the architecture Kaggle trains, not the CPU preset's
        given["arch"] = Config.make("kaggle").arch
        print(f"--weights given: the dry run trains {given['arch']}, the architecture they are for (pass --arch to change)")
    Config.make(preset, **given)  # a bad name or value: one line now, not a failed cell later
    return preset, given


def _check_data(data: Path, out: Path, preset: str, overrides: dict) -> None:
    """Refuse --data that is not a competition the kernel can read, with the kernel's own checks."""
    if out.resolve() in [data, *data.parents]: raise UserError(f"--data {data} is inside --out {out}, which the build replaces; move it or pick another --out")
    cfg = Config.make(preset, **{**overrides, "data": str(data)})
    try:
        train_items(cfg, log=lambda *a: None)
        test_items(cfg, log=lambda *a: None)
    except UserError as e:
        raise UserError(f"--data {data}: {e}") from None


def execute(nb: nbformat.NotebookNode, cwd: Path) -> tuple[nbformat.NotebookNode, str | None]:
    """Run `nb` in `cwd` on CPU; returns it with outputs, and one line naming the failing cell, if any."""
    t0, running = time.time(), [0]
    first = lambda cell: (cell.source.strip().splitlines() or [""])[0]
    def started(cell, cell_index, **_):
        running[0] = cell_index
        if cell.cell_type == "code": print(f"  [{time.time() - t0:4.0f}s] cell {cell_index + 1}/{len(nb.cells)}: {first(cell)}", flush=True)
    # kernel_dirs=[]: the kernel is ipykernel on this very interpreter, whatever kernelspecs are installed
    km = AsyncKernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[]))
    client = NotebookClient(nb, km=km, timeout=None, on_cell_start=started, resources={"metadata": {"path": str(cwd)}})
    log = cwd / LOG
    try:
        with open(log, "w") as f:  # the kernel process's own chatter goes to a file; cell outputs go into the notebook
            client.execute(cleanup_kc=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, stdout=f, stderr=f)
    except (CellExecutionError, DeadKernelError) as e:
        why = f"{e.ename}: {e.evalue}" if isinstance(e, CellExecutionError) else f"the kernel died ({e}; see {log}); out of memory?"
        return nb, f"notebook cell {running[0] + 1} ({first(nb.cells[running[0]])}) failed: {why}"
    return nb, None


def dry_run(out: Path, data: str | None = None, overrides: list[str] = (), weights: str | None = None,
            user: str | None = None, wheels: list[str] = ()) -> Path:
    """Build into OUT, run the built notebook on CPU, and return OUT/submission.csv."""
    t0, out = time.time(), Path(out)
    preset, given = _overrides(overrides, bool(weights))
    if data is not None:
        data = Path(data).expanduser().resolve()
        _check_data(data, out, preset, given)
    try: user = metadata.username(user)
    except UserError:
        if user: raise
        user = "local"  # no Kaggle account needed to dry-run: the user only names the ids
    bundle.build(out, weights=weights, user=user, wheels=wheels)
    if data is None:
        print("generating the sample competition ...", flush=True)
        data = make_sample(out / "sample").resolve()

    kernel_meta = json.loads((out / "kernel" / metadata.KERNEL_FILE).read_text())
    built = nbformat.read(out / "kernel" / kernel_meta["code_file"], as_version=4)
    with tempfile.TemporaryDirectory(prefix="pkk-dry-run-site-") as site:
        nb = notebook.inject(built, data=str(data), dataset=str((out / "dataset").resolve()), out=str(out.resolve()),
                             preset=preset, overrides=given, target=site)
        print(f"running {out / 'kernel' / kernel_meta['code_file']} on CPU (preset {preset}) ...", flush=True)
        nb, failed = execute(nb, out)
    notebook.write(nb, out / EXECUTED)
    if failed: raise UserError(f"{failed}; see {out / EXECUTED}")

    submission = out / "submission.csv"
    minutes, seconds = divmod(round(time.time() - t0), 60)
    print(f"dry run finished in {minutes}m{seconds:02d}s\n  submission: {submission}\n  notebook:   {out / EXECUTED} (executed, with outputs)")
    answers = Path(data) / "test_answers.csv"
    if answers.is_file():
        print(f"  accuracy on the sample's answers: {accuracy(submission, answers):.3f}")
    return submission
