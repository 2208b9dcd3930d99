"""Restoration methods against Gaussian data, where the exact ε and the exact posterior are known.

With x ~ N(μ, I) the conditional law p(x0 | x_t) is N(E[x0|x_t], (1−ᾱ_t) I) exactly, which is precisely the
approximation ΠGDM and DAPS make, so both must sample the exact posterior (up to discretisation and Monte-Carlo
error). DDRM, DDNM and DiffPIR make other approximations; they are checked on the mean. K = 1000 samples give a
Monte-Carlo standard error of the mean of 0.032 posterior standard deviations (psd) and of the sample covariance
of about √(2/K)·√D ≈ 0.18 relative in Frobenius norm for D = 16 (less for the low-rank parts)."""

from __future__ import annotations

import pytest
import torch

import invdiff.operators as O
from invdiff.analytic import GaussianEps, gaussian_posterior, isotropic_gaussian_case
from invdiff.prior import EpsPrior
from invdiff.rng import make_generators
from invdiff.samplers import METHODS, restore
from invdiff.schedule import NoiseSchedule

SHAPE = (1, 1, 4, 4)
D = 16
K = 1000
SIGMA = 0.1


@pytest.fixture(scope="module")
def gaussian():
    return isotropic_gaussian_case(SHAPE)


OPS = {
    "inpaint": lambda: O.Inpainting((torch.arange(16) % 3 != 0).double().reshape(1, 1, 4, 4)),
    "sr": lambda: O.BlockAverage(2),
    "blur": lambda: O.CircularBlur(O.gaussian_kernel(3, 0.8)),
}
#: the same circular blur as a plain linear operator (no SVD): methods take their conjugate-gradient paths
LINEAR_ONLY = {"blur-cg": lambda: O.Blur(O.gaussian_kernel(3, 0.8), padding="circular", separable=False),
               "inpaint-cg": lambda: O.Identity() @ OPS["inpaint"]()}


def _problem(gaussian, opname):
    mu, prior, x = gaussian
    A = {**OPS, **LINEAR_ONLY}[opname]()
    y = A(x) + SIGMA * torch.randn(A(x).shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    Amat = torch.func.jacrev(lambda v: A(v.reshape(SHAPE)).flatten())(torch.zeros(D, dtype=torch.float64))
    pm, pc = gaussian_posterior(mu, torch.eye(D, dtype=torch.float64), Amat, y.flatten(), SIGMA)
    return prior, A, y, pm, pc


def _run(gaussian, opname, method, **hp):
    prior, A, y, pm, pc = _problem(gaussian, opname)
    r = restore(y, A, SIGMA, prior, method=method, samples=K, generator=make_generators(1, 1), clip=False, **hp)
    s = r.samples[0].reshape(K, -1)
    mean_err = float(((s.mean(0) - pm).abs() / pc.diagonal().sqrt()).max())
    cov_err = float(torch.linalg.norm(torch.cov(s.T) - pc) / torch.linalg.norm(pc))
    return mean_err, cov_err, r, (prior, A, y, pm, pc)


@pytest.mark.parametrize("opname", sorted(OPS))
@pytest.mark.parametrize("method, hp", [("pigdm", {"weighting": "exact", "eta": 1.0})])
def test_exact_samplers_recover_the_posterior(gaussian, opname, method, hp):
    mean_err, cov_err, _, _ = _run(gaussian, opname, method, **hp)
    assert mean_err < 0.15, mean_err  # ~5 Monte-Carlo standard errors
    assert cov_err < 0.2, cov_err


@pytest.mark.parametrize("opname", sorted(OPS))
def test_daps_reference_annealing_recovers_the_posterior(gaussian, opname):
    # the reference annealing (EDM σ levels from 100, x = x0 + σ n) with Tweedie's x̂0 (one Euler step to σ = 0.01),
    # the inner Gaussian sampled exactly, and τ = √2 σ_y so that exp(−‖Ax − y‖²/τ²) is the true likelihood; its prior
    # N(x̂0, σ² I) overstates Cov[x0 | x_σ] = σ²/(1+σ²) I at σ ~ 1, which costs ~0.05 of covariance error (measured
    # 0.17-0.22 with 1000 samples, Monte-Carlo part ~0.18): 0.25 allows that, the mean stays within 0.15 psd
    import math

    mean_err, cov_err, _, _ = _run(gaussian, opname, "daps", steps=50, ode_steps=1, inner="exact",
                                   tau=math.sqrt(2) * SIGMA)
    assert mean_err < 0.15, mean_err
    assert cov_err < 0.25, cov_err


@pytest.mark.parametrize("opname, method, hp", [
    ("inpaint", "ddrm", {}), ("sr", "ddrm", {}),  # DDRM and DDNM: exact-SVD methods on diagonal-ish problems
    ("inpaint", "ddnm", {}), ("sr", "ddnm", {}),
    ("inpaint", "diffpir", {"lam": 4.0, "zeta": 1.0}), ("sr", "diffpir", {"lam": 4.0, "zeta": 1.0}),
    ("blur", "diffpir", {"lam": 4.0, "zeta": 1.0}),
    ("blur-cg", "diffpir", {"lam": 4.0, "zeta": 1.0}),
    ("inpaint", "repaint", {"jump_length": 5, "resamples": 2}),  # hard replacement of the noisy y: measured 0.16
])
def test_approximate_methods_recover_the_posterior_mean(gaussian, opname, method, hp):
    # these methods approximate p(x0|x_t) differently from the truth; 0.25 psd allows their bias at 100 steps
    # (measured at 0.03-0.15) and Monte-Carlo error, while the prior mean is 1-15 psd away
    mean_err, _, r, _ = _run(gaussian, opname, method, steps=100, **hp)
    assert mean_err < 0.25, mean_err


@pytest.mark.parametrize("opname", sorted(OPS))
def test_dps_moves_towards_the_posterior_mean_and_fits_the_measurement(gaussian, opname):
    mu, prior, x = gaussian
    _, _, r, (_, A, y, pm, pc) = _run(gaussian, opname, "dps")
    m = r.mean[0].flatten()
    assert torch.linalg.norm(m - pm) < 0.5 * torch.linalg.norm(mu - pm)
    assert torch.linalg.norm(A(r.mean) - y) < torch.linalg.norm(A(mu.reshape(SHAPE)) - y)


def _small_problem(B=3):
    g = torch.Generator().manual_seed(5)
    s = NoiseSchedule.linear()
    mu = 0.2 * torch.randn(D, dtype=torch.float64, generator=g)
    prior = EpsPrior(GaussianEps(mu, 0.3 * torch.eye(D, dtype=torch.float64), s, SHAPE[1:]), s)
    A = O.Inpainting(O.random_mask((B, 1, 4, 4), p=0.5, generator=make_generators(0, B)).double())
    x = torch.randn(B, 1, 4, 4, dtype=torch.float64, generator=g).clamp(-1, 1)
    y = A(x) + 0.05 * torch.randn(x.shape, dtype=torch.float64, generator=g)
    return prior, A, y


#: every unconditional method of the registry (Palette's own test covers the conditional one), with a cheap budget:
#: a new method cannot skip the batch-invariance test
CHEAP = {"daps": {"steps": 5, "langevin_steps": 5}, "repaint": {"steps": 10, "jump_length": 2, "resamples": 2}}
FAST = {name: CHEAP.get(name, {"steps": 10}) for name, m in METHODS.items() if not m.conditional}


@pytest.mark.parametrize("method", sorted(FAST))
def test_batch_invariance_and_reproducibility(method):
    prior, A, y = _small_problem(8)
    hp = dict(FAST[method])
    steps = hp.pop("steps")
    full = restore(y, A, 0.05, prior, method=method, steps=steps, samples=2, generator=make_generators(10, 8), **hp)
    again = restore(y, A, 0.05, prior, method=method, steps=steps, samples=2, generator=make_generators(10, 8), **hp)
    assert torch.equal(full.samples, again.samples)
    for i in (0, 3, 7):  # image i alone == image i in a batch of 8
        alone = restore(y[i : i + 1], A.select(i), 0.05, prior, method=method, steps=steps, samples=2,
                        generator=make_generators(10, 1, start=i), **hp)
        torch.testing.assert_close(alone.samples[0], full.samples[i], rtol=1e-7, atol=1e-7)
    assert not torch.allclose(full.samples[:, 0], full.samples[:, 1])  # K samples differ
    other = restore(y, A, 0.05, prior, method=method, steps=steps, samples=2, generator=make_generators(11, 8), **hp)
    assert not torch.allclose(other.samples, full.samples)
    assert full.mean.shape == (8, 1, 4, 4) and full.std.shape == (8, 1, 4, 4) and (full.std > 0).any()
    assert full.nfe > 0 and (full.vjps > 0) == METHODS[method].network_gradient


def test_methods_refuse_operators_they_cannot_use():
    prior, _, y = _small_problem(1)
    blur = O.Blur(O.gaussian_kernel(3, 1.0))
    with pytest.raises(ValueError, match="SVD"):
        restore(y, blur, 0.05, prior, method="ddrm")
    phase = O.PhaseRetrieval(2.0)
    for method in ("ddnm", "pigdm", "mcg", "projection", "repaint"):
        with pytest.raises(ValueError, match="non-linear"):
            restore(torch.zeros(1, 1, 8, 8, dtype=torch.float64), phase, 0.05, prior, method=method)
    with pytest.raises(ValueError, match="unknown method"):
        restore(y, blur, 0.05, prior, method="magic")
    with pytest.raises(ValueError, match="unknown hyper-parameter"):
        restore(y, blur, 0.05, prior, method="dps", zetta=1.0)
    with pytest.raises(ValueError, match="Palette"):
        restore(y, blur, 0.05, prior, method="palette")


def test_palette_conditional_sampling_is_batch_invariant():
    from invdiff.nets.unet import UNet, UNetConfig
    from invdiff.samplers import palette_condition

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, cond_channels=2, base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_levels=())).double()
    prior = EpsPrior(net, NoiseSchedule.linear(), config={"name": "tiny-palette"})
    A = O.Inpainting(O.box_mask((8, 1, 8, 8), generator=make_generators(0, 8)).double())
    y = A(torch.rand(8, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert palette_condition(y, A, (8, 1, 8, 8)).shape == (8, 2, 8, 8)
    full = restore(y, A, 0.05, prior, method="palette", steps=5, samples=2, generator=make_generators(3, 8))
    for i in (0, 3, 7):
        alone = restore(y[i : i + 1], A.select(i), 0.05, prior, method="palette", steps=5, samples=2,
                        generator=make_generators(3, 1, start=i))
        torch.testing.assert_close(alone.samples[0], full.samples[i], rtol=1e-7, atol=1e-7)
    assert not torch.allclose(full.samples[:, 0], full.samples[:, 1])
    with pytest.raises(ValueError, match="conditional"):
        restore(y, A, 0.05, prior, method="ddrm")


@pytest.mark.parametrize("opname", ["blur", "phase"])
def test_reddiff_closed_form_gradient_equals_autograd_of_its_loss(opname):
    from invdiff.samplers.problem import Problem
    from invdiff.samplers.variational import reddiff_gradient

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64, generator=g) * 2 - 1
    op = O.Blur(O.gaussian_kernel(5, 1.0).double(), padding="reflect").double() if opname == "blur" else O.PhaseRetrieval(2.0)
    y = op(x) + 0.05 * torch.randn(op(x).shape, dtype=torch.float64, generator=g)
    p = Problem(prior=None, y=y, op=op, sigma=0.05, shape=tuple(x.shape))
    mu = torch.randn(x.shape, dtype=torch.float64, generator=g).requires_grad_(True)
    err = torch.randn(x.shape, dtype=torch.float64, generator=g)
    w = 0.37
    loss = (((y - op(mu)) ** 2).flatten(1).sum(1) / (2 * y[0].numel()) + w * (err * mu).flatten(1).sum(1) / mu[0].numel()).sum()
    (ref,) = torch.autograd.grad(loss, mu)
    torch.testing.assert_close(reddiff_gradient(p, mu.detach(), err, w), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", sorted(FAST))
def test_forward_only_evaluations_run_in_inference_mode(method):
    # evaluations whose result is never differentiated run under torch.inference_mode (no autograd bookkeeping);
    # the ones gradient methods differentiate record a graph. The same operator then serves a gradient method.
    prior, A, y = _small_problem(2)
    modes = []
    net_forward = prior.net.forward

    def spy(x, t, *args):
        modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled() and x.requires_grad))
        return net_forward(x, t, *args)

    prior.net.forward = spy
    hp = dict(FAST[method])
    steps = hp.pop("steps")
    restore(y, A, 0.05, prior, method=method, steps=steps, generator=make_generators(0, 2), **hp)
    graph = [m for m in modes if m[1]]
    assert len(graph) == (steps if METHODS[method].network_gradient else 0)
    assert all(inference for inference, recorded in modes if not recorded) and not any(i for i, r in graph)
    r = restore(y, A, 0.05, prior, method="dps", steps=3, generator=make_generators(0, 2))
    assert torch.isfinite(r.mean).all()
