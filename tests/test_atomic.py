"""kernel/atomic.py: a write that dies half-way leaves the old file whole, and no temp file."""
import pytest

from kernel.atomic import atomic_write

pytestmark = pytest.mark.kernel


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "submission.csv"
    path.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as tmp:
            tmp.write_text("half a fi")
            raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["submission.csv"]
    with atomic_write(path) as tmp:
        tmp.write_text("new\n")
        assert path.read_text() == "old\n"  # not before the write is complete
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["submission.csv"]
