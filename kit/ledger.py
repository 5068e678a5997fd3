"""The ledger: every action with a cost on Kaggle, written down before it is made and settled after.

    OUT/ledger.json   {"entries": [...]}, oldest first; the build keeps it (it says what happened on Kaggle,
                      not what is built)

An entry is one action, found again by its key, the way a payment API finds a retried request by its
idempotency key:
- "dataset": a dataset created or versioned; key: the content hash that the version's marker file carries
  (kit/push.py), so Kaggle's file listing settles it;
- "push": a kernel version pushed, which Kaggle runs (a GPU session); key: the run token written into the
  pushed notebook's source, which Kaggle's GetKernel returns for every version;
- "submission": a submission; key: the marker at the end of its description, which ListSubmissions returns;
  the upload token of its file is kept on it until it is settled;
- "op": one `push` command, pending until it finished: a rerun of a push that did not finish carries it on
  (its "push" entries name it), one after a push that finished starts a new run.

Each starts "pending", written before the call. The answer settles it ("done", "started", "waiting",
"refused"); when the answer is lost, it stays pending, and the next run asks Kaggle by the key before doing
anything (kit/push.py and kit/submit.py: settle, then act). So a rerun after any failure carries on and never
repeats what took effect. This module only records: it never talks to Kaggle.
"""
import json
import time
from pathlib import Path

from kernel.atomic import atomic_write
from kernel.errors import UserError

LEDGER = "ledger.json"  # in OUT


class Ledger:
    """The entries of OUT/ledger.json. Each change is made to the file as it is now (read again first, so
    two Ledger objects of one OUT never undo each other's) and written at once, whole."""

    def __init__(self, out: Path):
        self.path = Path(out) / LEDGER
        self.entries = self._read()

    def _read(self) -> list[dict]:
        if not self.path.exists(): return []
        try: return json.loads(self.path.read_text())["entries"]
        except (OSError, ValueError, KeyError, TypeError) as e:  # never start over: that would redo it all
            raise UserError(f"{self.path} cannot be read ({type(e).__name__}): it says what was pushed and "
                            "submitted; restore it (or move it away to start afresh: push and submit then "
                            "ask Kaggle what it has)") from None

    def _change(self, entry: dict, new: bool) -> None:
        self.entries = self._read()
        if new: self.entries.append(entry)
        else:
            same = [i for i, e in enumerate(self.entries)
                    if (e["kind"], e["key"], e["at"]) == (entry["kind"], entry["key"], entry["at"])]
            if not same: raise UserError(f"{self.path} changed under this run (another push or submit on the "
                                         "same build folder?); rerun when that one is done")
            self.entries[same[0]] = entry
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.path) as tmp:
            tmp.write_text(json.dumps({"entries": self.entries}, indent=1, sort_keys=True) + "\n")

    def intend(self, kind: str, key: str, **fields) -> dict:
        """Write down action `kind` with `key` as pending, before it is made; the entry (its key and time
        name it: one key may be tried again, after a refusal)."""
        entry = {"kind": kind, "key": key, "state": "pending", "at": time.time(), **fields}
        self._change(entry, new=True)
        return entry

    def settle(self, entry: dict, state: str, **fields) -> dict:
        """What became of `entry`: its state (done, started, waiting, refused, ...) and what Kaggle said."""
        entry.update(state=state, **fields)
        self._change(entry, new=False)
        return entry

    def find(self, kind: str, **match) -> list[dict]:
        """The entries of `kind` whose fields equal `match`, oldest first."""
        return [e for e in self.entries if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())]

    def last(self, kind: str, **match) -> dict | None:
        found = self.find(kind, **match)
        return found[-1] if found else None

    def pending(self, kind: str) -> list[dict]:
        return [e for e in self.find(kind) if e["state"] == "pending"]


def pushed(out: Path) -> dict[str, dict]:
    """The training kernels of the latest push from OUT (its "op" entry: pending until that push command
    finished): {build folder: its latest "push" entry} (a session pushed again with `push --session K`
    replaces its entry; `version` is set once Kaggle started it)."""
    book = Ledger(out)
    op = book.last("op")
    found: dict[str, dict] = {}
    for e in book.find("push", role="train", op=op["key"]) if op else (): found[e["folder"]] = e
    return found
