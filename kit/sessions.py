"""An ensemble split over several Kaggle training kernels (`--sessions N`): which members go where, and what
push started.

    split(costs, n)    members -> sessions, balanced by estimated cost (longest first, each to the lightest)
    plan(cfg, kernel)  the sessions of a config: folder, kernel id and title, members, fingerprint, cost
    OUT/sessions.json  that plan, written by build (the same bytes every build)
    single(out)        the one session of a build without sessions.json

What push started is in the ledger (kit/ledger.py: `pushed`). One account runs at most two batch GPU sessions
at once (Kaggle refuses a third: "Maximum batch GPU session count of 2 reached"), so push starts two and the
others wait until a slot frees; `push --wait` and `submit` push them then. Each session is a full Kaggle
session of its own: its own time budget (the config's time_limit), only its members' weights attached, the one
code dataset.
"""
import json
import secrets
from dataclasses import replace
from pathlib import Path

from kernel.config import Config, accelerator
from kernel.errors import UserError

PLAN = "sessions.json"  # in OUT
RUNNING_MAX = 2  # batch GPU sessions an account may run at once (Kaggle's refusal of a third, observed)


def costs(cfg: Config) -> list[float]:
    """Each model's estimated T4 seconds (kernel/cost.py: its forward FLOPs x epochs x images, and its
    prediction), in the order of its members: what the split balances."""
    from kernel import cost  # torch, on the meta device: only when a build splits
    return [r.seconds for r in cost.table(cfg)]


def split(costs: list[float], n: int) -> list[list[int]]:
    """Indices of `costs` in `n` groups of near-equal total: longest-processing-time first, each to the group
    with the least so far (within 4/3 of the best split). Each group keeps the original order."""
    groups: list[list[int]] = [[] for _ in range(n)]
    totals = [0.0] * n
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        g = min(range(n), key=lambda g: (totals[g], g))
        groups[g].append(i)
        totals[g] += costs[i]
    return [sorted(g) for g in groups]


def folder(k: int) -> str:
    """The build folder of session `k` (1-based): kernel, kernel-2, ..."""
    return "kernel" if k == 1 else f"kernel-{k}"


def plan(cfg: Config, kernel_id: str, title: str) -> list[dict]:
    """The sessions of `cfg` (a Kaggle config with its `sessions`): for each, its folder, kernel id and title
    (`<slug>`, `<slug>-2`, ...), its members (as --members takes them) and their names, the fingerprint its
    run's manifest must carry, its estimated T4 hours (`hours`, one member after another; `wall`, side by
    side on the accelerator's GPUs) and its share of the estimated cost."""
    n = cfg.sessions
    if n == 1:
        return [{"session": 1, "folder": folder(1), "kernel": kernel_id, "title": title,
                 "members": None, "names": [m.name for m in cfg.members],
                 "weights": {m.name: m.weight for m in cfg.members},
                 "fingerprint": cfg.fingerprint(), "share": 1.0}]
    if len(cfg.members) < n:
        raise UserError(f"--sessions {n} needs at least {n} members to split, and the config has "
                        f"{len(cfg.members)}; give more --members or fewer --sessions")
    each, gpus = costs(cfg), max(1, accelerator(cfg.accelerator).gpus)
    sessions = []
    for k, group in enumerate(split(each, n), start=1):
        one = replace(cfg, members=tuple(cfg.members[i] for i in group), sessions=1)
        sessions.append({"session": k, "folder": folder(k),
                         "kernel": kernel_id if k == 1 else f"{kernel_id}-{k}",
                         "title": title if k == 1 else f"{title}-{k}",
                         "members": "; ".join(map(str, one.members)), "names": [m.name for m in one.members],
                         "weights": {m.name: m.weight for m in one.members},
                         "fingerprint": one.fingerprint(),
                         "hours": round(sum(each[i] for i in group) / 3600, 2),
                         # its members side by side on the session's GPUs, as kernel/ensemble.py queues them
                         "wall": round(max(sum(each[group[j]] for j in g)
                                           for g in split([each[i] for i in group], gpus)) / 3600, 2),
                         "share": round(sum(each[i] for i in group) / sum(each), 4)})
    return sessions


def read_plan(out: Path) -> list[dict] | None:
    """The sessions built under OUT; None for a build of one session (it writes no sessions.json)."""
    try: return json.loads((out / PLAN).read_text())["sessions"]
    except (OSError, ValueError, KeyError): return None


def single(out: Path) -> dict:
    """The one session of a build of one (no sessions.json): the training kernel built in OUT/kernel."""
    meta = json.loads((out / folder(1) / "kernel-metadata.json").read_text())
    return {"session": 1, "folder": folder(1), "kernel": meta["id"], "title": meta["title"], "members": None,
            "names": [], "weights": {}, "fingerprint": None}


def token() -> str:
    """A fresh run token: what push writes into a notebook and the run's manifest must carry."""
    return secrets.token_hex(8)


def run_ref(session: dict, pushed: dict) -> str:
    """The run push started for `session` (its entry in `pushed`, kit/ledger.py, has a version), as the Kaggle
    API names a kernel's version: "<kernel id>/<version>"."""
    return f"{session['kernel']}/{pushed[session['folder']]['version']}"
