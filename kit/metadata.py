"""The two Kaggle metadata templates -> filled, checked metadata for the dataset and the kernel.

The user edits `dataset-metadata.json` and `kernel-metadata.json` at the top of the repo, writing
`{username}` where their Kaggle username goes. Kaggle checks these late (at push, or only when the
kernel runs) and tersely; here every rule the Kaggle client or site enforces is checked up front, each
broken rule reported as one line naming the file, the field and the fix.
"""
import json
import os
import re
import sys
from pathlib import Path

from slugify import slugify  # the very function the kaggle client derives slugs from titles with

from kernel.config import Config, accelerator
from kernel.errors import UserError

ROOT = Path(__file__).resolve().parents[1]  # where the templates live
DATASET_FILE, KERNEL_FILE = "dataset-metadata.json", "kernel-metadata.json"
PLACEHOLDER = "{username}"


def kaggle_config_dir() -> Path:
    """The kaggle client's config folder, found the way the client finds it (without importing it:
    `import kaggle` authenticates, and exits without credentials)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"): return Path(os.environ["KAGGLE_CONFIG_DIR"])
    home = Path.home() / ".kaggle"
    if home.exists() or not sys.platform.startswith("linux"): return home
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"


def username(user: str | None = None) -> str:
    """`user`, else $KAGGLE_USERNAME, else the username in the kaggle client's kaggle.json."""
    if not user and not (user := os.environ.get("KAGGLE_USERNAME")):
        try: user = json.loads((kaggle_config_dir() / "kaggle.json").read_text()).get("username")
        except (OSError, ValueError, AttributeError): user = None  # no usable file: say so below, once
    if not user:
        raise UserError(f"no Kaggle username to fill {PLACEHOLDER} in the metadata ids; pass --user NAME, "
                        "or set up Kaggle credentials (~/.kaggle/kaggle.json or KAGGLE_USERNAME)")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", user):
        raise UserError(f"Kaggle username {user!r} has characters a username cannot have; "
                        "pass your username with --user NAME")
    return user


def load(path: Path, user: str) -> dict:
    """A template, parsed, with `{username}` filled in every string."""
    try:
        meta = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read {path} ({e.strerror}); the repo's top level must hold it") from None
    except ValueError as e:
        raise UserError(f"{path} is not valid JSON ({e}); fix it there") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path} must hold one JSON object {{...}}; fix it there")
    fill = lambda v: (v.replace(PLACEHOLDER, user) if isinstance(v, str)
                      else [fill(x) for x in v] if isinstance(v, list) else v)
    return {k: fill(v) for k, v in meta.items()}


def _ref(meta: dict, key: str, what: str) -> tuple[str, str]:
    """`meta[key]` split into (owner, slug), refused unless it is `user/slug` with the slug in
    Kaggle's form."""
    ref = meta.get(key)
    m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9_-]*)/([^/]+)", ref) if isinstance(ref, str) else None
    if not m:
        raise UserError(f"{what} {key} {ref!r} is not of the form user/slug; "
                        f"write e.g. \"{PLACEHOLDER}/my-slug\"")
    if slugify(m[2]) != m[2]:
        raise UserError(f"{what} {key} {ref!r}: the slug must be lowercase letters, digits and "
                        f"single dashes, e.g. {slugify(m[2]) or 'my-slug'!r}")
    return m[1], m[2]


def _title(meta: dict, slug: str, what: str, lo: int, hi: int) -> str:
    """The title, refused unless it is lo..hi characters and Kaggle derives `slug` from it."""
    title = meta.get("title")
    if not isinstance(title, str) or not lo <= len(title) <= hi:
        raise UserError(f"{what} title {title!r} must be {lo} to {hi} characters; set \"title\"")
    if slugify(title) != slug:
        raise UserError(f"{what} title {title!r} resolves to the slug {slugify(title)!r}, "
                        f"not the id's {slug!r}; "
                        f"make them agree (Kaggle derives the slug from the title), e.g. title {slug!r}")
    return title


def check_dataset(meta: dict, what: str = DATASET_FILE) -> dict:
    """Refuse dataset metadata the kaggle client would refuse at `kaggle datasets create`, or that means
    something else than the user wrote (a title whose slug differs from the id)."""
    _, slug = _ref(meta, "id", what)
    if not 6 <= len(slug) <= 50:
        raise UserError(f"{what} id slug {slug!r} must be 6 to 50 characters")
    _title(meta, slug, what, 6, 50)
    licenses = meta.get("licenses")
    if not (isinstance(licenses, list) and len(licenses) == 1 and isinstance(licenses[0], dict)
            and licenses[0].get("name")):
        raise UserError(f"{what} must list exactly one license, "
                        f"e.g. \"licenses\": [{{\"name\": \"CC0-1.0\"}}]")
    subtitle = meta.get("subtitle")
    if subtitle and not (isinstance(subtitle, str) and 20 <= len(subtitle) <= 80):
        raise UserError(f"{what} subtitle must be 20 to 80 characters (or left out)")
    return meta


def check_kernel(meta: dict, dataset_id: str | None = None, what: str = KERNEL_FILE) -> dict:
    """Refuse kernel metadata that Kaggle refuses or runs wrongly: the id and title, a notebook in
    Python, internet off (code competitions require it), one competition, and our dataset attached."""
    _, slug = _ref(meta, "id", what)
    if len(slug) < 5:
        raise UserError(f"{what} id slug {slug!r} must be at least 5 characters")
    _title(meta, slug, what, 5, 50)
    code = meta.get("code_file")
    if not isinstance(code, str) or not code.endswith(".ipynb") or "/" in code:
        raise UserError(f"{what} code_file {code!r} must be a notebook file name, e.g. \"kernel.ipynb\"")
    for key, want in (("kernel_type", "notebook"), ("language", "python"), ("enable_internet", False)):
        if meta.get(key) != want:
            raise UserError(f"{what} {key} is {meta.get(key)!r}; it must be {json.dumps(want)}"
                            + (" (code competitions only accept kernels without internet)"
                               if key == "enable_internet" else ""))
    comps = meta.get("competition_sources")
    if not (isinstance(comps, list) and len(comps) == 1 and isinstance(comps[0], str) and comps[0]
            and slugify(comps[0]) == comps[0]):
        raise UserError(f"{what} competition_sources must name the one competition, "
                        "e.g. [\"paddy-disease-classification\"] (the slug in the competition's URL)")
    sources = meta.get("dataset_sources", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise UserError(f"{what} dataset_sources must be a list of \"user/slug\" strings")
    for s in sources: _ref({"dataset_sources": s}, "dataset_sources", what)
    if dataset_id and dataset_id not in sources:
        raise UserError(f"{what} dataset_sources {sources} does not attach the kit's dataset {dataset_id!r}; "
                        "add it")
    shape = meta.get("machine_shape")
    try:
        accelerator(shape)
    except UserError as e:
        raise UserError(f"{what} machine_shape: {e} (or pass --accelerator NAME)") from None
    if meta.get("enable_gpu") is not True:
        raise UserError(f"{what} enable_gpu is {meta.get('enable_gpu')!r}; "
                        "it must be true (the kit trains on GPUs)")
    return meta


def metadata(user: str, templates: Path = ROOT, machine: str | None = None) -> tuple[dict, dict]:
    """(dataset, kernel) metadata from the templates in `templates`, filled for `user` and checked.
    The kernel's dataset_sources gets the kit's dataset added: the notebook installs from it. `machine`
    (build's --accelerator) replaces the template's machine_shape."""
    dataset = check_dataset(load(templates / DATASET_FILE, user))
    kernel = load(templates / KERNEL_FILE, user)
    sources = kernel.get("dataset_sources", [])
    if isinstance(sources, list) and dataset["id"] not in sources:
        kernel["dataset_sources"] = [dataset["id"], *sources]
    kernel["machine_shape"] = machine or kernel.get("machine_shape") or Config.accelerator
    return dataset, check_kernel(kernel, dataset["id"])


def inference(kernel: dict, sources: list[str] | None = None) -> dict:
    """The inference kernel's metadata: the training kernel's, as `<id>-infer`, with the training kernel's
    output attached (kernel_sources) for its exported models; `sources`: every training kernel's, when the
    ensemble is split over several sessions."""
    meta = {**kernel, "id": f"{kernel['id']}-infer", "title": f"{kernel['title']}-infer",
            "code_file": "infer.ipynb", "kernel_sources": list(sources or [kernel["id"]])}
    return check_kernel(meta, kernel["dataset_sources"][0], f"{KERNEL_FILE} (inference kernel {meta['id']})")


def weights_dataset(dataset: dict, arch: str) -> dict:
    """The metadata of the dataset that holds `arch`'s pretrained weights, beside the code dataset `dataset`:
    its owner, `<arch>-weights` as slug and title (Kaggle's slug rules, at most 50 characters), its license.
    One per architecture, so the weights go up once and any kit kernel that trains `arch` attaches them."""
    slug = slugify(f"{arch} weights", max_length=50, word_boundary=False).strip("-")
    meta = {"id": f"{dataset['id'].split('/')[0]}/{slug}", "title": slug, "licenses": dataset["licenses"],
            "description": f"Pretrained weights of `{arch}` (the body, as timm names its tensors), for the "
                           "kernels of paddy-kernel-kit."}
    return check_dataset(meta, f"the weights dataset of {arch}")


def competition(kernel: dict) -> str:
    """The competition slug of checked kernel metadata."""
    return kernel["competition_sources"][0]
