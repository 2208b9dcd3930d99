"""Composition A @ B (apply B, then A): linear when both are, with the adjoint Bᵀ Aᵀ."""

from __future__ import annotations

from torch import Tensor

from .base import LinearOperator, Operator


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
