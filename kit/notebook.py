"""The kernel notebook: install the kit's wheels offline, take parameters, call `kernel.train.run`, show results.

Written with nbformat: valid nbformat 4.5, `kernelspec` and `language_info` set (Kaggle refuses a notebook
without a kernel name), no outputs, fixed cell ids (so building twice gives the same bytes), and one
cell tagged `parameters` which the dry run overrides papermill-style, by a cell injected after it.
The training code is in the `paddy-kernel-kit` wheel; the notebook only calls it.
"""
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from kernel.atomic import atomic_write

KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
LANGUAGE_INFO = {"name": "python", "file_extension": ".py", "mimetype": "text/x-python",
                 "codemirror_mode": {"name": "ipython", "version": 3}, "pygments_lexer": "ipython3",
                 "nbconvert_exporter": "python"}

INSTALL = '''\
import glob, os, subprocess, sys

def mounted(path):
    """`path`, or where this Kaggle image mounted the same input: /kaggle/input/<slug>,
    /kaggle/input/competitions/<slug> or /kaggle/input/datasets/<owner>/<slug>."""
    slug = os.path.basename(path.rstrip("/"))
    for p in [path, *sorted(glob.glob(f"/kaggle/input/{slug}") + glob.glob(f"/kaggle/input/*/{slug}") + glob.glob(f"/kaggle/input/*/*/{slug}"))]:
        if os.path.isdir(p): return p
    raise FileNotFoundError(f"{path} is not mounted: attach it to the notebook (kernel-metadata.json sources)")

data, dataset = mounted(data), mounted(dataset)
# Every wheel in the dataset, offline and without dependencies: Kaggle's torch and fastai stay as they are.
wheels = sorted(glob.glob(os.path.join(dataset, "*.whl")))
pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--disable-pip-version-check", *wheels]
done = subprocess.run(pip + (["--target", target] if target else []), capture_output=True, text=True)
print(done.stdout, done.stderr)
if done.returncode: raise RuntimeError(f"pip could not install {wheels} offline: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
if target: sys.path.insert(0, target)
import kernel
print("kernel", kernel.__version__, "from", os.path.dirname(kernel.__file__))'''

TRAIN = '''\
import kernel.train
cfg = kernel.Config.make(preset, data=data, out=out, weights=weights and os.path.join(dataset, weights), **overrides)
submission = kernel.train.run(cfg)'''

PLOTS = '''\
from IPython.display import Image, display
display(Image(os.path.join(out, "schedule.png")), Image(os.path.join(out, "confusion.png")))'''

SUBMISSION = '''\
import pandas as pd
print(submission)
pd.read_csv(submission).head()'''


def notebook(title: str, competition: str, dataset_id: str, weights: str | None) -> nbformat.NotebookNode:
    """The kernel notebook, for Kaggle's paths, with the ids of the competition and the kit's dataset."""
    owner, slug = dataset_id.split("/")
    params = "\n".join([
        f"data = '/kaggle/input/competitions/{competition}'  # the competition's files",
        f"dataset = '/kaggle/input/datasets/{owner}/{slug}'  # the kit's dataset: wheels (and weights)",
        "out = '/kaggle/working'  # submission.csv, plots, checkpoints",
        f"weights = {weights!r}  # pretrained weights file in the dataset, or None",
        "preset = 'kaggle'  # a kernel.Config preset: kaggle, or cpu for the dry run",
        "overrides = {}  # any kernel.Config field, e.g. {'tta': 8}",
        "target = None  # None: install into this environment; a folder: install there (the dry run)",
    ])
    cells = [
        ("title", new_markdown_cell(
            f"# {title}\n\nTrains an image classifier with fastai on the `{competition}` competition and writes "
            f"`/kaggle/working/submission.csv`. The training code is the `paddy-kernel-kit` wheel in the dataset "
            f"`{dataset_id}`; this notebook installs it offline, sets the parameters and calls it.")),
        ("parameters", new_code_cell(params, metadata={"tags": ["parameters"]})),
        ("install", new_code_cell(INSTALL)),
        ("train", new_code_cell(TRAIN)),
        ("plots", new_code_cell(PLOTS)),
        ("submission", new_code_cell(SUBMISSION)),
    ]
    for cid, cell in cells: cell.id = cid
    nb = new_notebook(cells=[c for _, c in cells], metadata={"kernelspec": KERNELSPEC, "language_info": LANGUAGE_INFO})
    nbformat.validate(nb)
    return nb


def inject(nb: nbformat.NotebookNode, **values) -> nbformat.NotebookNode:
    """A copy of `nb` with a cell after the `parameters` cell that assigns `values` (papermill's convention)."""
    nb = nbformat.from_dict(nb)  # a deep copy: the built notebook stays as pushed
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    cell = new_code_cell("# Injected by the dry run\n" + "\n".join(f"{k} = {v!r}" for k, v in values.items()),
                         metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    nb.cells.insert(at + 1, cell)
    return nb


def write(nb: nbformat.NotebookNode, path: Path) -> None:
    """Write `nb` (nbformat's stable JSON) whole or not at all."""
    with atomic_write(path) as tmp: nbformat.write(nb, str(tmp))
