"""Write a file whole or not at all: into a temp file beside it, renamed over it at the end.

A run killed mid-write (SIGKILL, a kernel timeout) leaves the old file, never half of a new one.
"""
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """`with atomic_write(p) as tmp: write(tmp)` -> `p` replaced by what was written, once it is complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
