"""benchmarks/blind_select.py: the rules that score a blind kernel from the photo alone."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import blind_select  # noqa: E402


def _circulant(k: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The dense (hw × hw) matrix of periodic convolution by k, centred."""
    n, m = k.shape
    out = torch.zeros(h * w, h * w, dtype=torch.float64)
    for i in range(h):
        for j in range(w):
            for a in range(n):
                for b in range(m):
                    out[i * w + j, ((i - a + n // 2) % h) * w + (j - b + m // 2) % w] += float(k[a, b])
    return out


def test_gcv_is_the_dense_formula_on_the_symmetric_extension():
    g = torch.Generator().manual_seed(0)
    y = torch.rand(1, 2, 3, 4, generator=g, dtype=torch.float64)
    k = torch.rand(3, 3, generator=g, dtype=torch.float64)
    k /= k.sum()
    lam = 0.05
    ext = torch.cat([y[0], y[0].flip(-1)], -1)
    ext = torch.cat([ext, ext.flip(-2)], -2)  # 2 × 6 × 8
    h, w = ext.shape[-2:]
    H = _circulant(k, h, w)
    C = _circulant(torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]], dtype=torch.float64), h, w)
    A = H @ torch.linalg.solve(H.T @ H + lam * C.T @ C, H.T)
    rest = torch.eye(h * w, dtype=torch.float64) - A
    r = torch.stack([rest @ c.reshape(-1) for c in ext])
    want = float(r.square().mean()) / (float(torch.trace(rest)) / (h * w)) ** 2
    got = blind_select.gcv(y, k, lams=torch.tensor([lam], dtype=torch.float64))
    assert math.isclose(got, want, rel_tol=1e-9)


@pytest.mark.parametrize("rule", ["gcv", "evidence"])
def test_the_kernel_rules_prefer_the_true_blur_to_none_and_to_a_turned_one(rule):
    from invdiff import operators as ops

    g = torch.Generator().manual_seed(1)
    f2 = torch.fft.fftfreq(96)[:, None] ** 2 + torch.fft.fftfreq(96)[None] ** 2
    spectrum = torch.randn(3, 96, 96, generator=g, dtype=torch.complex64) / f2.clamp_min(1e-4)  # 1/f amplitude
    x = torch.fft.ifft2(spectrum).real[None]
    x = (x - x.mean()) / x.std() * 0.5
    k = torch.zeros(15, 15)
    k[7, 1:14] = 1.0  # a 13-pixel horizontal streak
    k /= k.sum()
    with torch.no_grad():
        y = ops.Blur(k, padding="reflect")(x) + 0.01 * torch.randn(x.shape, generator=g)
    dirac = torch.zeros(15, 15)
    dirac[7, 7] = 1.0
    score = (lambda kk: blind_select.gcv(y, kk)) if rule == "gcv" else (
        lambda kk: blind_select.spectral_evidence(y, kk, 0.01))
    assert score(k) < score(dirac)
    assert score(k) < score(k.T)
