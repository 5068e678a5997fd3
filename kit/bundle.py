"""`build.py build`: the Kaggle dataset and the kernel, under OUT, the same bytes every time.

    OUT/dataset/  the code dataset: paddy_kernel_kit-<version>-py3-none-any.whl, any extra wheels (--wheel),
                  dataset-metadata.json
    OUT/weights/<arch>-weights/  one dataset per architecture trained: its pretrained weights
                  (`<arch>.safetensors` fetched through timm, or the --weights file), dataset-metadata.json;
                  apart from the code, so that a code change never uploads them again
    OUT/kernel/   the training notebook, kernel-metadata.json (machine_shape: the accelerator; the code and
                  weights datasets attached)
    OUT/infer/    the inference notebook, its kernel-metadata.json (`<id>-infer`, the training kernel
                  attached)
    with --sessions N (the members split over N training kernels, balanced by estimated cost):
    OUT/kernel-2/ ... the other sessions' notebooks (`<id>-2`, ...), each with its members and its members'
                  weights datasets; OUT/infer attaches them all; OUT/sessions.json says who is where

On Kaggle the notebook installs the dataset's wheels with `pip install --no-index --no-deps`: nothing
from the internet, and Kaggle's torch and fastai are never replaced. Everything is built in a temporary
folder beside OUT and renamed into place at the end, so a failed build leaves OUT as it was.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from kernel.config import Config
from kernel.errors import UserError

from . import metadata, notebook, sessions
from .ledger import LEDGER
from .preflight import preflight
from .weights import Unavailable, fetch

SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the oldest a zip can say: wheel timestamps never vary
CREDENTIALS = {"kaggle.json", "access_token"}  # the kaggle client's credential files: never shipped


def pip(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run this interpreter's pip, offline and blind to pip's config files and PIP_* variables (a local
    find-links would satisfy what Kaggle cannot), capturing its output."""
    return subprocess.run([sys.executable, "-m", "pip", "--isolated", *args, "--no-index",
                           "--disable-pip-version-check"],
                          capture_output=True, text=True, env=env)


def pip_error(done: subprocess.CompletedProcess) -> str:
    """pip's last ERROR line: the one that names what went wrong."""
    lines = ([l for l in (done.stderr + done.stdout).splitlines() if l.startswith("ERROR")]
             or done.stderr.strip().splitlines() or ["?"])
    return lines[-1].removeprefix("ERROR: ")


def kernel_wheel(dest: Path) -> Path:
    """Build the `kernel` package's wheel into `dest`, reproducibly.

    Built from a copy of only pyproject.toml and kernel/*.py, so neither stray files (caches, a
    kaggle.json) nor edits elsewhere (the README) get in or change its bytes.
    """
    with tempfile.TemporaryDirectory(prefix="pkk-wheel-") as src:
        shutil.copyfile(metadata.ROOT / "pyproject.toml", Path(src) / "pyproject.toml")
        (Path(src) / "kernel").mkdir()
        for f in sorted((metadata.ROOT / "kernel").glob("*.py")):
            shutil.copyfile(f, Path(src) / "kernel" / f.name)
        done = pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), src,
                   env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
    if done.returncode:
        raise UserError(f"could not build the kernel wheel: {pip_error(done)}")
    return next(dest.glob("paddy_kernel_kit-*.whl"))


def check_wheels(folder: Path, wheels: list[Path]) -> None:
    """Refuse extra wheels whose requirements are met neither here nor by the wheels in `folder`.

    The notebook installs them with --no-deps, so a requirement met by nothing is an ImportError on
    Kaggle. This environment stands in for Kaggle's image (it has torch, fastai, timm); pip resolves
    offline and installs nothing (--dry-run).
    """
    if not wheels: return
    done = pip("install", "--dry-run", "--find-links", str(folder), *map(str, wheels))
    if done.returncode:
        raise UserError(f"the extra wheels' requirements are not met offline ({pip_error(done)}); "
                        "add a wheel for what is missing with --wheel FILE")


def _input(path: str | Path, flag: str, suffix: str | None = None) -> Path:
    """A file the user passed, checked to exist and not to be a credential."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{flag} {path}: no such file; give the path to an existing file")
    if p.name in CREDENTIALS:
        raise UserError(f"{flag} {path} is a Kaggle credential file; "
                        "it must never go into a dataset")
    if suffix and p.suffix != suffix:
        raise UserError(f"{flag} {path} is not a {suffix} file; "
                        "give a wheel built for Kaggle's Python")
    return p


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def replace_dir(tmp: Path, out: Path) -> None:
    """Put the folder `tmp` where `out` is, replacing it; `out` is whole before and after."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
        out.rename(old / out.name)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def build(out: Path, overrides: dict | None = None, weights: str | Path | None = None,
          pretrained: bool = True, user: str | None = None, wheels: list[str | Path] = (),
          templates: Path = metadata.ROOT, dry_run: bool = False) -> Path:
    """Build OUT/dataset, OUT/kernel (training) and OUT/infer (inference) from the templates; returns OUT.

    `overrides` are kernel.Config fields for the Kaggle run (over the kaggle preset); the preflight checks
    them against the accelerator, and each session's output against Kaggle's 20 GB. Pretrained weights:
    `weights` (a file), else those of each architecture the config trains, fetched through timm;
    `pretrained=False`: none. When they cannot be had, a build stops; a dry run (`dry_run`) says so and builds
    without them.
    """
    out, overrides = Path(out), dict(overrides or {})
    machine = overrides.get("accelerator")
    dataset_meta, kernel_meta = metadata.metadata(metadata.username(user), templates, machine)
    overrides.setdefault("accelerator", kernel_meta["machine_shape"])
    if overrides["accelerator"] == Config.accelerator: del overrides["accelerator"]  # the default: no noise
    cfg = Config.make("kaggle", **overrides)
    plan = sessions.plan(cfg, kernel_meta["id"], kernel_meta["title"])
    infer_meta = metadata.inference(kernel_meta, [s["kernel"] for s in plan])
    weights = _input(weights, "--weights") if weights else None
    wheels = [_input(w, "--wheel", ".whl") for w in wheels]
    if out.exists() and not (out.is_dir() and (not any(out.iterdir())
                                               or (out / "dataset" / metadata.DATASET_FILE).is_file())):
        raise UserError(f"--out {out} exists and is not a build folder (the build replaces it whole); "
                        "pick another --out")
    preflight(cfg, names=[s["names"] for s in plan])  # before anything is downloaded or written
    out.parent.mkdir(parents=True, exist_ok=True)
    # beside OUT: the rename stays on one disk
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        dataset, infer = tmp / "dataset", tmp / "infer"
        for d in (dataset, infer): d.mkdir()
        kernel_wheel(dataset)
        for w in wheels: shutil.copyfile(w, dataset / w.name)
        check_wheels(dataset, [dataset / w.name for w in wheels])
        shipped, weight_sets = _weights(cfg, tmp / "weights", dataset_meta, weights, pretrained, dry_run)
        _write_json(dataset / metadata.DATASET_FILE, dataset_meta)
        competition = metadata.competition(kernel_meta)
        for s in plan:  # one training kernel per session: its members, its architectures' weights only
            archs = {c.arch for c in cfg.models()} if len(plan) == 1 else {
                c.arch for c, m in zip(cfg.models(), cfg.members) if m.name in s["names"]}
            sets = [w for a, w in weight_sets.items() if weights or a in archs]
            meta = {**kernel_meta, "id": s["kernel"], "title": s["title"],
                    "dataset_sources": kernel_meta["dataset_sources"]
                    + [w for w in sets if w not in kernel_meta["dataset_sources"]]}
            metadata.check_kernel(meta, dataset_meta["id"], f"{metadata.KERNEL_FILE} (session {s['session']})")
            given = overrides if len(plan) == 1 else {
                **{k: v for k, v in overrides.items() if k != "sessions"}, "members": s["members"]}
            (tmp / s["folder"]).mkdir()
            nb = notebook.notebook(meta["title"], competition, dataset_meta["id"], given, shipped, sets)
            notebook.write(nb, tmp / s["folder"] / meta["code_file"])
            _write_json(tmp / s["folder"] / metadata.KERNEL_FILE, meta)
        if len(plan) > 1: _write_json(tmp / sessions.PLAN, {"sessions": plan})
        nb = notebook.inference_notebook(infer_meta["title"], competition, dataset_meta["id"],
                                         [s["kernel"] for s in plan])
        notebook.write(nb, infer / infer_meta["code_file"])
        _write_json(infer / metadata.KERNEL_FILE, infer_meta)
        if (out / LEDGER).is_file():  # what happened on Kaggle, not what is built
            shutil.copyfile(out / LEDGER, tmp / LEDGER)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = ", ".join(sorted(p.name for p in (out / "dataset").iterdir()))
    if weight_sets: files += f"; weights in {', '.join(weight_sets.values())}"
    kernels = ", ".join(f"{out / s['folder']} ({s['kernel']}" + (
        f": {', '.join(s['names'])}, {s['share']:.0%} of the estimated cost, ~{s['wall']:.1f} h on its GPUs"
        if len(plan) > 1 else "") + ")" for s in plan)
    print(f"built {out / 'dataset'} ({dataset_meta['id']}: {files}), {kernels} "
          f"on {kernel_meta['machine_shape']}, and {out / 'infer'} ({infer_meta['id']})")
    over = [s for s in plan if len(plan) > 1 and cfg.time_limit and s["wall"] * 3600 > cfg.time_limit]
    for s in over:  # an estimate within ~2x: a warning, and the time budget cuts epochs so that it predicts
        print(f"warning: session {s['session']} ({', '.join(s['names'])}) is estimated at {s['wall']:.1f} h, "
              f"more than its time limit ({cfg.time_limit / 3600:.1f} h): its time budget will cut epochs; "
              "more --sessions, or fewer epochs, would avoid it")
    return out


def _weights(cfg: Config, folder: Path, dataset_meta: dict, weights: Path | None, pretrained: bool,
             dry_run: bool) -> tuple[str | None, dict[str, str]]:
    """Put the pretrained weights into a dataset of their own per architecture, under FOLDER; (what the
    notebook's `weights` parameter says of them, {architecture: the id of its dataset})."""
    if not (weights or pretrained): return None, {}
    archs = [cfg.arch] if weights else sorted({c.arch for c in cfg.models()})
    sets = {}
    for arch in archs:
        meta = metadata.weights_dataset(dataset_meta, arch)
        sets[arch] = folder / meta["id"].split("/")[1]
        sets[arch].mkdir(parents=True)
        _write_json(sets[arch] / metadata.DATASET_FILE, meta)
    ids = {a: f"{dataset_meta['id'].split('/')[0]}/{d.name}" for a, d in sets.items()}
    if weights:
        shutil.copyfile(weights, sets[cfg.arch] / weights.name)
        return weights.name, ids
    try:
        for arch in archs: print(f"pretrained weights for {arch}: {fetch(arch, sets[arch]).name}")
    except Unavailable as e:
        if not dry_run: raise
        print(f"no pretrained weights: {e.args[0].split('; ')[0]}; the dry run goes on without them")
        shutil.rmtree(folder)
        return None, {}
    return ".", ids
