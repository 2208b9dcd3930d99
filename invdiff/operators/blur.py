"""Convolution operators: spatially invariant blur with any padding mode (exact adjoint, FFT-based so a
61×61 kernel costs the same as a 3×3 one), and the circular blur with its exact real SVD.

Convention: true convolution y[n] = Σ_m k[m] x[n − m] with the kernel's centre at m = 0 (odd sides), the
output the size of the input; ``padding`` says how x is extended beyond its border."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LinearOperator, SVDOperator, cached

from .padding import Padding, check_padding, pad, pad_adjoint
from .separable import SeparableBlur


def gaussian_kernel(size: int = 61, sigma: float = 3.0) -> Tensor:
    """Normalised isotropic Gaussian kernel (size, size) (kornia); DPS preset 61×61, σ = 3."""
    from kornia.filters import get_gaussian_kernel2d

    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be a positive odd number, got {size}")
    if not sigma > 0:
        raise ValueError(f"blur sigma must be positive, got {sigma}")
    k = get_gaussian_kernel2d((size, size), (float(sigma), float(sigma)))[0].double()
    return (k / k.sum()).float()


def as_kernels(kernel) -> Tensor:
    """Validate kernels: (kh, kw) or (B, kh, kw), odd sides, finite, non-negative is not required (any linear
    filter works) but the sum must be non-zero. Returns (B|1, kh, kw)."""
    k = torch.as_tensor(kernel)
    if k.ndim == 2:
        k = k[None]
    if k.ndim != 3:
        raise ValueError(f"kernel must be (kh, kw) or (B, kh, kw), got shape {tuple(k.shape)}")
    if k.shape[-1] % 2 == 0 or k.shape[-2] % 2 == 0:
        raise ValueError(f"kernel sides must be odd, got {tuple(k.shape[-2:])}")
    if not torch.isfinite(k).all():
        raise ValueError("kernel contains NaN or infinite values")
    return k


def normalise_kernels(kernel, name: str = "a kernel") -> Tensor:
    """User blur kernels (..., kh, kw): finite, non-negative, not all zero, odd sides; each normalised to sum 1.
    The one check of every kernel a user gives (a file, an array, a kernel field)."""
    k = torch.as_tensor(kernel, dtype=torch.float64)
    if k.ndim < 2 or k.shape[-2] % 2 == 0 or k.shape[-1] % 2 == 0:
        raise ValueError(f"{name} must have odd sides, got shape {tuple(k.shape)}")
    sums = k.sum(dim=(-2, -1), keepdim=True)
    if not torch.isfinite(k).all() or (k < 0).any() or bool((sums <= 0).any()):
        raise ValueError(f"{name} must be finite, non-negative and not all zero")
    return (k / sums).float()


def kernel_spectrum(kernel: Tensor, size: tuple[int, int], *, dtype, device, centred: bool) -> Tensor:
    """rfft2 of kernels (…, kh, kw) on a (H, W) grid: at the origin corner (``centred=False``, for the
    valid-convolution form) or with the kernel centre rolled to index 0 (``centred=True``, circular)."""
    kh, kw = kernel.shape[-2:]
    k = kernel.to(device=device, dtype=dtype)
    kp = k.new_zeros(*k.shape[:-2], *size)
    kp[..., :kh, :kw] = k
    if centred:
        kp = torch.roll(kp, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.rfft2(kp)


def conv_valid(xp: Tensor, kf: Tensor, kh: int, kw: int) -> Tensor:
    """Convolve padded images with kernels given by their spectrum and keep the valid part."""
    s = xp.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(xp) * kf, s=s)[..., kh - 1 :, kw - 1 :]


def conv_valid_adjoint(y: Tensor, kf: Tensor, kh: int, kw: int) -> Tensor:
    z = F.pad(y, (kw - 1, 0, kh - 1, 0))
    return torch.fft.irfft2(torch.fft.rfft2(z) * kf.conj(), s=z.shape[-2:])


class _SpectrumCache:
    """Kernel spectra per (image size, dtype, device), computed once per solve (operators are immutable)."""

    def _spectrum(self, size, like: Tensor, centred: bool) -> Tensor:
        key = (tuple(size), like.dtype, like.device, centred, self.kernel.data_ptr(), tuple(self.kernel.shape))
        return cached(self, "_spectra", key, lambda: kernel_spectrum(self.kernel, tuple(size), dtype=like.dtype,
                                                                    device=like.device, centred=centred))


class Blur(_SpectrumCache, LinearOperator):
    """Spatially invariant blur y = k * pad(x), one kernel per image (B|1, kh, kw), any channel count.

    ``padding``: zeros | reflect | replicate | circular. The adjoint is exact for every mode (the adjoint of
    the padding folds the copied borders back). ``pinv`` by conjugate gradients; use ``CircularBlur`` for a
    closed-form SVD. A rank-1 kernel shared by the batch (Gaussian, box) is applied as two 1-D matrix products
    (``as_separable``; ``separable=False`` keeps the FFT), which also gives AᵀA in one pass for conjugate
    gradients."""

    batched = ("kernel",)

    def __init__(self, kernel, *, padding: Padding = "reflect", separable: bool = True) -> None:
        super().__init__()
        check_padding(padding)
        self.padding = padding
        self.separable = separable
        self.register_buffer("kernel", as_kernels(kernel).float())

    def as_separable(self):
        """This blur as a ``SeparableBlur`` when one kernel serves every image and it has rank 1 (Gaussian, box)
        and ``separable`` is on, else None. It is the same operator (to float32 rounding: the kernel's second
        singular value is below 1e-6 of its first), applied by products with two small matrices, faster than the
        FFTs up to about 256×256 (4–15× for AᵀA, ``benchmarks/SPEED.md``)."""
        return cached(self, "_separable", None, self._rank_one)

    def _rank_one(self):
        k = self.kernel
        if not self.separable or k.shape[0] != 1:
            return None
        u, s, vh = torch.linalg.svd(k[0].double())
        if not (s[0] > 0 and float(s[1:].sum()) <= 1e-6 * float(s[0])):
            return None
        kh, kw = u[:, 0] * s[0].sqrt(), vh[0] * s[0].sqrt()
        sign = 1.0 if float(kh.sum()) >= 0 else -1.0
        return SeparableBlur(sign * kh, sign * kw, padding=self.padding)

    def _fast(self, shape):
        """The separable form where it is the cheaper one for images of ``shape``: dense 1-D matrices cost
        h·w·(h + w) multiply-adds, the FFTs about (h + kh)(w + kw)·log₂ of that; the constant is measured on a CPU
        (the separable form wins up to 256×256 with the 61×61 DPS kernel, the FFT from 512×512, or 256×256 with a
        9×9 kernel)."""
        sep = self.as_separable()
        if sep is None:
            return None
        h, w = shape[-2:]
        kh, kw = self.kernel.shape[-2:]
        n = (h + kh - 1) * (w + kw - 1)
        return sep if h * w * (h + w) <= 24 * n * math.log2(n) else None

    @property
    def radius(self) -> tuple[int, int]:
        return self.kernel.shape[-2] // 2, self.kernel.shape[-1] // 2

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        kh, kw = self.kernel.shape[-2:]
        if kh > x.shape[-2] or kw > x.shape[-1]:
            raise ValueError(f"kernel of size {(kh, kw)} is larger than the image {tuple(x.shape[-2:])}")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        sep = self._fast(x.shape)
        if sep is not None:
            return sep.forward_unchecked(x)
        ph, pw = self.radius
        kh, kw = self.kernel.shape[-2:]
        xp = pad(x, ph, pw, self.padding)
        return conv_valid(xp, self._spectrum(xp.shape[-2:], x, False)[:, None], kh, kw)

    def normal(self, x: Tensor) -> Tensor:
        sep = self._fast(x.shape)
        return sep.normal(x) if sep is not None else self.adjoint(self.forward(x))

    def adjoint(self, y: Tensor) -> Tensor:
        sep = self._fast(y.shape)
        if sep is not None:
            return sep.adjoint(y)
        ph, pw = self.radius
        kh, kw = self.kernel.shape[-2:]
        s = (y.shape[-2] + kh - 1, y.shape[-1] + kw - 1)
        return pad_adjoint(conv_valid_adjoint(y, self._spectrum(s, y, False)[:, None], kh, kw), ph, pw, self.padding)

    def prox(self, x0: Tensor, y: Tensor, rho, **kw) -> Tensor:
        """For a shared rank-1 kernel (Gaussian, box) and ρ > 0, the closed form through the separable form's exact
        SVD, at any image size (its 1-D factors are small); else conjugate gradients. ρ = 0 keeps conjugate
        gradients: stopped early, they are the regularised pseudo-inverse that methods start from."""
        sep = self.as_separable()
        r = torch.as_tensor(rho)
        if sep is not None and bool((r > 0).all()):
            return sep.prox(x0, y, rho)
        return super().prox(x0, y, rho, **kw)

    def weighted_pinv(self, v: Tensor, r2: float, sigma2: float, **kw) -> Tensor:
        """Closed form through the separable form's SVD where there is one and σ² > 0, else conjugate gradients."""
        sep = self.as_separable()
        if sep is not None and sigma2 > 0:
            return sep.weighted_pinv(v, r2, sigma2)
        return super().weighted_pinv(v, r2, sigma2, **kw)

    def extra_repr(self) -> str:
        return f"kernel={tuple(self.kernel.shape)}, padding={self.padding}" + ("" if self.separable else ", separable=False")


class RealFourier:
    """The orthonormal real Fourier basis of (H, W) images: coefficients Re X_f on self-conjugate frequencies
    and √2 Re X_f, √2 Im X_f on one frequency of every conjugate pair (X = orthonormal FFT)."""

    def __init__(self, h: int, w: int, device) -> None:
        k1, k2 = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        f = (k1 * w + k2).flatten()
        fc = (((-k1) % h) * w + (-k2) % w).flatten()
        self.h, self.w = h, w
        self.S = f[f == fc].to(device)
        self.H = f[f < fc].to(device)
        self.Hc = fc[f < fc].to(device)

    def order(self, v: Tensor) -> Tensor:
        """Arrange a per-frequency real quantity (…, H, W) like the coefficients (S, H, H)."""
        v = v.flatten(-2)
        return torch.cat([v[..., self.S], v[..., self.H], v[..., self.H]], -1)

    def analyse(self, X: Tensor) -> Tensor:
        X = X.flatten(-2)
        r2 = math.sqrt(2)
        return torch.cat([X[..., self.S].real, r2 * X[..., self.H].real, r2 * X[..., self.H].imag], -1)

    def synthesise(self, z: Tensor) -> Tensor:
        nS, nH = self.S.numel(), self.H.numel()
        a, b, c = z[..., :nS], z[..., nS : nS + nH], z[..., nS + nH :]
        X = torch.zeros(*z.shape[:-1], self.h * self.w, dtype=torch.complex128 if z.dtype == torch.float64 else torch.complex64,
                        device=z.device)
        X[..., self.S] = a.to(X.dtype)
        X[..., self.H] = torch.complex(b, c) / math.sqrt(2)
        X[..., self.Hc] = torch.complex(b, -c) / math.sqrt(2)
        return X.reshape(*z.shape[:-1], self.h, self.w)


class CircularBlur(_SpectrumCache, SVDOperator):
    """Periodic blur y = k ⊛ x (FFT), one kernel per image, with its exact real SVD: V = the real Fourier basis,
    U = V rotated by the phase of the kernel's spectrum, singular values |k̂|."""

    batched = ("kernel",)

    def __init__(self, kernel) -> None:
        super().__init__()
        self.register_buffer("kernel", as_kernels(kernel).float())

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        kh, kw = self.kernel.shape[-2:]
        if kh > x.shape[-2] or kw > x.shape[-1]:
            raise ValueError(f"kernel of size {(kh, kw)} is larger than the image {tuple(x.shape[-2:])}")

    def _basis(self, h, w, device) -> RealFourier:
        return cached(self, "_bases", (h, w, device), lambda: RealFourier(h, w, device))

    def _full_spectrum(self, shape, like) -> Tensor:
        """Complex k̂ on the full (H, W) grid: (B|1, 1, H, W)."""
        h, w = shape[-2:]
        half = self._spectrum((h, w), like, True)
        # rebuild the full spectrum from the half one (Hermitian symmetry)
        full = torch.fft.fft2(torch.fft.irfft2(half, s=(h, w)))
        return full[:, None]

    def _phase(self, shape, like) -> Tensor:
        k = self._full_spectrum(shape, like)
        mag = k.abs()
        ph = torch.where(mag > 0, k / torch.where(mag > 0, mag, torch.ones_like(mag)), torch.ones_like(k))
        basis = self._basis(*shape[-2:], like.device)
        flat = ph.flatten(-2)
        s = flat[..., basis.S].real
        flat = flat.clone()
        flat[..., basis.S] = torch.where(s < 0, -1.0, 1.0).to(flat.dtype)  # exactly ±1 where k̂ is real
        return flat.reshape(ph.shape)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        kf = self._spectrum(x.shape[-2:], x, True)[:, None]
        return torch.fft.irfft2(torch.fft.rfft2(x) * kf, s=x.shape[-2:])

    def adjoint(self, y: Tensor) -> Tensor:
        kf = self._spectrum(y.shape[-2:], y, True)[:, None]
        return torch.fft.irfft2(torch.fft.rfft2(y) * kf.conj(), s=y.shape[-2:])

    def Vt(self, x):
        basis = self._basis(*x.shape[-2:], x.device)
        return basis.analyse(torch.fft.fft2(x, norm="ortho")).flatten(1)

    def V(self, z, shape):
        basis = self._basis(*shape[-2:], z.device)
        X = basis.synthesise(z.reshape(z.shape[0], shape[1], -1))
        return torch.fft.ifft2(X, norm="ortho").real.to(z.dtype)

    def Ut(self, y):
        basis = self._basis(*y.shape[-2:], y.device)
        return basis.analyse(torch.fft.fft2(y, norm="ortho") * self._phase(y.shape, y).conj()).flatten(1)

    def U(self, z, shape):
        basis = self._basis(*shape[-2:], z.device)
        X = basis.synthesise(z.reshape(z.shape[0], shape[1], -1)) * self._phase(shape, z)
        return torch.fft.ifft2(X, norm="ortho").real.to(z.dtype)

    def singular_values(self, x_shape) -> Tensor:
        like = torch.empty(0, dtype=torch.float64, device=self.kernel.device)
        mag = self._full_spectrum(x_shape, like).abs()[:, 0]  # (B|1, H, W)
        basis = self._basis(*x_shape[-2:], self.kernel.device)
        s = basis.order(mag)
        return s.repeat(1, x_shape[1])
