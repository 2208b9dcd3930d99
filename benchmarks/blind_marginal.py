"""A probe, not part of invdiff: a blind motion kernel by variational EM on the marginal likelihood p(y | k) (Levin, Weiss, Durand & Freeman 2011,
"Efficient marginal likelihood optimization in blind deconvolution"; their `deconv_diagfe_filt_sps` pipeline).

MAP over the image and the kernel together favours a blurred image and a delta kernel; the marginal over the image
does not. Levin et al. approximate it by a free energy with a Gaussian q(x) of diagonal covariance under a
zero-mean mixture-of-Gaussians prior on the image's derivatives. In the derivative domain, per derivative filter,
on the [0, 1] scale, x on the extended domain of y's valid convolution (no boundary assumption):

- E-step: three rounds of (mixture responsibilities from E[x²] = μ² + C, weights w = Σ_j q_j ν_j; the mean μ by
  conjugate gradients on (KᵀK/η² + diag w) μ = Kᵀy/η², 15 iterations from y padded; C = 1/(diag(KᵀK)/η² + w));
- M-step: k ≥ 0 minimising Σ_f ‖y_f − k * μ_f‖² + Σ_p k_p² Σ_n C_f(n − p) (the covariance term that MAP lacks)
  + s Σ_p k_p²/max(|k_p|, 10⁻⁴)^1.5 (their sparse kernel prior, by 2 reweightings), here by FISTA with the
  diagonal terms in the proximal step;
- the noise level η annealed from 1.15¹⁰ η₀ down to η₀ over 11 EM iterations at every level of a √2 pyramid.

Ours differs in: the mixture, fitted to the natural prior's training photos (``benchmarks/fit_gradient_mog.py``);
the kernel's QP solved by FISTA instead of quadprog; our pyramid and kernel resampling (``invdiff.blind``); η₀
= max(0.01, the photo's noise on [0, 1]) where theirs is 0.01.

    python benchmarks/blind_marginal.py truth      # EM started at the true kernel: does it stay there?
    python benchmarks/blind_marginal.py estimate   # the whole estimate against solve's classical one

on the declared tuning split's 8 EM cases (butterfly, house, plant, robin × kernels 0-1, σ by parity, as
``blind_em_tuning.py``); JSON to benchmarks/blind/probe_marginal_<mode>.json."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

#: the mixture of the derivatives of the grey [0, 1] image: weights and inverse variances, fitted by EM to the
#: natural prior's 66 training photos at full size and shrunk by 2 and 4 (``benchmarks/fit_gradient_mog.py``)
MOG_PIS = (0.27807, 0.35432, 0.27773, 0.08989)
MOG_IVARS = (81227.0, 4961.7, 316.08, 25.827)
#: the kernel's sparsity weight s (theirs, ``k_prior_ivar``)
KERNEL_SPARSITY = 0.01


def _derivatives(g: Tensor) -> Tensor:
    """(2, H − 1, W − 1): the horizontal and vertical forward differences of the grey image g (H, W)."""
    return torch.stack([g[:-1, 1:] - g[:-1, :-1], g[1:, :-1] - g[:-1, :-1]])


class _Valid:
    """The valid convolution with a kernel of side K of images on the extended grid (N + K − 1) onto the grid of y
    (N), and its adjoint, by FFTs of the extended grid's size (circular there, exact on the valid part)."""

    def __init__(self, shape: tuple[int, int], size: int):
        self.n, self.size = shape, size
        self.m = (shape[0] + size - 1, shape[1] + size - 1)

    def spectrum(self, k: Tensor) -> Tensor:
        return torch.fft.rfft2(k, s=self.m)

    def forward(self, kf: Tensor, x: Tensor) -> Tensor:
        out = torch.fft.irfft2(kf * torch.fft.rfft2(x, s=self.m), s=self.m)
        return out[..., self.size - 1:, self.size - 1:]

    def adjoint(self, kf: Tensor, r: Tensor) -> Tensor:
        z = F.pad(r, (self.size - 1, 0, self.size - 1, 0))
        return torch.fft.irfft2(kf.conj() * torch.fft.rfft2(z, s=self.m), s=self.m)


def _cg(apply, b: Tensor, x: Tensor, iters: int) -> Tensor:
    """Conjugate gradients on apply(x) = b for a batch of independent systems (leading dimension)."""
    r = b - apply(x)
    p, rho = r.clone(), r.square().sum((-2, -1), keepdim=True)
    for _ in range(iters):
        q = apply(p)
        alpha = rho / (p * q).sum((-2, -1), keepdim=True).clamp_min(1e-30)
        x, r = x + alpha * p, r - alpha * q
        rho_new = r.square().sum((-2, -1), keepdim=True)
        p, rho = r + (rho_new / rho.clamp_min(1e-30)) * p, rho_new
    return x


def e_step(y: Tensor, k: Tensor, eta: float, rounds: int = 3, iters: int = 15) -> tuple[Tensor, Tensor]:
    """The mean μ and the diagonal covariance C of q(x) for the derivative images y (F, N₁, N₂) under the kernel k
    (K, K) and noise η, on the extended grid (F, N₁ + K − 1, N₂ + K − 1)."""
    op = _Valid(tuple(y.shape[-2:]), k.shape[-1])
    kf, pis, ivars = op.spectrum(k), y.new_tensor(MOG_PIS), y.new_tensor(MOG_IVARS)
    da1 = op.adjoint(op.spectrum(k.square()), torch.ones_like(y)) / eta ** 2
    h = (k.shape[-1] - 1) // 2
    start = F.pad(y[None], (h, h, h, h), mode="replicate")[0]
    w = torch.full_like(start, float((pis * ivars).sum()))
    b = op.adjoint(kf, y)
    for rnd in range(rounds):
        mu = _cg(lambda v: op.adjoint(kf, op.forward(kf, v)) + eta ** 2 * w * v, b, start, iters)
        cov = 1.0 / (da1 + w)
        if rnd < rounds - 1:  # the next round's weights: the mixture's responsibilities from E[x²]
            logp = -0.5 * (mu.square() + cov)[..., None] * ivars + torch.log(pis) + 0.5 * torch.log(ivars)
            w = (torch.softmax(logp, -1) * ivars).sum(-1)
    return mu, cov


def _covariance_weight(cov: Tensor, shape: tuple[int, int], size: int) -> Tensor:
    """D(p) = Σ_f Σ_n C_f(n + K − 1 − p) over y's grid n: the covariance term's weight on kernel entry p (K, K)."""
    s = F.pad(cov.sum(0).cumsum(0).cumsum(1), (1, 0, 1, 0))
    i = torch.arange(size - 1, -1, -1)  # the window's first row (column) for entry p is K − 1 − p
    r0, c0 = i[:, None], i[None, :]
    r1, c1 = r0 + shape[0], c0 + shape[1]
    return s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0]


def m_step(y: Tensor, mu: Tensor, cov: Tensor, k: Tensor, sparsity: float = KERNEL_SPARSITY,
           reweights: int = 2, iters: int = 60) -> Tensor:
    """The kernel ≥ 0 minimising Σ_f ‖y_f − k * μ_f‖² + Σ_p D_p k_p² + sparsity·Σ_p k_p²/max(|k_p|, 10⁻⁴)^1.5,
    the last term's weights from the previous solve (none in the first); FISTA warm-started at k."""
    size = k.shape[-1]
    op = _Valid(tuple(y.shape[-2:]), size)
    mf = torch.fft.rfft2(mu, s=op.m)
    lip = 2 * float(mf.abs().square().sum(0).max())
    d = _covariance_weight(cov, tuple(y.shape[-2:]), size)
    for rw in range(reweights + 1):
        diag = d + (sparsity * k.abs().clamp_min(1e-4).pow(-1.5) if rw > 0 else 0.0)
        z, t, kk = k.clone(), 1.0, k
        for _ in range(iters):
            out = torch.fft.irfft2(mf * torch.fft.rfft2(z, s=op.m), s=op.m)[..., size - 1:, size - 1:] - y
            grad = torch.fft.irfft2((mf.conj() * torch.fft.rfft2(F.pad(out, (size - 1, 0, size - 1, 0)), s=op.m))
                                    .sum(0), s=op.m)[:size, :size]
            k_new = ((z - 2 * grad / lip) / (1 + 2 * diag / lip)).clamp_min(0)
            t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
            z = k_new + (t - 1) / t_new * (k_new - kk)
            kk, t = k_new, t_new
        k = kk
    return k


def estimate_level(g: Tensor, k: Tensor, eta0: float, anneal: int = 11) -> Tensor:
    """The EM iterations at one level: the grey image g (H, W) on [0, 1], the kernel k warm-started; η from
    1.15^(anneal − 1)·η₀ down to η₀."""
    y = _derivatives(g)
    for i in range(anneal):
        eta = eta0 * 1.15 ** (anneal - 1 - i)
        mu, cov = e_step(y, k, eta)
        k = m_step(y, mu, cov, k)
        if float(k.sum()) <= 0:
            raise RuntimeError("the marginal-likelihood kernel estimate collapsed to zero")
    return k / k.sum()


def estimate_motion_kernel_marginal(y: Tensor, sigma: float = 0.0, *, kernel_size: int = 61, margin: float = 1.25,
                                    noise: float | None = None, callback=None):
    """A motion kernel of side ``kernel_size`` from the blurred photo y (1, C, H, W) in [−1, 1] by Levin et al.'s
    marginal-likelihood EM, coarse to fine (``invdiff.blind``'s pyramid and kernel resampling, from its two-pixel
    start); σ is the photo's noise on [−1, 1], ``noise`` overrides η₀ (on [0, 1]). Returns a ``BlindEstimate``."""
    from invdiff import blind

    blind._check_motion_input(y, kernel_size)
    t0 = time.perf_counter()
    g = (y.detach().double().cpu().mean(1, keepdim=True) + 1) / 2
    eta0 = noise if noise is not None else max(0.01, sigma / 2)
    work = blind._work_size(kernel_size, margin, g)
    scales = blind.motion_scales(work)
    k, prev, history = blind.starting_kernel(scales[0][0]).double(), scales[0][1], []
    for i, (ks, f) in enumerate(scales):
        if i > 0:
            k = blind.centre_kernel(blind.resample_kernel(k, (ks, ks), f / prev))
        k = blind.centre_kernel(estimate_level(blind._shrink(g, f)[0, 0], k, eta0))
        prev = f
        history.append({"stage": "marginal-kernel", "scale": i, "kernel_size": ks, "image_scale": round(f, 4),
                        "seconds": round(time.perf_counter() - t0, 2)})
        if callback is not None:
            callback(dict(history[-1]))
    c = (work - kernel_size) // 2
    k = blind.centre_kernel(k[c: c + kernel_size, c: c + kernel_size]).float()
    return blind.BlindEstimate(kernel=k, kind="motion", history=history, seconds=time.perf_counter() - t0)


def _truth(y, k_true, s: float) -> list[float]:
    """Kernel errors after each of the 11 annealed EM iterations at full size, started at the true kernel."""
    from invdiff.blind import centre_kernel, kernel_error

    g = (y.double().mean(1)[0] + 1) / 2
    pad = 7
    k, yd, out = F.pad(k_true.double(), (pad,) * 4), _derivatives(g), []
    for it in range(11):
        mu, cov = e_step(yd, k, max(0.01, s / 2) * 1.15 ** (10 - it))
        k = m_step(yd, mu, cov, k)
        k = k / k.sum()
        out.append(round(kernel_error(centre_kernel(k)[pad:-pad, pad:-pad], k_true), 4))
    return out


def main() -> None:
    import argparse
    import json
    from pathlib import Path

    from blind_motion import _photos, aligned, blurred
    from invdiff.blind import kernel_error

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("truth", "estimate"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    xs, names = _photos("tuning", 4)
    solve = {"kernel_prior": {"sigma": 0.02, "weight": 20.0, "rounds": 4}}  # the classical estimate as solve makes it
    ref = {(r["photo"], r["kernel"], r["noise_sigma"]): r for st in json.loads(
        Path("blind/tuning_kernel_prior.json").read_text())["settings"] if st["setting"] == solve for r in st["rows"]}
    rows = []
    for j in (0, 1):
        for i in range(4):
            s = (0.02, 0.05)[(i + j) % 2]
            _, y, k_true = blurred(xs[i: i + 1], i, j, s)
            row = {"photo": names[i], "kernel": j, "noise_sigma": s,
                   "classical": ref[(names[i], j, s)]["kernel_error"]}
            if a.mode == "truth":
                row["from_truth"] = _truth(y, k_true, s)
            else:
                est = estimate_motion_kernel_marginal(y, s, kernel_size=61)
                row.update(marginal=round(kernel_error(aligned(est.kernel, k_true), k_true), 4),
                           seconds=round(est.seconds, 1))
            rows.append(row)
            print(json.dumps(row), flush=True)
    Path(f"blind/probe_marginal_{a.mode}.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
