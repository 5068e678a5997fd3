"""bench/gpu_check.py, the one script for the first GPU lent: without CUDA it gets as far as CUDA is needed,
says so for each section, and exits 0 in seconds."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["peak", "resolve", "pytest", "scaler", "oom", "devices", "checkpoint", "channels_last"]


def test_without_cuda_each_section_says_it_needs_cuda_and_the_script_exits_0():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no CUDA, on a GPU machine too: not the real run
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert sum(line.endswith(": needs CUDA, skipped") for line in lines) == len(SECTIONS)
    for name in SECTIONS:  # the summary table: one row a section
        assert f"| {name} | needs CUDA, skipped | 0 |" in lines, done.stdout
