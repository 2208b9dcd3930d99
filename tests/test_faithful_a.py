"""DDNM/DDNM+, ΠGDM, DiffPIR and RED-diff against transcriptions of their references.

Each test runs invdiff (``restore`` or the method's step) and, with the same inputs and the same noise, an
independent transcription of the reference's update rule written here from the authors' code with dense
matrices: wyhuai/DDNM (``functions/svd_ddnm.py``, ``Lambda``/``Lambda_noise`` of ``svd_operators.py``),
NVlabs/RED-diff (``algos/pgdm.py``, ``algos/reddiff.py``) and yuanzhi-zhu/DiffPIR (``main_ddpir_*.py``). The
network is the exact ε of Gaussian data (a fixed linear map, differentiable), everything runs in float64, so the
two agree to rounding (tolerances 1e-9, far below any difference of rule; CG paths to their tolerance)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import invdiff.operators as O
from invdiff import rng
from invdiff.analytic import GaussianEps
from invdiff.prior import EpsPrior
from invdiff.rng import make_generators
from invdiff.samplers import METHODS, restore
from invdiff.samplers.core import jump_schedule
from invdiff.samplers.params import DDNMParams, DiffPIRParams, RedDiffParams, make_params
from invdiff.samplers.problem import Problem
from invdiff.samplers.spectral import ddnm_step
from invdiff.schedule import NoiseSchedule

SHAPE = (2, 1, 4, 4)
D = 16
TOL = dict(rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def prior():
    g = torch.Generator().manual_seed(3)
    s = NoiseSchedule.linear()
    mu = 0.3 * torch.randn(D, dtype=torch.float64, generator=g)
    m = torch.randn(D, D, dtype=torch.float64, generator=g)
    cov = 0.2 * m @ m.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
    return EpsPrior(GaussianEps(mu, cov, s, SHAPE[1:]), s)


def _ops():
    mask = (torch.arange(D) % 3 != 0).double().reshape(1, 1, 4, 4)
    return {
        "inpaint": O.Inpainting(mask),
        "sr": O.BlockAverage(2),
        "blur": O.CircularBlur(O.gaussian_kernel(3, 0.8).double()),
        "denoise": O.Identity(),
    }


def _dense(op) -> torch.Tensor:
    """A as a matrix (rows: measurements of one image, columns: its pixels)."""
    return torch.func.jacrev(lambda v: op(v.reshape(1, *SHAPE[1:])).flatten())(torch.zeros(D, dtype=torch.float64))


def _measure(op, sigma, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(SHAPE, dtype=torch.float64, generator=g) * 2 - 1
    y = op(x)
    return y + sigma * torch.randn(y.shape, dtype=torch.float64, generator=g)


def _eps(prior, x, t):
    return prior.eps(x, torch.full((x.shape[0],), t, dtype=torch.long))


def _streams(seed):
    """The per-image streams ``restore`` draws from for ``make_generators(seed, 2)`` (one sample per image)."""
    return rng.repeat(make_generators(seed, 2), 1)


def _flat(v):
    return v.reshape(v.shape[0], -1)


# ---- DDNM / DDNM+ --------------------------------------------------------------------------------------------

def _ref_ddnm_step(A, y, xt, et, a_t, a_next, eta, sigma_y, z):
    """wyhuai/DDNM: ``ddnm_diffusion`` (σ_y = 0) and ``ddnm_plus_diffusion`` with its ``Lambda``/``Lambda_noise``
    per singular value, written with a dense SVD A = U S Vᵀ (V's columns beyond rank(A) have s = 0)."""
    n = A.shape[1]
    U, S, Vh = torch.linalg.svd(A, full_matrices=True)
    V = Vh.T
    s = torch.zeros(n, dtype=A.dtype)
    s[: S.numel()] = torch.where(S > 1e-10, S, torch.zeros_like(S))
    inv = torch.where(s > 0, 1 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
    Apinv = torch.linalg.pinv(A, rtol=1e-10)
    x0 = (_flat(xt) - _flat(et) * math.sqrt(1 - a_t)) / math.sqrt(a_t)  # eq. 12
    r = (A @ x0.T).T - _flat(y)
    a, sigma_t = math.sqrt(a_next), math.sqrt(1 - a_next)
    if sigma_y == 0:  # DDNM
        x0h = x0 - (Apinv @ r.T).T
        c1, c2 = sigma_t * eta, sigma_t * math.sqrt(1 - eta**2)
        return (a * x0h + c1 * _flat(z) + c2 * _flat(et)).reshape(xt.shape)
    lam = torch.ones(n, dtype=A.dtype)
    d1 = torch.full((n,), sigma_t * eta, dtype=A.dtype)
    d2 = torch.full((n,), sigma_t * math.sqrt(1 - eta**2), dtype=A.dtype)
    if a != 0 and sigma_y != 0:
        low = (sigma_t < a * sigma_y * inv).double()
        lam = lam * (1 - low) + low * (s * sigma_t * math.sqrt(1 - eta**2) / a / sigma_y)
        d1 = d1 * (1 - low) + low * sigma_t * eta
        d2 = d2 * (1 - low)
        high = (sigma_t > a * sigma_y * inv).double()
        d1 = d1 * (1 - high) + torch.sqrt(high * (sigma_t**2 - a**2 * sigma_y**2 * inv**2))
        d2 = d2 * (1 - high)
        zero = (s == 0).double()
        d1 = d1 * (1 - zero) + zero * sigma_t * eta
        d2 = d2 * (1 - zero) + zero * sigma_t * math.sqrt(1 - eta**2)
    x0h = x0 - ((V * lam) @ (V.T @ (Apinv @ r.T))).T  # eq. 17
    noise = (V @ (d1[:, None] * (V.T @ _flat(z).T)) + V @ (d2[:, None] * (V.T @ _flat(et).T))).T  # eq. 51
    return (a * x0h + noise).reshape(xt.shape)


@pytest.mark.parametrize("opname", ["inpaint", "sr", "blur", "denoise"])
@pytest.mark.parametrize("sigma_y", [0.0, 0.05, 0.3])
@pytest.mark.parametrize("t, t_prev", [(700, 600), (120, 100), (5, -1)])
def test_ddnm_step_is_the_reference(prior, opname, sigma_y, t, t_prev):
    op = _ops()[opname]
    y = _measure(op, sigma_y)
    g = torch.Generator().manual_seed(7)
    xt = torch.randn(SHAPE, dtype=torch.float64, generator=g)
    z = torch.randn(SHAPE, dtype=torch.float64, generator=g)
    p = Problem(prior=prior, y=y, op=op, sigma=sigma_y, shape=SHAPE)
    et = _eps(prior, xt, t)
    x0 = prior.x0_from_eps(xt, torch.full((2,), t), et)
    eta = 0.85
    got = ddnm_step(p, x0, et, t_prev, eta, z)
    ref = _ref_ddnm_step(_dense(op), y, xt, et, p.alpha_bar(t), p.alpha_bar(t_prev), eta, sigma_y, z)
    torch.testing.assert_close(got, ref, **TOL)


@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
def test_ddnm_restore_runs_the_reference_loop(prior, sigma_y):
    # restore draws x_T, then one noise image per step, per image; the reference loop with the same draws
    op = _ops()["sr"]
    y = _measure(op, sigma_y)
    res = restore(y, op, sigma_y, prior, method="ddnm", steps=4, generator=make_generators(5, 2), clip=False)
    gens = _streams(5)
    x = rng.randn(SHAPE, gens, dtype=torch.float64)
    ts = prior.schedule.timesteps(4).tolist()
    A = _dense(op)
    for t, t_next in zip(ts, ts[1:] + [-1]):
        et = _eps(prior, x, t)
        z = rng.randn(SHAPE, gens, dtype=torch.float64)
        x = _ref_ddnm_step(A, y, x, et, prior.schedule.alpha_bar(t), prior.schedule.alpha_bar(t_next), 0.85, sigma_y, z)
    torch.testing.assert_close(res.mean, x, **TOL)


def _ref_schedule_jump(T_sampling, travel_length, travel_repeat):
    """wyhuai/DDNM ``get_schedule_jump`` (from RePaint)."""
    jumps = {}
    for j in range(0, T_sampling - travel_length, travel_length):
        jumps[j] = travel_repeat - 1
    t, ts = T_sampling, []
    while t >= 1:
        t = t - 1
        ts.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] = jumps[t] - 1
            for _ in range(travel_length):
                t = t + 1
                ts.append(t)
    ts.append(-1)
    return ts


@pytest.mark.parametrize("steps, length, repeat", [(10, 1, 1), (20, 5, 3), (12, 3, 2), (100, 10, 5)])
def test_time_travel_schedule_is_the_reference(steps, length, repeat):
    assert jump_schedule(steps, length, repeat) == _ref_schedule_jump(steps, length, repeat)


def test_ddnm_time_travel_is_the_reference_loop(prior):
    op = _ops()["inpaint"]
    y = _measure(op, 0.0)
    hp = {"travel_length": 2, "travel_repeat": 2}
    res = restore(y, op, 0.0, prior, method="ddnm", steps=5, generator=make_generators(2, 2), clip=False, **hp)
    gens = _streams(2)
    x = rng.randn(SHAPE, gens, dtype=torch.float64)
    ts = prior.schedule.timesteps(5).flip(0).tolist()
    A = _dense(op)
    x0_last, nfe = None, 0
    sched = _ref_schedule_jump(5, 2, 2)
    for i, j in zip(sched, sched[1:]):
        a_next = prior.schedule.alpha_bar(ts[j] if j >= 0 else -1)
        if j < i:
            t = ts[i]
            et = _eps(prior, x, t)
            nfe += 1
            x0_last = (x - et * math.sqrt(1 - prior.schedule.alpha_bar(t))) / math.sqrt(prior.schedule.alpha_bar(t))
            z = rng.randn(SHAPE, gens, dtype=torch.float64)
            x = _ref_ddnm_step(A, y, x, et, prior.schedule.alpha_bar(t), a_next, 0.85, 0.0, z)
        else:  # time travel: re-noise the last (uncorrected) x0 prediction
            x = math.sqrt(a_next) * x0_last + math.sqrt(1 - a_next) * rng.randn(SHAPE, gens, dtype=torch.float64)
    torch.testing.assert_close(res.mean, x, **TOL)
    assert res.nfe == nfe > 5


def test_ddnm_plus_without_svd_matches_the_svd_step_for_noiseless_y_and_keeps_the_noise_level(prior):
    # the same circular blur as an SVD operator and as a plain linear one (conjugate gradients; a kernel whose
    # smallest singular value, 0.33, lets 50 CG iterations reach the exact projection)
    k = O.gaussian_kernel(3, 0.5).double()
    svd, cg = O.CircularBlur(k), O.Blur(k, padding="circular")
    y = _measure(svd, 0.0)
    g = torch.Generator().manual_seed(4)
    xt = torch.randn(SHAPE, dtype=torch.float64, generator=g)
    z = torch.randn(SHAPE, dtype=torch.float64, generator=g)
    et = _eps(prior, xt, 300)
    x0 = prior.x0_from_eps(xt, torch.full((2,), 300), et)
    a = Problem(prior=prior, y=y, op=svd, sigma=0.0, shape=SHAPE)
    b = Problem(prior=prior, y=y, op=cg, sigma=0.0, shape=SHAPE)
    torch.testing.assert_close(ddnm_step(b, x0, et, 250, 0.85, z), ddnm_step(a, x0, et, 250, 0.85, z), rtol=1e-6, atol=1e-6)
    # noisy y without an SVD: with x̂0 = 0 (y = measurement noise only) and ε_θ ~ N(0, I), every direction of
    # x_{t'} must have variance σ_t² = 1 − ᾱ', as in the reference (data noise + ε + fresh noise). 4000 draws:
    # the pixel-averaged variance has a relative Monte-Carlo error of about √(2/4000)/√16·… < 2 %
    n, sy, tp = 4000, 0.3, 400
    gz = torch.Generator().manual_seed(9)
    shp = (n, 1, 4, 4)
    y = sy * torch.randn(shp, dtype=torch.float64, generator=gz)
    e = torch.randn(shp, dtype=torch.float64, generator=gz)
    zz = torch.randn((2, *shp), dtype=torch.float64, generator=gz)
    w = torch.randn(shp, dtype=torch.float64, generator=gz)
    p = Problem(prior=prior, y=y, op=cg, sigma=sy, shape=shp)
    out = ddnm_step(p, torch.zeros(shp, dtype=torch.float64), e, tp, 0.85, zz, w)
    s2 = 1 - prior.schedule.alpha_bar(tp)
    var = float(out.var(0).mean())
    assert abs(var / s2 - 1) < 0.05, (var, s2)
    # and the correction still pulls x̂0 towards y where A measures well: the mean over draws with y = A·1 is √ᾱ'·1
    p1 = Problem(prior=prior, y=cg(torch.ones(shp, dtype=torch.float64)), op=cg, sigma=sy, shape=shp)
    out1 = ddnm_step(p1, torch.ones(shp, dtype=torch.float64), torch.zeros(shp, dtype=torch.float64), tp, 0.85, zz, w)
    assert abs(float(out1.mean()) - math.sqrt(prior.schedule.alpha_bar(tp))) < 0.02


# ---- ΠGDM ------------------------------------------------------------------------------------------------------

def _ref_pgdm(prior, A, y, ts, eta, gens, mask=None):
    """NVlabs/RED-diff ``algos/pgdm.py`` (awd=True, grad_term_weight 1, ``in2`` masking when ``mask`` is given):
    x_T = √ᾱ_T A⁺y + √(1−ᾱ_T) z, then for t → s: x_s = √ᾱ_s x̂0 + c1 z + c2 ε_θ + √ᾱ_s √ᾱ_t Jᵀ(A⁺y − A⁺A x̂0)."""
    Apinv = torch.linalg.pinv(A, rtol=1e-10)
    sch = prior.schedule
    a_T = sch.alpha_bar(ts[0])
    x = math.sqrt(a_T) * (Apinv @ _flat(y).T).T.reshape(SHAPE) + math.sqrt(1 - a_T) * rng.randn(SHAPE, gens, dtype=torch.float64)
    for t, s in zip(ts, ts[1:] + [-1]):
        at, as_ = sch.alpha_bar(t), sch.alpha_bar(s)
        c1 = math.sqrt((1 - at / as_) * (1 - as_) / (1 - at)) * eta
        c2 = math.sqrt((1 - as_) - c1**2)
        xt = x.clone().requires_grad_(True)
        et = prior.eps(xt, torch.full((2,), t))
        x0 = (xt - et * math.sqrt(1 - at)) / math.sqrt(at)
        mat = (Apinv @ _flat(y).T).T - (Apinv @ (A @ _flat(x0).T)).T
        (grad,) = torch.autograd.grad((mat.detach() * _flat(x0)).sum(), xt)
        x0, et = x0.detach(), et.detach()
        if mask is not None:
            x0 = x0 * (1 - mask) + y * mask
            grad = grad * (1 - mask)
        z = rng.randn(SHAPE, gens, dtype=torch.float64) if c1 > 0 else 0.0
        x = math.sqrt(as_) * x0 + c1 * z + c2 * et + grad * math.sqrt(as_) * math.sqrt(at)
    return x


@pytest.mark.parametrize("opname", ["inpaint", "sr", "blur"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_pigdm_authors_weighting_is_the_reference(prior, opname, eta):
    op = _ops()[opname]
    y = _measure(op, 0.0)
    res = restore(y, op, 0.0, prior, method="pigdm", steps=4, eta=eta, weighting="authors",
                  generator=make_generators(8, 2), clip=False)
    mask = op.mask.double() if opname == "inpaint" else None
    ref = _ref_pgdm(prior, _dense(op), y, prior.schedule.timesteps(4).tolist(), eta, _streams(8), mask)
    torch.testing.assert_close(res.mean, ref, **TOL)
    assert res.vjps == 4


# ---- DiffPIR ---------------------------------------------------------------------------------------------------

def _ref_diffpir(prior, A, y, sigma, lam, zeta, ts, gens):
    """yuanzhi-zhu/DiffPIR (``main_ddpir_deblur.py``/``_sisr.py``, η = 0): ρ_t = λ σ_n²/σ_k² with σ_n the noise on
    the [0, 1] scale and σ_k² = (1−ᾱ_t)/ᾱ_t; the data step argmin ‖y − A x‖² + ρ‖x − x̂0‖² solved on the [0, 1]
    scale (x/2 + 1/2), then x = √ᾱ' x̂0 + √(1−ζ) √(1−ᾱ') ε̂ + √ζ √(1−ᾱ') z, ε̂ from the corrected x̂0."""
    sch = prior.schedule
    sigma01 = sigma / 2
    x = rng.randn(SHAPE, gens, dtype=torch.float64)
    n = A.shape[1]
    for t, s in zip(ts, ts[1:] + [-1]):
        at = sch.alpha_bar(t)
        et = prior.eps(x, torch.full((2,), t))
        x0 = (x - math.sqrt(1 - at) * et) / math.sqrt(at)
        rho = lam * sigma01**2 / ((1 - at) / at)
        x0p, y01 = _flat(x0) / 2 + 0.5, _flat(y) / 2 + 0.5
        sol = torch.linalg.solve(A.T @ A + rho * torch.eye(n, dtype=A.dtype), (A.T @ y01.T) + rho * x0p.T).T
        x0 = (sol * 2 - 1).reshape(SHAPE)
        if s < 0:
            return x0
        a_s = sch.alpha_bar(s)
        eps = (x - math.sqrt(at) * x0) / math.sqrt(1 - at)
        z = rng.randn(SHAPE, gens, dtype=torch.float64)
        x = math.sqrt(a_s) * x0 + math.sqrt(1 - zeta) * math.sqrt(1 - a_s) * eps + math.sqrt(zeta) * math.sqrt(1 - a_s) * z
    return x


@pytest.mark.parametrize("opname, extra, tol", [("sr", {}, 1e-9), ("blur", {}, 1e-9),
                                                 ("blur-cg", {"cg_tol": 1e-12, "cg_iters": 500}, 1e-7)])
@pytest.mark.parametrize("spacing", ["uniform", "quad"])
def test_diffpir_is_the_reference_in_its_units(prior, opname, extra, tol, spacing):
    k = O.gaussian_kernel(3, 0.8).double()
    op = O.Blur(k, padding="circular") if opname == "blur-cg" else _ops()[opname]
    sigma = 0.1
    y = _measure(op, sigma)
    res = restore(y, op, sigma, prior, method="diffpir", steps=5, lam=7.0, zeta=0.3, spacing=spacing,
                  generator=make_generators(4, 2), clip=False, **extra)
    ts = prior.schedule.timesteps(5, spacing=spacing).tolist()
    ref = _ref_diffpir(prior, _dense(op), y, sigma, 7.0, 0.3, ts, _streams(4))
    torch.testing.assert_close(res.mean, ref, rtol=tol, atol=tol)


def test_diffpir_lambda_is_four_times_the_earlier_units():
    # the earlier λ = 7 (ρ = λ σ² ᾱ/(1−ᾱ), σ on [-1, 1]) is the paper's 28: defaults keep the behaviour
    assert DiffPIRParams().lam == 28.0


@pytest.mark.parametrize("steps", [10, 20, 50, 100, 3])
def test_quad_spacing_is_diffpirs(steps):
    T = 1000
    seq = np.sqrt(np.linspace(0, T**2, steps))  # yuanzhi-zhu/DiffPIR, skip_type == "quad"
    seq = [int(s) for s in list(seq)]
    seq[-1] = seq[-1] - 1
    ref = [T - 1 - s for s in seq]  # sigmas[seq[i]] is the level of timestep T − 1 − seq[i]
    assert NoiseSchedule.linear().timesteps(steps, spacing="quad").tolist() == ref


def test_leading_spacing_is_the_ddim_codes_uniform():
    assert NoiseSchedule.linear().timesteps(100, spacing="leading").tolist() == list(range(0, 1000, 10))[::-1]


# ---- RED-diff --------------------------------------------------------------------------------------------------

def _ref_reddiff(prior, op, y, kept, lam, lr, ts, gens):
    """NVlabs/RED-diff ``algos/reddiff.py`` (σ_x0 = 0, obs_weight 1, denoise_term_weight "linear"): μ from A⁺y;
    per t: x_t = √ᾱ μ + √(1−ᾱ) n, loss = mean((y_0 − H(μ))²)/2 + λ √(1−ᾱ)/√ᾱ · mean((ε_θ − n)·μ), one Adam step;
    H(μ) keeps only the observed entries (``kept``) as the reference's inpainting H does."""
    mu = op.pinv(y).clamp(-1, 1).clone().requires_grad_(True)
    opt = torch.optim.Adam([mu], lr=lr, betas=(0.9, 0.99), weight_decay=0.0)
    sch = prior.schedule
    for t in ts:
        at = sch.alpha_bar(t)
        noise = rng.randn(SHAPE, gens, dtype=torch.float64)
        xt = math.sqrt(at) * mu.detach() + math.sqrt(1 - at) * noise
        et = prior.eps(xt, torch.full((2,), t)).detach()
        loss = 0.0
        for i in range(SHAPE[0]):  # one image at a time, as the reference (batch 1)
            e_obs = y[i][kept[i]] - op(mu)[i][kept[i]]
            w = lam * math.sqrt(1 - at) / math.sqrt(at)
            loss = loss + (e_obs**2).mean() / 2 + w * ((et[i] - noise[i]) * mu[i]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return mu.detach()


@pytest.mark.parametrize("opname", ["inpaint", "sr"])
def test_reddiff_is_the_reference_with_the_data_term_over_the_measurements(prior, opname):
    op = _ops()[opname]
    if opname == "inpaint":  # a different mask per image
        m = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
        m.view(2, -1)[0, ::2] = 1
        m.view(2, -1)[1, :5] = 1
        op = O.Inpainting(m)
        kept = m.bool()
    else:
        kept = torch.ones(2, 1, 2, 2, dtype=torch.bool)
    y = _measure(op, 0.05)
    res = restore(y, op, 0.05, prior, method="reddiff", steps=3, lam=0.25, lr=0.1, generator=make_generators(6, 2),
                  clip=False)
    ref = _ref_reddiff(prior, op, y, kept, 0.25, 0.1, prior.schedule.timesteps(3).tolist(), _streams(6))
    torch.testing.assert_close(res.mean, ref, **TOL)


# ---- one definition of the hyper-parameters --------------------------------------------------------------------

def test_restore_accepts_every_hyper_parameter_and_spacing_for_every_method(prior):
    op = O.Inpainting((torch.arange(D) % 3 != 0).double().reshape(1, 1, 4, 4))
    y = _measure(op, 0.05)
    for name, m in METHODS.items():
        defaults = m.params().as_dict()
        assert "spacing" in defaults and "steps" in defaults
        # every field goes through restore's validation (the values are the defaults)
        make_params(m.params, name, {k: v for k, v in defaults.items()})
        with pytest.raises(ValueError, match="unknown hyper-parameter"):
            make_params(m.params, name, {"not_a_parameter": 1})
        with pytest.raises(ValueError, match="spacing"):
            make_params(m.params, name, {"spacing": "cubic"})
        if m.conditional:
            continue
        res = restore(y, op, 0.05, prior, method=name, steps=3, spacing="quad", generator=make_generators(0, 2),
                      **({"langevin_steps": 2, "ode_steps": 1} if name == "daps" else {}))
        assert torch.isfinite(res.mean).all() and res.hyper_parameters["spacing"] == "quad"
    # the three the earlier restore refused
    restore(y, op, 0.05, prior, method="reddiff", steps=2, init_cg_iters=5)
    restore(y, op, 0.05, prior, method="diffpir", steps=2, grad_steps=5)
    assert RedDiffParams(init_cg_iters=5).init_cg_iters == 5 and DDNMParams(travel_length=2).travel_length == 2
