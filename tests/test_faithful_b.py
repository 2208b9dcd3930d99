"""DPS, DAPS, RePaint and Palette against independent transcriptions of their authors' update rules, and the task
presets that follow DPS/DAPS (phase-retrieval canvas, motion kernels, per-task step sizes).

Each transcription is written from the paper and the authors' released code (named in each test), with the same
inputs and the same noise draws as invdiff; they run in float64 on the exact ε of Gaussian data, so agreement is
to float64 rounding amplified by a few hundred operations (tolerance 1e-9), far below float32 rounding."""

from __future__ import annotations

import math

import pytest
import torch

import invdiff.operators as O
from invdiff.analytic import GaussianEps
from invdiff.prior import EpsPrior
from invdiff.rng import make_generators
from invdiff.samplers.core import sample
from invdiff.samplers.guided import DPS, repaint, repaint_nfe, repaint_schedule
from invdiff.samplers.palette import palette, start_timesteps
from invdiff.samplers.problem import Problem
from invdiff.samplers.variational import daps
from invdiff.schedule import NoiseSchedule
from invdiff.tasks import TASKS, TaskOptions

from test_faithful_a import _ref_schedule_jump

SHAPE = (2, 1, 6, 6)
D = 36
TOL = dict(rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def prior():
    g = torch.Generator().manual_seed(0)
    s = NoiseSchedule.linear()
    mu = 0.8 * torch.randn(D, dtype=torch.float64, generator=g)  # large enough that x̂0 leaves [-1, 1] (clipping)
    return EpsPrior(GaussianEps(mu, torch.eye(D, dtype=torch.float64), s, SHAPE[1:]), s)


def _data(kind: str):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(SHAPE, dtype=torch.float64, generator=g) * 2 - 1)
    if kind == "inpaint":
        A = O.Inpainting(O.random_mask(SHAPE, p=0.5, generator=make_generators(3, SHAPE[0])).double())
    elif kind == "blur":
        A = O.Blur(O.gaussian_kernel(3, 0.8).double(), padding="reflect")
    else:
        A = O.PhaseRetrieval(2.0)
    y = A(x) + 0.05 * torch.randn(A(x).shape, dtype=torch.float64, generator=g)
    return A, y


def _eps(prior, x, t):
    return prior.net(x, torch.full((x.shape[0],), t, dtype=torch.long))


def _noise(gens, shape):
    """The next draw of each image's stream, as invdiff.rng draws it."""
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=torch.float64) for g in gens])


class _Stop(Exception):
    pass


# ---------------------------------------------------------------- DPS
def _dps_reference_step(prior, A, y, x_t, t, zeta, gens):
    """DPS2022/diffusion-posterior-sampling: ``p_sample`` (ancestral DDPM step from the *clipped* x̂0, posterior
    variance β̃_t) then ``PosteriorSampling.conditioning``: x_{t−1} −= ζ ∇_{x_t} torch.linalg.norm(y − A(x̂0)),
    x̂0 the clipped ``pred_xstart``; one image at a time (the authors' batch size)."""
    s = prior.schedule
    ab, ab_prev, beta = float(s.alpha_bar(t)), float(s.alpha_bar(t - 1)), float(s.betas[t])
    z = _noise(gens, x_t.shape)
    out = []
    for i in range(x_t.shape[0]):
        x = x_t[i : i + 1].clone().requires_grad_(True)
        x0 = ((x - math.sqrt(1 - ab) * _eps(prior, x, t)) / math.sqrt(ab)).clamp(-1, 1)
        mean = (math.sqrt(ab_prev) * beta / (1 - ab)) * x0 + (math.sqrt(1 - beta) * (1 - ab_prev) / (1 - ab)) * x
        var = beta * (1 - ab_prev) / (1 - ab)
        x_prev = mean + math.sqrt(var) * z[i : i + 1]
        norm = torch.linalg.norm(y[i : i + 1] - A.select(i)(x0))
        (g,) = torch.autograd.grad(norm, x)
        out.append((x_prev - zeta * g).detach())
    return torch.cat(out)


@pytest.mark.parametrize("kind", ["inpaint", "phase"])
def test_dps_step_is_the_reference_step(prior, kind):
    A, y = _data(kind)
    t, zeta = 600, 0.7
    x_t = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 1.5
    got = []

    def grab(info):
        got.append(info["x_t"].clone())
        raise _Stop

    p = Problem(prior=prior, y=y, op=A, sigma=0.05, shape=SHAPE, generator=make_generators(9, 2), clip=True)
    with pytest.raises(_Stop):
        sample(prior, SHAPE, steps=1000, eta=1.0, guidance=DPS(p, zeta=zeta), generator=p.generator, x_T=x_t,
               t_start=t, callback=grab, device="cpu")
    ref = _dps_reference_step(prior, A, y, x_t, t, zeta, make_generators(9, 2))
    # x̂0 is clipped somewhere, or the clipped-gradient check would be vacuous
    x0 = (x_t - math.sqrt(1 - float(prior.schedule.alpha_bar(t))) * _eps(prior, x_t, t)) / math.sqrt(float(prior.schedule.alpha_bar(t)))
    assert (x0.abs() > 1).any() and (x0.abs() < 1).any()
    torch.testing.assert_close(got[0], ref, **TOL)


def test_dps_raw_gradient_option_differs_and_a_zero_residual_gives_no_nan(prior):
    A, _ = _data("inpaint")
    t = 600
    x_t = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(4)) * 1.5
    ab = float(prior.schedule.alpha_bar(t))
    x0c = ((x_t - math.sqrt(1 - ab) * _eps(prior, x_t, t)) / math.sqrt(ab)).clamp(-1, 1)
    y = A(x0c)  # the measurement of the clipped x̂0 itself: a zero residual for the reference gradient
    grads = {}
    for mode in ("clipped", "raw"):
        p = Problem(prior=prior, y=y, op=A, sigma=0.05, shape=SHAPE, generator=make_generators(9, 2), clip=True)
        grads[mode], _, _ = DPS(p, zeta=1.0, gradient=mode)._norm_gradient(x_t, t)
    assert torch.isfinite(grads["clipped"]).all() and torch.equal(grads["clipped"], torch.zeros_like(x_t))
    assert torch.isfinite(grads["raw"]).all() and grads["raw"].abs().max() > 0
    with pytest.raises(ValueError, match="gradient"):
        DPS(p, gradient="squared")


# ---------------------------------------------------------------- DAPS
def _edm(n, smax, smin):
    return [(smax ** (1 / 7) + i / n * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7 for i in range(n + 1)]


def _daps_reference(prior, A, y, *, steps, ode_steps, langevin_steps, lr, tau, gens):
    """zhangbingliang2019/DAPS ``DAPS.sample`` with ``edm_daps`` and ``MCMCSampler`` (langevin, prior_solver
    gaussian): annealing σ from EDM(200 → steps, σ_max 100, σ_min 0.1) with the last level replaced by 0; x̂0 by
    torchdiffeq's Euler on dx/dσ = −σ ∇log p = (x − D(x; σ))/σ over EDM(σ → 0.01, ode_steps); Langevin
    x ← x + lr_i [−∇‖A x − y‖²/τ² + (x̂0 − x_t)/σ² + (x_t − x)/σ²] + √(2 lr_i) ε, lr_i = lr (1 + i/(steps+1)(0.01 − 1));
    x_t = x0y + σ_{i+1} ε. D(x; σ) = x − σ ε_θ(x/√(1+σ²), t(σ)) (VP preconditioning; the network's time is the
    discrete t whose √((1−ᾱ)/ᾱ) is nearest σ in log scale — invdiff's priors are discrete-time)."""
    ac = prior.schedule.alphas_cumprod.double()
    lsig = ((1 - ac) / ac).sqrt().log()

    def D(x, s):
        t = int((lsig - math.log(s)).abs().argmin())
        return x - s * _eps(prior, x / math.sqrt(1 + s * s), t)

    levels = _edm(steps, 100.0, 0.1)[:-1] + [0.0]
    xt = 100.0 * _noise(gens, SHAPE)
    for i in range(steps):
        s = levels[i]
        x = xt
        ode = _edm(ode_steps, s, 0.01)
        for a, b in zip(ode, ode[1:]):
            x = x + (b - a) * ((x - D(x, a)) / a)
        x0hat = x
        lr_i = lr * (1 + i / (steps + 1) * (0.01 - 1))
        x = x0hat.clone()
        for _ in range(langevin_steps):
            xg = x.clone().requires_grad_(True)
            loss = ((A(xg) - y) ** 2).flatten(1).sum(-1).sum()
            (grad,) = torch.autograd.grad(loss, xg)
            score = -grad / tau**2 + (x0hat - xt) / s**2 + (xt - x) / s**2
            x = x + lr_i * score + math.sqrt(2 * lr_i) * _noise(gens, SHAPE)
        xt = x + levels[i + 1] * _noise(gens, SHAPE)
    return xt


@pytest.mark.parametrize("kind", ["blur", "phase"])
def test_daps_annealing_is_the_reference(prior, kind):
    A, y = _data(kind)
    hp = dict(steps=3, ode_steps=2, langevin_steps=4, lr=2e-5, tau=0.01)
    p = Problem(prior=prior, y=y, op=A, sigma=0.05, shape=SHAPE, generator=make_generators(5, 2), clip=False)
    got = daps(p, **hp)
    ref = _daps_reference(prior, A, y, **hp, gens=make_generators(5, 2))
    assert p.nfe == hp["steps"] * hp["ode_steps"]
    torch.testing.assert_close(got, ref, rtol=1e-8, atol=1e-8)


# ---------------------------------------------------------------- RePaint
def _repaint_reference(prior, mask, y, *, steps, jump_length, resamples, gens):
    """andreas128/RePaint ``p_sample_loop_progressive`` with ``schedule_jump_params`` (n_sample 1) and
    ``inpa_inj_sched_prev``: on the respaced chain (ᾱ'_i = ᾱ at the i-th of ``steps`` uniformly spaced timesteps),
    a reverse step at index i draws the step noise, then (from the second reverse step on) merges
    mask ⊙ (√ᾱ'_i y + √(1−ᾱ'_i) ξ) + (1 − mask) ⊙ x, then samples the DDPM posterior from the clipped x̂0 (variance
    β̃', none at i = 0); a step up from i to i+1 is x ← √(1−β'_{i+1}) x + √β'_{i+1} z."""
    T = prior.schedule.num_timesteps
    ts = [round(i * (T - 1) / (steps - 1)) for i in range(steps)]
    abar = [float(prior.schedule.alpha_bar(t)) for t in ts]
    # the schedule, transcribed from get_schedule_jump (jump2/jump3 off; the same function as DDNM's time travel)
    times = _ref_schedule_jump(steps, jump_length, resamples)
    x = _noise(gens, SHAPE)
    pred = None
    for last, cur in zip(times[:-1], times[1:]):
        if cur < last:
            noise = _noise(gens, SHAPE)
            if pred is not None:
                a = abar[last]
                x = mask * (math.sqrt(a) * y + math.sqrt(1 - a) * _noise(gens, SHAPE)) + (1 - mask) * x
            a = abar[last]
            a_prev = abar[last - 1] if last > 0 else 1.0
            beta = 1 - a / a_prev
            x0 = ((x - math.sqrt(1 - a) * _eps(prior, x, ts[last])) / math.sqrt(a)).clamp(-1, 1)
            mean = (math.sqrt(a_prev) * beta / (1 - a)) * x0 + (math.sqrt(1 - beta) * (1 - a_prev) / (1 - a)) * x
            var = beta * (1 - a_prev) / (1 - a)
            x = mean + (math.sqrt(var) * noise if last != 0 else 0)
            pred = x0
        else:
            beta = 1 - abar[cur] / abar[last]
            x = math.sqrt(1 - beta) * x + math.sqrt(beta) * _noise(gens, SHAPE)
    return x, times


def test_repaint_is_the_reference(prior):
    A, y = _data("inpaint")
    hp = dict(steps=12, jump_length=3, resamples=3)
    p = Problem(prior=prior, y=y, op=A, sigma=0.05, shape=SHAPE, generator=make_generators(7, 2), clip=True)
    got = repaint(p, **hp)
    ref, times = _repaint_reference(prior, A.mask.double(), y, **hp, gens=make_generators(7, 2))
    assert repaint_schedule(**hp) == times
    assert p.nfe == repaint_nfe(**hp) == sum(1 for a, b in zip(times, times[1:]) if b < a) > hp["steps"]
    torch.testing.assert_close(got, ref, **TOL)


def test_repaint_default_schedule_is_the_papers():
    ts = repaint_schedule(250, 10, 10)  # the paper's setting: 250 steps, jumps of 10, 10 resamplings
    assert ts[0] == 249 and ts[-1] == -1 and all(abs(a - b) == 1 for a, b in zip(ts, ts[1:]))
    assert repaint_nfe(250, 10, 10) == 250 + 24 * 9 * 10  # 24 jump points, 9 extra passes of 10 steps each
    assert repaint_nfe(50, 5, 1) == 50  # no resampling


# ---------------------------------------------------------------- Palette
def test_palette_start_spaces_its_steps_over_the_noised_range():
    s = NoiseSchedule.linear()
    ts = start_timesteps(s, 50, 500)
    assert len(ts) == 50 and ts[0] == 500 and ts[-1] == 0 and ts == sorted(ts, reverse=True)
    assert start_timesteps(s, 2000, 10) == list(range(10, -1, -1))  # no more steps than timesteps


def _tiny_palette(cond_channels: int = 2):
    from invdiff.nets.unet import UNet, UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, cond_channels=cond_channels, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_levels=())).double()
    return EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny-palette"})


def test_palette_runs_steps_network_evaluations_from_t_start_and_can_paste():
    prior = _tiny_palette()
    A = O.Inpainting(O.box_mask((2, 1, 8, 8), generator=make_generators(0, 2)).double())
    y = A(torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    seen = []
    forward = prior.net.forward

    def spy(x, t, *a):
        seen.append(int(t[0]))
        return forward(x, t, *a)

    prior.net.forward = spy
    p = Problem(prior=prior, y=y, op=A, sigma=0.05, shape=(2, 1, 8, 8), generator=make_generators(2, 2), clip=True)
    out = palette(p, steps=20, start=0.5)
    assert p.nfe == 20 == len(seen) and seen[0] == round(0.5 * 999) and seen[-1] == 0
    assert not torch.allclose(A(out), y)
    p2 = Problem(prior=prior, y=y, op=A, sigma=0.05, shape=(2, 1, 8, 8), generator=make_generators(2, 2), clip=True)
    pasted = palette(p2, steps=20, start=0.5, paste=True)
    m = A.mask.double().expand_as(out)
    torch.testing.assert_close(pasted * m, y * m, rtol=0, atol=1e-12)  # the known pixels are the measurement
    torch.testing.assert_close(pasted * (1 - m), out * (1 - m), rtol=0, atol=1e-12)  # the rest is the sample


# ---------------------------------------------------------------- tasks
def test_phase_retrieval_canvas_is_dps_and_daps():
    A = O.PhaseRetrieval(2.0)
    assert A.out_shape((1, 3, 256, 256)) == (1, 3, 384, 384)  # int(2/8 · 256) = 64 zeros on each side
    assert A.out_shape((1, 1, 32, 32)) == (1, 1, 48, 48)
    assert A.pads(256, 256) == (64, 64, 64, 64)
    assert A.in_shape((1, 3, 384, 384)) == (1, 3, 256, 256)
    assert TASKS["phase-retrieval"].x_shape((1, 1, 48, 48), TaskOptions()) == (1, 1, 32, 32)
    assert O.PhaseRetrieval(2.0, canvas="total").out_shape((1, 1, 32, 32)) == (1, 1, 64, 64)
    with pytest.raises(ValueError, match="canvas"):
        A.in_shape((1, 1, 47, 47))


def test_motionblur_model_path_length_and_straight_lines():
    from invdiff.operators.motion import _Uniforms, motionblur_path

    size, n = 61, 400
    diag = math.hypot(2 * size, 2 * size)
    for intensity in (0.0, 0.5, 1.0):
        g = torch.Generator().manual_seed(3)
        lengths = []
        for _ in range(n):
            pts = motionblur_path(_Uniforms(g), size, intensity)
            lengths.append(float((pts[1:] - pts[:-1]).norm(dim=1).sum()))
        # the walk stops at the first step past L = 0.75·D·(U(0,1) + U(0, I²)): E[L] = 0.75·D·(1 + I²)/2, and the
        # path (which omits the first increment's length) differs from L by less than one step (mean ≤ D(1.1−I)/31)
        expect = 0.75 * diag * (1 + intensity**2) / 2
        se = 0.75 * diag * math.sqrt((1 + intensity**4) / 12 / n)
        step = diag * (1.1 - intensity) / 31
        assert abs(sum(lengths) / n - expect) < 5 * se + step, (intensity, sum(lengths) / n, expect)
    pts = motionblur_path(_Uniforms(torch.Generator().manual_seed(0)), size, 0.0)
    c = pts - pts.mean(0)
    sv = torch.linalg.svdvals(c)
    assert sv[1] < 1e-9 * sv[0]  # intensity 0: every angle is 0, a straight line (then rotated)


def test_motion_kernels_default_and_the_other_model():
    k = O.motion_kernels(3, 61, generator=make_generators(0, 3))
    assert k.shape == (3, 61, 61) and (k >= 0).all()
    torch.testing.assert_close(k.double().sum((1, 2)), torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(O.motion_kernels(1, 61, generator=make_generators(0, 3)[1:2])[0], k[1])  # per-image streams
    x = torch.zeros(1, 1, 128, 128)  # ≥ 128: the 61×61 preset
    op = TASKS["motion-deblur"].operator(x.shape, TaskOptions(), generator=make_generators(0, 1))
    torch.testing.assert_close(op.kernel[0] if op.kernel.ndim == 3 else op.kernel,
                               O.motion_kernels(1, 61, generator=make_generators(0, 1))[0])
    op2 = TASKS["motion-deblur"].operator(x.shape, TaskOptions(motion_model="boracchi-foi"), generator=make_generators(0, 1))
    torch.testing.assert_close(op2.kernel[0] if op2.kernel.ndim == 3 else op2.kernel,
                               O.shake_kernels(1, 61, generator=make_generators(0, 1))[0])
    with pytest.raises(ValueError, match="motion model"):
        TASKS["motion-deblur"].operator(x.shape, TaskOptions(motion_model="nope"))


def test_tasks_carry_the_reference_step_sizes():
    from invdiff.tasks import DPS_REFERENCE_ZETA

    assert DPS_REFERENCE_ZETA == {"deblur": 0.3, "motion-deblur": 0.3, "nonuniform-deblur": 0.3, "sr": 0.3,
                                  "inpaint": 0.5, "phase-retrieval": 1.0}
    assert all("zeta" not in TASKS[name].hyper_parameters.get("dps", {}) for name in DPS_REFERENCE_ZETA)  # ζ = 1
    assert TASKS["deblur"].hyper_parameters["daps"]["lr"] == 1e-4 and TASKS["inpaint"].hyper_parameters["daps"]["lr"] == 5e-5


def test_dps_ffhq_suite_is_the_released_protocol():
    from pathlib import Path

    from invdiff.bench.suite import load_suite

    suite = load_suite(Path(__file__).parent.parent / "invdiff" / "bench" / "suites" / "dps-ffhq.json")
    assert suite.steps["dps"] == 1000 and suite.noise_sigma == 0.05
    from invdiff.tasks import DPS_REFERENCE_ZETA

    assert "zeta" not in suite.hyper_parameters.get("dps", {})  # ζ is set task by task, as released
    assert all(s.hyper_parameters["dps"]["zeta"] == DPS_REFERENCE_ZETA[s.task] for s in suite.tasks)
    specs = {(s.task, s.options.get("mask")): s for s in suite.tasks}
    assert specs[("inpaint", "random")].options["mask_fraction"] == [0.3, 0.7]
    # the released random mask: a missing fraction drawn per image in [0.3, 0.7], batch-invariant
    opts = TaskOptions(mask="random", mask_fraction=(0.3, 0.7))
    gens = make_generators(0, 6)
    m = TASKS["inpaint"].operator((6, 3, 64, 64), opts, generator=gens).mask
    missing = 1 - m.flatten(1).mean(1)
    assert ((missing > 0.25) & (missing < 0.75)).all() and missing.std() > 0.02
    alone = TASKS["inpaint"].operator((1, 3, 64, 64), opts, generator=make_generators(0, 6)[4:5]).mask
    assert torch.equal(alone[0], m[4])


def test_palette_soft_paste_is_the_prox_of_the_unpasted_sample():
    # paste_rho = ρ: argmin_z ‖y − A z‖² + ρ‖z − x‖² of the sample x the same streams give without the paste; on
    # A's range this is (s·Uᵀy + ρ·Vᵀx)/(s² + ρ), recomputed here from an explicit SVD of 2× block averaging
    prior = _tiny_palette(cond_channels=1)  # SR: the upsampled measurement
    A = O.BlockAverage(2)
    x0 = torch.rand(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    y = A(x0) + 0.05 * torch.randn(2, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))

    def run(**kw):
        p = Problem(prior=prior, y=y, op=A, sigma=0.05, shape=(2, 1, 8, 8), generator=make_generators(2, 2), clip=True)
        return palette(p, steps=5, start=0.5, **kw)

    plain = run()
    M = torch.func.jacrev(lambda v: A(v.reshape(1, 1, 8, 8)).flatten())(torch.zeros(64, dtype=torch.float64))
    for rho in (0.05, 1.0):
        soft = run(paste=True, paste_rho=rho)
        want = torch.linalg.solve(M.T @ M + rho * torch.eye(64, dtype=torch.float64),
                                  (M.T @ y.reshape(2, 16).T + rho * plain.reshape(2, 64).T)).T
        torch.testing.assert_close(soft.reshape(2, 64), want, rtol=1e-9, atol=1e-9)
    hard = run(paste=True)
    torch.testing.assert_close(A(hard), y, rtol=0, atol=1e-12)
    res = [float((A(run(paste=True, paste_rho=r)) - y).norm()) for r in (0.0, 0.05, 1.0, 100.0)]
    assert res == sorted(res) and res[-1] < float((A(plain) - y).norm())  # softer: further from y, never past x


def test_paste_rho_needs_the_paste_and_is_not_negative():
    from invdiff.samplers.params import PaletteParams

    with pytest.raises(ValueError, match="paste=True"):
        PaletteParams(paste_rho=0.1)
    with pytest.raises(ValueError, match="≥ 0"):
        PaletteParams(paste=True, paste_rho=-1.0)
