"""Classical solvers every table compares against, from scikit-image/scipy where they exist.

Each baseline takes (y, operator, sigma) on the [-1, 1] scale and returns x in [-1, 1], image by image."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .operators import Blur, CircularBlur, Inpainting, LinearOperator, NonUniformBlur, PhaseRetrieval, SVDOperator
from .operators.separable import BlockAverage


def _np01(v: Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) float64 in [0, 1]."""
    return ((v.detach().double().cpu().numpy() + 1) / 2).transpose(1, 2, 0)


def _back(a: np.ndarray, like: Tensor) -> Tensor:
    return (torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))) * 2 - 1).to(like).clamp(-1, 1)


def _kernel(op, i: int) -> np.ndarray:
    if not isinstance(op, (Blur, CircularBlur)):
        raise ValueError(f"this baseline needs a spatially invariant blur, got {type(op).__name__}")
    k = op.kernel[i if op.kernel.shape[0] > 1 else 0]
    return k.double().cpu().numpy()


def wiener(y: Tensor, op, sigma: float, *, balance: float | None = None) -> Tensor:
    """Wiener deconvolution (skimage.restoration.wiener, flat image prior) per channel; ``balance`` defaults to
    a noise-dependent 50 σ² (σ on [0, 1]) + 1e-3."""
    from skimage.restoration import wiener as sk_wiener

    bal = balance if balance is not None else 50 * (sigma / 2) ** 2 + 1e-3
    out = []
    for i in range(y.shape[0]):
        a = _np01(y[i])
        k = _kernel(op, i)
        res = np.stack([sk_wiener(a[..., c], k, bal, clip=False) for c in range(a.shape[-1])], -1)
        out.append(_back(np.clip(res, 0, 1), y))
    return torch.stack(out)


def richardson_lucy(y: Tensor, op, sigma: float, *, iters: int = 30) -> Tensor:
    """Richardson–Lucy deconvolution (skimage.restoration.richardson_lucy) per channel."""
    from skimage.restoration import richardson_lucy as sk_rl

    out = []
    for i in range(y.shape[0]):
        a = np.clip(_np01(y[i]), 1e-4, 1)
        k = _kernel(op, i)
        res = np.stack([sk_rl(a[..., c], k, num_iter=iters, clip=True) for c in range(a.shape[-1])], -1)
        out.append(_back(res, y))
    return torch.stack(out)


def tv(y: Tensor, op, sigma: float, *, weight: float | None = None, iters: int = 60) -> Tensor:
    """Total-variation regularised least squares for any linear operator: proximal gradient (FISTA) on
    ½‖y − Ax‖² + λ TV(x) with skimage's Chambolle TV denoiser as the proximal map. λ defaults to σ/4 + 0.005."""
    from skimage.restoration import denoise_tv_chambolle

    if not isinstance(op, LinearOperator):
        raise ValueError("TV regularisation needs a linear operator")
    lam = weight if weight is not None else sigma / 4 + 0.005
    x = op.pinv(y) if isinstance(op, SVDOperator) else op.adjoint(y)
    x = x.clamp(-1, 1)
    z, t = x.clone(), 1.0
    step = 1.0 / _lipschitz(op, x)
    for _ in range(iters):
        g = op.adjoint(op(z) - y)
        v = z - step * g
        nxt = torch.stack([_back(denoise_tv_chambolle(_np01(v[i]), weight=step * lam / 2, channel_axis=-1), v)
                           for i in range(v.shape[0])])
        t_new = (1 + (1 + 4 * t * t) ** 0.5) / 2
        z = nxt + (t - 1) / t_new * (nxt - x)
        x, t = nxt, t_new
    return x


def _lipschitz(op, like: Tensor, iters: int = 15) -> float:
    """‖A‖² by power iteration on AᵀA (largest over the batch)."""
    v = torch.randn(like.shape, generator=torch.Generator().manual_seed(0), dtype=like.dtype).to(like.device)
    for _ in range(iters):
        v = op.adjoint(op(v))
        v = v / v.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1).clamp_min(1e-12)
    return float(op.adjoint(op(v)).flatten(1).norm(dim=1).max().clamp_min(1e-6)) * 1.05


def bicubic(y: Tensor, op, sigma: float) -> Tensor:
    """Bicubic upsampling of the low-resolution measurement."""
    if not isinstance(op, BlockAverage):
        raise ValueError("bicubic upsampling is the baseline for super-resolution")
    return F.interpolate(y, scale_factor=op.scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def biharmonic(y: Tensor, op, sigma: float) -> Tensor:
    """Biharmonic inpainting (skimage.restoration.inpaint_biharmonic); an image with no observed pixel has nothing
    to interpolate and gives mid-grey (0 on [-1, 1])."""
    from skimage.restoration import inpaint_biharmonic

    if not isinstance(op, Inpainting):
        raise ValueError("biharmonic inpainting needs an inpainting operator")
    out = []
    for i in range(y.shape[0]):
        m = op.mask[i if op.mask.shape[0] > 1 else 0, 0].cpu().numpy() < 0.5
        if m.all():
            out.append(torch.zeros_like(y[i]))
            continue
        res = inpaint_biharmonic(_np01(y[i]), m, channel_axis=-1)
        out.append(_back(res, y))
    return torch.stack(out)


def pinv(y: Tensor, op, sigma: float) -> Tensor:
    """The minimum-norm least-squares solution A⁺y (for colourisation: the grey image in every channel)."""
    if not isinstance(op, LinearOperator):
        raise ValueError("the pseudo-inverse needs a linear operator")
    return op.pinv(y).clamp(-1, 1)


def tv_denoise(y: Tensor, op, sigma: float) -> Tensor:
    """Chambolle TV denoising (skimage), weight proportional to σ."""
    from skimage.restoration import denoise_tv_chambolle

    return torch.stack([_back(denoise_tv_chambolle(_np01(y[i]), weight=max(sigma, 1e-3), channel_axis=-1), y)
                        for i in range(y.shape[0])])


def _support(shape, top: int, left: int, h: int, w: int, device) -> Tensor:
    support = torch.zeros(1, 1, *shape, dtype=torch.bool, device=device)
    support[..., top : top + h, left : left + w] = True
    return support


def _hio(x: Tensor, y: Tensor, support: Tensor, iters: int, er_iters: int, beta: float) -> Tensor:
    """Fienup's HIO for ``iters`` iterations, then error reduction, on canvases x with Fourier magnitudes y: the
    object domain keeps the values inside the support and in [-1, 1]."""
    for k in range(iters + er_iters):
        X = torch.fft.fft2(x, norm="ortho")
        xp = torch.fft.ifft2(y * torch.exp(1j * torch.angle(X)), norm="ortho").real
        ok = support & (xp >= -1) & (xp <= 1)
        x = torch.where(ok, xp, x - beta * xp if k < iters else torch.zeros_like(xp))
    return x


def hio(y: Tensor, op, sigma: float, *, iters: int = 300, er_iters: int = 50, beta: float = 0.9, restarts: int = 4,
        seed: int = 0) -> Tensor:
    """Fienup's hybrid input-output (then error reduction) for |F(pad(x))| = y with the support of x known and
    x in [-1, 1]; the best of a few random starts (lowest magnitude residual) is kept."""
    if not isinstance(op, PhaseRetrieval) or op.squared:
        raise ValueError("HIO needs the magnitude phase-retrieval operator")
    b, c, hp, wp = y.shape
    h, w = op.in_shape(y.shape)[-2:]
    l, r, t, bt = op.pads(h, w)
    support = _support((hp, wp), t, l, h, w, y.device)
    best, best_err = None, None
    g = torch.Generator().manual_seed(seed)
    for _ in range(restarts):
        x = torch.where(support, torch.rand(b, c, hp, wp, generator=g, dtype=y.dtype).to(y.device) * 2 - 1, torch.zeros(()))
        x = _hio(x, y, support, iters, er_iters, beta)
        xc = x[..., t : t + h, l : l + w].clamp(-1, 1)
        err = (op(xc) - y).flatten(1).norm(dim=1)
        if best is None:
            best, best_err = xc, err
        else:
            better = (err < best_err).reshape(-1, 1, 1, 1)
            best = torch.where(better, xc, best)
            best_err = torch.minimum(err, best_err)
    return best


def _central(y: Tensor, mh: int, mw: int) -> Tensor:
    """The central mh×mw frequencies of an (unshifted) spectrum, unshifted again: the spectrum of the canvas
    downsampled by the ideal low-pass filter."""
    hp, wp = y.shape[-2:]
    ys = torch.fft.fftshift(y, dim=(-2, -1))
    a, b = hp // 2 - mh // 2, wp // 2 - mw // 2
    return torch.fft.ifftshift(ys[..., a : a + mh, b : b + mw], dim=(-2, -1))


def align_channels(x: Tensor) -> Tensor:
    """Each channel of each image put in the sign and orientation (as it is, or turned by 180°) that correlate
    best with the image's channel of most variance; that channel is kept as it is. These are the trivial
    ambiguities that phase retrieval with a known support resolves channel by channel: the magnitude cannot tell
    x from −x, and the support's point reflection (the twin image, turned inside the support) fits it as well."""
    out = x.clone()
    for i in range(x.shape[0]):
        v = x[i] - x[i].mean((-2, -1), keepdim=True)
        ref = int(v.pow(2).flatten(1).sum(1).argmax())
        for c in range(x.shape[1]):
            if c == ref:
                continue
            corr = torch.stack([(v[c] * v[ref]).sum(), (v[c].flip(-2, -1) * v[ref]).sum()])
            k = int(corr.abs().argmax())
            chan = x[i, c].flip(-2, -1) if k else x[i, c]
            out[i, c] = chan if corr[k] >= 0 else -chan
    return out


def hio_multiscale(y: Tensor, op, sigma: float, *, side: int = 32, iters: int = 400, er_iters: int = 50,
                   beta: float = 0.9, restarts: int = 16, seed: int = 0) -> Tensor:
    """HIO where the data can carry it: on the central frequencies only, then upsampled. The central m×m of the
    canvas's magnitudes, scaled by m/M, are the magnitudes of the canvas downsampled by M/m, whose image is the
    photo downsampled alike inside a support of the same proportions; the measurement noise keeps its σ per
    coefficient while the low frequencies carry most of the energy, so a coarse level (the image's shorter side
    downsampled to ``side``) is solved reliably where the full one fits noise. ``restarts`` random starts run as
    one batch, and the smallest magnitude residual is kept channel by channel; the channels are then aligned
    (``align_channels``) and the image upsampled bicubically. The global sign and point reflection stay
    ambiguous: the magnitude cannot tell them apart."""
    if not isinstance(op, PhaseRetrieval) or op.squared:
        raise ValueError("HIO needs the magnitude phase-retrieval operator")
    b, c, hp, wp = y.shape
    h, w = op.in_shape(y.shape)[-2:]
    l, r, t, bt = op.pads(h, w)
    f = max(1.0, min(h, w) / side)
    mh, mw = round(hp / f), round(wp / f)
    th, tl = round(t / f), round(l / f)
    sh, sw = min(round(h / f), mh - th), min(round(w / f), mw - tl)
    yl = _central(y, mh, mw) * ((mh * mw) / (hp * wp)) ** 0.5
    support = _support((mh, mw), th, tl, sh, sw, y.device)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(restarts, b, c, mh, mw, generator=g, dtype=y.dtype).to(y.device) * 2 - 1
    xs = _hio(torch.where(support, x0, torch.zeros(())), yl.expand(restarts, -1, -1, -1, -1), support, iters, er_iters, beta)
    err = (torch.fft.fft2(xs, norm="ortho").abs() - yl).flatten(3).norm(dim=3)  # (restarts, B, C)
    best = torch.gather(xs, 0, err.argmin(0)[None, :, :, None, None].expand(1, b, c, mh, mw))[0]
    coarse = align_channels(best[..., th : th + sh, tl : tl + sw].clamp(-1, 1))
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


BASELINES: dict[str, Callable[..., Tensor]] = {
    "wiener": wiener, "richardson-lucy": richardson_lucy, "tv": tv, "bicubic": bicubic, "biharmonic": biharmonic,
    "hio": hio, "hio-multiscale": hio_multiscale, "pinv": pinv, "tv-denoise": tv_denoise,
}

def run_baseline(name: str, y: Tensor, op, sigma: float, **kw) -> Tensor:
    if name not in BASELINES:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    with torch.no_grad():
        return BASELINES[name](y, op, sigma, **kw)


__all__ = ["BASELINES", "align_channels", "run_baseline", "NonUniformBlur"]
