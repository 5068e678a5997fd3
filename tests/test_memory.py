"""kernel.memory against real torch: real models, real CPU forward and backward passes, real allocations.

The estimate runs on fake CUDA tensors; what can be checked without a GPU is checked against the real thing
on the CPU in fp32 (the same graph, the same saved tensors, the same autograd engine), and the CUDA-only
part, autocast's fp16 policy, against a small model whose saved tensors are counted by hand.
"""
import pytest
import torch
import torch.nn.functional as F
from fastai.vision.learner import create_timm_model
from torch import nn
from torch.profiler import ProfilerActivity, profile

from kernel import memory, model

pytestmark = pytest.mark.kernel  # runs inside the notebook: also tested on Kaggle's versions (tests/run)

N_OUT = 10


def real_model(arch: str) -> nn.Module:
    torch.manual_seed(0)
    return create_timm_model(arch, N_OUT, pretrained=False)[0].train()


def real_loss(net: nn.Module, size: tuple[int, int], bs: int) -> torch.Tensor:
    x, y = torch.randn(bs, 3, *size), torch.randint(0, N_OUT, (bs,))
    return F.cross_entropy(net(x).float(), y)


def rounded(nbytes: int) -> int: return -(-nbytes // memory.BLOCK) * memory.BLOCK


@pytest.mark.parametrize("arch", ["test_convnext", "test_resnet"])
def test_weights_grads_and_adam_state_are_those_of_the_real_model(arch):
    net = real_model(arch)
    real_loss(net, (64, 48), 4).backward()
    trained = sum(p.numel() for p in net.parameters() if p.grad is not None)  # fastai's Adam skips the others
    e = memory.estimate(arch, N_OUT, (64, 48), 4)
    assert e.weights == sum(t.numel() * t.element_size() for t in [*net.parameters(), *net.buffers()])
    assert (e.grads, e.optimizer) == (4 * trained, 8 * trained)
    if arch == "test_convnext":  # timm's head norm, which fastai's head replaces, gets no gradient
        assert trained < sum(p.numel() for p in net.parameters())


def test_model_is_the_training_model_on_meta_and_built_once():
    m, real = model.meta_net("test_convnext", N_OUT), real_model("test_convnext")
    assert model.meta_net("test_convnext", N_OUT) is m
    assert {t.device.type for t in [*m.parameters(), *m.buffers()]} == {"meta"}
    shapes = lambda net: [(k, v.shape) for k, v in net.state_dict().items()]
    assert shapes(m) == shapes(real)


@pytest.mark.parametrize("arch", ["test_convnext", "test_resnet", "resnet10t"])
def test_saved_activations_match_a_real_forward(arch):
    """fp32: what the fake CUDA forward saves = what the same hooks see a real CPU forward save.

    Within 1%: CUDA really does save a little differently (a bool dropout mask where the CPU saves an fp32
    one; empty cuDNN batch-norm reserves), in the fastai head's few hundred bytes per image.
    """
    size, bs = (96, 64), 6
    net = real_model(arch)
    resident = {id(t.untyped_storage()) for t in [*net.parameters(), *net.buffers()]}
    seen: dict[int, tuple] = {}

    def pack(t):
        st = t.untyped_storage()
        if id(st) not in resident: seen.setdefault(id(st), (st, rounded(st.nbytes())))
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        real_loss(net, size, bs)
    real = sum(n for _, n in seen.values())
    assert memory.estimate(arch, N_OUT, size, bs, fp16=False).activations == pytest.approx(real, rel=0.01)


@pytest.mark.parametrize("size, bs", [((64, 48), 4), ((128, 96), 8)])
def test_peak_matches_a_real_cpu_step_measured_by_the_profiler(size, bs):
    """fp32: the step's simulated peak (`activations + workspace` less the cuDNN allowance) against the real
    CPU allocator's peak, from the profiler's allocation and free events, in a real forward and
    `loss.backward()` (torch's own engine, not ours), gradients already allocated as under fastai.

    oneDNN is off: it keeps reordered weight copies and scratch that a GPU step does not have. 3%: the CPU
    kernels' own temporaries (and the fp32 dropout mask) differ a little from the CUDA ones simulated.
    """
    net = real_model("test_convnext")
    real_loss(net, size, bs).backward()  # gradients exist and are zeroed in place from then on, as in fastai
    for p in net.parameters():
        if p.grad is not None: p.grad.zero_()
    with torch.backends.mkldnn.flags(enabled=False):
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            real_loss(net, size, bs).backward()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")  # +bytes allocated, -bytes freed
    live = peak = 0
    for _, n in events:
        live += n
        peak = max(peak, live)
    e = memory.estimate("test_convnext", N_OUT, size, bs, fp16=False)
    assert e.activations + e.workspace - memory.CUDNN_WORKSPACE == pytest.approx(peak, rel=0.03)


@pytest.mark.parametrize("arch", ["test_convnext", "test_resnet"])
def test_python_backward_computes_what_the_engine_computes(arch):
    """The stand-in for the autograd engine (which needs a GPU for CUDA tensors) on real CPU tensors: the same
    gradients as `loss.backward()`: the same nodes, each once, broadcasts summed, gradients accumulated."""
    net = real_model(arch)
    torch.manual_seed(1)
    loss = real_loss(net, (64, 48), 4)
    loss.backward(retain_graph=True)
    expected = {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}
    for p in net.parameters(): p.grad = None
    with torch.no_grad():
        memory._backward([loss.grad_fn, torch.ones_like(loss)], memory._consumers(loss.grad_fn))
    got = {k: p.grad for k, p in net.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for k in expected: torch.testing.assert_close(got[k], expected[k], rtol=1e-4, atol=1e-6, msg=k)


class Tiny(nn.Module):
    """Conv, a channels-last LayerNorm (as in ConvNeXt), a linear head."""
    def __init__(self):
        super().__init__()
        self.conv, self.norm = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.LayerNorm(8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x): return self.fc(self.norm(self.conv(x).permute(0, 2, 3, 1)).mean((1, 2)))


def test_fp16_saves_what_cuda_autocast_saves():
    """CUDA's autocast policy, on fake CUDA tensors without a GPU: the saved bytes counted by hand."""
    with torch.device("meta"):
        net = Tiny()
    b, hw = 2, 32 * 32
    cuda_fp16 = (b * 3 * hw * 2  # the conv's input, cast to fp16
                 + rounded(8 * 3 * 3 * 3 * 2)  # the conv's weight, cast to fp16
                 + b * hw * 8 * 4  # layer_norm runs in fp32 on CUDA: its input is cast back up, and saved
                 + 2 * b * hw * 4  # its mean and rstd, fp32
                 + 5 * memory.BLOCK)  # fc input and weight in fp16, log_softmax out, target, total weight
    fp32 = (b * 3 * hw * 4 + b * hw * 8 * 4 + 2 * b * hw * 4  # input, conv output, mean and rstd
            + 4 * memory.BLOCK)  # the conv weight and the fc's are parameters: not activations
    assert memory._train_step(net, (32, 32), b, fp16=True)[2] == cuda_fp16
    assert memory._train_step(net, (32, 32), b, fp16=False)[2] == fp32
    assert not torch.is_autocast_enabled("cuda")  # switched back off


def test_activations_grow_linearly_with_batch_and_pixels():
    """Saved activations are affine in the batch: a per-image part, plus what every batch saves once (the fp16
    weight copies, per-channel statistics). That part found from batches 4 and 8, the per-image part must be
    exactly 2x from 8 to 16 (to the 512-byte rounding, 1%) and 4x from 64x64 to 128x128 (sizes divisible by
    32, so every downsampling halves exactly; the head's pooled features do not grow: 3%)."""
    act = lambda size, bs: memory.estimate("test_convnext", N_OUT, size, bs).activations
    a4, a8, a16 = (act((64, 64), b) for b in (4, 8, 16))
    fixed = 2 * a4 - a8
    assert fixed > 0  # the weight copies
    assert a16 - fixed == pytest.approx(2 * (a8 - fixed), rel=0.01)
    assert act((128, 128), 8) - fixed == pytest.approx(4 * (a8 - fixed), rel=0.03)
    small = memory.estimate("test_convnext", N_OUT, (64, 64), 4)
    large = memory.estimate("test_convnext", N_OUT, (128, 128), 16)
    assert (small.weights, small.grads, small.optimizer) == (large.weights, large.grads, large.optimizer)
    assert large.workspace > small.workspace


def test_fit_accum_picks_the_smallest_accumulation_that_fits():
    arch, size = "test_convnext", (64, 48)
    need = {mb: memory.estimate(arch, N_OUT, size, mb).total for mb in (2, 4, 8, 16)}
    assert need[2] < need[4] < need[8] < need[16]
    assert memory.fit_accum(arch, N_OUT, size, 16, need[16]) == 1
    assert memory.fit_accum(arch, N_OUT, size, 16, need[8] + 1) == 2
    assert memory.fit_accum(arch, N_OUT, size, 16, need[8] - 1) == 4
    assert memory.fit_accum(arch, N_OUT, size, 16, need[2] - 1) is None
    assert memory.fit_accum(arch, N_OUT, size, 12, need[4]) == 3  # 12 = 3 x 4: accum divides bs
    for capacity in range(need[2], need[16] + 1, (need[16] - need[2]) // 7):
        accum = memory.fit_accum(arch, N_OUT, size, 12, capacity)
        assert 12 % accum == 0 and memory.estimate(arch, N_OUT, size, 12 // accum).total <= capacity
    with pytest.raises(ValueError, match="micro-batch 1"):
        memory.estimate(arch, N_OUT, size, 1)


def test_largest_batch_and_inference_peak():
    arch, size = "test_convnext", (64, 48)
    inf = memory.inference_peak(arch, N_OUT, size, 20)
    train = memory.estimate(arch, N_OUT, size, 20)
    assert inf.activations == 0 and (inf.grads, inf.optimizer) == (train.grads, train.optimizer)
    assert inf.workspace < train.workspace + train.activations  # nothing kept for a backward
    assert memory.inference_peak(arch, N_OUT, size, 21).total > inf.total
    assert memory.largest_batch(arch, N_OUT, size, inf.total, limit=64) == 20
    assert memory.largest_batch(arch, N_OUT, size, inf.total - 1, limit=64) == 19
    assert memory.largest_batch(arch, N_OUT, size, inf.total, limit=16) == 16
    assert memory.largest_batch(arch, N_OUT, size, memory.inference_peak(arch, N_OUT, size, 1).total - 1) == 0
    assert model.meta_net(arch, N_OUT).training  # put back in train mode
