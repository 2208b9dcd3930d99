"""Operator hierarchy: ``Operator`` (possibly non-linear) -> ``LinearOperator`` -> ``SVDOperator``.

Operators are immutable ``nn.Module``s whose parameters are buffers, so ``.to(device)`` moves them.
Per-image parameters (kernels, masks, …) live in a leading batch dimension of size B or 1 (1 is
broadcast over the batch). Subclasses list those buffers in ``batched`` so that ``repeat_interleave``
(K posterior samples per image) and ``select`` (one image of a batch) work generically.
"""

from __future__ import annotations

import copy
import enum
import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn


def cached(obj, name: str, key, make):
    """``obj``'s cache ``name`` (a dict in its ``__dict__``) at ``key``, made by ``make()`` on first use and outside
    inference mode: ordinary tensors, which autograd can save for a backward pass later even when the first call
    came from ``torch.inference_mode``."""
    cache = obj.__dict__.setdefault(name, {})
    if key not in cache:
        with torch.inference_mode(False):
            cache[key] = make()
    return cache[key]


def bdot(a: Tensor, b: Tensor) -> Tensor:
    """Per-image inner product, shape (B, 1, …, 1) broadcasting against a."""
    return (a * b).flatten(1).sum(1).reshape(-1, *([1] * (a.ndim - 1)))


class Capability(enum.Flag):
    """What an operator offers beyond A(x) and its VJP: what a restoration method may require."""

    NONE = 0
    LINEAR = enum.auto()  # exact adjoint; pinv, prox and weighted solves by conjugate gradients
    SVD = enum.auto()  # exact SVD: pinv, prox and weighted solves in closed form


def _per_image(rho, x: Tensor) -> Tensor:
    """ρ (scalar or one per image) as a (B, 1, …, 1) tensor."""
    r = torch.as_tensor(rho, dtype=x.dtype, device=x.device).reshape(-1)
    r = r.expand(x.shape[0]) if r.numel() == 1 else r
    return r.reshape(x.shape[0], *([1] * (x.ndim - 1)))


class Operator(nn.Module):
    """The forward model A (noiseless). ``forward(x)`` maps a batch of images to measurements."""

    linear: ClassVar[bool] = False
    #: A(x) = A(−x) for every x (phase retrieval's magnitudes): the measurement cannot give the sign of x
    sign_blind: ClassVar[bool] = False
    #: names of buffers whose leading dimension is the batch (size B or 1)
    batched: ClassVar[tuple[str, ...]] = ()
    #: check inputs for NaN/inf on every call (one host sync); samplers turn it off inside their loops
    validate: bool = True

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- shapes ---------------------------------------------------------------------------
    def out_shape(self, in_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of A(x) for x of ``in_shape`` (computed on a meta tensor by default)."""
        x = torch.empty(tuple(in_shape), device="meta")
        try:
            return tuple(self.forward(x).shape)
        except (NotImplementedError, RuntimeError):
            with torch.no_grad():
                return tuple(self.forward(torch.zeros(tuple(in_shape))).shape)

    def in_shape(self, out_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of x for a measurement of ``out_shape``; the identity unless a subclass says otherwise."""
        return tuple(out_shape)

    @property
    def batch_size(self) -> int:
        """Number of per-image parameter sets (1 = shared by every image)."""
        sizes = {int(getattr(self, n).shape[0]) for n in self.batched}
        sizes.discard(1)
        return sizes.pop() if sizes else 1

    def check_input(self, x: Tensor) -> None:
        if not torch.is_tensor(x) or x.ndim != 4:
            raise ValueError(f"{type(self).__name__} expects an NCHW tensor, got shape {tuple(getattr(x, 'shape', ()))}")
        b = self.batch_size
        if b != 1 and x.shape[0] != b:
            raise ValueError(f"{type(self).__name__} holds parameters for {b} images but got a batch of {x.shape[0]}")
        if self.validate and x.device.type != "meta" and not bool(torch.isfinite(x.detach()).all()):
            raise ValueError(f"{type(self).__name__}: input contains NaN or infinite values")

    # ---- per-image parameters -------------------------------------------------------------
    def _map_batched(self, fn) -> "Operator":
        new = copy.copy(self)
        new.__dict__.pop("_spectra", None)  # caches derived from per-image buffers
        new.__dict__.pop("_mats", None)
        new.__dict__.pop("_separable", None)
        new._buffers = dict(self._buffers)
        new._modules = {k: (m._map_batched(fn) if isinstance(m, Operator) else m) for k, m in self._modules.items()}
        for name in self.batched:
            buf = getattr(self, name)
            if buf.shape[0] != 1:
                new._buffers[name] = fn(buf)
        return new

    def repeat_interleave(self, k: int) -> "Operator":
        """The operator for a batch where every image is repeated ``k`` times (image-major)."""
        return self._map_batched(lambda b: b.repeat_interleave(k, dim=0))

    def unchecked(self) -> "Operator":
        """A copy that skips the per-call input checks (NaN, shapes): for samplers, whose inputs are their own and
        were checked once. The operator itself is not changed."""
        new = self._map_batched(lambda b: b)
        for mod in new.modules():
            if isinstance(mod, Operator):
                mod.validate = False
        return new

    def on_grid(self, y: Tensor, x_shape) -> Tensor:
        """The measurement on the image grid: the conditioning input of Palette-style models (for training and
        sampling alike). y itself where A keeps the image's size; operators that change the size or hide pixels
        override it (super-resolution: y upsampled; inpainting: the masked image and the mask as a channel)."""
        if tuple(y.shape[-2:]) == tuple(x_shape[-2:]):
            return y
        raise ValueError(f"no image-grid form (Palette conditioning) is defined for {type(self).__name__}")

    def select(self, index: int | Sequence[int] | Tensor) -> "Operator":
        """The operator restricted to images ``index`` of the batch."""
        idx = torch.as_tensor([index] if isinstance(index, int) else index, dtype=torch.long)
        return self._map_batched(lambda b: b[idx.to(b.device)])

    # ---- derivatives ------------------------------------------------------------------------
    def vjp(self, x: Tensor, v: Tensor) -> Tensor:
        """Vector-Jacobian product vᵀ ∂A/∂x at x (autograd by default)."""
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self.forward(x), x, grad_outputs=v)
        return g

    # ---- data consistency (what the samplers call; closed forms in the subclasses) ---------------
    capabilities: ClassVar[Capability] = Capability.NONE

    def prox(self, x0: Tensor, y: Tensor, rho, *, tol: float = 1e-5, iters: int = 50, grad_steps: int = 20,
             lr: float = 0.5) -> Tensor:
        """argmin_x ‖y − A(x)‖² + ρ‖x − x0‖², ρ ≥ 0 per image (scalar or (B,)); ρ = 0 gives the point of
        {A x = y} (least squares) closest to x0. Non-linear A: ``grad_steps`` of gradient descent from x0 with the
        step ``lr``/(1 + ρ) (per image)."""
        r4 = _per_image(rho, x0)
        x = x0.clone()
        for _ in range(grad_steps):
            g = -self.vjp(x, y - self(x)) + r4 * (x - x0)
            x = x - lr / (1 + r4) * g
        return x

    def weighted_pinv(self, v: Tensor, r2: float, sigma2: float, *, tol: float = 1e-6, iters: int = 50) -> Tensor:
        """Aᵀ(r² A Aᵀ + σ² I)⁻¹ v (ΠGDM's guidance vector): needs a linear operator."""
        raise ValueError(f"{type(self).__name__} is non-linear: it has no weighted pseudo-inverse")

    def __matmul__(self, other: "Operator") -> "Operator":
        return compose(self, other)

    def extra_repr(self) -> str:
        return f"batch={self.batch_size}"


class LinearOperator(Operator):
    """A linear A with its exact adjoint Aᵀ."""

    linear: ClassVar[bool] = True
    capabilities: ClassVar[Capability] = Capability.LINEAR

    def adjoint(self, y: Tensor) -> Tensor:
        """Aᵀy. Subclasses should override with a closed form; this default is exact but slow: it
        differentiates A at zero, which needs the input shape from ``in_shape``."""
        x = torch.zeros(self.in_shape(y.shape), dtype=y.dtype, device=y.device)
        return Operator.vjp(self, x, y)

    def vjp(self, x: Tensor, v: Tensor) -> Tensor:
        return self.adjoint(v)

    def normal(self, x: Tensor) -> Tensor:
        """AᵀA x."""
        return self.adjoint(self.forward(x))

    def pinv(self, y: Tensor, *, iters: int = 100, tol: float = 1e-6, damping: float = 0.0) -> Tensor:
        """Minimum-norm least-squares solution A⁺y by conjugate gradients on (AᵀA + λI)x = Aᵀy
        (per image: step sizes and stopping use per-image norms). Subclasses with a closed form override."""
        return conjugate_gradient(lambda v: self.normal(v) + damping * v, self.adjoint(y), iters=iters, tol=tol)

    def prox(self, x0: Tensor, y: Tensor, rho, *, tol: float = 1e-5, iters: int = 50, **_: object) -> Tensor:
        """Conjugate gradients for the correction δ = x − x0: (AᵀA + ρ) δ = Aᵀ(y − A x0), from δ = 0 (the iterates
        of CG from x0, one adjoint fewer; ``tol`` is relative to that first residual, per image). The null-space
        part of x0 is kept."""
        r4 = _per_image(rho, x0)
        delta = conjugate_gradient(lambda v: torch.addcmul(self.normal(v), r4, v), self.adjoint(y - self(x0)),
                                   iters=iters, tol=tol)
        return delta.add_(x0)

    def weighted_pinv(self, v: Tensor, r2: float, sigma2: float, *, tol: float = 1e-6, iters: int = 50) -> Tensor:
        """Aᵀ(r² A Aᵀ + σ² I)⁻¹ v by conjugate gradients in measurement space."""
        u = conjugate_gradient(lambda q: r2 * self.forward(self.adjoint(q)) + sigma2 * q, v, iters=iters, tol=tol)
        return self.adjoint(u)

    def norm_estimate(self, x_shape, *, iters: int = 30, generator: torch.Generator | None = None) -> Tensor:
        """‖A‖₂ (largest singular value) per image, by power iteration on AᵀA from a random start: a lower bound
        that converges geometrically (the Lipschitz constant of x ↦ ½‖y − A x‖²'s gradient is its square)."""
        v = torch.randn(tuple(x_shape), generator=generator)
        lam = torch.zeros(x_shape[0])
        for _ in range(iters):
            v = v / bdot(v, v).sqrt().clamp_min(1e-30)
            w = self.normal(v)
            lam = bdot(v, w).flatten()
            v = w
        return lam.clamp_min(0).sqrt()


def conjugate_gradient(apply, b: Tensor, *, x0: Tensor | None = None, iters: int = 100, tol: float = 1e-6) -> Tensor:
    """Solve ``apply(x) = b`` for a symmetric positive (semi-)definite ``apply``, image by image: every
    image has its own step sizes; an image whose relative residual fell below ``tol`` stops moving.

    The updates are in place (no allocation per iteration beyond ``apply``'s own). Convergence of the whole
    batch is checked on the host every iteration on the CPU and every fourth on a GPU, where the check is a
    synchronisation; converged images are frozen on the device either way."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply(x) if x0 is not None else b.clone()
    p = r.clone()
    rr = bdot(r, r)
    tiny = torch.finfo(b.dtype).tiny
    threshold = (tol**2) * bdot(b, b).clamp_min(tiny)
    every = 4 if b.device.type == "cuda" else 1
    for i in range(iters):
        active = (rr > threshold).to(b.dtype)
        if i % every == 0 and not bool(active.any()):
            break
        ap = apply(p)
        pap = bdot(p, ap)
        alpha = active * rr / torch.where(pap > 0, pap, torch.ones_like(pap))
        x.addcmul_(alpha, p)
        r.addcmul_(alpha, ap, value=-1.0)
        rr_new = bdot(r, r)
        p.mul_(active * rr_new / rr.clamp_min(tiny)).add_(r)
        rr = rr_new
    return x


class SVDOperator(LinearOperator):
    """A = U diag(s) Vᵀ exactly (the DDRM convention, per image).

    ``Vt(x)`` maps images (B, …) to spectral vectors (B, n); ``V(z, x_shape)`` is its inverse. ``Ut(y)`` maps
    measurements to (B, m), m ≤ n; ``U(z, y_shape)`` its inverse. ``singular_values(x_shape)`` is (B or 1, m),
    non-negative, possibly with zeros (e.g. the missing pixels of an inpainting mask), and pairs with the first
    m entries of ``Vt(x)``. All four transforms are orthogonal (real). Subclasses give ``y_shape`` (the
    measurement shape for an image shape) and ``in_shape`` (its inverse) when A changes the shape."""

    def singular_values(self, x_shape) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def Vt(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def V(self, z: Tensor, x_shape) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def Ut(self, y: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def U(self, z: Tensor, y_shape) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def y_shape(self, x_shape) -> tuple[int, ...]:
        return tuple(x_shape)

    def out_shape(self, in_shape) -> tuple[int, ...]:
        return self.y_shape(tuple(in_shape))

    capabilities: ClassVar[Capability] = Capability.LINEAR | Capability.SVD

    def spectrum(self, x_shape, like: Tensor) -> Tensor:
        """The singular values for images of ``x_shape`` on ``like``'s device and dtype."""
        return self.singular_values(tuple(x_shape)).to(device=like.device, dtype=like.dtype)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        z = self.Vt(x)
        s = self.spectrum(x.shape, z)
        return self.U(s * z[:, : s.shape[1]], self.y_shape(x.shape))

    def from_spectrum(self, zy: Tensor, s: Tensor, x_shape, fn) -> Tensor:
        """V [fn(zy, s); 0]: an image from the first m spectral coefficients (the rest zero)."""
        n = math.prod(x_shape[1:])
        z = zy.new_zeros(zy.shape[0], n)
        z[:, : s.shape[1]] = fn(zy, s)
        return self.V(z, x_shape)

    def adjoint(self, y: Tensor) -> Tensor:
        xs = (y.shape[0], *self.in_shape(y.shape)[1:])
        zy = self.Ut(y)
        return self.from_spectrum(zy, self.spectrum(xs, zy), xs, lambda a, s: s * a)

    def pinv(self, y: Tensor, **_: object) -> Tensor:
        xs = (y.shape[0], *self.in_shape(y.shape)[1:])
        zy = self.Ut(y)
        s = self.spectrum(xs, zy)
        return self.from_spectrum(zy, s, xs, lambda a, s: a * pinv_singular_values(s))

    def prox(self, x0: Tensor, y: Tensor, rho, **_: object) -> Tensor:
        """Closed form per singular value: z = (s·(Uᵀy) + ρ·(Vᵀx0)) / (s² + ρ) on the range, Vᵀx0 elsewhere; with
        ρ = 0 the pseudo-inverse on the range (and x0's part where s = 0)."""
        z0, zy = self.Vt(x0), self.Ut(y)
        s = self.spectrum(x0.shape, zy)
        m = s.shape[1]
        r = _per_image(rho, x0).reshape(-1, 1)
        ps = pinv_singular_values(s)
        fit = torch.where(r > 0, (s * zy + r * z0[:, :m]) / (s * s + r).clamp_min(torch.finfo(x0.dtype).tiny),
                          torch.where(ps > 0, zy * ps, z0[:, :m]))
        return self.V(torch.cat([fit, z0[:, m:]], 1), x0.shape)

    def weighted_pinv(self, v: Tensor, r2: float, sigma2: float, **_: object) -> Tensor:
        """Aᵀ(r² A Aᵀ + σ² I)⁻¹ v = V diag(s/(r²s² + σ²)) Uᵀ v (zero where the denominator is)."""
        xs = (v.shape[0], *self.in_shape(v.shape)[1:])
        zv = self.Ut(v)
        s = self.spectrum(xs, zv)
        den = r2 * s * s + sigma2
        w = torch.where(den > 0, s / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(den))
        return self.from_spectrum(zv, s, xs, lambda a, s_: w * a)

    def norm_estimate(self, x_shape, **_: object) -> Tensor:
        """‖A‖₂ per image, exactly: the largest singular value."""
        s = self.singular_values(tuple(x_shape))
        return s.amax(1).expand(x_shape[0]).clone()


class PixelBasis(SVDOperator):
    """SVD operators whose singular vectors are the pixels themselves (U = V = I): identity, masks."""

    def Vt(self, x):
        return x.flatten(1)

    Ut = Vt

    def V(self, z, shape):
        return z.reshape(z.shape[0], *shape[1:])

    U = V


class Identity(PixelBasis):
    """A = I (denoising)."""

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return x.clone()

    def adjoint(self, y: Tensor) -> Tensor:
        return y.clone()

    def pinv(self, y: Tensor, **_: object) -> Tensor:
        return y.clone()

    def singular_values(self, x_shape) -> Tensor:
        return torch.ones(1, math.prod(x_shape[1:]))


def pinv_singular_values(s: Tensor) -> Tensor:
    """1/s where s is above the numerical rank threshold (max(s) · len(s) · eps, per image), else 0."""
    tol = s.amax(1, keepdim=True) * s.shape[1] * torch.finfo(s.dtype).eps
    keep = s > tol
    return torch.where(keep, 1 / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))


# ---- composition A @ B (apply B, then A): linear when both are, with the adjoint Bᵀ Aᵀ ----

class Composed(Operator):
    """x ↦ outer(inner(x)); VJP by the chain rule through the two operators' own VJPs."""

    def __init__(self, outer: Operator, inner: Operator) -> None:
        super().__init__()
        self.outer = outer
        self.inner = inner

    @property
    def batch_size(self) -> int:
        sizes = {self.outer.batch_size, self.inner.batch_size} - {1}
        if len(sizes) > 1:
            raise ValueError(f"composed operators hold parameters for different batch sizes {sorted(sizes)}")
        return sizes.pop() if sizes else 1

    def check_input(self, x: Tensor) -> None:
        self.inner.check_input(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.outer(self.inner(x))

    def vjp(self, x: Tensor, v: Tensor) -> Tensor:
        return self.inner.vjp(x, self.outer.vjp(self.inner(x), v))

    def out_shape(self, in_shape):
        return self.outer.out_shape(self.inner.out_shape(in_shape))

    def in_shape(self, out_shape):
        return self.inner.in_shape(self.outer.in_shape(out_shape))


class ComposedLinear(Composed, LinearOperator):
    """Linear composition: adjoint Bᵀ(Aᵀ y); pinv by conjugate gradients."""

    def adjoint(self, y: Tensor) -> Tensor:
        return self.inner.adjoint(self.outer.adjoint(y))

    def vjp(self, x: Tensor, v: Tensor) -> Tensor:
        return self.adjoint(v)


def compose(outer: Operator, inner: Operator) -> Operator:
    if not isinstance(outer, Operator) or not isinstance(inner, Operator):
        raise TypeError("can only compose invdiff operators")
    return (ComposedLinear if (outer.linear and inner.linear) else Composed)(outer, inner)
