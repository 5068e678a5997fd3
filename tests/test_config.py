"""Config (kernel.config): every field documents itself in the --help of every command, with each preset's
default, and every value out of a field's range is refused in one line."""
import math
import re
import subprocess
import sys

import pytest

import build
from conftest import ROOT, kernel_subprocess
from kernel import Config, UserError
from kernel.config import FIELDS, PRESETS, parse_args, parse_stages

BAD = [  # (field, value) a user might type, each outside what the field can mean
    ("lr", -1), ("lr", 0), ("lr", 2), ("lr", math.nan), ("lr", math.inf), ("wd", -5), ("wd", 3),
    ("body_lr", 0), ("body_lr", -0.1), ("body_lr", 1.5), ("freeze_epochs", -1),
    ("freeze_epochs", Config.make("cpu").stages[0].epochs + 1),
    ("valid_pct", -0.1), ("valid_pct", 1), ("seed", -1), ("seed", 2**32), ("weighted_epochs", -2),
    ("weight_power", -0.5), ("weight_power", 1.5), ("max_rotate", -10), ("max_rotate", 270),
    ("min_zoom", 0), ("min_zoom", -1), ("min_zoom", 1.2), ("max_zoom", 0), ("max_zoom", 20),
    ("max_warp", -0.1), ("max_warp", 1), ("max_lighting", -0.2), ("max_lighting", 1), ("min_scale", 0),
    ("min_scale", 1.5), ("mixup", -0.4), ("cutmix", -1), ("label_smoothing", -0.1), ("label_smoothing", 1),
    ("tta", -1), ("val_bs", -8), ("time_limit", -60), ("num_workers", -1), ("threads", 0),
    ("precision", "fp8"), ("progress", "bars"),
]


GOOD = [  # (field, value) at the edges of what the field can mean: each taken as given
    ("lr", 1), ("wd", 0), ("wd", 1), ("body_lr", 1), ("freeze_epochs", 0), ("freeze_epochs", 3),
    ("valid_pct", 0), ("seed", 0), ("seed", 2**32 - 1), ("weight_power", 0), ("weight_power", 1),
    ("max_rotate", 0), ("max_rotate", 180), ("min_zoom", 1.1), ("max_zoom", 10), ("max_warp", 0),
    ("min_scale", 1), ("label_smoothing", 0), ("tta", 0), ("time_limit", 0), ("precision", "fp16"),
    ("progress", "lines"),
]


def test_loader_workers_and_torch_threads_are_each_members_share_of_the_cores_unless_set():
    """A Kaggle T4 session: 4 cores, two members at a time, 2 workers and 2 threads each (not 4 workers
    each); one model takes them all; what the config sets is kept; a core at least."""
    kaggle = Config.make("kaggle")
    assert kaggle.num_workers is None and kaggle.threads is None  # not set: shared
    assert (kaggle.shared(2, cores=4).num_workers, kaggle.shared(2, cores=4).threads) == (2, 2)
    assert (kaggle.shared(1, cores=4).num_workers, kaggle.shared(1, cores=4).threads) == (4, 4)
    assert (kaggle.shared(3, cores=2).num_workers, kaggle.shared(3, cores=2).threads) == (1, 1)
    assert parse_args(["--num_workers", "6", "--threads", "3"]).shared(2, cores=4).num_workers == 6
    assert Config.make("cpu", threads=3).shared(2, cores=4).threads == 3
    assert Config.make("cpu").shared(2, cores=4).num_workers == 0  # the laptop presets load in-process


def test_the_ram_for_a_stages_decoded_images_is_each_members_share_unless_set():
    """3/4 of the free RAM (the rest for what grows after), split among the models training at once."""
    kaggle = Config.make("kaggle")
    assert kaggle.cache_share is None
    assert (kaggle.shared(1).cache_share, kaggle.shared(2).cache_share) == (0.75, 0.375)
    assert parse_args(["--cache_share", "0"]).shared(2).cache_share == 0  # off
    assert Config.make("cpu", cache_share=0.9).shared(2).cache_share == 0.9
    with pytest.raises(UserError, match="--cache_share 1.5 is out of range"): Config.make(cache_share=1.5)


@pytest.mark.parametrize("name, value", BAD)
def test_every_out_of_range_value_is_refused_in_one_line(name, value):
    with pytest.raises(UserError) as e:
        Config.make("cpu", **{name: value})
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"--{name} ") and str(value) in message.split()[1]


@pytest.mark.parametrize("name, value", GOOD)
def test_every_value_at_the_edge_of_a_range_is_taken(name, value):
    assert Config.make("cpu", **{name: value}).to_dict()[name] == value


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "kernel.train", "--lr", "-1"],
    [sys.executable, str(ROOT / "build.py"), "build", "--user", "someone", "--wd", "-5"],
    [sys.executable, str(ROOT / "build.py"), "dry-run", "--max_rotate", "-3"],
])
def test_the_command_line_refuses_them_before_doing_anything(command, tmp_path):
    r = subprocess.run([*command, "--out", str(tmp_path / "out")], capture_output=True, text=True,
                       timeout=300, **kernel_subprocess())
    assert r.returncode == 2 and r.stderr.strip().startswith("error: ") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "out of range" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def helps(capsys) -> dict[str, str]:
    """--help of every command that takes Config options, whitespace collapsed."""
    texts = {}
    for name, argv in (("train", None), ("build", ["build"]), ("dry-run", ["dry-run"]), ("push", ["push"])):
        with pytest.raises(SystemExit):
            parse_args(["--help"]) if argv is None else build.main([*argv, "--help"])
        texts[name] = " ".join(capsys.readouterr().out.split())
    return texts


def test_every_option_says_what_it_does_its_unit_and_each_presets_default_in_every_commands_help(
        capsys, monkeypatch):
    # a preset added later shows up in every option's help, with its own values
    monkeypatch.setitem(PRESETS, "laptop", dict(lr=0.02, tta=7, arch="resnet18"))
    texts = helps(capsys)
    for command, text in texts.items():
        listed = text.split(" options: ", 1)[1]  # past the usage lines
        chunks = re.split(r" (?=--\w+(?: TEXT| INT| FLOAT|, --no-))", listed)
        option = {m[1]: c for c in chunks if (m := re.match(r"--(\w+)(?: TEXT| INT| FLOAT|, --no-)", c))}
        expected = [f for f in FIELDS if command == "train" or f not in build.NOT_AT_BUILD]
        assert sorted(option) == sorted(expected), command
        for f in expected:
            values = {p: Config.make(p).to_dict()[f] for p in PRESETS}
            assert re.search(r"\w+ .* \[.+\]; default", option[f]), (command, f, option[f])  # unit, range
            if len(set(map(str, values.values()))) > 1:
                for p in ("kaggle", "cpu", "laptop", "no preset"): assert f" {p} " in option[f], (command, f)
        assert "learning rate" in option["lr"] and "(0, 1]" in option["lr"]
        assert ("kaggle 0.005, cpu 0.01, cpu-scratch 0.005, rttt 0.005, laptop 0.02, no preset 0.005"
                in option["lr"])
        assert "kaggle 4, cpu 2, cpu-scratch 2, rttt 4, laptop 7, no preset 4" in option["tta"]
        assert "[degrees, in [0, 180]]" in option["max_rotate"] and "[seconds" in option["time_limit"]


def test_members_with_their_own_stages_survive_the_round_trip_through_text():
    """A member's stages are written back as --stages takes them, so a build's notebook (which carries the
    config as text) gives the kernel the very members the laptop planned."""
    cfg = Config.make("rttt")
    again = Config.make(None, **cfg.to_dict())
    assert again.members == cfg.members
    assert dict(again.members[1].overrides)["stages"] == parse_stages("320x224:13:64:auto")
