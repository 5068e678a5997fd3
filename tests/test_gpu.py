"""On a CUDA GPU only (`pytest -m gpu`; skipped without one): a resume on the GPU, fp16 with the run's one
GradScaler. Not run yet: no GPU has been lent to the sessions that wrote them (bench/README.md, GPU memory)."""
from pathlib import Path

import pytest
import torch

from kernel import Config, checkpoint
from kernel.sample import make_sample
from kernel.train import run
from test_train import Killed, Probe

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_sample(tmp_path_factory.mktemp("comp") / "small", n_train=60, n_test=12, seed=1)


def test_a_run_resumed_on_the_gpu_steps_with_its_state_on_the_gpu(small, tmp_path):
    """Killed after its first epoch, resumed: the first step after the resume runs (CPU Adam state would
    meet CUDA gradients there), with every optimiser state tensor and the scaler's scale on the GPU, the
    scale the one saved."""
    cfg = Config.make("cpu-scratch", data=str(small), out=str(tmp_path / "out"), arch="test_resnet",
                      stages="64x48:1:8:1,64x48:1:8:2", tta=0, precision="fp16")

    def kill(learn, _):
        if learn.epoch == 1: raise Killed("killed")
    with pytest.raises(Killed):
        run(cfg, cbs=[Probe(kill, "before_epoch")], log=lambda *_: None)
    saved = torch.load(checkpoint.path(Path(cfg.out)), weights_only=False)
    seen = []

    def look(learn, _):
        if not seen:
            states = [v for s in learn.opt.state.values() for v in s.values() if torch.is_tensor(v)]
            seen.append(({v.device.type for v in states}, learn.scaler._scale.device.type,
                         learn.scaler.get_scale()))
    run(cfg, cbs=[Probe(look, "after_step")], log=lambda *_: None)
    devices, scale_device, scale = seen[0]
    assert devices == {"cuda"} and scale_device == "cuda"
    assert scale in (saved["scaler"]["scale"], saved["scaler"]["scale"] / 2)  # halved if that step overflowed
