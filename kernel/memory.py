"""Peak GPU memory of each training stage, estimated on a CPU laptop in seconds: no GPU, no real convolution.

A run that runs out of GPU memory at its largest stage, hours in, loses everything. `estimate` says what
one training step of `kernel.train` needs, per part, before anything is pushed:

    weights      parameters and buffers (fp32: fastai's `to_fp16` keeps fp32 master weights and autocasts)
    grads        one fp32 gradient per trained parameter; fastai's `zero_grad` zeroes them in place: they stay
    optimizer    fastai's Adam: `grad_avg` and `sqr_avg`, fp32, per trained parameter
    activations  what autograd saves for backward at the micro-batch, counted once per storage
    workspace    what the step's peak adds on top: the batch, gradients in flight, temporaries, cuDNN/cuBLAS
    allocator    the caching allocator's reserved-but-unused memory at the peak
    context      the CUDA context (cuDNN and cuBLAS kernels loaded), outside torch's allocator

How. `model.meta_net` builds the very model training builds (`model.timm_net`) on the meta device: shapes, no
weights. `estimate` then runs one forward and backward of that model on fake tensors
(`torch._subclasses.FakeTensorMode`, kernels that compute only shapes and dtypes; no fallback to real
kernels) that claim to live on 'cuda'. On a CPU-only build of torch such tensors still carry CUDA's dispatch
keys, so CUDA's autocast policy, the one compiled into torch, picks every dtype as it will on the T4:
convolutions and matmuls in fp16 with fp16 copies of the weights (cached and saved for backward),
layer_norm, softmax and the loss in fp32, batch_norm and elementwise ops in their input's dtype. CPU autocast
with float16 was the alternative and is less faithful: its policy differs (it keeps layer_norm in fp16, and a
ConvNeXt saves every LayerNorm's input in fp32 on CUDA). Two things refuse to work without a GPU, and both
are replaced by their equivalent here:

- `torch.autocast('cuda')` disables itself when no GPU is present: `_cuda_autocast` sets the same
  thread-local switches it sets (`torch.set_autocast_enabled`, `set_autocast_dtype`, nesting, cache).
- the autograd engine will not start a CUDA device thread without a GPU ("hasPrimaryContext expects a valid
  device index"): `_backward` walks the graph as the engine does, in Python (see there).

A dispatch mode (`_Live`) registers the storage of every tensor an op creates, rounded up as the caching
allocator rounds, and a weakref on the storage takes it off when it dies: live bytes and their peak through
the step, as the allocator sees them. Saved-tensor hooks (`torch.autograd.graph.saved_tensors_hooks`) list
what autograd keeps for backward; parameters and buffers are not activations, but the fp16 casts of weights
that autocast makes and convolutions save are, and each storage counts once however many nodes save it.

Not simulated, so allowed for or left out: convolution workspaces (`CUDNN_WORKSPACE`), the allocator's slack
(`ALLOCATOR_SLACK`), the context (`CONTEXT`); fastai's augmentation on the GPU (before the forward, a few
copies of the batch: far below the step's peak); the optimizer step (after backward has freed the
activations). Attention: without a GPU, fake CUDA tensors take `scaled_dot_product_attention`'s math path,
which saves each attention matrix; a T4 runs the memory-efficient kernel, which does not. Estimates for ViTs
are therefore high (safe); ConvNeXt and ResNets have no attention.

An estimate costs 2-4 seconds on a laptop CPU for convnext_small at 448x336, micro-batch 16 (about 3,500
fake ops forward, 5,000 backward; `bench/memory.py` prints the times). Same figures on torch 2.10 (Kaggle's)
and 2.14. tests/test_memory.py checks it against real CPU runs in fp32; on a GPU, bench/memory.py puts the
measured peak beside it (not run yet: no GPU so far).
"""
import bisect
import functools
import heapq
import math
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from .model import meta_net

GiB = 2**30
# The CUDA context is outside torch's allocator statistics, yet on the card: the driver's context and the
# kernels loaded into it. Since CUDA 11.7 kernels load lazily (CUDA_MODULE_LOADING=LAZY, torch's default) and
# the context is ~300-430 MiB once created (PyTorch maintainers in pytorch/pytorch#107667 and #109888; 426 MiB
# measured with torch 2.10 in unslothai/unsloth-zoo#1053), plus the cuDNN and cuBLAS kernels a run loads.
# 0.5 GiB, unmeasured on a T4: bench/memory.py measures it (device memory in use less torch's reserved).
CONTEXT = GiB // 2
# Convolution and matmul workspaces come from torch's caching allocator but no fake tensor shows them. cuBLAS
# keeps one of ~8 MiB per handle (torch's default CUBLAS_WORKSPACE_CONFIG, off Hopper); cuDNN's is taken per
# call and freed after it, and the algorithms picked for fp16 convolutions need from nothing to a few hundred
# MiB. An allowance, not a measurement: bench/memory.py on a GPU is where to check it.
CUDNN_WORKSPACE = 256 * 2**20
# The caching allocator keeps freed blocks and splits them for reuse; at the peak part of what it reserved is
# free, in pieces too small or in the wrong place. Training at a fixed shape is the benign case, the same
# sizes every step (a training run in pytorch/pytorch#44742 peaks at 14,766 MiB reserved for 14,341 allocated,
# 3%), but kernel.train does not empty the cache between stages: a stage starts in blocks cut for the last
# one. 10%, to be checked with bench/memory.py.
ALLOCATOR_SLACK = 0.10
# cudaMalloc'ed blocks are handed out in multiples of 512 bytes (the allocator's kMinBlockSize).
BLOCK = 512


@dataclass(frozen=True)
class Estimate:
    """Peak GPU memory of one training step (or one inference batch), in bytes, by part."""
    weights: int
    grads: int
    optimizer: int
    activations: int
    workspace: int
    allocator: int
    context: int

    @property
    def total(self) -> int: return sum(getattr(self, f.name) for f in fields(self))

    def __str__(self) -> str:
        parts = ", ".join(f"{f.name} {getattr(self, f.name) / GiB:.2f}" for f in fields(self))
        return f"{self.total / GiB:.2f} GiB ({parts})"


def estimate(arch: str, n_out: int, size: tuple[int, int], micro_bs: int, fp16: bool = True) -> Estimate:
    """Peak GPU memory of one training step of `micro_bs` images of `size` (h, w), as `kernel.train` runs it.

    Gradient accumulation does not change the peak (the gradients are there either way): pass bs // accum.
    `fp16=False` is the fp32 step `kernel.train` runs without CUDA.
    """
    if micro_bs < 2:  # rather than torch's "Expected more than 1 value per channel" from deep inside
        raise ValueError(f"micro-batch {micro_bs}: training needs 2 or more (fastai's head has BatchNorm1d)")
    return _estimate(arch, n_out, tuple(size), micro_bs, fp16, train=True)


def inference_peak(arch: str, n_out: int, size: tuple[int, int], bs: int, fp16: bool = True, *,
                   resident: bool = True) -> Estimate:
    """Peak GPU memory of a validation or TTA batch of `bs` images (eval mode, no grad).

    `resident`: training's gradients and optimizer state are allocated beside the model (validation, in
    training), so they count; else the model alone (prediction once training is released). Nothing is saved
    for backward.
    """
    return _estimate(arch, n_out, tuple(size), bs, fp16, train=False, resident=resident)


def fit_accum(arch: str, n_out: int, size: tuple[int, int], bs: int, capacity: int,
              fp16: bool = True) -> int | None:
    """The smallest accumulation dividing `bs` whose micro-batch fits in `capacity` bytes; None if none does.

    Micro-batches of one are not tried: fastai's head (BatchNorm1d) cannot train on them.
    """
    accums = [a for a in range(1, bs // 2 + 1) if bs % a == 0]  # micro-batch shrinks as accum grows: bisect
    fits = lambda a: estimate(arch, n_out, size, bs // a, fp16).total <= capacity
    i = bisect.bisect_left(accums, True, key=fits)
    return accums[i] if i < len(accums) else None


def largest_batch(arch: str, n_out: int, size: tuple[int, int], capacity: int, fp16: bool = True,
                  limit: int = 1024, *, resident: bool = True) -> int:
    """The largest inference batch (up to `limit`) that fits in `capacity` bytes, e.g. for the validation
    and TTA batch size; 0 if not even one image fits. `resident` as for `inference_peak`."""
    fits = lambda bs: inference_peak(arch, n_out, size, bs, fp16, resident=resident).total <= capacity
    return bisect.bisect_left(range(1, limit + 1), True, key=lambda bs: not fits(bs))  # = how many fit


@functools.lru_cache(maxsize=64)
def _estimate(arch: str, n_out: int, size: tuple[int, int], bs: int, fp16: bool, train: bool,
              resident: bool = True) -> Estimate:
    net = meta_net(arch, n_out)
    weights = sum(_bytes(t) for t in [*net.parameters(), *net.buffers()])
    if train:
        trained, peak, activations = _train_step(net, size, bs, fp16)
    else:  # the gradients and Adam state that training leaves behind: those of a training step at this size
        trained, activations = _estimate(arch, n_out, size, 2, fp16, True).grads, 0
        peak = _inference(net, size, bs, fp16)
    # Only parameters that backward reaches get a gradient and Adam state (fastai's optimizer skips those
    # whose grad is None, e.g. the norm of timm's head, which fastai's head replaces). fp32 like the weights.
    grads, optimizer = (trained, 2 * trained) if train or resident else (0, 0)
    # (The optimizer step itself adds at most two temporaries of the largest parameter, after the activations
    # are freed: never the peak.)
    workspace = peak - activations + CUDNN_WORKSPACE
    allocator = math.ceil(ALLOCATOR_SLACK * (weights + grads + optimizer + activations + workspace))
    return Estimate(weights, grads, optimizer, activations, workspace, allocator, CONTEXT)


def _train_step(net: nn.Module, size: tuple[int, int], bs: int, fp16: bool) -> tuple[int, int, int]:
    """One training step on fake CUDA tensors: (bytes of the trained parameters, peak bytes alive beyond the
    model and its gradients, bytes saved for backward at the end of the forward)."""
    with FakeTensorMode(allow_fallback_kernels=False), _Live() as live:
        state = {k: _fake(v) for k, v in [*net.named_parameters(), *net.named_buffers()]}
        for t in state.values():  # fastai zeroes gradients in place: after the first step they are there
            if t.requires_grad: t.grad = torch.zeros_like(t)
        live.reset()  # the model and its gradients are counted apart
        x = torch.empty(bs, 3, *size, device="cuda")  # the batch, held by the Learner through the step
        y = torch.zeros(bs, dtype=torch.long, device="cuda")
        saved = _Saved({id(t.untyped_storage()) for t in state.values()})
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            with _cuda_autocast(fp16):  # fastai's MixedPrecision: the model and the loss under autocast
                loss = F.cross_entropy(functional_call(net, state, (x,)).float(), y)
        pending = _consumers(loss.grad_fn)
        reached = {id(node.variable) for node in pending if hasattr(node, "variable")}  # AccumulateGrad
        for t in state.values():
            if t.requires_grad and id(t) not in reached: t.grad = None
        todo = [loss.grad_fn, torch.ones_like(loss)]
        del loss
        with torch.no_grad():  # as the engine runs backward (no create_graph): grads accumulate in place
            _backward(todo, pending)
        trained = sum(_bytes(t) for t in state.values() if t.grad is not None)
        return trained, live.peak, saved.bytes


def _inference(net: nn.Module, size: tuple[int, int], bs: int, fp16: bool) -> int:
    """Peak bytes alive beyond the model in an eval-mode, no-grad forward of `bs` images, on fake CUDA."""
    with FakeTensorMode(allow_fallback_kernels=False), _Live() as live:
        state = {k: _fake(v) for k, v in [*net.named_parameters(), *net.named_buffers()]}
        live.reset()
        x = torch.empty(bs, 3, *size, device="cuda")
        try:
            with torch.no_grad(), _cuda_autocast(fp16):
                functional_call(net.eval(), state, (x,))
        finally:
            net.train()
        return live.peak


def _fake(t: torch.Tensor) -> torch.Tensor:
    """A fake CUDA tensor like meta tensor `t` (a leaf that requires grad if `t` does); in FakeTensorMode."""
    fake = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cuda")
    return fake.requires_grad_(t.requires_grad)


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@contextmanager
def _cuda_autocast(enabled: bool = True):
    """`torch.autocast('cuda', dtype=torch.float16)`, which turns itself off without a GPU: its switches."""
    if not enabled:
        yield
        return
    prev = (torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"),
            torch.is_autocast_cache_enabled())
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", torch.float16)
    torch.autocast_increment_nesting()
    torch.set_autocast_cache_enabled(True)
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0: torch.clear_autocast_cache()  # the fp16 weight casts
        torch.set_autocast_enabled("cuda", prev[0])
        torch.set_autocast_dtype("cuda", prev[1])
        torch.set_autocast_cache_enabled(prev[2])


class _Live(TorchDispatchMode):
    """Bytes of tensor storage alive, and their peak, as the caching allocator sees them.

    Every op's new output storages are registered (views, in-place results add nothing), rounded up to the
    allocator's blocks; a weakref callback takes a storage off when its last tensor dies.
    """
    def __init__(self):
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.refs: dict[int, weakref.ref] = {}
        self.live = self.peak = 0

    def reset(self) -> None:
        """Count from here on: what is alive now is left out."""
        self.sizes.clear(); self.refs.clear()  # the weakrefs die first: their callbacks never run
        self.live = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # A storage an input already has is no allocation: views, in-place ops, detach, `out=`.
        old = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and id(t.untyped_storage()) not in old:
                self._add(t.untyped_storage())
        return out

    def _add(self, st: torch.UntypedStorage) -> None:
        key = id(st)
        if key in self.sizes: return
        self.sizes[key] = n = -(-st.nbytes() // BLOCK) * BLOCK
        self.refs[key] = weakref.ref(st, functools.partial(self._free, key))
        self.live += n
        self.peak = max(self.peak, self.live)

    def _free(self, key: int, _ref) -> None:
        self.live -= self.sizes.pop(key)
        del self.refs[key]


class _Saved:
    """A saved-tensor pack hook: the bytes autograd saves, once per storage, but the model's parameters and
    buffers. It keeps only ids, and a weakref so that a dead storage's id is not taken for a new one's.
    """
    def __init__(self, resident: set[int]):
        self.resident, self.seen, self.bytes = resident, {}, 0

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        st = t.untyped_storage()
        if id(st) not in self.resident and id(st) not in self.seen:
            self.seen[id(st)] = weakref.ref(st)
            self.bytes += -(-st.nbytes() // BLOCK) * BLOCK
        # Detached: the same storage without its grad_fn. A node that saves its own output would otherwise
        # hold a cycle (tensor -> node -> tensor) that only the garbage collector frees, long after it ran.
        return t.detach()


def _consumers(root) -> dict:
    """Every node below `root`, with how many nodes consume its gradient (the engine's dependencies)."""
    pending, stack, seen = {}, [root], {root}
    while stack:
        for node, _ in stack.pop().next_functions:
            if node is None: continue
            pending[node] = pending.get(node, 0) + 1
            if node not in seen: seen.add(node); stack.append(node)
    return pending


def _backward(todo: list, pending: dict) -> None:
    """`loss.backward()` as the autograd engine runs it on one device, in Python.

    `todo` = [loss.grad_fn, the loss's gradient], `pending` = `_consumers(loss.grad_fn)`.

    The engine needs a real GPU for CUDA tensors, fake or not; calling each graph node directly does not.
    Like the engine: a node runs once all its consumers have run, ready nodes highest sequence number first
    (the engine's ready queue order), gradients arriving at the same input are summed, each gradient is
    summed to its input's shape and cast to its dtype (the engine's `validate_outputs`: broadcasts, autocast),
    and a node is dropped once it has run, which frees what it saved. `todo` and `pending` are emptied: the
    caller must hold no other reference to the graph, or nothing would be freed.
    """
    root, grad = todo
    todo.clear()
    inputs = {root: [grad]}
    ready = [(-root._sequence_nr(), 0, root)]
    del root, grad
    n = 1
    while ready:
        node = heapq.heappop(ready)[2]
        outs = node(*inputs.pop(node))
        outs = outs if isinstance(outs, tuple) else (outs,)
        for (nxt, i), g in zip(node.next_functions, outs):
            if nxt is None: continue
            if g is not None:
                meta = nxt._input_metadata[i]
                if g.shape != meta.shape: g = g.sum_to_size(meta.shape)
                if g.dtype != meta.dtype: g = g.to(meta.dtype)
                buf = inputs.setdefault(nxt, [None] * len(nxt._input_metadata))
                buf[i] = g if buf[i] is None else buf[i] + g
            pending[nxt] -= 1
            if not pending[nxt]:
                del pending[nxt]
                inputs.setdefault(nxt, [None] * len(nxt._input_metadata))
                heapq.heappush(ready, (-nxt._sequence_nr(), n, nxt))
                n += 1
        node = outs = nxt = g = buf = None  # drop the node: what it saved is freed
