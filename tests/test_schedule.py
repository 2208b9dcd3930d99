import math

import pytest
import torch

from invdiff.schedule import NoiseSchedule


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_closed_forms(kind):
    s = NoiseSchedule.linear() if kind == "linear" else NoiseSchedule.cosine()
    b = s.betas
    assert s.betas.dtype == torch.float64
    # ᾱ_t is the running product of α_t = 1 − β_t
    prod = 1.0
    for t in [0, 1, 10, 500, 999]:
        prod_t = math.prod(1 - float(v) for v in b[: t + 1])
        assert abs(float(s.alphas_cumprod[t]) - prod_t) < 1e-12
    # β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t), with ᾱ_{−1} = 1
    t = 321
    ac, acp = float(s.alphas_cumprod[t]), float(s.alphas_cumprod[t - 1])
    assert abs(float(s.posterior_variance[t]) - float(b[t]) * (1 - acp) / (1 - ac)) < 1e-15
    assert float(s.posterior_variance[0]) == 0.0
    # posterior mean coefficients: μ̃ = √ᾱ_{t−1}β_t/(1−ᾱ_t) x0 + √α_t(1−ᾱ_{t−1})/(1−ᾱ_t) x_t
    assert abs(float(s.posterior_mean_coef1[t]) - math.sqrt(acp) * float(b[t]) / (1 - ac)) < 1e-15
    assert abs(float(s.posterior_mean_coef2[t]) - math.sqrt(1 - float(b[t])) * (1 - acp) / (1 - ac)) < 1e-15


def test_linear_endpoints_and_rescaling():
    s = NoiseSchedule.linear()
    assert float(s.betas[0]) == pytest.approx(1e-4) and float(s.betas[-1]) == pytest.approx(0.02)
    s100 = NoiseSchedule.linear(100)
    assert float(s100.betas[-1]) == pytest.approx(0.2)
    assert NoiseSchedule.from_config(s.to_config()).betas.equal(s.betas)


def test_q_sample_moments():
    s = NoiseSchedule.linear()
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    t = 400
    x = s.q_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    ac = float(s.alphas_cumprod[t])
    n = x0.shape[0]
    # mean within 5 standard errors, variance within 5 standard errors of the sample variance (2σ⁴/(n−1))
    assert abs(float(x.mean()) - math.sqrt(ac) * 0.7) < 5 * math.sqrt((1 - ac) / n)
    assert abs(float(x.var()) - (1 - ac)) < 5 * (1 - ac) * math.sqrt(2 / (n - 1))


def test_q_posterior_matches_bayes():
    """q(x_{t−1}|x_t, x0) from the coefficients equals the Gaussian product computed directly."""
    s = NoiseSchedule.cosine(200)
    t = 57
    x0, xt = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-0.4], dtype=torch.float64)
    acp, a = float(s.alphas_cumprod[t - 1]), float(s.alphas[t])
    # prior of x_{t−1} given x0: N(√ᾱ_{t−1} x0, 1−ᾱ_{t−1}); likelihood x_t|x_{t−1}: N(√α x_{t−1}, 1−α)
    prec = 1 / (1 - acp) + a / (1 - a)
    mean = (math.sqrt(acp) * float(x0) / (1 - acp) + math.sqrt(a) * float(xt) / (1 - a)) / prec
    m, v = s.q_posterior(x0, xt, t)
    assert abs(float(m) - mean) < 1e-12 and abs(float(v) - 1 / prec) < 1e-12


@pytest.mark.parametrize("spacing", ["uniform", "trailing", "quad"])
def test_respacing(spacing):
    s = NoiseSchedule.linear()
    ts = s.timesteps(50, spacing=spacing)
    assert len(ts) == 50 and len(set(ts.tolist())) == 50
    assert bool((ts[:-1] > ts[1:]).all()) and int(ts.max()) <= 999 and int(ts.min()) >= 0
    assert s.timesteps().tolist() == list(range(999, -1, -1))
    with pytest.raises(ValueError):
        s.timesteps(0)


def test_bad_betas():
    with pytest.raises(ValueError):
        NoiseSchedule(torch.tensor([0.1, 1.5]))
