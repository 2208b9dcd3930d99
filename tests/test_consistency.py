"""Data consistency on the operators (what the samplers call): prox, the weighted pseudo-inverse and the norm
estimate, checked against dense float64 linear algebra for every registered linear operator, and the capability
flags that methods require."""

from __future__ import annotations

import pytest
import torch

import invdiff.operators as O
from invdiff.operators.base import Capability, LinearOperator
from invdiff.rng import make_generators

SHAPE = (2, 3, 8, 8)
D = 3 * 8 * 8
LINEAR = [n for n in O.OPERATORS if O.OPERATORS[n](SHAPE, make_generators(0, 2)).linear]


def _op(name):
    return O.OPERATORS[name](SHAPE, make_generators(0, 2)).double()


def _dense(A, i):
    """The matrix of image i's operator (m × D), float64."""
    Ai = A.select(i)
    return torch.func.jacrev(lambda v: Ai(v.reshape(1, *SHAPE[1:])).flatten())(torch.zeros(D, dtype=torch.float64))


def _data(A):
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(SHAPE, dtype=torch.float64, generator=g) * 2 - 1
    y = A(torch.rand(SHAPE, dtype=torch.float64, generator=g) * 2 - 1)
    y = y + 0.05 * torch.randn(y.shape, dtype=torch.float64, generator=g)
    return x0, y


@pytest.mark.parametrize("name", LINEAR)
def test_prox_solves_the_regularised_least_squares(name):
    A = _op(name)
    x0, y = _data(A)
    rho = torch.tensor([0.3, 2.0], dtype=torch.float64)  # one per image
    x = A.prox(x0, y, rho, tol=1e-12, iters=500)
    for i in range(2):
        M = _dense(A, i)
        exact = torch.linalg.solve(M.T @ M + rho[i] * torch.eye(D, dtype=torch.float64),
                                   M.T @ y[i].flatten() + rho[i] * x0[i].flatten())
        # CG stops at a relative residual of 1e-12 of a system with condition number ≤ (‖A‖² + ρ)/ρ ≤ ~10:
        # the error is below 1e-10 relative
        torch.testing.assert_close(x[i].flatten(), exact, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", LINEAR)
def test_weighted_pinv_is_the_pigdm_vector(name):
    A = _op(name)
    _, y = _data(A)
    r2, s2 = 0.7, 0.05**2
    got = A.weighted_pinv(y, r2, s2, tol=1e-13, iters=2000)
    for i in range(2):
        M = _dense(A, i)
        m = M.shape[0]
        exact = M.T @ torch.linalg.solve(r2 * M @ M.T + s2 * torch.eye(m, dtype=torch.float64), y[i].flatten())
        # the measurement-space system has condition number up to (r²‖A‖² + σ²)/σ² ≈ 300: CG's relative residual
        # 1e-13 leaves an error ≲ 3e-11 relative
        torch.testing.assert_close(got[i].flatten(), exact, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", LINEAR)
def test_svd_closed_forms_equal_the_conjugate_gradient_forms(name):
    A = _op(name)
    if not Capability.SVD & A.capabilities:
        pytest.skip("no SVD: the conjugate-gradient forms are checked against dense algebra above")
    x0, y = _data(A)
    torch.testing.assert_close(A.prox(x0, y, 0.5), LinearOperator.prox(A, x0, y, 0.5, tol=1e-13, iters=500),
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(A.weighted_pinv(y, 0.7, 0.0025),
                               LinearOperator.weighted_pinv(A, y, 0.7, 0.0025, tol=1e-13, iters=2000), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", LINEAR)
def test_norm_estimate(name):
    A = _op(name)
    est = A.norm_estimate(SHAPE, iters=200, generator=torch.Generator().manual_seed(0)).double()
    for i in range(2):
        true = torch.linalg.matrix_norm(_dense(A, i), ord=2)
        assert est[i] <= true * (1 + 1e-6)  # power iteration never overshoots (Rayleigh quotient)
        assert est[i] >= 0.9 * true  # 200 iterations: a gap of 1 % between the top two already gives 0.98


def test_capabilities_and_the_nonlinear_prox():
    assert O.PhaseRetrieval(2.0).capabilities == Capability.NONE
    assert O.Blur(O.gaussian_kernel(5, 1.0)).capabilities == Capability.LINEAR
    assert O.Inpainting(torch.ones(1, 1, 4, 4)).capabilities == Capability.LINEAR | Capability.SVD
    A = O.PhaseRetrieval(2.0).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(SHAPE, dtype=torch.float64, generator=g) * 2 - 1
    y = A(x)
    x0 = (x + 0.3 * torch.randn(SHAPE, dtype=torch.float64, generator=g)).clamp(-1, 1)
    f = lambda v: ((y - A(v)) ** 2).flatten(1).sum(1) + 1.0 * ((v - x0) ** 2).flatten(1).sum(1)  # noqa: E731
    xp = A.prox(x0, y, 1.0, grad_steps=20)
    assert (f(xp) < f(x0)).all()  # gradient steps lower the prox objective of every image
    with pytest.raises(ValueError, match="non-linear"):
        A.weighted_pinv(y, 1.0, 0.1)
