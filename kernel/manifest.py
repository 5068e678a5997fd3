"""Which run an output folder is: manifest.json beside probs.csv (a run token, the config's fingerprint, the
member names).

Kaggle attaches a notebook's *latest* output to the kernels that use it and does not say which version that
is. A split ensemble is fanned in from several training kernels' outputs, so each output names the run that
made it: `push` writes a fresh run token into every notebook it pushes and records it, the training notebook
writes it here once its run is over, and the fan-in (the inference notebook, or `submit` on the laptop) refuses
an output whose token is not the one push recorded. No torch, no pandas: the laptop reads it too.
"""
import json
from pathlib import Path

from .atomic import atomic_write
from .config import Config
from .errors import UserError

MANIFEST = "manifest.json"


def write(out: str | Path, cfg: Config, token: str | None) -> Path:
    """OUT/manifest.json for the run of `cfg` that push started with `token` (None: not pushed by the kit)."""
    path = Path(out) / MANIFEST
    body = {"token": token, "fingerprint": cfg.fingerprint(), "members": [m.name for m in cfg.members]}
    with atomic_write(path) as tmp: tmp.write_text(json.dumps(body, indent=1) + "\n")
    return path


def read(folder: str | Path) -> dict:
    try: return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError): return {}


def check(folder: str | Path, token: str | None, what: str = "", fix: str = "",
          fingerprint: str | None = None) -> dict:
    """The manifest in `folder`, refused in one line unless it carries `token` (None: any) and, when given,
    the config `fingerprint` the build recorded."""
    found = read(folder)
    fix = fix or "wait for the run, or push it again"
    if token is not None and found.get("token") != token:
        said = f"run token {found['token']}" if found.get("token") else f"no {MANIFEST}"
        raise UserError(f"{what or folder} is not the run push started (it has {said}, push started "
                        f"{token}): Kaggle attached an older output, or the run is not over; {fix}")
    if fingerprint is not None and found.get("fingerprint") != fingerprint:
        raise UserError(f"{what or folder} was trained under another config (fingerprint "
                        f"{found.get('fingerprint')}, this build's is {fingerprint}); {fix}")
    return found
