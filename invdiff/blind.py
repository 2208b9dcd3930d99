"""Blind deblurring: estimate the blur kernel of a photo from the photo alone. Gaussian blur: its σ by maximum
likelihood on the power spectrum (``estimate_gaussian_blur``); motion blur: a free-form kernel by coarse-to-fine
alternating minimisation with an L0 gradient prior (``estimate_motion_kernel``); kernel tools (simplex projection,
centring, the least-squares kernel update of a known sharp image) and the kernel error measure."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from .operators.padding import check_padding, pad

#: the side of a blind motion kernel when none is asked for: the motion-deblur task's own kernels (61 × 61, paths up
#: to 61 px long), the size the blind pipeline was tuned at; 31 before, which lost 1.16 dB of TV deconvolution with
#: the estimate on the tuning split, up to 3.8 dB on paths longer than 31 px (benchmarks/RESULTS.md, "The kernel's
#: window")
DEFAULT_MOTION_KERNEL_SIZE = 61


def default_motion_kernel_size(height: int, width: int) -> int:
    """The blind motion kernel's side for an image of height × width when none is given:
    ``DEFAULT_MOTION_KERNEL_SIZE``, at most the largest odd number ≤ half the shorter side (at least 3)."""
    half = min(height, width) // 2
    return max(3, min(DEFAULT_MOTION_KERNEL_SIZE, half - (half % 2 == 0)))


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


def _grey_gradients(y: Tensor) -> tuple[Tensor, Tensor]:
    """Forward differences (x, y) of the grey image of y (S, C, H, W) on the [0, 1] scale, zero-padded at the end."""
    g = (y.float().mean(1, keepdim=True) + 1) / 2
    return F.pad(g[..., :, 1:] - g[..., :, :-1], (0, 1, 0, 0)), F.pad(g[..., 1:, :] - g[..., :-1, :], (0, 0, 0, 1))


def check_not_flat(y: Tensor) -> None:
    """A blur is estimated from the photo's edges: a photo whose grey image is constant has none (and no spectrum
    beyond its mean), so it is refused with a clear error rather than divided by zero."""
    g = y.detach().float().mean(1)
    if float(g.amax() - g.amin()) == 0.0:
        raise ValueError("the photo is flat (one grey level everywhere): it has no edges to estimate a blur kernel "
                         "from; give the kernel (--kernel, or --blur-sigma for a Gaussian)")


def usefulness(y: Tensor, window: int = 5, eps: float = 0.5) -> Tensor:
    """Xu & Jia's (2010) usefulness of the gradients of the blurred image y (S, C, H, W) in [−1, 1], per pixel:
    r = ‖Σ_N ∇y‖ / (Σ_N ‖∇y‖ + ε), sums over the ``window`` × ``window`` neighbourhood N, ∇ the forward
    differences of the grey image on the [0, 1] scale (the paper's, where ε = 0.5 keeps flat regions low).
    A blurred step edge adds its gradients coherently (r near its maximum), texture finer than the blur (fur,
    grass) cancels (r near 0): such structure misleads a kernel estimate. (S, 1, H, W), zero-padded at the end."""
    gx, gy = _grey_gradients(y)

    def box(v):
        return F.avg_pool2d(v, window, stride=1, padding=window // 2, count_include_pad=True) * window * window

    return torch.sqrt(box(gx).square() + box(gy).square()) / (box(torch.sqrt(gx.square() + gy.square())) + eps)


def _quantile(v: Tensor, q: float) -> Tensor:
    """Each row's q-quantile of v (rows, ...), from at most ~100k evenly strided entries, shaped to broadcast."""
    flat = v.flatten(1)
    return torch.quantile(flat[:, :: max(1, flat.shape[1] // 100000)], q, dim=1)[:, None, None]


def _salient(X: Tensor, y: Tensor, size: tuple[int, int], padding: str, edges: float, useful: float | None,
             window: int) -> Tensor:
    """The gradient maps X (2S, h, w) of ``update_kernel`` with only their strongest ``edges`` fraction kept, per
    map; with ``useful``, only where y's usefulness map (on X's grid) is in its top ``useful`` fraction."""
    mag = X.abs()
    if useful is not None:  # ... and only where the blurred photo's edges add up (Xu & Jia's r map)
        r = pad(usefulness(y, window), size[0] // 2, size[1] // 2, padding)[..., :-1, :-1]  # on X's grid
        r = torch.cat([r, r], 1).flatten(0, 1).repeat(X.shape[0] // (2 * y.shape[0]), 1, 1)
        mag = mag * (r >= _quantile(r, 1 - useful))
    return torch.where((mag >= _quantile(mag, 1 - edges)) & (mag > 0), X, torch.zeros_like(X))


def update_kernel(x: Tensor, y: Tensor, size: int | tuple[int, int], *, padding: str = "reflect", smooth: float = 1e-3,
                  iters: int = 150, prune: float = 0.05, init: Tensor | None = None, edges: float | None = None,
                  prior=None, useful: float | None = None, useful_window: int = 5) -> Tensor:
    """The kernel that best explains y = k * pad(x) in the gradient domain:
    argmin_k ½‖∇y − k * ∇pad(x)‖²/N + ½ smooth·E‖k‖² over the simplex {k ≥ 0, Σk = 1}, by accelerated projected
    gradient (FISTA), E the mean gradient energy per pixel; then entries below ``prune``·max are cut and the
    kernel renormalised. For x of S images (S, C, H, W), the data term is the mean of the S images' terms and E their
    mean energy: S copies of one image give that image's kernel.

    With a learned kernel prior (``invdiff.kernel_prior.KernelPrior``), plug-and-play half-quadratic splitting as
    in Laroche et al.'s M-step: ``prior.rounds`` times, the least-squares kernel with the extra term
    ½ α‖k − z‖² (α = ``prior.weight``·E; ``iters`` FISTA iterations split over the rounds, warm-started), then
    z = the prior's denoised k; the result is the last z (then pruned). Their data step is a closed form in the
    Fourier domain on the image (circular); ours keeps the gradient domain, the padding and the simplex.

    ``useful`` (a fraction, with ``edges``) keeps x's gradients only where y's ``usefulness`` map is in its top
    ``useful`` fraction (Xu & Jia's edge selection, their adaptive τ_r as a fraction kept), before the strongest
    ``edges`` fraction of what remains is taken."""
    kh, kw = (size, size) if isinstance(size, int) else size
    xp = pad(x.float().mean(1, keepdim=True), kh // 2, kw // 2, padding)
    X = _gradients(xp)
    if edges is not None:
        X = _salient(X, y, (kh, kw), padding, edges, useful, useful_window)
    Y = _gradients(y.float().mean(1, keepdim=True)).repeat(x.shape[0], 1, 1)
    hp, wp = _fast_size(X.shape[-2]), _fast_size(X.shape[-1])
    yh, yw = Y.shape[-2:]
    n = Y.numel()
    Xf = torch.fft.rfft2(X, s=(hp, wp))
    energy = float(X.square().mean())
    beta = smooth * energy
    step = 1.0 / (float(Xf.abs().square().sum(0).max()) / n + beta)
    k = init.float() if init is not None else torch.full((kh, kw), 1.0 / (kh * kw))
    rounds = 1 if prior is None else max(1, int(prior.rounds))
    alpha = 0.0 if prior is None else prior.weight * energy
    anchor = None
    for rnd in range(rounds):
        z, t = k.clone(), 1.0
        if rnd == 1:  # the splitting term's curvature joins the step's bound
            step = 1.0 / (1.0 / step + alpha)
        for _ in range(iters // rounds if rnd < rounds - 1 else iters - (rounds - 1) * (iters // rounds)):
            kf = torch.fft.rfft2(z, s=(hp, wp))
            r = torch.fft.irfft2(Xf * kf, s=(hp, wp))[..., kh - 1: kh - 1 + yh, kw - 1: kw - 1 + yw] - Y
            rf = torch.fft.rfft2(F.pad(r, (0, wp - r.shape[-1], 0, hp - r.shape[-2])))
            c = torch.fft.irfft2((Xf * rf.conj()).sum(0), s=(hp, wp))[:kh, :kw]
            g = c.flip(0, 1) / n + beta * z
            if anchor is not None:
                g = g + alpha * (z - anchor)
            k_new = project_simplex((z - step * g).reshape(1, -1)).reshape(kh, kw)
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = k_new + (t - 1) / t_new * (k_new - k)
            k, t = k_new, t_new
        if prior is not None:
            anchor = prior.denoise(k)
            k = anchor
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


#: how ``estimate_gaussian_blur`` reads the blur: from the power spectrum (white noise above a blurred power law) or
#: from the strongest edges (what a lossy file's quantisation leaves alone)
GAUSSIAN_BLUR_ESTIMATORS = ("spectrum", "edges")


def estimate_gaussian_blur(y: Tensor, noise_sigma: float, *, kernel_size: int | None = None, padding: str = "reflect",
                           sigmas: Tensor | None = None, callback=None, method: str = "spectrum") -> BlindEstimate:
    """The σ (pixels) of a Gaussian blur from the blurred, noisy photo alone.

    ``spectrum`` (the default): type-II maximum likelihood on its power spectrum: the clean image's spectrum is
    modelled as c·|f|^−α (natural images: α ≈ 2), blurred by exp(−2π²σ²|f|²) and with white noise of the given σ
    added; c is fitted, α and σ are searched on a grid (coarse 0.25 px, then 0.05 px around the best). It needs
    that white floor: a JPEG's quantisation leaves a residual that falls off with frequency like a sharp photo's
    spectrum, and the fit then reads a blur of σ 3 as about 0 (benchmarks/RESULTS.md). ``edges``:
    ``edge_blur_sigma``, Zhuo & Sim's re-blur ratio at the strongest edges, which quantisation leaves alone. The
    kernel is the Gaussian of that σ, of side 2⌈3σ⌉+1 bounded by ``kernel_size``."""
    from .operators import gaussian_kernel

    if method not in GAUSSIAN_BLUR_ESTIMATORS:
        raise ValueError(f"unknown Gaussian blur estimator {method!r}; choose one of {', '.join(GAUSSIAN_BLUR_ESTIMATORS)}")
    check_padding(padding)
    if y.ndim != 4 or y.shape[0] != 1:
        raise ValueError(f"estimate_gaussian_blur takes one image (1, C, H, W), got shape {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("the blurred image contains NaN or infinite values")
    check_not_flat(y)
    if kernel_size is not None and (kernel_size < 1 or kernel_size % 2 == 0):
        raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
    t0 = time.perf_counter()
    if method == "edges":
        sigma, n_edges = edge_blur_sigma(y)
        history = [{"sigma": sigma, "edges": n_edges}]
    else:
        sigma, history = _spectrum_blur_sigma(y, noise_sigma, sigmas)
    if callback is not None:
        callback({"blind": "gaussian", "sigma": sigma})
    size = 2 * math.ceil(3 * max(sigma, 1e-3)) + 1
    if kernel_size is not None:
        size = min(size, kernel_size)
    size = min(size, 2 * (min(y.shape[-2:]) // 2) - 1)
    k = gaussian_kernel(size, max(sigma, 0.05)) if size > 1 else torch.ones(1, 1)
    return BlindEstimate(kernel=k.float(), kind="gaussian", blur_sigma=sigma, history=history,
                         seconds=time.perf_counter() - t0)


def _spectrum_blur_sigma(y: Tensor, noise_sigma: float, sigmas: Tensor | None) -> tuple[float, list[dict]]:
    """``estimate_gaussian_blur``'s spectral fit: (σ, the fine grid's negative log-likelihoods)."""
    r2, pm, n, wsum = _radial_power(y)
    nvar = float(noise_sigma) ** 2 / y.shape[1] * wsum  # the noise of the channel mean, through the window
    alphas = torch.arange(1.0, 3.76, 0.25, dtype=torch.float64)
    grid = torch.arange(0.0, 8.01, 0.25, dtype=torch.float64) if sigmas is None else sigmas.double()
    nll = _spectrum_nll(r2, pm, n, nvar, grid, alphas)
    s0 = float(grid[nll.min(1).values.argmin()])
    fine = torch.arange(max(0.0, s0 - 0.3), s0 + 0.3001, 0.05, dtype=torch.float64)
    nll_f = _spectrum_nll(r2, pm, n, nvar, fine, alphas)
    sigma = float(fine[nll_f.min(1).values.argmin()])
    return sigma, [{"sigma": float(s), "nll": float(v)} for s, v in zip(fine, nll_f.min(1).values)]


#: the edge estimator's re-blur σ₀ (pixels) and the share of the edge pixels it reads (the strongest), chosen on
#: the declared tuning split (benchmarks/blind_jpeg.py)
EDGE_REBLUR, EDGE_SHARE = 2.0, 0.1


def edge_blur_sigma(y: Tensor, reblur: float = EDGE_REBLUR, share: float = EDGE_SHARE) -> tuple[float, int]:
    """(σ, edge pixels read): the Gaussian blur of a photo from its edges, by Zhuo & Sim's re-blur ratio (Pattern
    Recognition 2011, "Defocus map estimation from a single image"). A step edge of height A blurred by σ has a
    gradient of A/(√(2π)σ) at its centre; blurred again by σ₀, A/(√(2π)√(σ² + σ₀²)); so the ratio R of the two
    gives σ = σ₀/√(R² − 1) without A. Edges: Canny's (scikit-image, smoothing 2 px) on the luma, away from the
    border; gradients: Sobel; σ is the median over the ``share`` strongest of them, within [0, 8]. Noise and a lossy
    file's quantisation barely move the strongest edges, so this holds on JPEGs where the spectrum fails; edges
    that are not steps (a photo's own soft edges) read a little blur on a sharp photo (about 0.8 px on the tuning
    split)."""
    import numpy as np
    from scipy import ndimage
    from skimage.feature import canny

    a = ((y[0].detach().double().cpu() + 1) / 2).numpy()
    g = 0.299 * a[0] + 0.587 * a[1] + 0.114 * a[2] if a.shape[0] == 3 else a.mean(0)

    def grad(im):
        return np.hypot(ndimage.sobel(im, 1), ndimage.sobel(im, 0)) / 8

    g1, g2 = grad(g), grad(ndimage.gaussian_filter(g, reblur, mode="reflect"))
    edges = canny(g, sigma=2.0)
    m = int(math.ceil(3 * reblur)) + 2
    edges[:m], edges[-m:], edges[:, :m], edges[:, -m:] = False, False, False, False
    v1, v2 = g1[edges], g2[edges]
    if v1.size == 0:
        raise ValueError("the photo has no edges to read a blur from: give --blur-sigma")
    keep = v1 >= np.quantile(v1, 1 - share)
    ratio = v1[keep] / np.maximum(v2[keep], 1e-12)
    sig = reblur / np.sqrt(np.maximum(ratio**2 - 1, 1e-6))
    return float(np.clip(np.median(sig), 0.0, 8.0)), int(keep.sum())


# ---- motion blur: a free-form kernel, coarse to fine ---------------------------------------------------------------
def _otf(k: Tensor, shape: tuple[int, int]) -> Tensor:
    """The spectrum (rfft2 on ``shape``) of the kernel k (kh, kw) with its centre moved to the origin."""
    kh, kw = k.shape
    z = torch.zeros(shape, dtype=k.dtype)
    z[:kh, :kw] = k
    return torch.fft.rfft2(torch.roll(z, (-(kh // 2), -(kw // 2)), (0, 1)))


def dark_target(x: Tensor, weight: float, beta: float, patch: int = 35) -> Tensor:
    """The auxiliary image of the dark-channel L0 term (Pan et al. 2016): x (..., H, W) on [−1, 1] with, in every
    patch × patch window whose dark channel D (its darkest pixel, on [0, 1], the border replicated) has
    D² < ``weight``/``beta``, that darkest pixel set to black; unchanged within patch // 2 of the border, as in
    the authors' code. Each pixel is the darkest of its windows or not, so the windows agree on what it becomes."""
    h, w = x.shape[-2:]
    r = patch // 2
    flat = ((x + 1) / 2).reshape(-1, 1, h, w)
    xp = F.pad(flat, (r, r, r, r), mode="replicate")
    neg, idx = F.max_pool2d(-xp, patch, stride=1, return_indices=True)
    black = neg.square() < weight / beta  # (−D)² = D²
    out = xp.flatten(1).clone()
    pos = idx.flatten(1)
    out.scatter_(1, pos, torch.where(black.flatten(1), torch.zeros_like(out.gather(1, pos)), out.gather(1, pos)))
    out = out.reshape(xp.shape)[..., r: r + h, r: r + w]
    inner = torch.zeros(h, w, dtype=torch.bool)
    inner[r: h - r, r: w - r] = True
    return torch.where(inner, out * 2 - 1, flat * 2 - 1).reshape(x.shape)


def _otsu(v: Tensor) -> float:
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(v.detach().double().cpu().numpy()))


def l0_deblur(y: Tensor, k: Tensor, lam: float, *, dark: float = 0.0, patch: int = 35, beta_max: float = 1e5,
              kappa: float = 2.0) -> Tensor:
    """The sharp image x of y = k * x under an L0 gradient prior, argmin ‖k * x − y‖² + λ‖∇x‖₀, by half-quadratic
    splitting (Xu et al. 2013, Pan et al. 2014): the auxiliary gradients are hard-thresholded at √(λ/β) and x is
    solved in closed form with FFTs, β growing from 2λ to ``beta_max`` by ``kappa``. y (..., H, W) is extended by
    reflection (the FFT's circular boundary lands in the extension, which is cut off).

    ``dark`` > 0 adds the dark channel prior of Pan et al. 2016, ``dark``·‖D(x)‖₀ with D the patch × patch dark
    channel on the [0, 1] scale, as in the authors' code: an outer splitting loop whose weight β_D grows by
    ``kappa`` from ``dark``/Otsu(x²) to 8, each step pulling x towards ``dark_target`` (its darkest pixels set to
    black where they are already dark) with weight β_D, around the gradient loop above."""
    kh, kw = k.shape
    h, w = y.shape[-2:]
    ph, pw = min(kh, h - 1), min(kw, w - 1)
    yp = pad(y, ph, pw, "reflect")
    s = tuple(yp.shape[-2:])
    K = _otf(k.to(yp.dtype), s)
    d = torch.tensor([[-1.0, 1.0]], dtype=yp.dtype)
    Dx, Dy = _otf(d, s), _otf(d.T.contiguous(), s)  # x[j] − x[j + 1] along each axis (the sign does not matter)
    KtY = K.conj() * torch.fft.rfft2(yp)
    K2, D2 = K.abs().square(), Dx.abs().square() + Dy.abs().square()
    x = yp
    beta_d = dark / max(_otsu(((yp + 1) / 2).square()), 1e-6) if dark > 0 else 0.0
    while True:
        target = beta_d * torch.fft.rfft2(dark_target(x, dark, beta_d, patch)) if beta_d > 0 else 0.0
        beta = 2 * lam
        while beta < beta_max:
            X = torch.fft.rfft2(x)
            gx, gy = torch.fft.irfft2(Dx * X, s=s), torch.fft.irfft2(Dy * X, s=s)
            keep = (gx.square() + gy.square()) >= lam / beta
            gx, gy = gx * keep, gy * keep
            num = KtY + beta * (Dx.conj() * torch.fft.rfft2(gx) + Dy.conj() * torch.fft.rfft2(gy)) + target
            x = torch.fft.irfft2(num / (K2 + beta * D2 + beta_d), s=s)
            beta *= kappa
        beta_d *= kappa
        if dark <= 0 or beta_d >= 8:
            break
    return x[..., ph: ph + h, pw: pw + w]


def _odd(v: float) -> int:
    return max(3, int(round((v - 1) / 2)) * 2 + 1)


def motion_scales(kernel_size: int, smallest: int = 5, factor: float = math.sqrt(2)) -> list[tuple[int, float]]:
    """The pyramid of a coarse-to-fine kernel estimate: (kernel side, image scale) from the coarsest, where the
    kernel is about ``smallest`` pixels (not less), to (kernel_size, 1), the image shrinking by ``factor`` a level."""
    n = max(1, math.floor(math.log(max(kernel_size / smallest, 1.0)) / math.log(factor)) + 1)
    out = []
    for i in range(n):
        f = factor ** -(n - 1 - i)
        out.append((min(kernel_size, _odd(kernel_size * f)) if i < n - 1 else kernel_size, f))
    return out


def _shrink(g: Tensor, f: float) -> Tensor:
    if f >= 1:
        return g
    h, w = g.shape[-2:]
    size = (max(8, round(h * f)), max(8, round(w * f)))
    return F.interpolate(g, size=size, mode="bilinear", antialias=True, align_corners=False)


def _scale_step(ys: Tensor, k: Tensor, lam: float, rounds: int, dark: float = 0.0, **kernel) -> tuple[Tensor, Tensor]:
    """``rounds`` rounds at one scale of: the sharp image by L0 deblurring, then the kernel on its gradients
    (``update_kernel`` warm-started, with the given options), centred. λ (and the dark channel's weight) shrink by
    1.1 a round (finer edges join late); each scale starts again from the given weights."""
    x = ys
    for _ in range(rounds):
        x = l0_deblur(ys, k, lam, dark=dark)
        k = centre_kernel(update_kernel(x, ys, k.shape[-1], init=k, **kernel))
        lam, dark = max(lam / 1.1, 1e-4), max(dark / 1.1, 1e-4) if dark > 0 else 0.0
    return x, k


def prefiltered(y: Tensor, sigma: float, denoiser: str | None) -> Tensor:
    """y with its noise of standard deviation σ (on [−1, 1]) removed by the named pretrained Gaussian denoiser
    (``invdiff.denoisers.DENOISERS``, e.g. ``"ffdnet"``) before a kernel is estimated from it; y itself when
    ``denoiser`` is None or σ is 0. The denoiser sees the blurred photo as an image like any other: it removes
    the noise and keeps the blur, whose edges the kernel estimate needs."""
    if denoiser is None or sigma <= 0:
        return y
    from .denoisers import DENOISERS

    if denoiser not in DENOISERS:
        raise ValueError(f"unknown prefilter {denoiser!r}; choose one of {sorted(DENOISERS)} or None")
    den = DENOISERS[denoiser].load()
    # a grey photo through a colour denoiser: replicated, and averaged back; its noise, the same in every channel,
    # is √C times stronger along the grey axis than independent noise of that σ, so the denoiser is told √C·σ
    grey = y.shape[1] == 1 and den.channels != 1
    level = float(sigma) * (math.sqrt(den.channels) if grey else 1.0)
    with torch.no_grad():
        out = den(y.expand(-1, den.channels, -1, -1) if grey else y, min(level, den.sigma_max))
    return out.mean(1, keepdim=True) if grey else out


#: the second pixel of the coarsest level's starting kernel, a two-pixel blur, relative to its centre
STARTS = {"horizontal": (0, -1), "vertical": (-1, 0), "diagonal": (-1, -1), "antidiagonal": (-1, 1)}


def starting_kernel(size: int, start: str = "horizontal") -> Tensor:
    """The kernel the coarsest level starts from: two pixels of weight ½ along the direction ``start`` (a key of
    ``STARTS``); from a delta the alternation tends to stay there."""
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; choose one of {sorted(STARTS)}")
    k, c = torch.zeros(size, size), size // 2
    di, dj = STARTS[start]
    k[c, c] = k[c + di, c + dj] = 0.5
    return k


def _check_motion_input(y: Tensor, kernel_size: int) -> None:
    if y.ndim != 4 or y.shape[0] != 1:
        raise ValueError(f"estimate_motion_kernel takes one image (1, C, H, W), got shape {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise ValueError("the blurred image contains NaN or infinite values")
    check_not_flat(y)
    if kernel_size < 3 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd number ≥ 3, got {kernel_size}")
    if kernel_size > min(y.shape[-2:]):
        raise ValueError(f"a {kernel_size}x{kernel_size} kernel is larger than the image {tuple(y.shape[-2:])}: "
                         "estimate a smaller kernel (--kernel-size)")


def _estimate_from(g: Tensor, start: str, kernel_size: int, work: int, lam: float, iters: int, update: dict, t0: float,
                   callback) -> tuple[Tensor, Tensor, list[dict], float]:
    """One coarse-to-fine run of ``estimate_motion_kernel`` from ``starting_kernel(·, start)`` on the grey image g:
    (kernel cut to kernel_size and centred, the L0 sharp image, the per-level history, the data residual
    ‖k * x − g‖²/N of the two)."""
    scales = motion_scales(work)
    k = starting_kernel(scales[0][0], start)
    history, prev, x = [], scales[0][1], g
    for i, (ks, f) in enumerate(scales):
        if i > 0:
            k = centre_kernel(resample_kernel(k, (ks, ks), f / prev))
        x, k = _scale_step(_shrink(g, f), k, lam, iters, **update)
        prev = f
        history.append({"stage": "motion-kernel", "start": start, "scale": i, "kernel_size": ks,
                        "image_scale": round(f, 4), "seconds": round(time.perf_counter() - t0, 2)})
        if callback is not None:
            callback(dict(history[-1]))
    c = (work - kernel_size) // 2
    k = centre_kernel(centre_kernel(k)[c: c + kernel_size, c: c + kernel_size]).float()
    from .operators.blur import Blur

    return k, x, history, float((Blur(k, padding="reflect")(x) - g).square().mean())


def _work_size(size: int, margin: float, g: Tensor) -> int:
    """The side the estimate of a size × size kernel works at: ``margin``·size, odd, for room to move before it is
    centred and cut, and no more than the image g allows."""
    return max(size, min(_odd(size * margin), 2 * ((min(g.shape[-2:]) - 1) // 2) + 1))


def fitted_kernel_size(k: Tensor, margin: float = 1.25, smallest: int = 15) -> int:
    """The odd side of a window that holds the support of the centred kernel k (its nonzero entries) with
    ``margin`` to spare about the centre, at least ``smallest`` and at most k's own side."""
    c = k.shape[-1] // 2
    nz = (centre_kernel(k) > 0).nonzero()
    r = int((nz - c).abs().max()) if len(nz) else 0
    return min(k.shape[-1], max(smallest, _odd(2 * r * margin + 1)))


def estimate_motion_kernel(y: Tensor, prior=None, sigma: float = 0.0, *, kernel_size: int = DEFAULT_MOTION_KERNEL_SIZE,
                           lam: float = 0.008, iters: int = 5, smooth: float = 0.3, edges: float = 0.1,
                           margin: float = 1.25, dark: float = 0.0, prefilter: str | None = None,
                           starts: tuple[str, ...] = ("horizontal",), kernel_prior=None,
                           useful: float | None = None, useful_window: int = 5, fit_size: bool = False,
                           generator=None, callback=None) -> BlindEstimate:
    """A free-form motion (camera-shake) kernel of side ``kernel_size`` from the blurred photo y (1, C, H, W) in
    [−1, 1] alone, by classical coarse-to-fine alternating minimisation (Cho & Lee 2009, Xu & Jia 2010, Pan et al.
    2014) on the grey image. Each level of a √2 pyramid, from a kernel of 5 px to one of ``margin``·kernel_size
    (room for the estimate to move before it is centred and cut to size), runs ``iters`` rounds of: the sharp
    image under an L0 gradient prior (``l0_deblur``, weight ``lam`` on the [−1, 1] scale; 0.008 chosen on the
    tuning split over 0.004, 0.016 and 0.032, benchmarks/blind/tuning_classical.json); the kernel by least
    squares on the gradients over the simplex (``update_kernel``: the strongest ``edges`` fraction of the sharp
    image's gradients, L2 weight ``smooth``); centring. The kernel is then stretched to the next level.

    The alternation starts from a two-pixel kernel along each direction of ``starts`` (keys of ``STARTS``) and
    keeps the estimate whose L0 image and kernel explain the photo best (the least residual ‖k * x − y‖²/N).
    Restarts from all four directions were measured on the tuning split and not adopted: the residual picked the
    best start in 8 of 36 cases (chance: 9), −0.04 to −0.08 dB of TV against the horizontal start alone, with the
    kernels as drawn and transposed (benchmarks/RESULTS.md, "Restarts"). ``prefilter`` names a pretrained
    denoiser applied to y at ``sigma`` first (``prefiltered``), and ``dark`` > 0 adds Pan et al.'s dark channel
    prior to the sharp image (``l0_deblur``): both measured on the same split, and neither the default.
    ``kernel_prior`` (``invdiff.kernel_prior.KernelPrior``) regularises every kernel update with the learned
    kernel denoiser (``update_kernel``). ``useful`` restricts every level's kernel update to the pixels where
    the blurred image's usefulness map (``usefulness``, Xu & Jia 2010, window ``useful_window``) is in its top
    ``useful`` fraction. ``fit_size`` runs the estimate a second time, from the same start, in the smaller
    window that fits the first estimate's support (``fitted_kernel_size``), and returns that kernel (its side
    then below ``kernel_size``, which bounds it).

    ``prior`` and ``generator`` are accepted for the solver's call and not used: the estimate is classical and
    deterministic (a last kernel update on the diffusion prior's restoration was measured and made the kernels
    worse; refinement by EM is ``refine_kernel_em``), and the diffusion prior restores the image afterwards with
    the kernel. A blind kernel is defined up to a translation of the image. The result's ``x`` is the grey L0
    sharp image; the kernel (kernel_size, kernel_size), float32, is non-negative and sums to 1; ``history`` has
    every level of every start and then the choice. See benchmarks/blind/blind_motion.md."""
    _check_motion_input(y, kernel_size)
    if not starts:
        raise ValueError("starts is empty: give at least one of " + ", ".join(STARTS))
    t0 = time.perf_counter()
    g = prefiltered(y.detach().float().cpu(), sigma, prefilter).mean(1, keepdim=True)
    update = {"smooth": smooth, "edges": edges, "iters": 60, "prune": 0.02, "dark": dark, "prior": kernel_prior,
              "useful": useful, "useful_window": useful_window}
    runs = {s: _estimate_from(g, s, kernel_size, _work_size(kernel_size, margin, g), lam, iters, update, t0,
                              callback) for s in starts}
    best = min(runs, key=lambda s: runs[s][3])
    k, x, _, _ = runs[best]
    history = [h for r in runs.values() for h in r[2]]
    fitted = fitted_kernel_size(k) if fit_size else kernel_size
    if fitted < kernel_size:  # again, in a window that fits the blur the first run found
        k, x, more, _ = _estimate_from(g, best, fitted, _work_size(fitted, margin, g), lam, iters, update, t0,
                                       callback)
        history += more
        history.append({"stage": "motion-kernel-size", "kernel_size": kernel_size, "fitted": fitted,
                        "seconds": round(time.perf_counter() - t0, 2)})
    history.append({"stage": "motion-kernel-start", "chosen": best, "seconds": round(time.perf_counter() - t0, 2),
                    "residuals": {s: round(r[3], 7) for s, r in runs.items()}})
    if callback is not None:
        callback(dict(history[-1]))
    return BlindEstimate(kernel=k, kind="motion", x=x, history=history, seconds=time.perf_counter() - t0)


#: the largest side of the window of a photo that solve estimates a blind motion kernel from and refines it on by EM
#: (``estimate_region``, rule "edges"); photos no larger are used whole, as before the window existed. On a declared
#: split of large photos the first estimate from a window of most coherent edges was as good as from the whole photo
#: (256 px: −0.024 ± 0.026 kernel error, 24 cases) and the EM's kernel from 256 px as good as from 512 px (+0.01 ±
#: 0.06, 4 cases) at an eighth of the time; 512 caps the EM at about 8 minutes on one CPU thread and keeps every
#: photo up to 512 px whole: on two validation photos a 256-px window lost 3.1 dB to the whole photo on one
#: (benchmarks/RESULTS.md, "A window of a large photo")
ESTIMATE_SIZE = 512
#: ... and the window is at least this many kernel sides (a longer blur needs more photo around it)
ESTIMATE_KERNELS = 4

#: how ``estimate_region`` scores a window: the sum over it of the grey gradient's magnitude weighted by Xu & Jia's
#: usefulness (``usefulness``: coherent edges count, texture finer than the blur does not), or the centre window
REGION_RULES = ("edges", "centre")


def estimate_region(y: Tensor, size: int, *, multiple: int = 1, rule: str = "edges",
                    stride: int = 8) -> tuple[int, int, int, int]:
    """The window (top, left, height, width) of the photo y (1, C, H, W) that a blind kernel is estimated from:
    the whole photo when both its sides are at most ``size``; else at most ``size`` on each side (the whole side
    where the photo is smaller), both sides rounded down to a ``multiple``, placed on a grid of ``stride`` pixels where ``rule`` (``REGION_RULES``) scores it highest; ties
    go to the first window in raster order. A blur that is the same over the photo is pinned down by its strong
    edges, and a window costs the estimate and the kernel EM its area instead of the photo's."""
    if rule not in REGION_RULES:
        raise ValueError(f"unknown region rule {rule!r}; choose from {', '.join(REGION_RULES)}")
    if size < 1 or multiple < 1 or stride < 1:
        raise ValueError(f"size, multiple and stride must be ≥ 1, got {size!r}, {multiple!r}, {stride!r}")
    H, W = y.shape[-2:]
    if H <= size and W <= size:  # the whole photo, whatever its sides
        return 0, 0, H, W
    h, w = min(size, H), min(size, W)
    h, w = max(multiple, h - h % multiple), max(multiple, w - w % multiple)
    if rule == "centre":
        return (H - h) // 2, (W - w) // 2, h, w
    gx, gy = _grey_gradients(y.detach())
    mag = torch.sqrt(gx.square() + gy.square())
    score = F.pad((usefulness(y) * mag)[0, 0].double(), (1, 0, 1, 0)).cumsum(0).cumsum(1)  # integral image
    tops = torch.arange(0, H - h + 1, stride).tolist() + ([H - h] if (H - h) % stride else [])
    lefts = torch.arange(0, W - w + 1, stride).tolist() + ([W - w] if (W - w) % stride else [])
    t, lf = torch.tensor(tops)[:, None], torch.tensor(lefts)[None, :]
    sums = score[t + h, lf + w] - score[t, lf + w] - score[t + h, lf] + score[t, lf]
    i, j = divmod(int(sums.argmax()), len(lefts))
    return tops[i], lefts[j], h, w


#: the first estimate's crop spread (``crop_spread``) above which solve calls a blind motion kernel unreliable: on
#: the declared tuning split it separates the estimates of the short kernel 0 (spread 0.19-0.30, error 0.38-0.49)
#: from those of the 61-px kernel 1 (0.68-0.80, error 0.51-0.67); benchmarks/RESULTS.md, "How far to trust"
UNRELIABLE_SPREAD = 0.5


def crop_spread(y: Tensor, k: Tensor, sigma: float = 0.0, *, crop: float = 0.75, **options) -> float | None:
    """How much the motion kernel k, estimated from the whole photo y (1, C, H, W), changes when it is estimated
    again from each of y's four corner crops of ``crop`` times its sides (``estimate_motion_kernel`` with
    ``options``, at k's size): the mean over the crops of the symmetrised ``kernel_error`` between k and the crop's
    kernel. A no-reference sign of the estimate's reliability: where the photo pins the blur down, the crops agree
    with the whole (rank correlation 0.58-0.59 with k's error against the true kernel on the hard split and the
    natural suite). None where a crop would be smaller than the kernel."""
    if not 0 < crop < 1:
        raise ValueError(f"crop must be in (0, 1), got {crop!r}")
    H, W = y.shape[-2:]
    ch, cw = int(H * crop), int(W * crop)
    if min(ch, cw) < k.shape[-1]:
        return None
    spread = []
    for a, b in ((0, 0), (0, W - cw), (H - ch, 0), (H - ch, W - cw)):
        kc = estimate_motion_kernel(y[..., a: a + ch, b: b + cw], None, sigma, kernel_size=k.shape[-1],
                                    **options).kernel
        spread.append((kernel_error(k, kc) + kernel_error(kc, k)) / 2)
    return sum(spread) / len(spread)


# ---- expectation-maximisation with the diffusion prior ---------------------------------------------------------
#: the M-step's options (``update_kernel``): every gradient of the restoration (not only the strongest), the
#: estimator's L2 weight; chosen on the tuning split (benchmarks/blind/tuning_kernel_em.json)
EM_KERNEL_UPDATE = {"smooth": 0.3, "edges": None, "iters": 100, "prune": 0.02}


def kernel_error_lam(lam: float, tau: float, sigma: float) -> float:
    """DiffPIR's λ for a kernel that is only an estimate: the kernel's remaining error taken as extra Gaussian
    noise of level ``tau`` (on [−1, 1]) in quadrature with the measurement's ``sigma``. DiffPIR's data weight is
    ρ_t ∝ λ σ², so weighting as if the noise were √(σ² + τ²) is λ · (1 + τ²/σ²). With ``sigma`` 0 DiffPIR's data
    step is exact whatever λ is, and λ is returned as it is."""
    if tau < 0 or sigma < 0:
        raise ValueError(f"tau and sigma must be ≥ 0, got tau={tau!r}, sigma={sigma!r}")
    return lam * (1 + tau ** 2 / sigma ** 2) if sigma > 0 else lam


def with_kernel_error(hp: dict, tau: float, sigma: float, given=()) -> dict:
    """The final restoration's hyper-parameters after kernel EM: ``hp`` with its λ for a kernel error ``tau``
    (``kernel_error_lam``), unless λ is among ``given`` (the user's own, used as it is) or ``tau`` is 0."""
    if not tau or "lam" not in hp or "lam" in given:
        return dict(hp)
    return {**hp, "lam": round(kernel_error_lam(float(hp["lam"]), tau, sigma), 6)}


def reblurred(y: Tensor, sigma: float) -> Tensor:
    """y low-passed by a Gaussian of standard deviation ``sigma`` pixels (reflect borders, kornia); y itself at 0.
    If the E-step's image is the photo smoothed by about that Gaussian, the reblurred y is the blur of that image
    by the true kernel (convolutions commute), so the M-step's fit of one to the other is not pulled short."""
    if sigma < 0:
        raise ValueError(f"reblur must be ≥ 0 pixels, got {sigma!r}")
    if sigma == 0:
        return y
    import kornia

    ks = 2 * math.ceil(3 * sigma) + 1
    return kornia.filters.gaussian_blur2d(y, (ks, ks), (float(sigma), float(sigma)), border_type="reflect")


def _check_em(rounds: int, prior_rounds: int | None, relax: float) -> None:
    if rounds < 0:
        raise ValueError(f"rounds must be ≥ 0, got {rounds}")
    if prior_rounds is not None and prior_rounds < 0:
        raise ValueError(f"prior_rounds must be ≥ 0, got {prior_rounds}")
    if not 0 < relax < 2:
        raise ValueError(f"relax must be in (0, 2), got {relax}")


def _em_m_step(x: Tensor, y: Tensor, k: Tensor, start: Tensor, opts: dict, relax: float) -> Tensor:
    """The EM round's kernel: the M-step warm-started at ``start``, centred, over-relaxed from k by ``relax``."""
    k_new = centre_kernel(update_kernel(x, y, tuple(k.shape), init=start, **opts))
    if relax != 1.0:
        k_new = centre_kernel(project_simplex((k + relax * (k_new - k)).reshape(1, -1)).reshape(k.shape))
    return k_new


def refine_kernel_em(y: Tensor, k: Tensor, restore, rounds: int, *, per_step: bool = False, callback=None,
                     reblur: float = 0.0, prior_rounds: int | None = None, relax: float = 1.0,
                     **update) -> tuple[Tensor, list[dict]]:
    """Refine an estimated kernel by expectation-maximisation with the diffusion prior, the outer loop of Laroche et
    al. 2024 ("Fast Diffusion EM"): ``rounds`` times, the E-step restores the image with the current kernel
    (``restore(k)``, the solver's own few-step diffusion restoration, its posterior-mean estimate) and the M-step
    takes the least-squares kernel of y on that image's gradients over the simplex (``update_kernel`` warm-started
    at k, options ``EM_KERNEL_UPDATE`` overridden by ``update``), centred. The restoration is far sharper than the
    classical L0 image the first estimate came from, so a kernel that was roughly right gets closer; one that was
    wrong stays wrong (benchmarks/RESULTS.md, "Kernel EM").

    ``restore(k)`` may return S posterior samples (S, C, H, W) instead of one image: the M-step then fits the
    kernel to all of them at once (the mean of their S least-squares terms, ``update_kernel``), a Monte Carlo
    E-step. With the posterior mean alone the M-step misses E[XᵀX] − X̄ᵀX̄, the image's posterior covariance, whose
    absence lets EM shrink the kernel (Levin et al. 2011); the samples' spread puts it back.

    ``per_step``: also their inner loop, where the kernel follows the sampler. The E-step is called as
    ``restore(k, refit)``; the restoration calls ``refit(x̂0)`` at each of its steps with the prior's x̂0 and uses
    the kernel it returns (the same M-step, warm-started at the previous one; the authors refit at every one of
    their 100 steps, from a Dirac, with 10 splitting iterations); the round's M-step then starts from the last of
    them.

    ``reblur`` (pixels): the M-step fits the E-step's image to y low-passed by that Gaussian (``reblurred``), for an
    E-step whose image is smoother than the photo. ``prior_rounds``: the kernel prior (``update``'s ``prior``) in the
    first that many rounds only, the plain least squares after (with the true photo as the image the prior pulls a
    right kernel towards its training kernels; benchmarks/RESULTS.md). ``relax``: over-relaxed EM (Salakhutdinov &
    Roweis 2003), the round's kernel k + relax·(M(k) − k) projected onto the simplex and centred, for an EM whose
    every kernel is nearly a fixed point (the E-step's image explains y with the kernel it was given) and which
    therefore moves slowly; 1 is plain EM. Returns the kernel (its shape kept) and, per round, the relative change
    of the kernel."""
    _check_em(rounds, prior_rounds, relax)
    opts = {**EM_KERNEL_UPDATE, **update}
    k = k.detach().float().cpu().reshape(k.shape[-2:])
    yc = reblurred(y.detach().float().cpu(), reblur)
    history = []
    t0 = time.perf_counter()
    for r in range(rounds):
        if prior_rounds is not None and r == prior_rounds:
            opts["prior"] = None
        if per_step:
            current = [k]

            def refit(x0: Tensor) -> Tensor:
                current[0] = centre_kernel(update_kernel(x0.detach().float().cpu(), yc, tuple(k.shape),
                                                         init=current[0], **opts))
                return current[0]

            x = restore(k, refit).detach().float().cpu()
            start = current[0]
        else:
            x, start = restore(k).detach().float().cpu(), k
        k_new = _em_m_step(x, yc, k, start, opts, relax)
        change = float((k_new - k).norm() / k.norm().clamp_min(1e-12))
        k = k_new
        history.append({"stage": "kernel-em", "round": r + 1, "rounds": rounds, "change": round(change, 4),
                        "seconds": round(time.perf_counter() - t0, 2)})
        if callback is not None:
            callback(dict(history[-1]))
    return k, history


PRIOR_SCORE_TIMESTEPS = (10, 25, 50)
#: Fast Diffusion EM's E-step (Laroche et al. 2024, as their samplers run it: from pure noise, 100 steps; DiffPIR at
#: its default λ in place of their ΠGDM/DPS guidance): the options over the blind variant's restoration
FAST_EM_E_STEP = {"steps": 100, "start": 1.0, "init": "zeros", "lam": 28.0}
#: the no-reference rules that pick one of several restorations of one photo (each: lower is better); rules joined
#: by "+" (``choice_rules``) switch from the default candidate only where all of them agree (``choose``). The rule
#: solve's ``kernel_fast_em`` uses unless its ``rule`` says otherwise keeps the EM's kernel unless the residual and
#: the sparsity both prefer Fast Diffusion EM's: on the declared tuning split (36 cases) +0.38 ± 0.19 dB over the EM,
#: worse in none (nor in 19 suite cases); not solve's default for the 100-step run's time on a CPU
#: (benchmarks/RESULTS.md, "Two kernels, and a rule to choose", "Six more tuning cases")
CHOICE_RULES = ("sparsity", "prior", "residual")
FAST_EM_RULE = "residual+sparsity"


def choice_rules(rule) -> tuple[str, ...]:
    """The rules a choice rule names: one of ``CHOICE_RULES``, or several of them joined by "+"."""
    parts = tuple(rule.split("+")) if isinstance(rule, str) else ()
    if not parts or any(p not in CHOICE_RULES for p in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"unknown choice rule {rule!r}; the rules are {', '.join(CHOICE_RULES)}, or several of "
                         "them joined by '+' (switch only where all agree)")
    return parts


def choose(scores: dict[str, dict[str, float]], rule: str, default: str) -> str:
    """The candidate a choice rule keeps, from each candidate's score by each rule it names (lower is better): by
    one rule, the lowest (``default`` on a tie when it comes first); by several ("residual+sparsity"), a candidate
    other than ``default`` only where every one of them scores it below ``default`` (among several such, the lowest
    by the first rule), else ``default``: a switch costs when it is wrong, so it needs the rules to agree."""
    parts = choice_rules(rule)
    if default not in scores:
        raise ValueError(f"the default candidate {default!r} is not among {', '.join(scores)}")
    if len(parts) == 1:
        return min(scores, key=lambda n: scores[n][parts[0]])
    better = [n for n in scores if n != default and all(scores[n][p] < scores[default][p] for p in parts)]
    return min(better, key=lambda n: scores[n][parts[0]]) if better else default


def gradient_sparsity(x: Tensor) -> Tensor:
    """‖∇x‖₁ / (‖∇x‖₂ √N) of the grey version of each image of x (B, C, H, W), N the number of differences
    (Krishnan, Tay and Fergus 2011, "Blind deconvolution using a normalized sparsity measure"): blur, ringing and
    the ghost copies of a wrong kernel all raise it; a sharp image with few strong edges keeps it low. Scale-free:
    x and a·x score the same. Returns (B,)."""
    if x.dim() != 4:
        raise ValueError(f"gradient_sparsity needs x (B, C, H, W), got {tuple(x.shape)}")
    v = x.float().mean(1, keepdim=True)
    g = torch.cat([(v[..., :-1, 1:] - v[..., :-1, :-1]).flatten(1), (v[..., 1:, :-1] - v[..., :-1, :-1]).flatten(1)], 1)
    l2 = g.square().sum(1).sqrt().clamp_min(torch.finfo(torch.float32).tiny)
    return g.abs().sum(1) / l2 / math.sqrt(g.shape[1])


def choice_score(rule: str, prior, x: Tensor, y: Tensor | None = None, op=None) -> Tensor:
    """One score per image of x (B,) by a rule of ``CHOICE_RULES``, lower is better: ``sparsity`` is
    ``gradient_sparsity``, ``prior`` is ``prior_score`` under ``prior``, ``residual`` is the mean (y − op(x))²
    (the restoration's misfit to the photo y through its own operator op)."""
    if rule == "sparsity":
        return gradient_sparsity(x)
    if rule == "prior":
        return prior_score(prior, x)
    if rule == "residual":
        if y is None or op is None:
            raise ValueError("the residual rule needs the photo y and the operator")
        from .samplers.registry import measurement_residuals

        return measurement_residuals(y.to(x), op, x.unsqueeze(1))[:, 0].float().square() / y[0].numel()
    raise ValueError(f"unknown choice rule {rule!r}; the rules are {', '.join(CHOICE_RULES)}")


def prior_score(prior, x: Tensor, *, timesteps=PRIOR_SCORE_TIMESTEPS, draws: int = 3, seed: int = 0) -> Tensor:
    """How unnatural the diffusion prior finds the fine detail of each image of x (B, C, H, W) on [−1, 1]: its
    denoising loss mean ‖ε_θ(√ᾱ_t x + √(1−ᾱ_t) ε, t) − ε‖² at the low noise levels ``timesteps`` (the terms of
    the variational bound that weigh the most), ``draws`` noises each. Lower is likelier. Every image gets the same
    noises (drawn from ``seed`` per timestep and draw, common random numbers), so the scores of two restorations
    of one photo differ by the images, not by the draws. A restoration with the wrong blur kernel carries its
    ghosts and ringing there; benchmarks/RESULTS.md ("Two kernels, and a rule to choose") measures it as a rule
    that picks one of two blind kernel estimates. Returns one score per image (B,)."""
    if x.dim() != 4 or draws < 1 or not timesteps:
        raise ValueError(f"prior_score needs x (B, C, H, W), draws ≥ 1 and timesteps; got {tuple(x.shape)}, "
                         f"{draws}, {timesteps!r}")
    n = prior.schedule.num_timesteps
    if any(not 0 <= int(t) < n for t in timesteps):
        raise ValueError(f"timesteps must lie in [0, {n}), got {timesteps!r}")
    x = x.to(prior.device, prior.dtype)
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    with torch.no_grad():
        for t in timesteps:
            ab = prior.schedule.alpha_bar(int(t))
            for d in range(draws):
                g = torch.Generator().manual_seed(seed * 1_000_003 + int(t) * 101 + d)
                e = torch.randn(x.shape[1:], generator=g).to(x).expand_as(x)
                x_t = math.sqrt(ab) * x + math.sqrt(1 - ab) * e
                err = (prior.eps(x_t, int(t)) - e).float().square().mean(dim=(1, 2, 3))
                total += err.double().cpu()
    return (total / (len(timesteps) * draws)).float()
