"""Speed and memory options for the ε-network: activation checkpointing (for methods that differentiate
through the network), CUDA graphs (for loops without autograd) and automatic batch sizing.

``EpsPrior.accelerate`` switches the first two on; ``restore(..., batch_size="auto")`` uses the third. None of
them changes results: checkpointing recomputes the same activations, a graph replays the same kernels, and
restorations are batch-invariant (per-image generators), so any chunking of a batch gives the same images."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

import torch
from torch import Tensor, nn

# ---- the CPU allocator ---------------------------------------------------------------------------

_ALLOCATOR_TUNED = False


def keep_freed_memory() -> bool:
    """On Linux/glibc, stop ``free`` from handing large blocks back to the kernel (no mmap for big blocks, no
    trimming of the heap). A sampling step allocates and frees the same activation tensors every step; by
    default each large tensor is a fresh mmap that the kernel zero-fills page by page, which on the CPU cost
    up to 30 % of a gradient method's time at batch 32 (natural64: 3.1M page faults per 10-step restoration,
    6.6 s instead of 9.5 s with this). The price: the process keeps its peak memory until it exits, so library
    code never calls it: the command line (solve, sample, train, bench) and the benchmark scripts opt in, as
    a program that owns its process may. ``INVDIFF_KEEP_MEMORY=0`` turns it off. Returns whether the allocator
    is tuned."""
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    if os.environ.get("INVDIFF_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        m_trim_threshold, m_mmap_max = -1, -4
        # mallopt takes an int: −1 becomes SIZE_MAX for the trim threshold (never trim)
        _ALLOCATOR_TUNED = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, -1))
    except (OSError, AttributeError):
        return False
    return _ALLOCATOR_TUNED


# ---- activation checkpointing ------------------------------------------------------------------


def _block_types() -> tuple[type, ...]:
    from .nets import adm, unet

    return (unet.ResBlock, unet.Attention, adm.ResBlock, adm.AttentionBlock)


def _checkpointed(forward: Callable) -> Callable:
    from torch.utils.checkpoint import checkpoint

    @functools.wraps(forward)
    def run(*args, **kwargs):
        if torch.is_grad_enabled() and any(torch.is_tensor(a) and a.requires_grad for a in args):
            return checkpoint(forward, *args, use_reentrant=False, **kwargs)
        return forward(*args, **kwargs)

    run._invdiff_checkpointed = True  # type: ignore[attr-defined]
    return run


def checkpoint_blocks(net: nn.Module, block_types: tuple[type, ...] | None = None) -> int:
    """Recompute the activations of every residual and attention block during the backward pass instead of
    storing them (``torch.utils.checkpoint``, non-reentrant): the memory of a VJP through the network falls to
    roughly that of the block boundaries, for about one extra forward pass. Only active while a gradient is
    being recorded; forward-only sampling is unchanged. Returns the number of blocks wrapped."""
    types = block_types or _block_types()
    n = 0
    for m in net.modules():
        if isinstance(m, types) and not getattr(m.forward, "_invdiff_checkpointed", False):
            m.forward = _checkpointed(m.forward)
            n += 1
    return n


def saved_activation_bytes(fn: Callable[[], Tensor]) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of ``fn()`` (what checkpointing saves)."""
    total = 0

    def pack(t: Tensor):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total


# ---- CUDA graphs ---------------------------------------------------------------------------------


class CUDAGraphNet(nn.Module):
    """Replays the network from a CUDA graph captured once per input shape (and dtype, autocast state): one
    launch per evaluation instead of hundreds of kernel launches from Python. Used only where no gradient is
    recorded (DDIM, DDRM, DDNM, DiffPIR, RED-diff, DAPS, projection, Palette); DPS/ΠGDM/MCG calls, which need
    the autograd graph, go to the plain network. Inputs are copied into static buffers; the output is a copy."""

    def __init__(self, net: nn.Module, *, warmup: int = 3) -> None:
        super().__init__()
        self.net = net
        self.warmup = warmup
        self._graphs: dict = {}
        self._pool = None

    @property
    def config(self):
        return getattr(self.net, "config", None)

    def _key(self, x: Tensor, t: Tensor, cond: Tensor | None):
        return (tuple(x.shape), x.dtype, x.device, tuple(t.shape), None if cond is None else (tuple(cond.shape), cond.dtype),
                torch.is_autocast_enabled(x.device.type), x.is_contiguous(memory_format=torch.channels_last))

    def _capture(self, x: Tensor, t: Tensor, cond: Tensor | None):
        static = [x.clone(), t.clone(), None if cond is None else cond.clone()]
        args = static if cond is not None else static[:2]
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up off the capture (cuDNN autotuning, lazy allocations)
            for _ in range(self.warmup):
                self.net(*args)
        torch.cuda.current_stream(x.device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self.net(*args)
        return graph, static, out

    def forward(self, x: Tensor, t: Tensor, cond: Tensor | None = None) -> Tensor:
        if x.device.type != "cuda" or (torch.is_grad_enabled() and x.requires_grad):
            return self.net(x, t, cond) if cond is not None else self.net(x, t)
        key = self._key(x, t, cond)
        if key not in self._graphs:
            # ordinary (not inference-mode) buffers, so that later calls under plain no_grad can refill them
            with torch.inference_mode(False), torch.no_grad():
                self._graphs[key] = self._capture(x, t, cond)
        graph, static, out = self._graphs[key]
        static[0].copy_(x)
        static[1].copy_(t)
        if cond is not None:
            static[2].copy_(cond)
        graph.replay()
        return out.clone()


# ---- automatic batch sizing ---------------------------------------------------------------------


def available_memory(device: torch.device) -> int:
    """Bytes free for new tensors: free GPU memory plus what the caching allocator holds unused (CUDA), or
    MemAvailable from /proc/meminfo (CPU; physical pages free when that file is missing)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def per_image_bytes(prior, image_shape, *, gradient: bool, device: torch.device) -> int:
    """Memory one image costs in a network evaluation: on CUDA the peak allocated by a batch of 2 minus that
    of a batch of 1 (forward, or forward + backward for gradient methods); on the CPU the activations autograd
    saves for one image (gradient methods) or, forward only, four times the largest activation (an estimate of
    what is live at once: a block's input, output and two intermediates)."""
    c, h, w = image_shape
    cond = torch.zeros(1, prior.cond_channels, h, w, device=device) if prior.cond_channels else None

    def run(b: int):
        x = torch.randn(b, c, h, w, device=device, requires_grad=gradient)
        cb = None if cond is None else cond.expand(b, -1, -1, -1)
        with torch.set_grad_enabled(gradient):
            out = prior.eps(x, torch.full((b,), prior.schedule.num_timesteps // 2, device=device, dtype=torch.long), cb)
            if gradient:
                torch.autograd.grad(out.sum(), x)
        return out

    if device.type == "cuda":
        run(1)  # warm-up: the first call's one-off allocations (cuDNN/cuBLAS workspaces) are not per-image memory
        peaks = []
        for b in (1, 2):
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            run(b)
            torch.cuda.synchronize(device)
            peaks.append(torch.cuda.max_memory_allocated(device) - base)
        return max(peaks[1] - peaks[0], peaks[0] // 2, 1)
    if gradient:
        return max(saved_activation_bytes(lambda: run(1)), 1)
    largest = 0

    def hook(_m, _i, out):
        nonlocal largest
        if torch.is_tensor(out):
            largest = max(largest, out.numel() * out.element_size())

    hooks = [m.register_forward_hook(hook) for m in prior.net.modules()]
    try:
        with torch.no_grad():
            run(1)
    finally:
        for hk in hooks:
            hk.remove()
    return max(4 * largest, 1)


def choose_batch_size(n: int, per_image: int, free: int, *, fraction: float = 0.6, cap: int | None = None) -> int:
    """The largest batch (≤ n, ≤ cap) whose estimated memory stays within ``fraction`` of what is free."""
    b = int(free * fraction // max(per_image, 1))
    if cap is not None:
        b = min(b, cap)
    return max(1, min(n, b))


#: on the CPU, larger batches stop paying off well before memory runs out (measured: fmnist32 and natural64
#: images/s flat beyond 32); on a GPU memory is the limit
CPU_BATCH_CAP = 32


def auto_batch_size(prior, image_shape, n: int, *, gradient: bool, device: torch.device | None = None) -> int:
    """How many of ``n`` images to restore together: memory-bound on a GPU, capped at ``CPU_BATCH_CAP`` on the
    CPU. ``restore`` halves it and retries if a GPU still runs out of memory."""
    device = torch.device(device) if device is not None else prior.device
    per = per_image_bytes(prior, image_shape, gradient=gradient, device=device)
    cap = None if device.type == "cuda" else CPU_BATCH_CAP
    return choose_batch_size(n, per, available_memory(device), cap=cap)


def is_out_of_memory(e: BaseException) -> bool:
    return isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())


__all__ = ["CUDAGraphNet", "keep_freed_memory", "auto_batch_size", "available_memory", "checkpoint_blocks", "choose_batch_size",
           "is_out_of_memory", "per_image_bytes", "saved_activation_bytes"]
