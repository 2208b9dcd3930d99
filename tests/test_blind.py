"""Blind Gaussian deblurring: the σ estimate from the power spectrum, and the kernel error measure."""

from __future__ import annotations

import math

import pytest
import torch

from invdiff import operators as ops
from invdiff.blind import estimate_gaussian_blur, kernel_error


def _image(n: int = 128, alpha: float = 2.0, seed: int = 0) -> torch.Tensor:
    """A random image whose power spectrum is |f|^-alpha (the estimator's model, as natural photos on average)."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, 3, n, n, generator=g, dtype=torch.float64)
    f2 = torch.fft.fftfreq(n, dtype=torch.float64)[:, None] ** 2 + torch.fft.fftfreq(n, dtype=torch.float64)[None] ** 2
    x = torch.fft.ifft2(torch.fft.fft2(z) * f2.clamp_min(1 / n**2) ** (-alpha / 4)).real
    return (x / x.abs().max() * 0.8).float()


@pytest.mark.parametrize("sigma", [1.5, 3.0])
def test_gaussian_sigma_is_recovered(sigma):
    x = _image()
    k = ops.gaussian_kernel(31, sigma)
    y = ops.Blur(k, padding="circular")(x) + 0.02 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    est = estimate_gaussian_blur(y, 0.02)
    # the grid step is 0.05 px; the spectrum of one 128² image has a sampling error of a few % per radial bin
    assert abs(est.blur_sigma - sigma) < 0.15 * sigma
    kk = est.kernel
    assert kk.ndim == 2 and kk.shape[0] % 2 == 1 and abs(float(kk.sum()) - 1) < 1e-5 and (kk >= 0).all()
    assert kk.shape[0] == 2 * math.ceil(3 * est.blur_sigma) + 1


def test_kernel_size_bounds_the_estimate_and_bad_input_is_refused():
    x = _image(64)
    y = ops.Blur(ops.gaussian_kernel(21, 3.0), padding="circular")(x)
    assert estimate_gaussian_blur(y, 0.01, kernel_size=9).kernel.shape == (9, 9)
    with pytest.raises(ValueError, match="odd"):
        estimate_gaussian_blur(y, 0.01, kernel_size=8)
    with pytest.raises(ValueError, match="NaN"):
        estimate_gaussian_blur(y * float("nan"), 0.01)
    with pytest.raises(ValueError, match="flat"):  # no spectrum beyond its mean: a clear error, not a log of 0
        estimate_gaussian_blur(torch.full_like(y, 0.3), 0.01)


def test_kernel_error_is_zero_for_equal_kernels_and_shift_invariant():
    k = ops.gaussian_kernel(9, 1.5)
    assert kernel_error(k, k) == pytest.approx(0, abs=1e-6)
    shifted = torch.roll(torch.nn.functional.pad(k, (2, 2, 2, 2)), 1, dims=1)
    assert kernel_error(shifted, k) == pytest.approx(0, abs=1e-5)
    assert kernel_error(ops.gaussian_kernel(9, 3.0), k) > 0.1
