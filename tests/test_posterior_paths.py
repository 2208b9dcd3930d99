"""The conjugate-gradient paths of the methods (operators without an SVD) against the SVD paths and the exact
posterior (test_restore's "blur" is a CircularBlur with its exact SVD, "blur-cg" the same blur as a plain Blur whose
solves are all conjugate gradients), DAPS's Langevin branch, and DPS's gradient against its closed form, all on Gaussian data (see
test_restore.py for the setting and its Monte-Carlo error model)."""

from __future__ import annotations

import math

import pytest
import torch

import invdiff.operators as O
from invdiff.samplers.guided import DPS
from invdiff.samplers.problem import Problem

from test_restore import SIGMA, _run, gaussian  # noqa: F401  (the fixture)


@pytest.mark.parametrize("method, hp", [("pigdm", {"weighting": "exact", "eta": 1.0})])
def test_pigdm_cg_path_recovers_the_posterior(gaussian, method, hp):
    # the weighted pseudo-inverse by CG in measurement space: the exact posterior as through the SVD (without r²
    # in (r²AAᵀ + σ²I) the covariance would be far off)
    mean_err, cov_err, _, _ = _run(gaussian, "blur-cg", method, **hp)
    assert mean_err < 0.15, mean_err
    assert cov_err < 0.2, cov_err


def test_cg_and_svd_paths_of_pigdm_give_the_same_samples(gaussian):
    """Same operator, same streams: the weighted pseudo-inverse by CG (relative tolerance 1e-6 in a system whose
    condition number is at most (r²‖A‖² + σ²)/σ² ≈ 100) differs from the closed form by ~1e-4 relative per step,
    which 50 steps carry along far below a posterior standard deviation (psd)."""
    hp = {"weighting": "exact", "eta": 1.0, "steps": 50}
    *_, r_svd, (_, _, _, pm, pc) = _run(gaussian, "blur", "pigdm", **hp)
    *_, r_cg, _ = _run(gaussian, "blur-cg", "pigdm", **hp)
    psd = pc.diagonal().sqrt().reshape(r_svd.samples.shape[2:])
    diff = float(((r_svd.samples - r_cg.samples).abs() / psd).max())
    assert diff < 1e-2, diff


@pytest.mark.parametrize("method, hp", [("projection", {"steps": 100}), ("mcg", {"steps": 100, "zeta": 0.3})])
def test_projection_methods_without_svd_recover_the_posterior_mean(gaussian, method, hp):
    # inpainting as a composed operator (Identity @ Inpainting: linear, no SVD), so the projections are CG solves;
    # the replacement methods approximate the posterior: measured 0.07 (projection) and 0.17 (MCG) psd through the SVD
    mean_err, _, _, _ = _run(gaussian, "inpaint-cg", method, **hp)
    assert mean_err < 0.25, mean_err


def test_ddnm_without_svd_recovers_the_posterior_mean(gaussian):
    # DDNM+'s soft one-CG step (no SVD): an approximation like DDRM's; measured 0.16 psd at 100 steps
    mean_err, _, _, _ = _run(gaussian, "blur-cg", "ddnm", steps=100)
    assert mean_err < 0.25, mean_err


def test_daps_langevin_branch_recovers_the_posterior(gaussian):
    # the inner Gaussian by Langevin dynamics instead of exactly: with a step small enough for the stiffest
    # direction (η (1/σ² + 2s²/τ²) < 2) and 100 steps it mixes; measured 0.11 psd / 0.21 covariance error with 50
    # levels and 200 steps
    mean_err, cov_err, _, _ = _run(gaussian, "blur", "daps", steps=25, ode_steps=1, inner="langevin",
                                   tau=math.sqrt(2) * SIGMA, lr=0.005, lr_min_ratio=1.0, langevin_steps=100)
    assert mean_err < 0.15, mean_err
    assert cov_err < 0.25, cov_err


def test_dps_gradient_is_the_closed_form(gaussian):
    """For x0 ~ N(μ, I), x̂0(x_t) = √ᾱ x_t + (1−ᾱ) μ, so ∇_{x_t}‖y − A x̂0‖ = −√ᾱ Aᵀ r / ‖r‖ with r = y − A x̂0: DPS's
    step is the unguided step minus ζ times that, image by image (unclipped, gradient='raw')."""
    mu, prior, x = gaussian
    A = O.CircularBlur(O.gaussian_kernel(3, 0.8)).double()
    g = torch.Generator().manual_seed(4)
    xt = torch.randn(3, *x.shape[1:], dtype=torch.float64, generator=g)
    y = A(mu.reshape(x.shape).expand(3, -1, -1, -1)) + 0.3 * torch.randn(xt.shape, dtype=torch.float64, generator=g)
    p = Problem(prior=prior, y=y, op=A, sigma=SIGMA, shape=tuple(xt.shape), clip=False)
    dps = DPS(p, zeta=0.7, gradient="raw")
    t, t_prev = 400, 380
    d = dps.denoise(prior, xt, t, t_prev)
    a = float(prior.schedule.alpha_bar(t))
    x0 = math.sqrt(a) * xt + (1 - a) * mu.reshape(x.shape)
    torch.testing.assert_close(d.x0, x0, rtol=1e-10, atol=1e-10)
    r = y - A(x0)
    grad = -math.sqrt(a) * A.adjoint(r) / r.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
    x_prev = torch.randn(xt.shape, dtype=torch.float64, generator=g)
    got = dps.after_step(x_prev, xt, t, t_prev, d)
    torch.testing.assert_close(got, x_prev - 0.7 * grad, rtol=1e-9, atol=1e-9)
    assert p.nfe == 1 and p.vjps == 1
