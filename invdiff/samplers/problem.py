"""What every restoration method shares: the measurement, the operator, the prior with its counters, and the
data-consistency solves (closed form through the SVD, conjugate gradients for other linear operators, gradient
steps for non-linear ones)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .. import rng
from ..operators.base import Capability, Operator, bdot
from ..eps import Denoised, EpsPrior
from .core import Counts


@dataclass
class Problem:
    """y = A(x) + σ n for a batch of images of ``shape``, with a prior; counts network evaluations (``nfe``) and
    vector-Jacobian products through the network (``vjps``). ``init``: the starting estimate of a warm start
    (``invdiff.samplers.warmstart``), one per image, when the caller gave or ``restore`` resolved it."""

    prior: EpsPrior
    y: Tensor
    op: Operator
    sigma: float
    shape: tuple[int, ...]
    generator: rng.Generators = None
    clip: bool = True
    cond: Tensor | None = None
    counts: Counts = field(default_factory=Counts)
    init: Tensor | None = None
    #: joint estimation of the operator (a blind kernel): ``operator_update(x̂0, t)`` → the operator to use from this
    #: step on, or None to keep it; called by the methods that support it (``diffpir``) with the prior's x̂0
    operator_update: Callable[[Tensor, int], Operator | None] | None = None

    @property
    def nfe(self) -> int:
        return self.counts.nfe

    @property
    def vjps(self) -> int:
        return self.counts.vjps

    @property
    def schedule(self):
        return self.prior.schedule

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.schedule.alpha_bar(t))

    def tt(self, t: int, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)

    def denoise(self, x: Tensor, t: int) -> Denoised:
        """x̂0 and ε at x_t without gradient (x̂0 clipped to [-1, 1] when ``clip``), in inference mode: the
        results are read, never updated in place or differentiated."""
        with torch.inference_mode():
            d = self.prior.denoise(x, self.tt(t, x), self.cond, clip=self.clip)
        self.counts.nfe += 1
        return d

    def denoise_with_graph(self, x: Tensor, t: int) -> tuple[Tensor, Tensor, Tensor]:
        """(x_t requiring grad, x̂0 attached to the graph (unclipped), ε). The caller does one backward."""
        x = x.detach().requires_grad_(True)
        eps = self.prior.eps(x, self.tt(t, x), self.cond)
        x0 = self.prior.x0_from_eps(x, self.tt(t, x), eps)
        self.counts.nfe += 1
        return x, x0, eps

    def finish(self, x_t: Tensor, t: int, x0: Tensor) -> Denoised:
        """A corrected x̂0 (clipped when ``clip``) with the ε that makes it consistent with x_t."""
        x0 = x0.detach()
        if self.clip:
            x0 = x0.clamp(-1, 1)
        return Denoised(x0=x0, eps=self.prior.eps_from_x0(x_t, self.tt(t, x_t), x0))

    # ---- data terms -------------------------------------------------------------------------
    def residual(self, x0: Tensor) -> Tensor:
        return self.y - self.op(x0)

    def data_gradient(self, x0: Tensor) -> Tensor:
        """∇ ½‖y − A(x0)‖² = −Aᵀ(y − A x0) (VJP for non-linear A)."""
        return -self.op.vjp(x0, self.residual(x0))


#: what each capability means, in the words of ``invdiff methods`` and the errors
REQUIREMENT_TEXT: dict[Capability, str] = {
    Capability.NONE: "any (non-linear too)", Capability.LINEAR: "linear (adjoint, pinv)", Capability.SVD: "exact SVD",
}
_MISSING = {Capability.LINEAR: ("a linear operator with an adjoint and pseudo-inverse", "is non-linear. Use dps, "
                                "diffpir, reddiff or daps"),
            Capability.SVD: ("an operator with an exact SVD", "has none. Use CircularBlur/SeparableBlur for blur, or "
                             "a method such as diffpir or dps")}


def require(op: Operator, needs: Capability, method: str) -> None:
    """Raise a clear error if ``method`` cannot run with ``op``: it needs the capabilities ``needs``."""
    missing = needs & ~op.capabilities
    for cap in (Capability.LINEAR, Capability.SVD):
        if cap in missing:
            what, why = _MISSING[cap]
            raise ValueError(f"method {method!r} needs {what}; {type(op).__name__} {why}")


def measurement_count(op: Operator, y: Tensor, x_shape) -> Tensor:
    """The number of measurements per image, (B,): the non-zero singular values for SVD operators (for
    inpainting, the observed pixels, although y keeps the image's shape), the size of y otherwise."""
    b = y.shape[0]
    if Capability.SVD in op.capabilities:
        s = op.spectrum((b, *tuple(x_shape)[1:]), y)
        return (s > 0).sum(1).to(y.dtype).expand(b)
    return torch.full((b,), float(y[0].numel()), dtype=y.dtype, device=y.device)


def noisy_measurement(problem: Problem, a_prev: float, generator) -> Tensor:
    """y at noise level t': √ᾱ' y + √(1 − ᾱ') A ξ (the measurement of a forward-noised x; score-SDE / MCG)."""
    if a_prev >= 1:
        return problem.y
    xi = rng.randn(problem.shape, generator, device=problem.y.device, dtype=problem.y.dtype)
    return math.sqrt(a_prev) * problem.y + math.sqrt(1 - a_prev) * problem.op(xi)


def per_image_norm(v: Tensor) -> Tensor:
    return bdot(v, v).sqrt()
