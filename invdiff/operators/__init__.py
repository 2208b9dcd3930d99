"""Forward operators A and noise models for y = A(x) + n, on images in [-1, 1].

Every operator is an immutable ``nn.Module`` (parameters are buffers; per-image kernels/masks in the leading batch
dimension). Linear ones have an exact ``adjoint`` and a ``pinv``; ``SVDOperator``s expose their exact SVD
(DDRM's U, Uᵀ, V, Vᵀ, singular values). ``A @ B`` composes. ``OPERATORS`` builds one example of every operator
for an image shape (the tests and the docs figure iterate it).
"""

from __future__ import annotations

from collections.abc import Callable

from ..rng import Generators
from .base import Composed, ComposedLinear, Identity, LinearOperator, Operator, SVDOperator, compose, conjugate_gradient
from .blur import Blur, CircularBlur, gaussian_kernel
from .padding import PADDINGS
from .colorize import Colorize
from .inpaint import Inpainting, box_mask, freeform_mask, random_mask
from .jpeg import JPEGLike
from .motion import MOTION_MODELS, NonUniformBlur, blend_weights, camera_shake, load_kernel, motion_kernels, shake_kernels
from .noise import GaussianNoise, PoissonNoise
from .phase import PhaseRetrieval
from .separable import BicubicDownsample, BlockAverage, Separable, SeparableBlur


def _ksize(shape) -> int:
    return min(61, (min(shape[-2:]) // 2) * 2 - 1)


def _sigma(shape) -> float:
    return 3.0 * _ksize(shape) / 61


OPERATORS: dict[str, Callable[[tuple[int, ...], Generators], Operator]] = {
    "identity": lambda s, g: Identity(),
    "inpaint-box": lambda s, g: Inpainting(box_mask(s, generator=g)),
    "inpaint-random": lambda s, g: Inpainting(random_mask(s, p=0.7, generator=g)),
    "inpaint-freeform": lambda s, g: Inpainting(freeform_mask(s, generator=g)),
    **{f"blur-{p}": (lambda p: lambda s, g: Blur(gaussian_kernel(_ksize(s), _sigma(s)), padding=p))(p) for p in PADDINGS},
    **{f"blur-fft-{p}": (lambda p: lambda s, g: Blur(gaussian_kernel(_ksize(s), _sigma(s)), padding=p, separable=False))(p)
       for p in PADDINGS},
    "blur-circular-svd": lambda s, g: CircularBlur(gaussian_kernel(_ksize(s), _sigma(s))),
    "motion-circular-svd": lambda s, g: CircularBlur(motion_kernels(s[0], _ksize(s), generator=g)),
    **{f"blur-separable-{p}": (lambda p: lambda s, g: SeparableBlur.gaussian(_ksize(s), _sigma(s), padding=p))(p) for p in PADDINGS},
    "motion": lambda s, g: Blur(motion_kernels(s[0], _ksize(s), intensity=0.5, generator=g)),
    "nonuniform": lambda s, g: camera_shake(s, size=_ksize(s), grid=3, generator=g),
    "sr-average": lambda s, g: BlockAverage(4),
    "sr-bicubic": lambda s, g: BicubicDownsample(4),
    "phase-retrieval": lambda s, g: PhaseRetrieval(2.0),
    "jpeg": lambda s, g: JPEGLike(quality=50),
    "colorize": lambda s, g: Colorize(),
    "composed-sr-of-blur": lambda s, g: BicubicDownsample(2) @ Blur(gaussian_kernel(5, 1.0), padding="reflect"),
    "composed-inpaint-of-motion": lambda s, g: Inpainting(random_mask(s, p=0.5, generator=g)) @ Blur(motion_kernels(s[0], 5, generator=g)),
}

__all__ = [
    "Operator", "LinearOperator", "SVDOperator", "conjugate_gradient", "compose", "Composed", "ComposedLinear",
    "Identity", "Inpainting", "box_mask", "random_mask", "freeform_mask", "Blur", "CircularBlur", "SeparableBlur",
    "Separable", "gaussian_kernel", "PADDINGS", "motion_kernels", "shake_kernels", "MOTION_MODELS", "load_kernel", "NonUniformBlur", "camera_shake",
    "blend_weights", "BlockAverage", "BicubicDownsample", "PhaseRetrieval", "JPEGLike", "Colorize", "GaussianNoise",
    "PoissonNoise", "OPERATORS",
]
