"""Warm starts (start < 1: x_{t₀} = √ᾱ_{t₀} x_init + √(1−ᾱ_{t₀}) ε, the steps spread over [0, t₀]) for every method,
best-of-K by the measurement (select="residual") and the sample nearest the others (select="mbr").

The Gaussian tests use x ~ N(μ, I) on 4×4 images, whose exact ε-network is known (invdiff.analytic). For a linear A
with Gaussian noise, E[x0 | x_t, y] is affine in x_t, so an exact posterior sampler started at t₀ from
x_{t₀} = √ᾱ x_init + √(1−ᾱ) ε returns samples with mean E[x0 | x_{t₀} = √ᾱ x_init, y] (the conditional mean is
linear, and E[x_{t₀}] = √ᾱ x_init): the posterior of x0 given y and the extra "measurement" √ᾱ x_init of x0 with
noise √(1−ᾱ). From x_init = the posterior mean this is the posterior mean itself (E[x_{t₀} | y] = √ᾱ·pm)."""

from __future__ import annotations

import math

import pytest
import torch

import invdiff.operators as O
from invdiff import rng
from invdiff.analytic import gaussian_posterior, isotropic_gaussian_case
from invdiff.prior import EpsPrior
from invdiff.rng import make_generators
from invdiff.samplers import METHODS, restore
from invdiff.samplers.guided import repaint_nfe
from invdiff.samplers.params import PaletteParams, Params
from invdiff.samplers.warmstart import start_timestep, start_timesteps, warm_timesteps
from invdiff.schedule import NoiseSchedule

SIGMA = 0.05
#: every method with a cheap budget (DAPS: 4 levels × 2 ODE steps, 3 Langevin steps; RePaint: jumps of 2, twice)
CHEAP = {"daps": {"steps": 4, "ode_steps": 2, "langevin_steps": 3},
         "repaint": {"steps": 6, "jump_length": 2, "resamples": 2}}
BUDGET = {name: CHEAP.get(name, {"steps": 6}) for name in METHODS}


def _unet_prior(cond_channels: int = 0):
    from invdiff.nets.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, cond_channels=cond_channels, base_channels=8, channel_mult=(1, 2),
                          num_res_blocks=1, attention_levels=())).double()
    return EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny-palette" if cond_channels else "tiny"})


@pytest.fixture(scope="module")
def priors():
    return {"plain": _unet_prior(), "palette": _unet_prior(cond_channels=2)}


def _inpainting(B: int = 3):
    A = O.Inpainting(O.random_mask((B, 1, 8, 8), p=0.5, generator=make_generators(0, B)).double())
    x = torch.rand(B, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    return A, A(x) + SIGMA * torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def _prior_for(method, priors):
    return priors["palette"] if METHODS[method].conditional else priors["plain"]


def _spy(prior):
    """Record (x_t, t) of every network evaluation."""
    seen = []
    forward = prior.net.forward

    def spy(x, t, *a):
        seen.append((x.detach().clone(), int(t[0])))
        return forward(x, t, *a)

    prior.net.forward = spy
    return seen, lambda: setattr(prior.net, "forward", forward)


# ---------------------------------------------------------------- (a) start = 1 is today's sampler
@pytest.mark.parametrize("method", sorted(METHODS))
def test_start_one_is_the_cold_start_bit_for_bit(method, priors):
    # Palette's own default is start=0.5: its cold start is asked for explicitly on both sides
    A, y = _inpainting()
    hp = dict(BUDGET[method])
    base = {"start": 1.0} if METHODS[method].conditional else {}
    prior = _prior_for(method, priors)
    default = restore(y, A, SIGMA, prior, method=method, samples=2, generator=make_generators(4, 3), **base, **hp)
    explicit = restore(y, A, SIGMA, prior, method=method, samples=2, generator=make_generators(4, 3), start=1.0,
                       init="zeros", **hp)  # init is not used by a cold start
    assert torch.equal(default.samples, explicit.samples) and default.nfe == explicit.nfe
    assert default.hyper_parameters["start"] == 1.0


def test_the_cold_start_of_the_one_loop_draws_nothing_more():
    # the guided loop at start=1 is core.sample from pure noise with the method's guidance: the same numbers
    from invdiff.samplers.core import sample
    from invdiff.samplers.guided import Projection
    from invdiff.samplers.problem import Problem

    prior = _unet_prior()
    A, y = _inpainting()
    r = restore(y, A, SIGMA, prior, method="projection", steps=6, generator=make_generators(4, 3))
    gens = rng.repeat(make_generators(4, 3), 1)
    p = Problem(prior=prior, y=y, op=A.unchecked(), sigma=SIGMA, shape=tuple(y.shape), generator=gens)
    direct = sample(prior, y.shape, steps=6, eta=1.0, guidance=Projection(p), generator=gens, dtype=y.dtype)
    assert torch.equal(r.samples[:, 0], direct)


def test_palette_keeps_its_warm_start_from_the_measurement(priors):
    assert PaletteParams().start == 0.5 and PaletteParams().init == "measurement"
    assert Params().start == 1.0 and Params().init == "pinv"
    assert all("start" in m.defaults and "init" in m.defaults for m in METHODS.values())
    A, y = _inpainting()
    run = [restore(y, A, SIGMA, priors["palette"], method="palette", steps=4, generator=make_generators(4, 3), **kw)
           for kw in ({}, {"start": 0.5, "init": "measurement"}, {"start": 0.5, "x_init": A.on_grid(y, y.shape)[:, :1]})]
    assert torch.equal(run[0].samples, run[1].samples) and torch.equal(run[0].samples, run[2].samples)


# ---------------------------------------------------------------- (b) Gaussian data, exact ε
D, SHAPE, GSIGMA, K = 16, (1, 1, 4, 4), 0.1, 1000


@pytest.fixture(scope="module")
def gaussian():
    mu, prior, x = isotropic_gaussian_case(SHAPE)
    A = O.BlockAverage(2)
    y = A(x) + GSIGMA * torch.randn(A(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    Amat = torch.func.jacrev(lambda v: A(v.reshape(SHAPE)).flatten())(torch.zeros(D, dtype=torch.float64))
    pm, pc = gaussian_posterior(mu, torch.eye(D, dtype=torch.float64), Amat, y.flatten(), GSIGMA)
    return {"mu": mu, "prior": prior, "A": A, "y": y, "Amat": Amat, "pm": pm, "pc": pc}


def _warm_mean(g, x_init: torch.Tensor, t0: int) -> torch.Tensor:
    """E[x0 | x_{t₀} = √ᾱ x_init, y]: the posterior given y and √ᾱ x0 + √(1−ᾱ) ε = √ᾱ x_init (whitened rows)."""
    a = g["prior"].schedule.alpha_bar(t0)
    w = math.sqrt(a / (1 - a))
    stacked = torch.cat([w * torch.eye(D, dtype=torch.float64), g["Amat"] / GSIGMA])
    obs = torch.cat([w * x_init.flatten(), g["y"].flatten() / GSIGMA])
    m, _ = gaussian_posterior(g["mu"], torch.eye(D, dtype=torch.float64), stacked, obs, 1.0)
    return m


def _mean_error(g, r, target) -> tuple[float, float]:
    """(max |mean − target| in posterior standard deviations, max Monte-Carlo standard error of the mean, same units)."""
    s = r.samples[0].reshape(K, -1)
    psd = g["pc"].diagonal().sqrt()
    return float(((s.mean(0) - target).abs() / psd).max()), float((s.std(0) / math.sqrt(K) / psd).max())


#: methods whose sampling of p(x0 | x_t, y) is exact for unit-variance Gaussian data (ΠGDM's 'exact' weighting),
#: then approximate ones; each with the bias it may add at 50 steps (in posterior standard deviations)
EXACT = {"pigdm": {"weighting": "exact", "eta": 1.0}}
APPROXIMATE = {"ddrm": {}, "ddnm": {}, "diffpir": {"lam": 4.0, "zeta": 1.0},
               "daps": {"ode_steps": 1, "inner": "exact", "tau": math.sqrt(2) * GSIGMA}}


@pytest.mark.parametrize("method", sorted({**EXACT, **APPROXIMATE}))
def test_a_warm_start_from_the_posterior_mean_stays_there(gaussian, method):
    # error model, per pixel in posterior standard deviations (psd): |mean − pm| ≤ 5 Monte-Carlo standard errors of
    # the K-sample mean (measured from the samples: 0.02-0.035) + the method's own bias: 0 for the exact sampler
    # (plus 0.02 of discretisation at 50 steps), 0.1 for the approximate ones (their cold starts reach 0.15 in
    # test_restore.py). Measured: 0.06-0.11, 2-3 standard errors for every method; the prior mean μ is 1.2 psd
    # from pm
    g = gaussian
    hp = {**EXACT, **APPROXIMATE}[method]
    r = restore(g["y"], g["A"], GSIGMA, g["prior"], method=method, steps=50, samples=K, clip=False, start=0.5,
                x_init=g["pm"].reshape(SHAPE), generator=make_generators(1, 1), **hp)
    err, se = _mean_error(g, r, g["pm"])
    assert err < 5 * se + (0.02 if method in EXACT else 0.1), (err, se)
    far, _ = _mean_error(g, r, g["mu"])
    assert far > 1.0  # the check can fail: the prior mean is far in these units


#: a null-space direction of 2×2 block averaging: the measurement says nothing about it
CHECKER = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], dtype=torch.float64).repeat(2, 2).reshape(SHAPE)


@pytest.mark.parametrize("x_init, start", [("zeros", 0.1), ("null-offset", 0.2)])
def test_an_exact_sampler_from_any_estimate_has_the_predicted_mean(gaussian, x_init, start):
    # the warm start really starts at x_{t₀} = √ᾱ x_init + √(1−ᾱ) ε: ΠGDM-exact's samples have the mean
    # E[x0 | x_{t₀} = √ᾱ x_init, y] (see the module's docstring), within 5 standard errors + 0.02 psd of
    # discretisation; that mean is 0.56 (zeros, t₀ = 100) and 1.5 (pm + 2 in a null-space direction, t₀ = 200)
    # posterior standard deviations from the posterior mean, about 40 and 60 standard errors
    g = gaussian
    init = torch.zeros(SHAPE, dtype=torch.float64) if x_init == "zeros" else g["pm"].reshape(SHAPE) + 2 * CHECKER
    r = restore(g["y"], g["A"], GSIGMA, g["prior"], method="pigdm", steps=50, samples=K, clip=False, start=start,
                x_init=init, generator=make_generators(2, 1), **EXACT["pigdm"])
    predicted = _warm_mean(g, init, start_timestep(g["prior"].schedule, start))
    err, se = _mean_error(g, r, predicted)
    assert err < 5 * se + 0.02, (err, se)
    off, _ = _mean_error(g, r, g["pm"])
    assert off > 10 * se  # the prediction differs from the posterior mean: the test can tell the start was used


# ---------------------------------------------------------------- (c) network evaluations
@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_warm_start_costs_steps_evaluations_from_t0(method, priors):
    A, y = _inpainting(2)
    hp = dict(BUDGET[method])
    steps = hp.pop("steps")
    prior = _prior_for(method, priors)
    seen, undo = _spy(prior)
    try:
        r = restore(y, A, SIGMA, prior, method=method, steps=steps, start=0.4, generator=make_generators(0, 2), **hp)
    finally:
        undo()
    t0 = start_timestep(prior.schedule, 0.4)
    expected = {"daps": steps * hp.get("ode_steps", 1),
                "repaint": repaint_nfe(steps, hp.get("jump_length", 1), hp.get("resamples", 1))}.get(method, steps)
    assert r.nfe == len(seen) == expected
    if method != "daps":  # VP methods: the first evaluation is at t₀ itself, the last at 0
        assert seen[0][1] == t0 == 400 and min(t for _, t in seen) == 0
        assert sorted({t for _, t in seen}, reverse=True) == start_timesteps(prior.schedule, steps, t0)


def test_more_steps_than_levels_below_t0_are_not_paid_for(priors):
    A, y = _inpainting(1)
    prior = priors["plain"]
    t0 = start_timestep(prior.schedule, 0.004)
    r = restore(y, A, SIGMA, prior, method="ddrm", steps=20, start=0.004, generator=make_generators(0, 1))
    assert t0 == 4 and r.nfe == t0 + 1 and warm_timesteps(prior.schedule, 20, "uniform", 0.004) == [4, 3, 2, 1, 0]


def test_daps_anneals_from_the_level_of_t0(priors):
    from invdiff.samplers import variational

    A, y = _inpainting(1)
    prior = priors["plain"]
    levels = []
    real = variational.daps_x0hat

    def spy(p, x, sigma, ode_steps, *a):
        levels.append(sigma)
        return real(p, x, sigma, ode_steps, *a)

    variational.daps_x0hat = spy
    try:
        restore(y, A, SIGMA, prior, method="daps", steps=4, ode_steps=1, langevin_steps=2, start=0.3,
                generator=make_generators(0, 1))
    finally:
        variational.daps_x0hat = real
    a = prior.schedule.alpha_bar(start_timestep(prior.schedule, 0.3))
    assert levels[0] == pytest.approx(math.sqrt((1 - a) / a)) and len(levels) == 4 and levels == sorted(levels)[::-1]


# ---------------------------------------------------------------- (d) best-of-K
@pytest.mark.parametrize("method", ["ddrm", "dps"])
def test_best_of_k_picks_the_smallest_residual_whatever_the_batch_size(method, priors):
    A, y = _inpainting(3)
    prior = priors["plain"]
    runs = [restore(y, A, SIGMA, prior, method=method, steps=5, samples=4, select="residual", batch_size=bs,
                    generator=make_generators(6, 3)) for bs in (None, 1, 5)]
    r = runs[0]
    xs = r.samples
    own = torch.stack([torch.linalg.vector_norm((y[i] - A.select(i)(xs[i])).flatten(1), dim=1) for i in range(3)])
    torch.testing.assert_close(r.residuals, own, rtol=1e-12, atol=1e-12)
    assert r.residuals.shape == (3, 4) and r.chosen.shape == (3,)
    assert torch.equal(r.chosen, own.argmin(1)) and len(set(r.chosen.tolist())) > 1  # not always the same index
    assert torch.equal(r.mean, xs[torch.arange(3), r.chosen])
    for other in runs[1:]:
        assert torch.equal(other.chosen, r.chosen)
        torch.testing.assert_close(other.residuals, r.residuals, rtol=1e-10, atol=1e-12)
    plain = restore(y, A, SIGMA, prior, method=method, steps=5, samples=4, generator=make_generators(6, 3))
    assert plain.residuals is None and plain.chosen is None and torch.equal(plain.samples, r.samples)
    torch.testing.assert_close(plain.mean, xs.mean(1))


@pytest.mark.parametrize("method", ["ddrm", "palette"])
def test_mbr_picks_the_sample_nearest_the_others_whatever_the_batch_size(method, priors):
    """select="mbr": the sample k that minimises Σ_j ‖x_k − x_j‖² over the K samples (computed here pair by pair,
    the definition), the same choice for any batch size, with the measurement residuals reported as well."""
    A, y = _inpainting(3)
    prior = _prior_for(method, priors)
    runs = [restore(y, A, SIGMA, prior, method=method, steps=5, samples=5, select="mbr", batch_size=bs,
                    generator=make_generators(6, 3)) for bs in (None, 2)]
    r = runs[0]
    xs = r.samples
    pair = torch.tensor([[sum(float((xs[i, k] - xs[i, j]).pow(2).sum()) for j in range(5)) for k in range(5)]
                         for i in range(3)], dtype=xs.dtype)
    assert torch.equal(r.chosen, pair.argmin(1)) and len(set(r.chosen.tolist())) > 1
    assert torch.equal(r.mean, xs[torch.arange(3), r.chosen])
    # RMS distance to the mean: Σ_j ‖x_k − x_j‖² = K‖x_k − x̄‖² + Σ_j ‖x_j − x̄‖², so the two orders agree
    n = xs[0, 0].numel()
    spread = (xs - xs.mean(1, keepdim=True)).pow(2).flatten(2).sum(2).sum(1, keepdim=True)
    torch.testing.assert_close(r.distances, ((pair - spread) / (5 * n)).sqrt(), rtol=1e-9, atol=1e-12)
    own = torch.stack([torch.linalg.vector_norm((y[i] - A.select(i)(xs[i])).flatten(1), dim=1) for i in range(3)])
    torch.testing.assert_close(r.residuals, own, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(r.std, xs.std(1, unbiased=False))
    assert torch.equal(runs[1].chosen, r.chosen)
    torch.testing.assert_close(runs[1].samples, r.samples, rtol=1e-7, atol=1e-7)


# ---------------------------------------------------------------- (e) batch invariance of the warm start
@pytest.mark.parametrize("method", ["ddrm", "ddnm", "dps", "pigdm", "daps", "repaint", "reddiff", "diffpir", "palette"])
def test_warm_start_is_batch_invariant(method, priors):
    A, y = _inpainting(4)
    hp = dict(BUDGET[method])
    prior = _prior_for(method, priors)
    x_init = torch.rand(4, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 2 - 1
    kw = dict(samples=2, start=0.35, **hp)
    if method == "palette":
        kw["paste"] = True
    full = restore(y, A, SIGMA, prior, method=method, generator=make_generators(8, 4), x_init=x_init, **kw)
    for i in (0, 3):
        alone = restore(y[i:i + 1], A.select(i), SIGMA, prior, method=method, generator=make_generators(8, 1, start=i),
                        x_init=x_init[i:i + 1], **kw)
        torch.testing.assert_close(alone.samples[0], full.samples[i], rtol=1e-7, atol=1e-7)
    split = restore(y, A, SIGMA, prior, method=method, generator=make_generators(8, 4), x_init=x_init, batch_size=3, **kw)
    torch.testing.assert_close(split.samples, full.samples, rtol=1e-7, atol=1e-7)
    assert full.hyper_parameters["init"] == "x_init"


def test_the_warm_state_is_the_noised_estimate_from_each_images_stream(priors):
    A, y = _inpainting(3)
    prior = priors["plain"]
    x_init = torch.rand(3, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 2 - 1
    seen, undo = _spy(prior)
    try:
        restore(y, A, SIGMA, prior, method="ddrm", steps=4, samples=2, start=0.5, x_init=x_init,
                generator=make_generators(8, 3))
    finally:
        undo()
    x_t, t = seen[0]
    a = prior.schedule.alpha_bar(t)
    gens = rng.repeat(make_generators(8, 3), 2)  # restore's derived stream of sample k of image i
    z = torch.stack([torch.randn((1, 8, 8), generator=g, dtype=torch.float64) for g in gens])
    expected = math.sqrt(a) * x_init.repeat_interleave(2, 0) + math.sqrt(1 - a) * z
    torch.testing.assert_close(x_t, expected, rtol=1e-12, atol=1e-12)
    assert t == start_timestep(prior.schedule, 0.5)


def test_named_initial_estimates(priors):
    # pinv (A⁺y), measurement (y on the image grid) and zeros feed the same mechanism
    from invdiff.samplers.warmstart import initial_estimate

    A, y = _inpainting(2)
    torch.testing.assert_close(initial_estimate("pinv", y, A, y.shape), A.pinv(y))
    torch.testing.assert_close(initial_estimate("measurement", y, A, y.shape), A.on_grid(y, y.shape)[:, :1])
    sr = O.BlockAverage(2)
    ys = sr(y)
    assert initial_estimate("measurement", ys, sr, y.shape).shape == y.shape  # bicubic upsampling
    assert torch.equal(initial_estimate("zeros", y, A, y.shape), torch.zeros_like(y))
    a = restore(y, A, SIGMA, priors["plain"], method="ddrm", steps=4, start=0.5, init="pinv", generator=make_generators(1, 2))
    b = restore(y, A, SIGMA, priors["plain"], method="ddrm", steps=4, start=0.5, x_init=A.pinv(y),
                generator=make_generators(1, 2))
    assert torch.equal(a.samples, b.samples) and a.hyper_parameters["init"] == "pinv"


def test_a_classical_init_is_that_baseline_run_on_the_measurement(priors):
    """init="biharmonic" starts from exactly what invdiff.baselines gives for y (the same noise σ), as if passed
    as x_init; the report names the init."""
    from invdiff.baselines import run_baseline

    A, y = _inpainting(2)
    prior = priors["plain"]
    a = restore(y, A, SIGMA, prior, method="ddrm", steps=4, start=0.5, init="biharmonic", generator=make_generators(1, 2))
    b = restore(y, A, SIGMA, prior, method="ddrm", steps=4, start=0.5, x_init=run_baseline("biharmonic", y, A, SIGMA),
                generator=make_generators(1, 2))
    assert torch.equal(a.samples, b.samples) and a.hyper_parameters["init"] == "biharmonic"


# ---------------------------------------------------------------- (f) bad values
def test_bad_warm_start_values_are_refused(priors):
    A, y = _inpainting(2)
    prior = priors["plain"]

    def run(method="ddrm", op=A, yy=y, **kw):
        return restore(yy, op, SIGMA, prior, method=method, steps=3, generator=make_generators(0, 2), **kw)

    for bad in (0, 0.0, -0.2, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"start must be in \(0, 1\]"):
            run(start=bad)
    with pytest.raises(ValueError, match="start must be a number"):
        run(start="half")
    with pytest.raises(ValueError, match="init must be one of 'pinv', 'measurement', 'zeros', 'wiener'"):
        run(start=0.5, init="bogus")
    with pytest.raises(ValueError, match="init='wiener': this baseline needs a spatially invariant blur"):
        run(start=0.5, init="wiener")
    phase = O.PhaseRetrieval(2.0)
    yp = phase(torch.zeros(2, 1, 8, 8, dtype=torch.float64))
    with pytest.raises(ValueError, match="init='pinv' needs a linear operator.*x_init"):
        run("dps", phase, yp, start=0.5)
    with pytest.raises(ValueError, match="init='measurement'"):
        run("dps", phase, yp, start=0.5, init="measurement")
    assert run("dps", phase, yp, start=0.5, init="zeros").nfe == 3  # zeros, or an estimate, serve non-linear operators
    assert run("dps", phase, yp, start=0.5, x_init=torch.zeros(2, 1, 8, 8, dtype=torch.float64)).nfe == 3
    for wrong in (torch.zeros(1, 1, 8, 8), torch.zeros(2, 1, 4, 4), torch.zeros(2, 8, 8), torch.zeros(2, 3, 8, 8)):
        with pytest.raises(ValueError, match="x_init must have the images' shape"):
            run(start=0.5, x_init=wrong)
    with pytest.raises(ValueError, match="x_init must be a torch.Tensor"):
        run(start=0.5, x_init=[[0.0]])
    with pytest.raises(ValueError, match="finite"):
        run(start=0.5, x_init=torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match="give start < 1"):
        run(x_init=torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="sigma_min"):
        run("daps", start=0.001, sigma_min=0.1)
    with pytest.raises(ValueError, match="select must be None"):
        run(select="best")


def test_best_of_k_passes_over_a_diverged_sample():
    from invdiff.samplers.registry import _summarise

    A = O.Identity()
    y = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    x = torch.stack([torch.full((3, 1, 2, 2), v, dtype=torch.float64) for v in (1.0, 2.0)])  # (B=2, K=3, …)
    x[0, 0] = float("nan")
    x[0, 2] = 0.5
    x[1, 1] = -0.25
    s = _summarise(x, "residual", y, A.unchecked())
    assert s["chosen"].tolist() == [2, 1] and torch.isnan(s["residuals"][0, 0])
    assert torch.equal(s["mean"], torch.stack([x[0, 2], x[1, 1]]))
    # nearest the others: the diverged sample is left out of the mean (image 0: 0.5 and 1.0, both 0.25 from 0.75,
    # the first taken); image 1: -0.25, 2, 2 (mean 1.25): a 2
    s = _summarise(x, "mbr", y, A.unchecked())
    assert s["chosen"].tolist() == [1, 0] and torch.isnan(s["distances"][0, 0])
    torch.testing.assert_close(s["distances"][0, 1:], torch.tensor([0.25, 0.25], dtype=torch.float64))


def test_phase_retrieval_can_start_from_hio(priors):
    """init="hio" (phase retrieval's classical estimate) is invdiff.baselines' HIO run on y, as if passed as x_init;
    on an operator HIO cannot invert it is a clear error before any network evaluation."""
    from invdiff.baselines import run_baseline

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    A = O.PhaseRetrieval(2.0)
    y = A(x)
    prior = priors["plain"]
    a = restore(y, A, SIGMA, prior, method="dps", steps=3, start=0.5, init="hio", generator=make_generators(1, 2))
    b = restore(y, A, SIGMA, prior, method="dps", steps=3, start=0.5, x_init=run_baseline("hio", y, A, SIGMA),
                generator=make_generators(1, 2), x_shape=x.shape)
    assert torch.equal(a.samples, b.samples) and a.hyper_parameters["init"] == "hio"
    B, yb = _inpainting(2)
    with pytest.raises(ValueError, match="init='hio'.*phase-retrieval"):
        restore(yb, B, SIGMA, prior, method="ddrm", steps=3, start=0.5, init="hio", generator=make_generators(1, 2))


def test_the_figure_names_a_chosen_sample_and_not_a_mean():
    """With a selection the figure's panel is one of the K samples (its number, and by what it was chosen);
    without one it is the posterior mean."""
    from types import SimpleNamespace

    from invdiff.outputs import _figure_items

    img = torch.zeros(1, 3, 4, 4)
    res = SimpleNamespace(mean=img, std=img)
    labels = lambda report: [it[0] for it in _figure_items(report, img[0], res, None, None, None, 3)]  # noqa: E731
    assert "posterior mean (K=3)" in labels({"measurement_kind": "image"})
    by_mean = {"measurement_kind": "image", "selection": {"chosen": 1, "residuals": [1, 2, 3], "distances": [3, 1, 2]}}
    assert "sample 2 of 3, nearest their mean" in labels(by_mean)
    assert "sample 1 of 3, least residual" in labels({"measurement_kind": "image",
                                                      "selection": {"chosen": 0, "residuals": [1, 2, 3]}})
