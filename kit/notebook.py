"""The kernel notebooks: install the kit's wheels offline, take parameters, call the kernel package, show
results.

Written with nbformat: valid nbformat 4.5, `kernelspec` and `language_info` set (Kaggle refuses a notebook
without a kernel name), no outputs, fixed cell ids (so building twice gives the same bytes), and one
cell tagged `parameters` which the dry run overrides papermill-style, by a cell injected after it.
The training code is in the `paddy-kernel-kit` wheel; the notebook only calls it.
"""
import json
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from kernel.atomic import atomic_write

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
LANGUAGE_INFO = {"name": "python", "file_extension": ".py", "mimetype": "text/x-python",
                 "codemirror_mode": {"name": "ipython", "version": 3}, "pygments_lexer": "ipython3",
                 "nbconvert_exporter": "python"}

INSTALL = '''\
import glob, os, platform, shutil, subprocess, sys

def mounted(path):
    """`path`, or where this Kaggle image mounted the same input: /kaggle/input/<slug>,
    /kaggle/input/competitions/<slug>, /kaggle/input/datasets/<owner>/<slug>, ... (found by its slug)."""
    slug = os.path.basename(path.rstrip("/"))
    found = (glob.glob(f"/kaggle/input/{slug}") + glob.glob(f"/kaggle/input/*/{slug}")
             + glob.glob(f"/kaggle/input/*/*/{slug}"))
    for p in [path, *sorted(found)]:
        if os.path.isdir(p): return p
    raise FileNotFoundError(f"{path} is not mounted: attach it to the notebook "
                            "(kernel-metadata.json sources)")

{mounts}
# Every wheel in the dataset, offline and without dependencies: Kaggle's torch and fastai stay as they are.
wheels = sorted(glob.glob(os.path.join(dataset, "*.whl")))
pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check",
       *wheels]
done = subprocess.run(pip + (["--target", target] if target else []), capture_output=True, text=True)
print(done.stdout, done.stderr)
if done.returncode:
    raise RuntimeError(f"pip could not install {wheels} offline: "
                       f"{(done.stderr.strip().splitlines() or ['?'])[-1]}")
if target: sys.path.insert(0, target)
import fastai, kernel, timm, torch
print("kernel", kernel.__version__, "from", os.path.dirname(kernel.__file__))
print(f"python {platform.python_version()}, torch {torch.__version__}, fastai {fastai.__version__}, "
      f"timm {timm.__version__}")
# nvidia-smi, not torch.cuda: no CUDA context here, which the members on the same GPU would lose memory to
smi = shutil.which("nvidia-smi") and subprocess.run(
    ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
    capture_output=True, text=True).stdout.strip()
print("GPUs:", "; ".join(smi.splitlines()) if smi else "none")'''

TRAIN = '''\
import kernel.ensemble
if weights and weights_datasets:  # looked for in every weights dataset (one per architecture, mounted apart)
    weights = os.pathsep.join(os.path.join(mounted(d), weights) for d in weights_datasets)
cfg = kernel.Config.make(preset, data=data, out=out, weights=weights, **overrides)
submission = kernel.ensemble.run(cfg, token=run_token)  # the token: which run this output is (manifest.json)'''

PLOTS = '''\
import base64
from IPython.display import HTML, display
# how training went (history.png) beside the confusion matrix: for the run, and for each ensemble member
found = glob.glob(os.path.join(out, "**", "*.png"), recursive=True)
for folder in sorted({os.path.dirname(p) for p in found}):
    pngs = [p for n in ("history.png", "confusion.png") if os.path.isfile(p := os.path.join(folder, n))]
    print(", ".join(pngs))
    display(HTML("".join(f'<img style="max-width:49%" src="data:image/png;base64,'
                         f'{base64.b64encode(open(p, "rb").read()).decode()}">' for p in pngs)))'''

PREDICT = '''\
import kernel.manifest, kernel.predict
for m, token in zip(models, tokens or [None] * len(models)):  # an older output attached: one line
    kernel.manifest.check(m, token, f"the output attached at {m}", "rerun `python build.py submit`")
submission = kernel.predict.run(models, data, out, tta=tta)'''

SUBMISSION = '''\
import pandas as pd
print(submission)
pd.read_csv(submission).head()'''


def install(mounts: str) -> str:
    """The install cell, with `mounts` the line that finds this notebook's inputs."""
    return INSTALL.replace("{mounts}", mounts)


def _notebook(cells: list[tuple[str, nbformat.NotebookNode]]) -> nbformat.NotebookNode:
    for cid, cell in cells: cell.id = cid
    nb = new_notebook(cells=[c for _, c in cells],
                      metadata={"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO})
    nbformat.validate(nb)
    return nb


def _params(lines: list[str]) -> nbformat.NotebookNode:
    return new_code_cell("\n".join(lines), metadata={"tags": ["parameters"]})


def _inputs(competition: str, dataset_id: str) -> list[str]:
    owner, slug = dataset_id.split("/")
    return [f"data = '/kaggle/input/competitions/{competition}'  # the competition's files",
            f"dataset = '/kaggle/input/datasets/{owner}/{slug}'  "
            "# the kit's dataset: wheels and pretrained weights",
            "out = '/kaggle/working'  # submission.csv, models, plots, checkpoints"]


TARGET = "target = None  # None: install into this environment; a folder: install there (the dry run)"


def notebook(title: str, competition: str, dataset_id: str, overrides: dict, weights: str | None,
             weight_sets: list[str] = ()) -> nbformat.NotebookNode:
    """The training notebook, for Kaggle's paths: the kit's dataset installs, `overrides` (the kernel.Config
    fields given to build) over the kaggle preset, pretrained `weights` from the weights datasets
    `weight_sets` (ids)."""
    params = [*_inputs(competition, dataset_id),
              "preset = 'kaggle'  # a kernel.Config preset: kaggle, or cpu for the dry run",
              f"overrides = {overrides!r}  "
              f"# any kernel.Config field, e.g. {{'tta': 8, 'members': 'a seed=1; b seed=2'}}",
              f"weights = {weights!r}  # in the weights datasets: '.' = <arch>.safetensors for each arch, "
              "or a file; None: from scratch",
              f"weights_datasets = {[f'/kaggle/input/datasets/{w}' for w in weight_sets]!r}  "
              "# one per architecture, uploaded once",
              "run_token = None  # push writes the run's own: the output's manifest.json names it",
              TARGET]
    return _notebook([
        ("title", new_markdown_cell(
            f"# {title}\n\nTrains an image classifier with fastai on the `{competition}` competition "
            "and writes `/kaggle/working/submission.csv` and the exported models. The training code is "
            f"the `paddy-kernel-kit` wheel in the dataset `{dataset_id}`; this notebook installs it "
            "offline, sets the parameters and calls it.")),
        ("parameters", _params(params)),
        ("install", new_code_cell(install("data, dataset = mounted(data), mounted(dataset)"))),
        ("train", new_code_cell(TRAIN)),
        ("plots", new_code_cell(PLOTS)),
        ("submission", new_code_cell(SUBMISSION)),
    ])


def inference_notebook(title: str, competition: str, dataset_id: str,
                       train_kernels: list[str]) -> nbformat.NotebookNode:
    """The inference notebook: the training kernels' outputs attached (one per session), their exported
    models predict the test images, all members averaged with their weights, nothing is trained. Short
    enough for a code competition's rerun on the hidden test set."""
    outputs = [f"/kaggle/input/{k.split('/')[1]}" for k in train_kernels]
    params = [*_inputs(competition, dataset_id),
              f"models = {outputs!r}  "
              "# the training kernels' outputs: exported models",
              "tokens = None  # the run token each output's manifest must carry (submit sets them); None: any",
              "tta = None  # augmented passes; None: each model's own setting",
              TARGET]
    kernels = ", ".join(f"`{k}`" for k in train_kernels)
    return _notebook([
        ("title", new_markdown_cell(
            f"# {title}\n\nPredicts the `{competition}` test images with the models exported by the kernel"
            f"{'s' if len(train_kernels) > 1 else ''} {kernels} (attached as inputs) and writes "
            "`/kaggle/working/submission.csv`. No training.")),
        ("parameters", _params(params)),
        ("install", new_code_cell(
            install("data, dataset = mounted(data), mounted(dataset)\nmodels = [mounted(m) for m in models]"))),
        ("predict", new_code_cell(PREDICT)),
        ("submission", new_code_cell(SUBMISSION)),
    ])


def inject(nb: nbformat.NotebookNode, by: str = "the dry run", **values) -> nbformat.NotebookNode:
    """A copy of `nb` with a cell after the `parameters` cell that assigns `values` (papermill's
    convention); `by` says who in its first line."""
    nb = nbformat.from_dict(nb)  # a deep copy: the built notebook stays as pushed
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = new_code_cell(f"# Injected by {by}\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items()),
                         metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    nb.cells.insert(at + 1, cell)
    return nb


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write `nb` (nbformat's stable JSON) whole or not at all."""
    with atomic_write(path) as tmp: nbformat.write(nb, str(tmp))


def values(nb: nbformat.NotebookNode) -> dict:
    """What the `parameters` cell of `nb`, and any cell injected after it, set."""
    found: dict = {}
    for c in nb.cells:
        if {"parameters", "injected-parameters"} & set(c.metadata.get("tags", [])): exec(c.source, found)
    return {k: v for k, v in found.items() if not k.startswith("__")}


def parameters(folder: Path) -> dict:
    """What the `parameters` cell of the notebook built in `folder` sets (data, overrides, weights ...)."""
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    return values(nbformat.read(folder / meta["code_file"], as_version=4))


def stamp(folder: Path, dest: Path, by: str, **values_) -> Path:
    """DEST: the kernel built in FOLDER (kernel-metadata.json and notebook) with `values_` injected after its
    parameters, to push as it is (the build stays as built). Written whole: a copy beside, then renamed."""
    import shutil
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    nb = inject(nbformat.read(folder / meta["code_file"], as_version=4), by, **values_)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copyfile(folder / "kernel-metadata.json", tmp / "kernel-metadata.json")
    nbformat.write(nb, str(tmp / meta["code_file"]))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest
