"""`--preset rttt`: Road to the Top part 3's eight runs as members, through the memory preflight, the time
plan and the output plan at build, offline (no weights are needed for any)."""
import os
import re
import subprocess
import sys
from pathlib import Path

from kernel import plan
from kernel.config import PRESETS, Config

ROOT = Path(__file__).resolve().parents[1]


def test_the_preset_is_the_published_recipe_with_each_member_at_the_size_it_trains():
    cfg = Config.make("kaggle", **PRESETS["rttt"])
    assert cfg.sessions == 2 and 0 < cfg.time_limit < 12 * 3600
    got = {m.name: (c.arch.split(".")[0], c.resize, ",".join(map(str, c.stages)), m.weight)
           for m, c in zip(cfg.members, plan.models(cfg))}
    assert got == {
        "convnext-224": ("convnext_large", "crop", "224x224:13:64:auto", 1.0),
        "convnext-320": ("convnext_large", "crop", "320x224:13:64:auto", 1.0),
        "vit-squish": ("vit_large_patch16_224", "squish", "224x224:13:64:auto", 2.0),
        "vit-crop": ("vit_large_patch16_224", "crop", "224x224:13:64:auto", 2.0),
        "swinv2-squish": ("swinv2_large_window12_192", "squish", "192x192:13:64:auto", 1.0),  # its native size
        "swinv2-crop": ("swinv2_large_window12_192", "crop", "192x192:13:64:auto", 1.0),
        "swin-squish": ("swin_large_patch4_window7_224", "squish", "224x224:13:64:auto", 1.0),
        "swin-crop": ("swin_large_patch4_window7_224", "crop", "224x224:13:64:auto", 1.0)}
    assert len({c.seed for c in cfg.models()}) == 8  # each its own validation split, as in the notebook


def test_build_with_the_preset_passes_the_preflight_and_prints_the_time_plan_before_any_download(tmp_path):
    """Offline with nothing cached: every stage fits a T4 at an accumulation resolved, the time plan has a
    line per member, and only then does the build stop, in one line, at the weights it cannot fetch."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty-hf-home")}
    done = subprocess.run([sys.executable, str(ROOT / "build.py"), "build", "--preset", "rttt", "--user",
                           "alice", "--out", str(tmp_path / "out")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=600)
    out = done.stdout
    stages = re.findall(r"^  (\S+)\s+(\d+x\d+)\s+batch 64 = (\d+) x (\d+)\s+[\d.]+ GiB  (.*)$", out, re.M)
    assert {(a.split(".")[0], s) for a, s, *_ in stages} == {
        ("convnext_large", "224x224"), ("convnext_large", "320x224"), ("vit_large_patch16_224", "224x224"),
        ("swinv2_large_window12_192", "192x192"), ("swin_large_patch4_window7_224", "224x224")}, out
    assert all(int(a) * int(m) == 64 and fits == "fits  (accum auto)" for _, _, a, m, fits in stages), out
    plan_lines = re.findall(r"^  (\S+)\s+(\S+|\(one T4 after another\))\s+([\d.]+) h", out, re.M)
    assert [n for n, *_ in plan_lines] == [m.name for m in Config.make("rttt").members] + ["total"]
    hours = {n: float(h) for n, _, h in plan_lines}
    assert hours["vit-squish"] == hours["vit-crop"] > hours["convnext-320"] > hours["convnext-224"] > 0
    assert hours["total"] < 2 * 4 * 11.5  # under two sessions of two T4s for 11.5 hours
    # each session's output (four large models' exports, ~3.6 GB) against the 20 GB Kaggle keeps of it
    sessions = re.findall(r"^  session (\d) +(\d) models +([\d.]+) GB, +([\d.]+) GB at its peak .*  fits$",
                          out, re.M)
    assert [(k, n) for k, n, *_ in sessions] == [("1", "4"), ("2", "4")], out
    assert all(3 < float(total) < float(peak) < 20 for *_, total, peak in sessions), out
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot get the pretrained weights of convnext_large.fb_in22k"), last


def test_a_cpu_preset_is_refused_for_a_kaggle_run_in_one_line():
    """build and push lay --preset over the Kaggle run: a CPU preset would give a GPU session CPU devices."""
    done = subprocess.run([sys.executable, str(ROOT / "build.py"), "push", "--preset", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == ("error: --preset cpu trains on a CPU, not a Kaggle GPU; for push give one of kaggle, "
                           "rttt (or try it here with dry-run --preset)\n")
