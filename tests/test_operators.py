"""The operator library, parametrised over its one registry (invdiff.operators.OPERATORS)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import invdiff.operators as O
from invdiff.rng import make_generators

SHAPE = (3, 3, 32, 32)
NAMES = sorted(O.OPERATORS)
LINEAR = [n for n in NAMES if O.OPERATORS[n](SHAPE, make_generators(0, 3)).linear]
SVD = [n for n in NAMES if isinstance(O.OPERATORS[n](SHAPE, make_generators(0, 3)), O.SVDOperator)]


def build(name, seed=0, shape=SHAPE):
    return O.OPERATORS[name](shape, make_generators(seed, shape[0]))


def rand(shape, seed):
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", LINEAR)
def test_adjoint_exact_in_float64(name):
    A = build(name)
    x = rand(SHAPE, 1)
    Ax = A(x)
    y = rand(Ax.shape, 2)
    lhs = (Ax * y).sum()
    rhs = (x * A.adjoint(y)).sum()
    assert abs(lhs - rhs) / (Ax.norm() * y.norm()) < 1e-10


@pytest.mark.parametrize("name", LINEAR)
def test_adjoint_equals_autograd_vjp(name):
    A = build(name)
    x = rand(SHAPE, 3).requires_grad_(True)
    y = rand(A(x).shape, 4)
    (g,) = torch.autograd.grad(A(x), x, y)
    torch.testing.assert_close(A.adjoint(y), g, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", LINEAR)
def test_pinv_reproduces_measurements_on_the_range(name):
    A = build(name)
    y = A(rand(SHAPE, 5))
    if isinstance(A, O.SVDOperator):
        err = (A(A.pinv(y)) - y).norm() / y.norm()
        assert err < 1e-10
    else:
        # conjugate gradients on AᵀA: a 61-tap (here 31-tap) Gaussian blur has condition number ~1e7, so CG
        # reaches the range to about 1e-3 relative in a few hundred iterations, not to round-off.
        err = (A(A.pinv(y, iters=400, tol=1e-12)) - y).norm() / y.norm()
        assert err < 2e-2


@pytest.mark.parametrize("name", SVD)
def test_svd_is_exact_and_orthogonal(name):
    A = build(name)
    x = rand(SHAPE, 6)
    y = A(x)
    z = A.Vt(x)
    assert z.shape == (SHAPE[0], x[0].numel())
    torch.testing.assert_close(z.norm(dim=1), x.flatten(1).norm(dim=1), rtol=1e-12, atol=0)  # V orthogonal
    torch.testing.assert_close(A.V(z, x.shape), x, rtol=0, atol=1e-12)
    zy = A.Ut(y)
    torch.testing.assert_close(zy.norm(dim=1), y.flatten(1).norm(dim=1), rtol=1e-12, atol=0)  # U orthogonal
    torch.testing.assert_close(A.U(zy, y.shape), y, rtol=0, atol=1e-12)
    s = A.singular_values(x.shape).double()
    assert (s >= 0).all() and s.shape[1] == zy.shape[1] <= z.shape[1]
    torch.testing.assert_close(A.U(s * z[:, : s.shape[1]], y.shape), y, rtol=0, atol=1e-12)  # U diag(s) Vᵀ x = A x


@pytest.mark.parametrize("name", NAMES)
def test_batched_equals_each_image_alone(name):
    A = build(name)
    x = rand(SHAPE, 7)
    y = A(x)
    for i in range(SHAPE[0]):
        Ai = A.select(i)
        torch.testing.assert_close(Ai(x[i : i + 1]), y[i : i + 1], rtol=1e-10, atol=1e-10)
        if A.linear:
            torch.testing.assert_close(Ai.adjoint(y[i : i + 1]), A.adjoint(y)[i : i + 1], rtol=1e-10, atol=1e-10)
    # per-image generators: image i's parameters do not depend on the batch it was drawn in
    alone = O.OPERATORS[name]((1, *SHAPE[1:]), make_generators(0, 1, start=1))
    torch.testing.assert_close(alone(x[1:2]), y[1:2], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_first_use_under_inference_mode_leaves_the_operator_differentiable(name):
    # spectra, matrices and SVD factors cached on first use are ordinary tensors even when that use was in
    # torch.inference_mode, so a gradient method can differentiate through the same operator afterwards
    A = build(name)
    x = rand(SHAPE, 9)
    with torch.inference_mode():
        y = A(x)
        if A.linear:
            A.normal(x)
        if isinstance(A, O.SVDOperator):
            A.V(A.Vt(x), x.shape), A.U(A.Ut(y), y.shape)
    xg = x.clone().requires_grad_(True)
    out = A(xg)
    if A.linear:
        out = A.adjoint(out)
    if isinstance(A, O.SVDOperator):
        out = A.V(A.Vt(out), x.shape)
    (g,) = torch.autograd.grad(out.square().sum(), xg)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_operator(name):
    x = rand(SHAPE, 8)
    torch.testing.assert_close(build(name, seed=3)(x), build(name, seed=3)(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["inpaint-box", "inpaint-random", "inpaint-freeform", "motion", "nonuniform", "motion-circular-svd"])
def test_random_operators_differ_between_seeds(name):
    x = rand(SHAPE, 9)
    assert not torch.allclose(build(name, seed=3)(x), build(name, seed=4)(x))


def test_kernels_are_normalised_and_non_negative():
    for k in [O.gaussian_kernel(61, 3.0), O.gaussian_kernel(9, 1.5)[None], O.motion_kernels(4, 61, generator=make_generators(0, 4))]:
        k = k if k.ndim == 3 else k[None]
        assert (k >= 0).all()
        torch.testing.assert_close(k.double().sum((-1, -2)), torch.ones(k.shape[0], dtype=torch.float64), rtol=1e-6, atol=1e-6)
    A = O.camera_shake((2, 3, 64, 64), size=15, generator=make_generators(0, 2))
    assert (A.kernels >= 0).all()
    torch.testing.assert_close(A.kernels.double().sum((-1, -2)), torch.ones(2, 9, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(A.weights.double().sum(1), torch.ones(1, 64, 64, dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_motion_kernel_is_a_path_not_a_blob():
    k = O.motion_kernels(1, 61, generator=make_generators(5, 1))[0]
    support = (k > 1e-4).float().mean()
    assert 0.005 < support < 0.25  # a thin trajectory, neither a dot nor a filled disk


def test_nonuniform_with_identical_kernels_is_the_uniform_blur():
    k = O.motion_kernels(1, 9, generator=make_generators(0, 1))[0]
    W = O.blend_weights(32, 32, 3)
    A = O.NonUniformBlur(k.expand(9, 9, 9)[None], W[None], padding="reflect")
    x = rand((2, 3, 32, 32), 10)
    torch.testing.assert_close(A(x), O.Blur(k, padding="reflect")(x), rtol=1e-6, atol=1e-6)


def test_circular_blur_svd_agrees_with_the_padded_blur():
    k = O.gaussian_kernel(7, 1.2)
    x = rand((2, 1, 16, 16), 11)
    torch.testing.assert_close(O.CircularBlur(k)(x), O.Blur(k, padding="circular")(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(O.SeparableBlur.gaussian(7, 1.2, padding="reflect")(x), O.Blur(k, padding="reflect")(x),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", O.PADDINGS)
def test_blur_with_a_rank_one_kernel_takes_the_separable_path(padding):
    # a Gaussian (rank-1) kernel shared by the batch is applied with two 1-D matrices; the same operator as the FFT
    for k in (O.gaussian_kernel(7, 1.2), torch.ones(5, 3) / 15):
        fast, fft = O.Blur(k, padding=padding), O.Blur(k, padding=padding, separable=False)
        assert fast.as_separable() is not None and fft.as_separable() is None
        x, y = rand((3, 2, 16, 20), 13), rand((3, 2, 16, 20), 14)
        for f in ("forward", "adjoint", "normal"):
            torch.testing.assert_close(getattr(fast, f)(x), getattr(fft, f)(x), rtol=1e-5, atol=1e-5)
        assert abs(float((fast(x) * y).sum() - (x * fast.adjoint(y)).sum())) < 1e-4  # still the exact adjoint
    assert fast.apply(lambda m: None) is fast  # nn.Module.apply is not shadowed by the separable path
    # the FFT where it is the cheaper one: large images with a small kernel
    gauss = O.Blur(O.gaussian_kernel(9, 1.5))
    assert gauss._fast((1, 3, 64, 64)) is not None and gauss._fast((1, 3, 512, 512)) is None
    # kernels of rank > 1, or one per image, keep the FFT
    assert O.Blur(O.motion_kernels(1, 7, generator=make_generators(1, 1))).as_separable() is None
    assert O.Blur(O.gaussian_kernel(5, 1.0).expand(2, 5, 5)).as_separable() is None


def test_blur_matches_a_direct_convolution():
    k = O.motion_kernels(1, 7, generator=make_generators(1, 1))[0].double()
    x = rand((1, 2, 20, 24), 12)
    direct = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), k.flip(0, 1)[None, None].expand(2, 1, 7, 7), groups=2)
    torch.testing.assert_close(O.Blur(k, padding="reflect")(x), direct, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_bicubic_downsampling_is_torchs_antialiased_bicubic(scale):
    x = rand((2, 3, 32, 48), 13)
    ref = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(O.BicubicDownsample(scale)(x), ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(O.BlockAverage(scale)(x), F.avg_pool2d(x, scale), rtol=1e-10, atol=1e-10)


def test_phase_retrieval_trivial_ambiguities_and_vjp():
    A = O.PhaseRetrieval(2.0)
    x = rand((2, 1, 8, 8), 14)
    y = A(x)
    assert y.shape == (2, 1, 12, 12)  # int(2/8 · 8) = 2 zeros on each side, as DPS and DAPS
    torch.testing.assert_close(A(-x), y, rtol=1e-12, atol=1e-12)  # global sign
    torch.testing.assert_close(A(x.flip(-1, -2)), y, rtol=1e-12, atol=1e-12)  # point reflection
    xp = A.pad(x)
    shifted = torch.roll(xp, shifts=(3, -2), dims=(-2, -1))  # shift inside the padded canvas
    torch.testing.assert_close(torch.fft.fft2(shifted, norm="ortho").abs(), y, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(y.flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))  # orthonormal FFT
    assert A.in_shape(y.shape) == x.shape
    # VJP against central finite differences along a random direction
    v = rand(y.shape, 15)
    d = rand(x.shape, 16)
    g = A.vjp(x, v)
    eps = 1e-6
    fd = ((A(x + eps * d) - A(x - eps * d)) * v).sum() / (2 * eps)
    torch.testing.assert_close((g * d).sum(), fd, rtol=1e-6, atol=1e-8)


def test_composition_shapes_and_linearity():
    A = O.BicubicDownsample(2) @ O.Blur(O.gaussian_kernel(5, 1.0))
    assert isinstance(A, O.LinearOperator)
    assert A.out_shape((1, 3, 32, 32)) == (1, 3, 16, 16) and A.in_shape((1, 3, 16, 16)) == (1, 3, 32, 32)
    N = O.PhaseRetrieval(2.0) @ O.Blur(O.gaussian_kernel(3, 1.0))
    assert not N.linear and not hasattr(N, "adjoint")
    x = rand((1, 1, 8, 8), 17)
    v = rand(N(x).shape, 18)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(N(xr), xr, v)
    torch.testing.assert_close(N.vjp(x, v), g, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make, x, match", [
    (lambda: O.Blur(O.gaussian_kernel(61, 3.0)), torch.zeros(1, 3, 32, 32), "larger than the image"),
    (lambda: O.SeparableBlur.gaussian(61, 3.0), torch.zeros(1, 3, 32, 32), "larger than the image"),
    (lambda: O.Colorize(), torch.zeros(1, 1, 32, 32), "3 channels"),
    (lambda: O.Inpainting(torch.ones(1, 2, 32, 32)), torch.zeros(1, 3, 32, 32), "channels"),
    (lambda: O.Inpainting(torch.ones(1, 1, 16, 16)), torch.zeros(1, 3, 32, 32), "does not match"),
    (lambda: O.Blur(O.gaussian_kernel(5, 1.0)), torch.full((1, 3, 32, 32), float("nan")), "NaN"),
    (lambda: O.Identity(), torch.zeros(3, 32, 32), "NCHW"),
    (lambda: O.BlockAverage(3), torch.zeros(1, 3, 32, 32), "multiples"),
    (lambda: O.Blur(O.motion_kernels(2, 5)), torch.zeros(3, 3, 32, 32), "2 images"),
])
def test_bad_input_raises_a_clear_value_error(make, x, match):
    with pytest.raises(ValueError, match=match):
        make()(x)


@pytest.mark.parametrize("make, match", [
    (lambda: O.Blur(torch.ones(4, 4)), "odd"),
    (lambda: O.Blur(torch.full((3, 3), float("nan"))), "NaN"),
    (lambda: O.Blur(torch.ones(3, 3), padding="mirror"), "padding"),
    (lambda: O.gaussian_kernel(60, 3.0), "odd"),
    (lambda: O.random_mask((1, 1, 8, 8), p=1.5), "fraction"),
    (lambda: O.GaussianNoise(-1.0), "sigma"),
    (lambda: O.load_kernel(-torch.ones(3, 3)), "non-negative"),
])
def test_bad_parameters_raise(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_noise_models():
    y = torch.zeros(4, 3, 64, 64)
    n1 = O.GaussianNoise(0.05)(y, generator=make_generators(0, 4))
    n2 = O.GaussianNoise(0.05)(y, generator=make_generators(0, 4))
    assert torch.equal(n1, n2)
    assert abs(float(n1.std()) - 0.05) < 0.002  # 49k samples: std of the std estimate ~ 0.05/√(2·49152) ≈ 1.6e-4
    alone = O.GaussianNoise(0.05)(y[2:3], generator=make_generators(0, 1, start=2))
    assert torch.equal(alone, n1[2:3])
    p = O.PoissonNoise(rate=50.0)(torch.zeros(2, 1, 128, 128), generator=make_generators(0, 2))
    counts = (p + 1) / 2 * 50
    assert torch.allclose(counts, counts.round(), atol=1e-4)
    assert abs(float(counts.mean()) - 25.0) < 0.2  # Poisson(25) mean over 32k pixels: std of the mean ≈ 0.03
