"""Phase retrieval's classical estimate and warm start: the multiscale HIO, the alignment of the channels, the
prior's choice of the sign, and the twin chains of best-of-K."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import invdiff.operators as O
from invdiff.analytic import GaussianEps
from invdiff.baselines import align_channels, hio_multiscale, run_baseline
from invdiff.prior import EpsPrior
from invdiff.rng import make_generators
from invdiff.samplers.registry import _warm_start
from invdiff.samplers.warmstart import prior_sign
from invdiff.schedule import NoiseSchedule


def _smooth(b=2, c=3, n=64, seed=0):
    """Images whose content lies at low frequencies (an 8×8 random field upsampled), inside [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    return (0.8 * torch.tanh(F.interpolate(torch.randn(b, c, 8, 8, generator=g), size=n, mode="bicubic",
                                           align_corners=False))).clamp(-1, 1)


@pytest.mark.parametrize("canvas", ["dps", "total"])
def test_the_twin_has_the_same_measurement(canvas):
    """PhaseRetrieval.twin (x turned by 180°) and −x give the same magnitudes, to float32 rounding of the FFT."""
    op = O.PhaseRetrieval(2.0, canvas=canvas)
    x = torch.rand(2, 3, 21, 17) * 2 - 1
    y = op(x)
    tol = 1e-5 * float(y.abs().max())
    assert torch.allclose(op(op.twin(x)), y, atol=tol) and torch.allclose(op(-x), y, atol=tol)
    assert op.sign_blind and not O.Blur(O.gaussian_kernel(3, 1.0)).sign_blind


def test_channels_are_aligned_to_the_strongest_one():
    """Channels that are the strongest channel turned and/or negated (each a solution of its own magnitude) are
    put back in its orientation and sign."""
    u = _smooth(1, 1, 32)[0, 0]
    x = torch.stack([u, -0.8 * u.flip(-2, -1), 0.6 * u.flip(-2, -1), -0.5 * u])[None]
    out = align_channels(x)
    for c, a in enumerate((1.0, 0.8, 0.6, 0.5)):
        assert torch.allclose(out[0, c], a * u, atol=1e-6)


def test_multiscale_hio_fits_the_magnitudes_of_a_smooth_image():
    """With the content at low frequencies, the coarse level (side 16 of 64) carries the magnitudes: the
    upsampled estimate fits the measurement to within 15 % in norm, where the flat image of the true mean colour
    is off by more than half (a wrong scale between the canvas and the coarse level, or a wrong crop of the
    spectrum, would not fit). Phase retrieval of real-valued [-1, 1] images stays ambiguous up to sign and turn,
    and HIO may stagnate, so closeness to the truth is measured on photos (benchmarks/phase_retrieval.py)."""
    x = _smooth(2, 3, 64, seed=1)
    op = O.PhaseRetrieval(2.0)
    y = op(x) + 0.01 * torch.randn(op(x).shape, generator=torch.Generator().manual_seed(0))
    z = hio_multiscale(y, op, 0.01, side=16, restarts=8)
    assert z.shape == x.shape and z.abs().max() <= 1
    fit = (op(z) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    flat = (op(x.mean((-2, -1), keepdim=True).expand_as(x)) - y).flatten(1).norm(dim=1) / y.flatten(1).norm(dim=1)
    assert (fit < 0.15).all() and (flat > 0.5).all()
    assert torch.equal(z, run_baseline("hio-multiscale", y, op, 0.01, side=16, restarts=8))  # seeded: reproducible


def test_multiscale_hio_refuses_other_operators():
    with pytest.raises(ValueError, match="phase-retrieval"):
        hio_multiscale(torch.zeros(1, 1, 8, 8), O.Identity(), 0.0)


def _offset_prior(d_shape=(1, 4, 4)):
    """Exact ε of data N(μ, 0.05² I) with μ far from 0: x and −x are easy to tell apart."""
    d = int(torch.tensor(d_shape).prod())
    mu = 0.6 + 0.2 * torch.linspace(-1, 1, d, dtype=torch.float64)
    s = NoiseSchedule.linear()
    return mu.reshape(1, *d_shape), EpsPrior(GaussianEps(mu, 0.05**2 * torch.eye(d, dtype=torch.float64), s, d_shape), s)


def test_the_prior_chooses_the_sign_batch_invariantly():
    """prior_sign keeps x where x is likely under the prior and turns −x back into x, image by image; each
    image's choice is the same alone as in a batch (per-image streams), and it spends two evaluations per level."""
    mu, prior = _offset_prior()
    x = mu + 0.05 * torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    signs = torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64).reshape(-1, 1, 1, 1)
    gens = make_generators(0, 3)
    out, nfe = prior_sign(prior, x * signs, gens)
    assert torch.equal(out, x) and nfe == 6
    alone, _ = prior_sign(prior, (x * signs)[1:2], make_generators(0, 1, start=1))
    assert torch.equal(alone, out[1:2])


def test_warm_starts_of_phase_retrieval_take_the_prior_sign_and_split_over_the_twins():
    """A given estimate with the wrong sign is corrected before the chains start; with K = 3 samples, chains 0
    and 2 start from the estimate and chain 1 from its twin; a cold start has no estimate and costs nothing."""
    mu, prior = _offset_prior()
    op = O.PhaseRetrieval(2.0)
    x = mu + 0.05 * torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    y = op(x)
    from invdiff.samplers.registry import make_params, check_method

    hp = make_params(check_method("dps", op, prior).params, "dps", {"start": 0.5})
    init, nfe = _warm_start(hp, -x, y, op, x.shape, 0.0, prior, make_generators(0, 2), 3)
    assert nfe == 6 and init.shape == (6, 1, 4, 4)
    for i in range(2):
        assert torch.equal(init[3 * i], x[i]) and torch.equal(init[3 * i + 2], x[i])
        assert torch.equal(init[3 * i + 1], x[i].flip(-2, -1))
    cold = make_params(check_method("dps", op, prior).params, "dps", {})
    assert _warm_start(cold, None, y, op, x.shape, 0.0, prior, make_generators(0, 2), 3) == (None, 0)
