"""The learned motion-kernel prior: its training data, the network, and its plug-and-play use in the kernel update."""

import math

import pytest
import torch

from invdiff.blind import update_kernel
from invdiff.kernel_prior import (WEIGHTS, KernelDenoiser, KernelPrior, load_kernel_prior, noisy, training_kernels,
                                  validation_loss, validation_set)


def test_training_kernels_are_max_one_non_negative_and_reproducible():
    k1 = training_kernels(6, torch.Generator().manual_seed(3))
    k2 = training_kernels(6, torch.Generator().manual_seed(3))
    assert k1.shape == (6, 1, 64, 64)
    assert torch.equal(k1, k2)
    assert (k1 >= 0).all()
    assert torch.allclose(k1.amax((1, 2, 3)), torch.ones(6))
    k3 = training_kernels(6, torch.Generator().manual_seed(4))
    assert not torch.equal(k1, k3)


def test_noise_levels_in_range_and_half_clipped_on_average():
    k = torch.zeros(400, 1, 8, 8)
    z, s = noisy(k, torch.Generator().manual_seed(0))
    assert (s >= 0.01 - 1e-6).all() and (s <= 0.5 + 1e-6).all()
    clipped = (z.flatten(1).amin(1) >= 0).float().mean()
    # 400 Bernoulli(½) draws: 5 standard errors either side
    assert abs(float(clipped) - 0.5) < 5 * math.sqrt(0.25 / 400)


def test_denoiser_is_fully_convolutional_and_batch_invariant():
    torch.manual_seed(0)
    net = KernelDenoiser(channels=8).eval()
    k = torch.rand(3, 1, 21, 35)
    s = torch.tensor([0.05, 0.1, 0.2])
    with torch.no_grad():
        out = net(k, s)
        one = torch.cat([net(k[i:i + 1], s[i:i + 1]) for i in range(3)])
    assert out.shape == k.shape
    torch.testing.assert_close(out, one, rtol=1e-5, atol=1e-6)


class _Fixed(KernelPrior):
    """A 'denoiser' that returns a fixed kernel whatever it is given, and records what it was given."""

    def __init__(self, target, weight, rounds):
        super().__init__(net=None, sigma=0.0, weight=weight, rounds=rounds)
        self.target, self.seen = target, []

    def denoise(self, k):
        self.seen.append(k.clone())
        return self.target.clone()


class _Identity(KernelPrior):
    def __init__(self, weight, rounds):
        super().__init__(net=None, sigma=0.0, weight=weight, rounds=rounds)

    def denoise(self, k):
        return k.clone()


def _blurred(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 1, 48, 48, generator=g) * 2 - 1
    k = torch.zeros(7, 7)
    k[3, 1:6] = 0.2
    from invdiff.operators.blur import Blur

    return x, Blur(k, padding="reflect")(x), k


def test_splitting_with_an_identity_denoiser_reaches_the_least_squares_kernel():
    """Half-quadratic splitting with z = k at every round is a proximal-point iteration of the least-squares
    problem: it converges to the same kernel as the update without a prior."""
    x, y, _ = _blurred()
    plain = update_kernel(x, y, 7, smooth=1e-3, iters=400, prune=0)
    split = update_kernel(x, y, 7, smooth=1e-3, iters=400, prune=0, prior=_Identity(weight=0.1, rounds=4))
    assert (plain - split).norm() / plain.norm() < 1e-2


def test_the_splitting_weight_pulls_the_data_step_to_the_denoisers_kernel():
    """Round 1 is the plain least-squares kernel; from round 2 the data step minimises the data term plus
    ½α‖k − z‖² for the denoiser's z. With α huge it stays at z; with α = 0 it returns to the data's kernel. The
    result is the denoiser's last output."""
    x, y, k_true = _blurred(1)
    target = torch.zeros(7, 7)
    target[1:6, 3] = 0.2  # the transposed blur: wrong for these data
    heavy = _Fixed(target, weight=1e6, rounds=3)
    out = update_kernel(x, y, 7, iters=300, prune=0, prior=heavy)
    torch.testing.assert_close(out, target)
    assert len(heavy.seen) == 3
    assert (heavy.seen[0] - k_true).norm() / k_true.norm() < 0.05  # round 1: the data alone
    for k in heavy.seen[1:]:
        torch.testing.assert_close(k, target, atol=1e-4, rtol=0)
    free = _Fixed(target, weight=0.0, rounds=3)
    update_kernel(x, y, 7, iters=300, prune=0, prior=free)
    for k in free.seen:
        assert (k - k_true).norm() / k_true.norm() < 0.05


@pytest.mark.skipif(not WEIGHTS.is_file(), reason="the bundled kernel prior is not installed")
def test_bundled_kernel_prior_denoises_kernels_it_never_saw():
    """The shipped weights beat the identity on the fixed validation kernels (their own stream), at both low and
    high noise: what the card's ledger reports, recomputed."""
    prior = load_kernel_prior()
    data = validation_set(64)
    v = validation_loss(prior.net, data)
    k, z, s = data
    base = (z - k).square().mean((1, 2, 3))
    assert v["mse"] < 0.5 * float(base.mean())
    assert v["mse_low_sigma"] < float(base[s < 0.07].mean())
    out = prior.denoise(k[0, 0] / k[0, 0].sum())
    assert out.shape == (64, 64) and (out >= 0).all() and abs(float(out.sum()) - 1) < 1e-5


def test_missing_kernel_prior_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="motion-kernel prior is missing"):
        load_kernel_prior(tmp_path / "nothing.safetensors")
