"""Blind deblurring: estimate the blur kernel of a photo from the photo alone. Gaussian blur: its σ by maximum
likelihood on the power spectrum (``estimate_gaussian_blur``); kernel tools (simplex projection, centring, the
least-squares kernel update of a known sharp image) and the kernel error measure."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .operators.padding import check_padding, pad

DEFAULT_MOTION_KERNEL_SIZE = 31


@dataclass
class BlindEstimate:
    kernel: Tensor
    kind: str
    blur_sigma: float | None = None
    x: Tensor | None = None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


# ---- kernels ---------------------------------------------------------------------------------------------------
def project_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of each row of v (n, d) onto {k ≥ 0, Σk = 1} (sort-based)."""
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = u.cumsum(-1) - 1
    idx = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    cond = u - css / idx > 0
    rho = cond.to(v.dtype).mul(idx).argmax(-1, keepdim=True)
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return (v - theta).clamp_min(0)


def shift_kernel(k: Tensor, di: int, dj: int) -> Tensor:
    """k moved by (di, dj) pixels, zeros shifted in (what leaves the support is lost)."""
    kh, kw = k.shape[-2:]
    p = F.pad(k, (abs(dj), abs(dj), abs(di), abs(di)))
    return p[..., abs(di) - di: abs(di) - di + kh, abs(dj) - dj: abs(dj) - dj + kw]


def centre_kernel(k: Tensor) -> Tensor:
    """Shift k (kh, kw) by whole pixels so that its centre of mass is nearest the middle; renormalised."""
    kh, kw = k.shape[-2:]
    s = k.sum().clamp_min(1e-12)
    ci = float((k.sum(1) * torch.arange(kh, dtype=k.dtype)).sum() / s)
    cj = float((k.sum(0) * torch.arange(kw, dtype=k.dtype)).sum() / s)
    out = shift_kernel(k, round(kh // 2 - ci), round(kw // 2 - cj))
    return out / out.sum().clamp_min(1e-12)


def resample_kernel(k: Tensor, size: tuple[int, int], factor: float) -> Tensor:
    """k (kh, kw) stretched by ``factor`` about its centre onto a grid of ``size`` (odd), bilinear; sums to 1."""
    kh, kw = k.shape[-2:]
    oh, ow = size
    yi = (torch.arange(oh, dtype=torch.float64) - oh // 2) / factor + kh // 2
    xi = (torch.arange(ow, dtype=torch.float64) - ow // 2) / factor + kw // 2
    gy = yi / max(kh - 1, 1) * 2 - 1
    gx = xi / max(kw - 1, 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], -1)[None].to(k.dtype)
    out = F.grid_sample(k[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0, 0]
    out = out.clamp_min(0)
    if float(out.sum()) <= 0:
        out = torch.zeros(oh, ow, dtype=k.dtype)
        out[oh // 2, ow // 2] = 1
    return out / out.sum()


def kernel_error(k_est: Tensor, k_true: Tensor) -> float:
    """‖k_est − k_true‖ / ‖k_true‖ after aligning k_est by the best integer shift (both zero-padded to a common
    size around their centres): blind estimates are defined up to a translation of the image."""
    a = torch.as_tensor(k_est, dtype=torch.float64)
    b = torch.as_tensor(k_true, dtype=torch.float64)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"kernels must be 2-D, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    h = max(a.shape[0], b.shape[0]) * 2 - 1
    w = max(a.shape[1], b.shape[1]) * 2 - 1

    def onto(k):
        ph, pw = (h - k.shape[0]) // 2, (w - k.shape[1]) // 2
        return F.pad(k, (pw, w - k.shape[1] - pw, ph, h - k.shape[0] - ph))

    A, B = onto(a), onto(b)
    # circular cross-correlation on a grid large enough that no shift wraps one support onto the other
    c = torch.fft.irfft2(torch.fft.rfft2(B) * torch.fft.rfft2(A).conj(), s=(h, w))
    i, j = divmod(int(c.argmax()), w)
    A = torch.roll(A, (i, j), (0, 1))
    return float((A - B).norm() / B.norm().clamp_min(1e-300))


# ---- the kernel update (M-step) ----------------------------------------------------------------------------------
def _gradients(v: Tensor) -> Tensor:
    """Horizontal and vertical forward differences of (S, C, H, W), cropped to (2SC, H − 1, W − 1)."""
    gx = v[..., :-1, 1:] - v[..., :-1, :-1]
    gy = v[..., 1:, :-1] - v[..., :-1, :-1]
    return torch.cat([gx, gy], 1).flatten(0, 1)


def _fast_size(n: int) -> int:
    """The smallest m ≥ n whose only prime factors are 2, 3 and 5 (fast FFT lengths)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def update_kernel(x: Tensor, y: Tensor, size: int | tuple[int, int], *, padding: str = "reflect", smooth: float = 1e-3,
                  iters: int = 150, prune: float = 0.05, init: Tensor | None = None, edges: float | None = None) -> Tensor:
    """The kernel that best explains y = k * pad(x) in the gradient domain:
    argmin_k ½‖∇y − k * ∇pad(x)‖²/N + ½ smooth·E‖k‖² over the simplex {k ≥ 0, Σk = 1}, by accelerated projected
    gradient (FISTA), E the mean gradient energy per pixel; then entries below ``prune``·max are cut and the
    kernel renormalised."""
    kh, kw = (size, size) if isinstance(size, int) else size
    xp = pad(x.float().mean(1, keepdim=True), kh // 2, kw // 2, padding)
    X = _gradients(xp)
    if edges is not None:  # keep only the strongest gradients of x (salient edges), per map
        mag = X.abs().flatten(1)
        q = torch.quantile(mag[:, :: max(1, mag.shape[1] // 100000)], 1 - edges, dim=1)
        X = torch.where(X.abs() >= q[:, None, None], X, torch.zeros_like(X))
    Y = _gradients(y.float().mean(1, keepdim=True)).repeat(x.shape[0], 1, 1)
    hp, wp = _fast_size(X.shape[-2]), _fast_size(X.shape[-1])
    yh, yw = Y.shape[-2:]
    n = Y.numel()
    Xf = torch.fft.rfft2(X, s=(hp, wp))
    energy = float(X.square().mean())
    beta = smooth * energy
    step = 1.0 / (float(Xf.abs().square().sum(0).max()) / n + beta)
    k = init.float() if init is not None else torch.full((kh, kw), 1.0 / (kh * kw))
    z, t = k.clone(), 1.0
    for _ in range(iters):
        kf = torch.fft.rfft2(z, s=(hp, wp))
        r = torch.fft.irfft2(Xf * kf, s=(hp, wp))[..., kh - 1: kh - 1 + yh, kw - 1: kw - 1 + yw] - Y
        rf = torch.fft.rfft2(F.pad(r, (0, wp - r.shape[-1], 0, hp - r.shape[-2])))
        c = torch.fft.irfft2((Xf * rf.conj()).sum(0), s=(hp, wp))[:kh, :kw]
        g = c.flip(0, 1) / n + beta * z
        k_new = project_simplex((z - step * g).reshape(1, -1)).reshape(kh, kw)
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        z = k_new + (t - 1) / t_new * (k_new - k)
        k, t = k_new, t_new
    if prune > 0:
        k = torch.where(k >= prune * k.max(), k, torch.zeros_like(k))
    return (k / k.sum()).float()


# ---- Gaussian blur: its sigma from the photo's power spectrum ----------------------------------------------------
def _radial_power(y: Tensor, bins: int = 160) -> tuple[Tensor, Tensor, Tensor, float]:
    """The grey image's windowed power spectrum averaged in radial bins: (ρ² per bin, mean power, count, the
    window's energy Σw²). Frequencies below 3 cycles per image are left out (the window's own spread)."""
    g = y.detach().double().cpu().mean(1)[0]
    h, w = g.shape
    win = torch.hann_window(h, periodic=False, dtype=torch.float64)[:, None] * torch.hann_window(
        w, periodic=False, dtype=torch.float64)[None]
    p = torch.fft.rfft2((g - g.mean()) * win).abs().square().flatten()
    rho2 = (torch.fft.fftfreq(h, dtype=torch.float64)[:, None] ** 2 + torch.fft.rfftfreq(w, dtype=torch.float64)[None] ** 2).flatten()
    keep = rho2 > (3.0 / min(h, w)) ** 2
    p, rho2 = p[keep], rho2[keep]
    idx = ((rho2.sqrt() / rho2.sqrt().max()) * (bins - 1)).long()
    n = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(p))
    pm = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, p) / n.clamp_min(1)
    r2 = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, rho2) / n.clamp_min(1)
    ok = n > 0
    return r2[ok], pm[ok], n[ok], float(win.square().sum())


def _spectrum_nll(r2: Tensor, pm: Tensor, n: Tensor, nvar: float, sigmas: Tensor, alphas: Tensor) -> Tensor:
    """Negative log-likelihood (per frequency, up to a constant) of the observed power under the Gaussian model
    y = g_σ * x + noise, E|X(f)|² = c·|f|^−α, minimised over c on a log grid: (len(sigmas), len(alphas))."""
    out = torch.empty(len(sigmas), len(alphas), dtype=torch.float64)
    logc = torch.linspace(-14, 14, 113, dtype=torch.float64)
    for j, a in enumerate(alphas.tolist()):
        prior = r2 ** (-a / 2)
        c = torch.exp(math.log(float((pm / prior).mean())) + logc / 2)
        g2 = torch.exp(-4 * math.pi**2 * sigmas[:, None] ** 2 * r2[None])  # (S, F)
        s = c[:, None, None] * (g2 * prior)[None] + nvar  # (C, S, F)
        nll = ((pm / s + s.log()) * n).sum(-1) / n.sum()
        out[:, j] = nll.min(0).values
    return out


def estimate_gaussian_blur(y: Tensor, noise_sigma: float, *, kernel_size: int | None = None, padding: str = "reflect",
                           sigmas: Tensor | None = None, callback=None) -> BlindEstimate:
    """The σ (pixels) of a Gaussian blur from the blurred, noisy photo alone, by type-II maximum likelihood on
    its power spectrum: the clean image's spectrum is modelled as c·|f|^−α (natural images: α ≈ 2), blurred by
    exp(−2π²σ²|f|²) and with white noise of the given σ added; c is fitted, α and σ are searched on a grid
    (coarse 0.25 px, then 0.05 px around the best). The kernel is the Gaussian of that σ, of side
    2⌈3σ⌉+1 bounded by ``kernel_size``."""
    from .operators import gaussian_kernel

    check_padding(padding)
    if y.ndim != 4 or y.shape[0] != 1:
        raise ValueError(f"estimate_gaussian_blur takes one image (1, C, H, W), got shape {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("the blurred image contains NaN or infinite values")
    if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    t0 = time.perf_counter()
    r2, pm, n, wsum = _radial_power(y)
    nvar = float(noise_sigma) ** 2 / y.shape[1] * wsum  # the noise of the channel mean, through the window
    alphas = torch.arange(1.0, 3.76, 0.25, dtype=torch.float64)
    grid = torch.arange(0.0, 8.01, 0.25, dtype=torch.float64) if sigmas is None else sigmas.double()
    nll = _spectrum_nll(r2, pm, n, nvar, grid, alphas)
    s0 = float(grid[nll.min(1).values.argmin()])
    fine = torch.arange(max(0.0, s0 - 0.3), s0 + 0.3001, 0.05, dtype=torch.float64)
    nll_f = _spectrum_nll(r2, pm, n, nvar, fine, alphas)
    sigma = float(fine[nll_f.min(1).values.argmin()])
    history = [{"sigma": float(s), "nll": float(v)} for s, v in zip(fine, nll_f.min(1).values)]
    if callback is not None:
        callback({"blind": "gaussian", "sigma": sigma})
    size = 2 * math.ceil(3 * max(sigma, 1e-3)) + 1
    if kernel_size is not None:
        size = min(size, kernel_size)
    size = min(size, 2 * (min(y.shape[-2:]) // 2) - 1)
    k = gaussian_kernel(size, max(sigma, 0.05)) if size > 1 else torch.ones(1, 1)
    return BlindEstimate(kernel=k.float(), kind="gaussian", blur_sigma=sigma, history=history,
                         seconds=time.perf_counter() - t0)
