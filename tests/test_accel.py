"""Speed and memory options: activation checkpointing, automatic batch sizing with its out-of-memory retry,
generator snapshots, CUDA graphs (skipped without CUDA). None of them may change results."""

from __future__ import annotations

import pytest
import torch

import invdiff.operators as O
from invdiff import accel, rng
from invdiff.nets.adm import ADM, ADMConfig
from invdiff.nets.unet import UNet, UNetConfig
from invdiff.prior import EpsPrior
from invdiff.rng import make_generators
from invdiff.samplers import restore
from invdiff.schedule import NoiseSchedule


def _prior(seed=0, cond=0):
    torch.manual_seed(seed)
    net = UNet(UNetConfig(in_channels=1, cond_channels=cond, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                          attention_levels=(1,), groups=8))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return EpsPrior(net.eval().requires_grad_(False), NoiseSchedule.linear(), config={"name": "tiny"})


def _vjp(prior, x, v):
    xg = x.clone().requires_grad_(True)
    out = prior.x0(xg, 400)
    (g,) = torch.autograd.grad(out, xg, v)
    return out.detach(), g


def test_checkpointing_keeps_the_gradient_and_saves_memory():
    x = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    v = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    plain, ckpt = _prior(), _prior().accelerate(channels_last=False, checkpoint=True)
    out_a, g_a = _vjp(plain, x, v)
    out_b, g_b = _vjp(ckpt, x, v)
    assert torch.equal(out_a, out_b)
    torch.testing.assert_close(g_b, g_a, rtol=1e-4, atol=1e-4)
    saved_plain = accel.saved_activation_bytes(lambda: plain.x0(x.clone().requires_grad_(True), 400))
    saved_ckpt = accel.saved_activation_bytes(lambda: ckpt.x0(x.clone().requires_grad_(True), 400))
    assert saved_ckpt < saved_plain / 2, (saved_ckpt, saved_plain)
    with torch.no_grad():  # forward-only evaluation is untouched
        assert torch.equal(plain.eps(x, 10), ckpt.eps(x, 10))


def test_checkpointing_wraps_adm_blocks_once():
    cfg = ADMConfig(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2", attention_resolutions="8",
                    num_head_channels=16, learn_sigma=True, resblock_updown=True, use_scale_shift_norm=True)
    net = ADM(cfg).eval()
    n = accel.checkpoint_blocks(net)
    assert n > 0 and accel.checkpoint_blocks(net) == 0  # already wrapped: not wrapped twice
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    out = net(x, torch.tensor([5]))
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.isfinite(g).all()


def test_dps_with_checkpointing_gives_the_same_restoration():
    # in float64: the recomputed forward may take other kernels than the stored one (a 16-core machine did, in
    # float32), and DPS's normalised gradient step amplifies their rounding over the steps; in float64 that
    # rounding stays ~1e-13 after the amplification, while a wrong recomputation would differ by O(0.1)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    A = O.Blur(O.gaussian_kernel(5, 1.0).double())
    y = A(x)

    def prior64(**acc):
        p = _prior()
        p.net.double()
        return p.accelerate(**acc) if acc else p

    kw = dict(method="dps", steps=4, generator=make_generators(3, 2))
    a = restore(y, A, 0.05, prior64(), **kw)
    kw["generator"] = make_generators(3, 2)
    b = restore(y, A, 0.05, prior64(channels_last=False, checkpoint=True), **kw)
    assert a.samples.dtype == torch.float64
    torch.testing.assert_close(b.samples, a.samples, rtol=1e-9, atol=1e-10)
    assert a.vjps == b.vjps == 4


def test_choose_batch_size():
    assert accel.choose_batch_size(100, per_image=10, free=1000, fraction=0.5) == 50
    assert accel.choose_batch_size(20, per_image=10, free=1000, fraction=0.5) == 20  # never more than n
    assert accel.choose_batch_size(100, per_image=10, free=1000, fraction=0.5, cap=8) == 8
    assert accel.choose_batch_size(100, per_image=10**9, free=1000) == 1  # never less than 1


def test_per_image_memory_grows_with_the_image_and_the_gradient():
    prior = _prior()
    small = accel.per_image_bytes(prior, (1, 16, 16), gradient=True, device=torch.device("cpu"))
    large = accel.per_image_bytes(prior, (1, 32, 32), gradient=True, device=torch.device("cpu"))
    fwd = accel.per_image_bytes(prior, (1, 32, 32), gradient=False, device=torch.device("cpu"))
    # activations grow with the pixel count (4x here; the per-image parts that do not, such as the time embedding,
    # make it less); the attention's memory-efficient kernel saves no tokens^2 score maps, so at most 4x and a margin
    assert 2 * small < large < 6 * small
    assert 0 < fwd < large
    assert accel.available_memory(torch.device("cpu")) > 0


def _inpainting(B=4):
    x = torch.rand(B, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    A = O.Inpainting(O.random_mask((B, 1, 16, 16), p=0.5, generator=make_generators(0, B)))
    return A, A(x)


def test_auto_batch_size_gives_the_same_restoration():
    A, y = _inpainting()
    a = restore(y, A, 0.05, _prior(), method="ddnm", steps=5, samples=2, generator=make_generators(7, 4))
    b = restore(y, A, 0.05, _prior(), method="ddnm", steps=5, samples=2, generator=make_generators(7, 4), batch_size="auto")
    torch.testing.assert_close(b.samples, a.samples, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="batch_size"):
        restore(y, A, 0.05, _prior(), method="ddnm", steps=2, batch_size="many")


class _OutOfMemoryAbove(torch.nn.Module):
    """Wraps a network: batches larger than ``limit`` fail part-way through a restoration, after noise was drawn."""

    def __init__(self, net, limit, after):
        super().__init__()
        self.net, self.limit, self.after, self.calls, self.failures = net, limit, after, 0, 0

    def forward(self, x, t, cond=None):
        self.calls += 1
        if x.shape[0] > self.limit and self.calls > self.after:
            self.failures += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.net(x, t) if cond is None else self.net(x, t, cond)


@pytest.mark.parametrize("method", ["ddpm-like ddnm", "dps", "repaint", "daps"])
def test_out_of_memory_halves_the_batch_and_repeats_the_same_noise(monkeypatch, method):
    method = method.split()[-1]
    A, y = _inpainting(B=6)
    ref = restore(y, A, 0.05, _prior(), method=method, steps=5, generator=make_generators(11, 6))
    prior = _prior()
    failing = _OutOfMemoryAbove(prior.net, limit=2, after=3)
    prior.net = failing
    monkeypatch.setattr(accel, "auto_batch_size", lambda *a, **k: 6)  # the estimate is too optimistic
    got = restore(y, A, 0.05, prior, method=method, steps=5, generator=make_generators(11, 6), batch_size="auto")
    assert failing.failures >= 2  # 6 failed, then 3 failed, then chunks of 1 (≤ 2) ran
    # the retry redraws exactly the noise of the failed attempts: the result is the one of chunks of 1 from the
    # start, bit for bit (the same computations in the same order). Against the whole batch of 6 it agrees only to
    # float32 rounding (batch invariance, tested with its error model in test_restore/test_sampling).
    ones = restore(y, A, 0.05, _prior(), method=method, steps=5, generator=make_generators(11, 6), batch_size=1)
    assert torch.equal(got.samples, ones.samples)
    assert got.nfe == ref.nfe == ones.nfe  # the failed attempts are not counted


def test_out_of_memory_without_auto_is_raised():
    A, y = _inpainting(B=4)
    prior = _prior()
    prior.net = _OutOfMemoryAbove(prior.net, limit=1, after=0)
    with pytest.raises(torch.OutOfMemoryError):
        restore(y, A, 0.05, prior, method="ddnm", steps=3, generator=make_generators(0, 4), batch_size=4)


@pytest.mark.parametrize("gens", ["list", "one", "global"])
def test_generator_snapshots_rewind(gens):
    g = {"list": make_generators(3, 2), "one": torch.Generator().manual_seed(3), "global": None}[gens]
    state = rng.get_state(g)
    a = rng.randn((2, 5), g)
    rng.set_state(g, state)
    assert torch.equal(rng.randn((2, 5), g), a)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs and GPU memory probing need a CUDA device")


@cuda
def test_cuda_graphs_replay_the_network():
    dev = torch.device("cuda")
    A, y = _inpainting()
    A, y = A.to(dev), y.to(dev)
    kw = dict(method="ddnm", steps=5, generator=make_generators(2, 4, dev))
    a = restore(y, A, 0.05, _prior().to(dev).accelerate(bf16=False), **kw)
    prior = _prior().to(dev).accelerate(bf16=False, cuda_graphs=True)
    assert isinstance(prior.net, accel.CUDAGraphNet)
    kw["generator"] = make_generators(2, 4, dev)
    b = restore(y, A, 0.05, prior, **kw)
    torch.testing.assert_close(b.samples, a.samples, rtol=1e-4, atol=1e-4)
    assert len(prior.net._graphs) == 1  # one shape, one capture
    kw["generator"] = make_generators(2, 4, dev)
    c = restore(y, A, 0.05, prior, **{**kw, "method": "dps"})  # gradient evaluations run eagerly
    assert torch.isfinite(c.samples).all() and c.vjps == 5


@cuda
def test_auto_batch_size_on_gpu_is_memory_bound():
    dev = torch.device("cuda")
    prior = _prior().to(dev)
    per = accel.per_image_bytes(prior, (1, 32, 32), gradient=True, device=dev)
    assert per > 0
    # after its warm-up the measurement repeats: the same allocations, whatever ran before
    assert accel.per_image_bytes(prior, (1, 32, 32), gradient=True, device=dev) == per
    b = accel.auto_batch_size(prior, (1, 32, 32), 10**6, gradient=True, device=dev)
    assert 1 <= b <= accel.available_memory(dev) // per


def test_keeping_freed_memory_is_switchable(monkeypatch):
    monkeypatch.setattr(accel, "_ALLOCATOR_TUNED", False)
    monkeypatch.setenv("INVDIFF_KEEP_MEMORY", "0")
    assert accel.keep_freed_memory() is False
    monkeypatch.delenv("INVDIFF_KEEP_MEMORY")
    import platform
    import sys

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert accel.keep_freed_memory() is expected
    if expected:  # large blocks now stay in the process: freeing and reallocating them costs no page faults
        import resource

        def faults():
            return resource.getrusage(resource.RUSAGE_SELF).ru_minflt

        torch.empty(64 * 2**20 // 4).fill_(1.0)
        before = faults()
        for _ in range(5):
            torch.empty(64 * 2**20 // 4).fill_(1.0)  # 64 MiB, above glibc's largest mmap threshold
        assert faults() - before < 5 * (64 * 2**20 // 4096) // 4
