"""Which `kernel` the tests import, and the Kaggle pass's rules (tests/run).

The repo root is appended to sys.path, not prepended: an installed kernel wheel on the path wins (the
Kaggle pass installs the built wheel as the notebook does and puts it on PYTHONPATH), the repo's
kernel/ is used otherwise (`python -m pytest` from the repo root puts the root first anyway).
With PKK_EXPECT_WHEEL=1 the run stops at once if `kernel` came from anywhere but an installed wheel.
"""
import os
import signal
import sys
import tempfile
from pathlib import Path

import pytest

# No test reaches the Hugging Face hub: offline, with an empty cache of its own (a test that needs pretrained
# weights lays them out there itself, see lay_out_hub). Set before anything imports huggingface_hub.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="pkk-tests-hf-home-")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.append(str(ROOT))

import kernel  # noqa: E402  now, before bench/pipeline.py puts the repo root first on sys.path

KERNEL_HOME = Path(kernel.__file__).resolve().parents[1]  # the folder `import kernel` found it in


def kernel_subprocess() -> dict:
    """subprocess.run/Popen keywords for `python -m kernel.<module>` that import this same `kernel`:
    cwd, which `-m` puts first on sys.path, is the folder it lives in, and PYTHONPATH starts with it."""
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(KERNEL_HOME), os.environ.get("PYTHONPATH")]))}
    return dict(cwd=KERNEL_HOME, env=env)


def as_a_terminal_job() -> None:
    """preexec_fn for a test of Ctrl-C: SIGINT handled as in a terminal's foreground job. tests/run runs half of
    the tests as a background job, which bash (no job control) starts with SIGINT ignored; its children inherit
    that, and Python leaves an ignored SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def pytest_configure(config):
    if os.environ.get("PKK_EXPECT_WHEEL") == "1" and (
            ROOT in Path(kernel.__file__).resolve().parents
            or not list(KERNEL_HOME.glob("paddy_kernel_kit-*.dist-info"))):
        raise pytest.UsageError(f"PKK_EXPECT_WHEEL=1 but kernel was imported from {kernel.__file__}, "
                                "not from an installed paddy-kernel-kit wheel; "
                                "run the Kaggle pass with tests/run")


def pytest_ignore_collect(collection_path, config):
    """Under `-m kernel` (or `-m "kernel and ..."`) a test module not marked kernel is not even imported: the
    laptop-side ones need packages (nbformat, nbclient, the kaggle client) that the Kaggle-versions env does
    not have."""
    if ((config.option.markexpr or "").split()[:1] == ["kernel"] and collection_path.name.startswith("test_")
            and collection_path.suffix == ".py"):
        return "pytestmark = pytest.mark.kernel" not in collection_path.read_text() or None


def lay_out_hub(hf_home: Path, arch: str) -> dict:
    """A Hugging Face hub cache under `hf_home` holding timm's weights for `arch`
    (e.g. test_resnet.r160_in1k), as a download would leave it (kit.weights.lay_out_hub).
    The weights are a fresh model's, moved off their initial values as trained weights are; returns them."""
    import timm
    import torch

    from kit.weights import lay_out_hub as lay_out
    g = torch.Generator().manual_seed(0)
    state = {k: (v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v).contiguous()
             for k, v in timm.create_model(arch.split(".")[0], pretrained=False).state_dict().items()}
    lay_out(hf_home, arch, state)
    return state
