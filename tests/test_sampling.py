"""Unconditional DDPM/DDIM sampling against Gaussian data whose exact ε is known in closed form."""


import pytest
import torch

from invdiff.analytic import GaussianEps, random_covariance
from invdiff.prior import EpsPrior
from invdiff.rng import make_generators
from invdiff.samplers.core import Counts, sample
from invdiff.schedule import NoiseSchedule

D = 16
N = 3000


@pytest.fixture(scope="module")
def gaussian():
    g = torch.Generator().manual_seed(0)
    cov = random_covariance(D, generator=g)
    mu = 0.3 * torch.randn(D, dtype=torch.float64, generator=g)
    s = NoiseSchedule.linear()
    return mu, cov, EpsPrior(GaussianEps(mu, cov, s, (1, 4, 4)), s)


def _moments(x):
    x = x.double().reshape(x.shape[0], -1)
    return x.mean(0), torch.cov(x.T)


@pytest.mark.parametrize("steps,eta,variance,cov_tol", [
    (1000, 1.0, "small", 0.15),  # DDPM, σ² = β̃: exact sampler up to discretisation
    (1000, 1.0, "large", 0.15),  # DDPM, σ² = β
    (100, 0.0, "small", 0.15),  # DDIM (probability-flow ODE discretised in 100 steps)
])
def test_samples_match_data_moments(gaussian, steps, eta, variance, cov_tol):
    mu, cov, prior = gaussian
    x = sample(prior, (N, 1, 4, 4), steps=steps, eta=eta, variance=variance, generator=torch.Generator().manual_seed(1), device="cpu")
    m, c = _moments(x)
    # mean: every coordinate within 5 standard errors √(Σ_ii / N)
    se = (cov.diagonal() / N).sqrt()
    assert bool(((m - mu).abs() < 5 * se).all())
    # covariance: relative Frobenius error; the Monte-Carlo error of a sample covariance of N draws is about
    # √(2/N)·‖Σ‖_F·√D/… ≈ 0.05 here, so 0.15 leaves room for the few-step DDIM discretisation only
    rel = float(torch.linalg.norm(c - cov) / torch.linalg.norm(cov))
    assert rel < cov_tol, rel


def test_ddim_eta0_is_deterministic_and_ancestral_is_not(gaussian):
    _, _, prior = gaussian
    x_T = torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    a = sample(prior, x_T.shape, steps=20, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(5))
    b = sample(prior, x_T.shape, steps=20, eta=0.0, x_T=x_T, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    c = sample(prior, x_T.shape, steps=20, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(5))
    d = sample(prior, x_T.shape, steps=20, eta=1.0, x_T=x_T, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(c, d)


def test_batch_invariance_with_per_image_generators(gaussian):
    _, _, prior = gaussian
    full = sample(prior, (6, 1, 4, 4), steps=30, eta=1.0, generator=make_generators(7, 6))
    for i in [0, 4]:
        alone = sample(prior, (1, 1, 4, 4), steps=30, eta=1.0, generator=make_generators(7, 1, start=i))
        assert torch.allclose(alone, full[i: i + 1], atol=1e-6)


def test_callback_and_step_count(gaussian):
    _, _, prior = gaussian
    seen = []
    counts = Counts()
    sample(prior, (2, 1, 4, 4), steps=10, eta=0.5, generator=torch.Generator().manual_seed(0), callback=seen.append,
           counts=counts)
    assert [s["step"] for s in seen] == list(range(10)) and seen[-1]["total"] == 10
    assert counts.nfe == 10 and counts.vjps == 0


def test_start_part_way_from_a_given_state(gaussian):
    # t_start keeps only the steps at or below it, starting from the given x_T (SDEdit / CCDF); with η = 0 the
    # result is a deterministic function of that state
    from invdiff.samplers.core import timestep_pairs

    _, _, prior = gaussian
    x_T = torch.randn(4, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    expected = [t for t, _ in timestep_pairs(prior.schedule, 20) if t <= 500]
    assert 0 < len(expected) < 20
    counts = Counts()
    a = sample(prior, x_T.shape, steps=20, eta=0.0, x_T=x_T, t_start=500, counts=counts, device="cpu")
    assert counts.nfe == len(expected)
    b = sample(prior, x_T.shape, steps=20, eta=0.0, x_T=x_T, t_start=500, device="cpu")
    c = sample(prior, x_T.shape, steps=20, eta=0.0, x_T=x_T + 0.5, t_start=500, device="cpu")
    assert torch.equal(a, b) and not torch.allclose(a, c)
