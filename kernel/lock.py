"""One run per output folder: a second run on the same folder is refused while the first goes on.

Two trainers writing the same checkpoint and history would each resume from the other's half-finished
epochs. The lock is an flock on OUT/.lock: the kernel drops it when the process dies, even by SIGKILL,
so a crashed run never leaves a stale lock behind.
"""
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold OUT/.lock for the block; refuse in one line if another process holds it."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise UserError(f"{out} is in use by another run (pid {holder}); wait for it to finish, "
                            "or give this run another --out") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
