"""Probes of the kernel EM's first round and of a no-reference kernel score, on the declared tuning split only.

The kernel EM (``invdiff.blind.refine_kernel_em``) moves the kernel little per round: its E-step restores the photo
with the kernel it is given, and the M-step fitted to that image gives back nearly the same kernel. Each probe asks
one question of the first round, from the classical estimate k0 as solve makes it (the learned kernel prior in
the estimate), on the 8 cases of ``blind_em_tuning.py`` (butterfly, house, plant, robin × kernels 0-1, σ by parity):

- ``sharpen``: the M-step (with and without the kernel prior) fitted to the E-step's image after an edge-sharpening
  filter, which turns the residual blur of a too-short kernel into steps (Cho & Lee's shock filter; L0 gradient
  smoothing, Xu et al. 2011, which is ``l0_deblur`` with a Dirac kernel), against the plain image and the true photo.
- ``start``: the E-step's warm start (DiffPIR from TV at t₀ = 0.35·T, the blind variant) against later starts
  0.5 / 0.7 · T and pure noise, which leave the prior more of the image.
- ``evidence``: the type-II likelihood of a kernel under a Gaussian image model (power spectrum c·|f|^−α, the
  model of ``estimate_gaussian_blur``, here on the whole 2-D windowed spectrum, c and α fitted per kernel): is
  the true kernel the most likely among distorted ones and the estimates? And does descending it from k0 (Adam on
  the simplex) bring the kernel nearer the truth? Every case of the split (6 photos × kernels 0-2, σ by parity).
- ``combined``: that likelihood as a term beside the M-step's least squares, on the E-step's image and on the true
  photo (the 8 EM cases).

Kernel errors (``kernel_error``, after the best integer shift) are the measure; no restoration is scored.

    python benchmarks/blind_em_probes.py sharpen --out benchmarks/blind/probe_em_sharpen.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from blind_motion import _diffpir, _photos, blurred


def shock_filter(x: torch.Tensor, iters: int, dt: float = 0.1) -> torch.Tensor:
    """Osher & Rudin's shock filter, x ← x − dt·sign(Δx)·|∇x| with the upwind gradient, ``iters`` times."""
    for _ in range(iters):
        p = F.pad(x, (1, 1, 1, 1), mode="replicate")
        c = p[..., 1:-1, 1:-1]
        xf, xb = p[..., 1:-1, 2:] - c, c - p[..., 1:-1, :-2]
        yf, yb = p[..., 2:, 1:-1] - c, c - p[..., :-2, 1:-1]
        lap = xf - xb + yf - yb
        # upwind: towards the side the edge moves from (dilation where Δx < 0, erosion where Δx > 0)
        gx = torch.where(lap < 0, torch.maximum(xf.clamp(min=0), (-xb).clamp(min=0)),
                         torch.maximum(xb.clamp(min=0), (-xf).clamp(min=0)))
        gy = torch.where(lap < 0, torch.maximum(yf.clamp(min=0), (-yb).clamp(min=0)),
                         torch.maximum(yb.clamp(min=0), (-yf).clamp(min=0)))
        x = x - dt * torch.sign(lap) * (gx.square() + gy.square()).sqrt()
    return x


def _first_estimate(y, s: float):
    from invdiff.blind import estimate_motion_kernel
    from invdiff.measured import kernel_prior_for
    from invdiff.tasks import get_task, solve_preset

    kp = kernel_prior_for(get_task("motion-deblur"), solve_preset("motion-deblur"))[0]
    return estimate_motion_kernel(y, None, s, kernel_size=61, kernel_prior=kp).kernel, kp


def _em_cases(n_photos: int = 4, kernels=(0, 1)):
    return [(i, j, (0.02, 0.05)[(i + j) % 2]) for j in kernels for i in range(n_photos)]


def _first_round(xs, names, prior, i: int, j: int, s: float, e_step: dict | None = None, image: bool = True):
    """One EM case: (the photo, y, the true kernel, k0, the kernel prior, the E-step's image with k0 or None, the
    row's first fields)."""
    from invdiff.blind import kernel_error
    from invdiff.tasks import solve_preset

    x = xs[i: i + 1]
    op, y, k_true = blurred(x, i, j, s)
    k0, kp = _first_estimate(y, s)
    blind = solve_preset("motion-deblur").for_operator(op, blind=True)
    img = _diffpir(y, k0, s, i, prior, blind, e_step, purpose="kernel-em") if image else None
    row = {"name": names[i], "kernel": j, "noise_sigma": s, "k0": round(kernel_error(k0, k_true), 4)}
    return x, y, k_true, k0, kp, img, row


def _adam_simplex(k: torch.Tensor, loss, steps: int, lr: float, refit=None, every: int = 50) -> torch.Tensor:
    """Adam on the simplex from k: ``loss(k)`` differentiable, steps scaled by max k, projected after each;
    ``refit(k)`` is called every ``every`` steps first (a model's parameters refitted at the current k)."""
    from invdiff.blind import project_simplex

    k, m, v = k.double().clone(), torch.zeros_like(k, dtype=torch.float64), torch.zeros_like(k, dtype=torch.float64)
    for it in range(steps):
        if refit is not None and it % every == 0:
            refit(k)
        kk = k.clone().requires_grad_(True)
        g, = torch.autograd.grad(loss(kk), kk)
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        step = lr * float(k.max()) * (m / (1 - 0.9 ** (it + 1))) / ((v / (1 - 0.999 ** (it + 1))).sqrt() + 1e-12)
        k = project_simplex((k - step).reshape(1, -1)).reshape(k.shape)
    return k.float()


def sharpen(xs, names, prior) -> list[dict]:
    from invdiff.blind import EM_KERNEL_UPDATE, centre_kernel, kernel_error, l0_deblur, update_kernel

    dirac = torch.ones(1, 1)
    filters = {"plain": lambda v: v, "l0 0.002": lambda v: l0_deblur(v, dirac, 0.002),
               "l0 0.008": lambda v: l0_deblur(v, dirac, 0.008), "l0 0.03": lambda v: l0_deblur(v, dirac, 0.03),
               "shock 5": lambda v: shock_filter(v, 5), "shock 20": lambda v: shock_filter(v, 20)}
    rows = []
    for i, j, s in _em_cases():
        x, y, k_true, k0, kp, image, row = _first_round(xs, names, prior, i, j, s)
        for with_prior in (True, False):
            opts = {**EM_KERNEL_UPDATE, "prior": kp if with_prior else None}
            tag = "kernel prior" if with_prior else "least squares"
            for name, f in [*filters.items(), ("true photo", None)]:
                img = x if f is None else f(image)
                k1 = centre_kernel(update_kernel(img, y, (61, 61), init=k0, **opts))
                row[f"{tag}, {name}"] = round(kernel_error(k1, k_true), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def start(xs, names, prior) -> list[dict]:
    from invdiff.blind import EM_KERNEL_UPDATE, centre_kernel, kernel_error, update_kernel

    starts = {"0.35 (the blind variant)": None, "0.5": {"start": 0.5}, "0.7": {"start": 0.7}, "1 (noise)": {"start": 1.0}}
    rows = []
    for i, j, s in _em_cases():
        _, y, k_true, k0, kp, _, row = _first_round(xs, names, prior, i, j, s, image=False)
        for name, opt in starts.items():
            image = _first_round(xs, names, prior, i, j, s, opt)[5]
            for with_prior in (True, False):
                k1 = centre_kernel(update_kernel(image, y, (61, 61), init=k0,
                                                 **{**EM_KERNEL_UPDATE, "prior": kp if with_prior else None}))
                row[f"{'kernel prior' if with_prior else 'least squares'}, start {name}"] = round(
                    kernel_error(k1, k_true), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


class SpectralEvidence:
    """−log p(y | k)/F under y = k * x + n with E|X(f)|² = c·|f|^−α and white noise of the known σ, on the grey
    photo's Hann-windowed 2-D periodogram (frequencies below 3 cycles per image left out), minimised over c and α
    on grids; differentiable in k for fixed (c, α)."""

    def __init__(self, y: torch.Tensor, sigma: float):
        g = y.detach().double().mean(1)[0]
        h, w = g.shape
        win = (torch.hann_window(h, periodic=False, dtype=torch.float64)[:, None]
               * torch.hann_window(w, periodic=False, dtype=torch.float64)[None])
        power = torch.fft.rfft2((g - g.mean()) * win).abs().square()
        r2 = (torch.fft.fftfreq(h, dtype=torch.float64)[:, None] ** 2
              + torch.fft.rfftfreq(w, dtype=torch.float64)[None] ** 2)
        self.keep = r2 > (3.0 / min(h, w)) ** 2
        self.power, self.r2, self.shape = power[self.keep], r2[self.keep], (h, w)
        self.nvar = sigma ** 2 / y.shape[1] * float(win.square().sum())

    def transfer(self, k: torch.Tensor) -> torch.Tensor:
        h, w = self.shape
        return torch.fft.rfft2(F.pad(k.double(), (0, w - k.shape[1], 0, h - k.shape[0]))).abs().square()[self.keep]

    def model(self, k: torch.Tensor) -> tuple[float, torch.Tensor]:
        """(the NLL at the best c, α; the clean spectrum c·|f|^−α there)."""
        k2, best = self.transfer(k), (math.inf, None)
        for a in torch.arange(1.0, 3.76, 0.125).tolist():
            base = self.r2 ** (-a / 2)
            c0 = float((self.power / base).mean())
            for lc in torch.linspace(-6, 6, 97).tolist():
                v = self.nll(k2, c0 * math.exp(lc) * base)
                if v < best[0]:
                    best = (v, c0 * math.exp(lc) * base)
        return best

    def nll(self, k2: torch.Tensor, clean: torch.Tensor) -> float:
        spec = clean * k2 + self.nvar
        return float((self.power / spec + spec.log()).mean())

    def descend(self, k: torch.Tensor, iters: int, lr: float, refit: int = 50) -> torch.Tensor:
        """Adam on the NLL over the simplex from k, (c, α) refitted every ``refit`` steps; steps scaled by max k."""
        clean = [None]

        def fit(kk):
            clean[0] = self.model(kk)[1]

        def loss(kk):
            spec = clean[0] * self.transfer(kk) + self.nvar
            return (self.power / spec + spec.log()).mean()
        return _adam_simplex(k, loss, iters, lr, fit, refit)


def _least_squares(x: torch.Tensor, y: torch.Tensor, size: int, smooth: float):
    """``update_kernel``'s objective as a differentiable function of k: ½‖∇y − k * ∇pad(x)‖²/N + ½ smooth·E‖k‖²."""
    from invdiff.blind import _gradients
    from invdiff.operators.padding import pad

    X = _gradients(pad(x.double().mean(1, keepdim=True), size // 2, size // 2, "reflect"))
    Y = _gradients(y.double().mean(1, keepdim=True))
    hp, wp = X.shape[-2:]
    Xf, n, energy = torch.fft.rfft2(X), Y.numel(), float(X.square().mean())

    def f(k: torch.Tensor) -> torch.Tensor:
        full = torch.fft.irfft2(Xf * torch.fft.rfft2(k, s=(hp, wp)), s=(hp, wp))
        r = full[..., size - 1: size - 1 + Y.shape[-2], size - 1: size - 1 + Y.shape[-1]] - Y
        return 0.5 * r.square().sum() / n + 0.5 * smooth * energy * k.square().sum()
    return f


def combined(xs, names, prior) -> list[dict]:
    """One M-step on the E-step's image (made with k0) with the spectral evidence added: Adam on the simplex from
    k0, 200 steps, of LS(k)/LS(k0) + μ·(NLL(k) − NLL(k0))/0.01 (μ = 0: the least squares alone, the same
    optimiser), (c, α) refitted every 50 steps."""
    from invdiff.blind import EM_KERNEL_UPDATE, centre_kernel, kernel_error

    rows = []
    for i, j, s in _em_cases():
        x, y, k_true, k0, _, image, row = _first_round(xs, names, prior, i, j, s)
        ev = SpectralEvidence(y, s)
        for tag, img in (("E-step image", image), ("true photo", x)):
            ls = _least_squares(img, y, k0.shape[-1], EM_KERNEL_UPDATE["smooth"])
            ls0 = float(ls(k0.double()))
            for mu in (0.0, 0.1, 1.0):
                fitted = {}

                def fit(kk):
                    fitted["clean"] = ev.model(kk)[1]
                    fitted["nll0"] = ev.nll(ev.transfer(k0), fitted["clean"])

                def loss(kk):
                    spec = fitted["clean"] * ev.transfer(kk) + ev.nvar
                    return ls(kk) / ls0 + mu * ((ev.power / spec + spec.log()).mean() - fitted["nll0"]) / 0.01
                k = _adam_simplex(k0, loss, 200, 0.01, fit)
                row[f"{tag}, mu {mu}"] = round(kernel_error(centre_kernel(k), k_true), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def evidence(xs, names, prior) -> list[dict]:
    from invdiff.blind import centre_kernel, estimate_motion_kernel, kernel_error, resample_kernel

    rows = []
    for i, j, s in [(i, j, (0.02, 0.05)[(i + j) % 2]) for j in (0, 1, 2) for i in range(len(xs))]:
        _, y, k_true = blurred(xs[i: i + 1], i, j, s)
        ev = SpectralEvidence(y, s)
        k0, _ = _first_estimate(y, s)
        dirac = torch.zeros_like(k_true)
        dirac[k_true.shape[0] // 2, k_true.shape[1] // 2] = 1
        candidates = {"true": k_true, "true transposed": k_true.T.contiguous(), "dirac": dirac, "k0": k0,
                      "k0 without the kernel prior": estimate_motion_kernel(y, None, s, kernel_size=61).kernel}
        for f in (0.5, 0.75, 1.25):
            candidates[f"true stretched {f}"] = centre_kernel(resample_kernel(k_true, tuple(k_true.shape), f))
        row = {"name": names[i], "kernel": j, "noise_sigma": s,
               "candidates": {n: {"kernel_error": round(kernel_error(k, k_true), 4), "nll": round(ev.model(k)[0], 6)}
                              for n, k in candidates.items()}}
        for name, k in (("k0", k0), ("true", k_true)):
            row[f"descent from {name}, 100 steps"] = round(kernel_error(centre_kernel(ev.descend(k, 100, 0.01)),
                                                                        k_true), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def _summary(rows: list[dict]) -> dict:
    if "candidates" in rows[0]:
        first = sum(min(r["candidates"], key=lambda n: r["candidates"][n]["nll"]) == "true" for r in rows)
        out = {"true kernel the most likely": f"{first} of {len(rows)}"}
        for n in rows[0]["candidates"]:
            out[f"{n}: kernel error"] = round(sum(r["candidates"][n]["kernel_error"] for r in rows) / len(rows), 4)
        keys = [k for k in rows[0] if k.startswith("descent")]
    else:
        keys = [k for k in rows[0] if k not in ("name", "kernel", "noise_sigma")]
        out = {}
    out.update({k: round(sum(r[k] for r in rows) / len(rows), 4) for k in keys})
    return out


def main() -> None:
    from invdiff.prior import load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=("sharpen", "start", "evidence", "combined"))
    ap.add_argument("--prior", default="natural64")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    xs, names = _photos("tuning", 6 if a.probe == "evidence" else 4)
    t0 = time.perf_counter()
    rows = {"sharpen": sharpen, "start": start, "evidence": evidence, "combined": combined}[a.probe](xs, names, load(a.prior))
    a.out.write_text(json.dumps({"probe": a.probe, "prior": a.prior, "cases": len(rows), "mean": _summary(rows),
                                 "seconds": round(time.perf_counter() - t0, 1), "rows": rows}, indent=1) + "\n")
    print(json.dumps(_summary(rows), indent=1))


if __name__ == "__main__":
    main()
