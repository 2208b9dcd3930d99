"""A non-linear operator added with its own file and one registry line: JPEG-like compression. It behaves like
JPEG's quantisation, and the methods that accept non-linear operators run on it without any change to them."""

from __future__ import annotations

import pytest
import torch

import invdiff.operators as O
from invdiff.analytic import GaussianEps
from invdiff.eps import EpsPrior
from invdiff.operators.jpeg import dct_matrix, quantisation_table
from invdiff.rng import make_generators
from invdiff.samplers import restore
from invdiff.schedule import NoiseSchedule

SHAPE = (2, 1, 8, 8)


def test_dct_is_orthonormal_and_the_table_scales_with_quality():
    d = dct_matrix(8)
    torch.testing.assert_close(d @ d.T, torch.eye(8, dtype=torch.float64), rtol=0, atol=1e-14)
    assert quantisation_table(50)[0, 0] == 16 and (quantisation_table(100) == 1).all()
    assert (quantisation_table(10) >= quantisation_table(90)).all()
    with pytest.raises(ValueError, match="quality"):
        quantisation_table(0)


def test_compression_quantises_the_dct_coefficients():
    A = O.JPEGLike(quality=50).double()
    x = torch.rand(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y = A(x)
    d, q = dct_matrix(8), quantisation_table(50)
    coef = d @ y[0, 0] @ d.T * 127.5 / q  # back on the quantisation grid: within the cubic's ±0.125 of integers
    assert float((coef - coef.round()).abs().max()) <= 0.125 + 1e-9
    assert 0 < float((y - x).abs().mean()) < 0.1  # lossy but close at quality 50
    hi = O.JPEGLike(quality=100).double()(x)
    assert float((hi - x).abs().max()) < 0.03  # quality 100: steps of 1/127.5 per coefficient
    with pytest.raises(ValueError, match="multiples of 8"):
        A(torch.zeros(1, 1, 12, 8, dtype=torch.float64))


@pytest.mark.parametrize("method, hp", [("diffpir", {"steps": 20}), ("reddiff", {"steps": 20}),
                                        ("daps", {"steps": 5, "ode_steps": 1, "langevin_steps": 10})])
def test_methods_for_non_linear_operators_run_on_it_unchanged(method, hp):
    g = torch.Generator().manual_seed(1)
    s = NoiseSchedule.linear()
    mu = 0.2 * torch.randn(64, dtype=torch.float64, generator=g)
    prior = EpsPrior(GaussianEps(mu, 0.2 * torch.eye(64, dtype=torch.float64), s, SHAPE[1:]), s)
    A = O.JPEGLike(quality=30).double()
    x = (mu.reshape(1, 1, 8, 8) + 0.45 * torch.randn(SHAPE, dtype=torch.float64, generator=g)).clamp(-1, 1)
    y = A(x)
    r = restore(y, A, 0.0, prior, method=method, generator=make_generators(0, 2), **hp)
    assert r.samples.shape == (2, 1, *SHAPE[1:]) and torch.isfinite(r.samples).all()
    fit = (A(r.mean) - y).flatten(1).norm(dim=1)
    prior_fit = (A(mu.reshape(1, 1, 8, 8).expand(2, -1, -1, -1)) - y).flatten(1).norm(dim=1)
    assert (fit < prior_fit).all()  # the data term pulled the result towards the measurement
