import math

import torch

from invdiff.analytic import GaussianEps
from invdiff.evaluate import discretized_gaussian_nll, variational_bound
from invdiff.prior import EpsPrior
from invdiff.schedule import NoiseSchedule


def test_discretized_likelihood_normalises():
    """The 256 bin probabilities of the decoder sum to one."""
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, ls in [(0.1, -2.0), (-0.9, -4.0), (0.5, 0.0)]:
        p = torch.exp(-discretized_gaussian_nll(levels, torch.full_like(levels, mean), torch.full_like(levels, ls)))
        assert abs(float(p.sum()) - 1) < 1e-6


def test_bound_of_exact_gaussian_model_approaches_data_entropy():
    """With the exact ε of N(μ, s²I) data the bound upper-bounds, and lies close to, the true discrete NLL."""
    d, sd = 16, 0.3
    sched = NoiseSchedule.linear(200)
    mu = torch.zeros(d, dtype=torch.float64)
    prior = EpsPrior(GaussianEps(mu, sd**2 * torch.eye(d, dtype=torch.float64), sched, (1, 4, 4)), sched)
    g = torch.Generator().manual_seed(0)
    x0 = (torch.randn(200, 1, 4, 4, generator=g, dtype=torch.float64) * sd).clamp(-1, 1)
    est = variational_bound(prior, x0, samples_per_image=32, generator=g)
    # true NLL of 8-bit data from N(0, sd²): ≈ differential entropy − log2(bin width), in bits/dim
    true_bpd = 0.5 * math.log2(2 * math.pi * math.e * sd**2) - math.log2(2 / 255)
    best = min(est.bits_per_dim.values())
    assert best > true_bpd - 4 * est.stderr["small"] - 0.05  # a bound (up to Monte-Carlo error)
    assert best < true_bpd + 0.5  # and a tight one for the exact model
    assert 0 < est.l_simple < 1
