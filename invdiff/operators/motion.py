"""Motion blur kernels and the spatially varying (non-uniform) blur.

``motion_kernels`` follows the model of the ``motionblur`` package (LeviBorodenko/motionblur) that DPS and DAPS use
for their motion-deblurring task: a random walk of Beta-distributed step lengths and triangular-distributed turning
angles, drawn as a thin line on a canvas twice the kernel's size, smoothed and downsampled. ``shake_kernels`` is a
different model, camera-shake trajectories after Boracchi & Foi 2012 (sharper, more compact kernels). The
non-uniform blur is a field of such kernels blended by smooth weights (product-convolution form, Nagy & O'Leary
1998; a rotation of the camera about its axis makes the kernel vary smoothly over the image, as in Whyte et al.
2012)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import rng
from .base import LinearOperator, cached
from .blur import Padding, as_kernels, normalise_kernels, conv_valid, conv_valid_adjoint, kernel_spectrum, pad, pad_adjoint
from .padding import check_padding

_T = 512  # trajectory samples


def _trajectory(u: Tensor, intensity: float) -> tuple[Tensor, Tensor]:
    """A random camera path from the uniform/normal draws ``u`` (one image's randomness, float64): returns
    (T, 2) positions with unit maximum extent, centred on their mean, and a (T,) roll-angle path."""
    it = iter(u.tolist())
    centripetal = 0.7 * next(it)
    gaussian = 10 * next(it)
    big_shakes = 0.2 * next(it)
    ang = 2 * math.pi * next(it)
    v = complex(math.cos(ang), math.sin(ang)) * (1 / (_T - 1))
    x = [0j]
    roll = [0.0]
    omega = 0.0
    for _ in range(_T - 1):
        r1, r2, r3, r4, r5 = next(it), next(it), next(it), next(it), next(it)
        jump = 0j
        if r1 < big_shakes * intensity:
            jump = 2 * v * complex(math.cos(math.pi + (r2 - 0.5)), math.sin(math.pi + (r2 - 0.5)))
        g = complex(math.sqrt(-2 * math.log(max(r3, 1e-12))) * math.cos(2 * math.pi * r4),
                    math.sqrt(-2 * math.log(max(r3, 1e-12))) * math.sin(2 * math.pi * r4))
        dv = jump + intensity * (gaussian * g - centripetal * x[-1]) * (1 / (_T - 1))
        v = v + dv
        v = v / max(abs(v), 1e-12) * (1 / (_T - 1))
        x.append(x[-1] + v)
        omega = 0.98 * omega + intensity * (r5 - 0.5) * 0.002
        roll.append(roll[-1] + omega)
    p = torch.tensor([[z.imag, z.real] for z in x], dtype=torch.float64)
    p = p - p.mean(0)
    extent = (p.max(0).values - p.min(0).values).max().clamp_min(1e-12)
    return p / extent, torch.tensor(roll, dtype=torch.float64)


def rasterise(points: Tensor, size: int) -> Tensor:
    """Bilinear splat of (T, 2) pixel positions (row, col; 0 = centre) into a normalised size × size kernel."""
    c = size // 2
    p = points + c
    p = p.clamp(0, size - 1 - 1e-9)
    i0 = p.floor().long()
    f = p - i0
    k = torch.zeros(size, size, dtype=torch.float64)
    for di in (0, 1):
        for dj in (0, 1):
            w = (f[:, 0] if di else 1 - f[:, 0]) * (f[:, 1] if dj else 1 - f[:, 1])
            ii = (i0[:, 0] + di).clamp_max(size - 1)
            jj = (i0[:, 1] + dj).clamp_max(size - 1)
            k.index_put_((ii, jj), w, accumulate=True)
    return k / k.sum()


def _draws(n: int, generator: rng.Generators) -> Tensor:
    return rng.rand((n, 4 + 5 * (_T - 1) + 1), generator, dtype=torch.float64)


def _check_kernel_args(size: int, intensity: float) -> None:
    if size < 3 or size % 2 == 0:
        raise ValueError(f"motion kernel size must be an odd number ≥ 3, got {size}")
    if not 0 <= intensity <= 1:
        raise ValueError(f"motion intensity must be in [0, 1], got {intensity}")


def shake_kernels(n: int = 1, size: int = 61, *, intensity: float = 0.5, generator: rng.Generators = None) -> Tensor:
    """``n`` random camera-shake kernels after Boracchi & Foi 2012 (n, size, size), non-negative, summing to 1;
    ``intensity`` in [0, 1] controls how erratic the path is. The path spans 40–90 % of the kernel. One generator
    per image gives batch-independent kernels."""
    _check_kernel_args(size, intensity)
    u = _draws(n, generator)
    out = []
    for i in range(n):
        p, _ = _trajectory(u[i, :-1], intensity)
        extent = (size - 1) * (0.4 + 0.5 * float(u[i, -1]))
        out.append(rasterise(p * extent, size))
    return torch.stack(out).float()


class _Uniforms:
    """Uniform draws in [0, 1) pulled one at a time from a generator (in blocks): a walk of random length."""

    def __init__(self, generator: torch.Generator | None) -> None:
        self.generator = generator
        self.block: list[float] = []

    def __call__(self) -> float:
        if not self.block:
            self.block = torch.rand(256, generator=self.generator, dtype=torch.float64).tolist()[::-1]
        return self.block.pop()


def _beta_1_30(u: _Uniforms) -> float:
    return 1 - (1 - u()) ** (1 / 30)  # Beta(1, 30) by inversion


def _beta_2_20(u: _Uniforms) -> float:
    return sorted(u() for _ in range(21))[1]  # Beta(2, 20): the 2nd smallest of 21 uniforms


def _triangular(u: float, low: float, mode: float, high: float) -> float:
    span = high - low
    if span <= 0:
        return low
    if u < (mode - low) / span:
        return low + math.sqrt(u * span * (mode - low))
    return high - math.sqrt((1 - u) * span * (high - mode))


def _sign(v: float) -> float:
    return (v > 0) - (v < 0)


def motionblur_path(u: _Uniforms, size: int, intensity: float) -> Tensor:
    """The random walk of the ``motionblur`` model on a canvas of side 2·size: (N, 2) points (row, col).

    With D the canvas diagonal and I the intensity: the path length is 0.75·D·(U(0,1) + U(0, I²)); step lengths are
    Beta(1, 30)·(1 − I + 0.1)·D until that length is reached; the largest turning angle is U(0, I·π), the first
    angle U(−max, max), each next one Triangular(0, I·max, max + 0.1) in size, changing sign with probability
    Beta(2, 20); the path is centred on its mean, rotated by U(0, π) and put at the canvas centre."""
    side = 2 * size
    diag = math.hypot(side, side)
    max_len = 0.75 * diag * (u() + intensity**2 * u())
    steps: list[float] = []
    while sum(steps) < max_len:
        step = _beta_1_30(u) * (1 - intensity + 0.1) * diag
        if step < max_len:
            steps.append(step)
    max_angle = intensity * math.pi * u()
    jitter = _beta_2_20(u)
    angles = [max_angle * (2 * u() - 1)]
    while len(angles) < len(steps):
        a = _triangular(u(), 0.0, intensity * max_angle, max_angle + 0.1)
        angles.append(a * (-_sign(angles[-1]) if u() < jitter else _sign(angles[-1])))
    inc = torch.polar(torch.tensor(steps, dtype=torch.float64), torch.tensor(angles, dtype=torch.float64))
    path = torch.cumsum(inc, 0)
    path = (path - path.mean()) * torch.polar(torch.ones((), dtype=torch.float64),
                                              torch.tensor(math.pi * u(), dtype=torch.float64))
    path = path + complex(side / 2, side / 2)
    return torch.stack([path.imag, path.real], 1)  # x = real part = column, y = imaginary part = row


def _draw_polyline(points: Tensor, side: int, width: int) -> Tensor:
    """A binary side × side image of the polyline through ``points`` (row, col), ``width`` pixels wide (pixels are
    set, not accumulated, where the path crosses itself)."""
    img = torch.zeros(side, side, dtype=torch.float64)
    if len(points) == 1:
        points = points.repeat(2, 1)
    seg = points[1:] - points[:-1]
    n = (seg.abs().amax(1) * 4).ceil().clamp_min(1).long()  # 4 samples per pixel along each segment
    ts = [torch.arange(int(k) + 1, dtype=torch.float64) / int(k) for k in n.tolist()]
    pts = torch.cat([points[i] + ts[i][:, None] * seg[i] for i in range(len(seg))])
    ij = pts.round().long()
    keep = ((ij >= 0) & (ij < side)).all(1)
    ij = ij[keep]
    img[ij[:, 0], ij[:, 1]] = 1.0
    if width > 1:  # a round brush of the given width
        r = (width - 1) / 2
        k = int(math.ceil(r))
        yy, xx = torch.meshgrid(torch.arange(-k, k + 1), torch.arange(-k, k + 1), indexing="ij")
        disc = ((yy**2 + xx**2) <= r * r + 1e-9).double()[None, None]
        img = (F.conv2d(img[None, None], disc, padding=k)[0, 0] > 0).double()
    return img


def _gaussian_smooth(img: Tensor, sigma: float) -> Tensor:
    if sigma <= 0:
        return img
    r = int(math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (t / sigma) ** 2)
    g = g / g.sum()
    x = F.conv2d(img[None, None], g.reshape(1, 1, 1, -1), padding=(0, r))
    return F.conv2d(x, g.reshape(1, 1, -1, 1), padding=(r, 0))[0, 0]


def motion_kernels(n: int = 1, size: int = 61, *, intensity: float = 0.5, generator: rng.Generators = None) -> Tensor:
    """``n`` random motion-blur kernels (n, size, size) of the ``motionblur`` model that DPS and DAPS use (see
    ``motionblur_path``): the path is drawn as a line max(1, ⌊D/150⌋) pixels wide on a canvas of side 2·size
    (D its diagonal), smoothed by a Gaussian of standard deviation ⌊0.01·D⌋, downsampled to size × size
    (antialiased bicubic), then made non-negative and normalised to sum 1. ``intensity`` in [0, 1]: 0 is a
    straight line, 1 long and strongly curved paths. One generator per image gives batch-independent kernels.
    (The package draws with PIL and numpy's global random state; the model, not the numbers, is the same.)"""
    _check_kernel_args(size, intensity)
    gens = rng._per_image(generator, n)
    shared = _Uniforms(generator if isinstance(generator, torch.Generator) else None)
    side = 2 * size
    diag = math.hypot(side, side)
    out = []
    for i in range(n):
        u = _Uniforms(gens[i]) if gens is not None else shared
        img = _draw_polyline(motionblur_path(u, size, intensity), side, max(1, int(diag / 150)))
        img = _gaussian_smooth(img, float(int(diag * 0.01)))
        k = F.interpolate(img[None, None], size=(size, size), mode="bicubic", antialias=True, align_corners=False)[0, 0]
        k = k.clamp_min(0)
        out.append(k / k.sum())
    return torch.stack(out).float()


#: motion-kernel models by name (the motion-deblur task's ``motion_model`` option)
MOTION_MODELS: dict[str, Callable[..., Tensor]] = {"motionblur": motion_kernels, "boracchi-foi": shake_kernels}


def load_kernel(array) -> Tensor:
    """A user kernel (2-D array or tensor): non-negative, normalised to sum 1, odd sides."""
    k = torch.as_tensor(array)
    if k.ndim != 2:
        raise ValueError(f"a kernel must be 2-D with odd sides, got shape {tuple(k.shape)}")
    return normalise_kernels(k)


def blend_weights(h: int, w: int, grid: int) -> Tensor:
    """Smooth partition of unity over a grid × grid lattice of nodes: (grid², H, W), raised-cosine bumps
    (cos² of the distance to the node over the node spacing), summing to exactly 1 at every pixel."""
    def axis(n):
        if grid == 1:
            return torch.ones(1, n, dtype=torch.float64)
        pos = torch.arange(n, dtype=torch.float64) / max(n - 1, 1) * (grid - 1)  # in node units
        d = (pos[None, :] - torch.arange(grid, dtype=torch.float64)[:, None]).abs()
        return torch.where(d < 1, torch.cos(math.pi / 2 * d) ** 2, torch.zeros_like(d))

    a, b = axis(h), axis(w)
    return (a[:, None, :, None] * b[None, :, None, :]).reshape(grid * grid, h, w)


class NonUniformBlur(LinearOperator):
    """Spatially varying blur A x = Σ_k k_k * (w_k ⊙ x): K kernels (B|1, K, kh, kw) and blending weights
    (B|1, K, H, W). Linear, with the exact adjoint Aᵀy = Σ_k w_k ⊙ (k_kᵀ ⋆ y)."""

    batched = ("kernels", "weights")

    def __init__(self, kernels: Tensor, weights: Tensor, *, padding: Padding = "reflect") -> None:
        super().__init__()
        kernels = torch.as_tensor(kernels)
        weights = torch.as_tensor(weights)
        if kernels.ndim == 3:
            kernels = kernels[None]
        if weights.ndim == 3:
            weights = weights[None]
        if kernels.ndim != 4 or weights.ndim != 4 or kernels.shape[1] != weights.shape[1]:
            raise ValueError("kernels must be (B, K, kh, kw) and weights (B, K, H, W) with the same K")
        as_kernels(kernels[0])
        check_padding(padding)
        self.padding = padding
        self.register_buffer("kernels", kernels.float())
        self.register_buffer("weights", weights.float())

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        kh, kw = self.kernels.shape[-2:]
        if kh > x.shape[-2] or kw > x.shape[-1]:
            raise ValueError(f"kernel of size {(kh, kw)} is larger than the image {tuple(x.shape[-2:])}")
        if tuple(self.weights.shape[-2:]) != tuple(x.shape[-2:]):
            raise ValueError(f"blending weights of size {tuple(self.weights.shape[-2:])} do not match the image {tuple(x.shape[-2:])}")

    def _spectrum(self, size, like) -> Tensor:
        key = (tuple(size), like.dtype, like.device, self.kernels.data_ptr())
        kf = cached(self, "_spectra", key, lambda: kernel_spectrum(self.kernels, tuple(size), dtype=like.dtype,
                                                                  device=like.device, centred=False))
        return kf[:, :, None]  # (B|1, K, 1, Hp, Wq)

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        b, c, h, w = x.shape
        kh, kw = self.kernels.shape[-2:]
        K = self.kernels.shape[1]
        u = x[:, None] * self.weights.to(x)[:, :, None]  # (B, K, C, H, W)
        bb = u.shape[0]
        up = pad(u.reshape(bb, K * c, h, w), kh // 2, kw // 2, self.padding).reshape(bb, K, c, h + kh - 1, w + kw - 1)
        return conv_valid(up, self._spectrum(up.shape[-2:], x), kh, kw).sum(1)

    def adjoint(self, y: Tensor) -> Tensor:
        b, c, h, w = y.shape
        kh, kw = self.kernels.shape[-2:]
        K = self.kernels.shape[1]
        s = (h + kh - 1, w + kw - 1)
        z = conv_valid_adjoint(y[:, None], self._spectrum(s, y), kh, kw)  # (B, K, C, Hp, Wp)
        bb = z.shape[0]
        u = pad_adjoint(z.reshape(bb, K * c, *s), kh // 2, kw // 2, self.padding).reshape(bb, K, c, h, w)
        return (u * self.weights.to(y)[:, :, None]).sum(1)

    def extra_repr(self) -> str:
        return f"kernels={tuple(self.kernels.shape)}, padding={self.padding}"


def camera_shake(shape, *, size: int = 61, grid: int = 3, intensity: float = 0.5, max_roll: float = 0.02,
                 padding: Padding = "reflect", generator: rng.Generators = None) -> NonUniformBlur:
    """A realistic spatially varying blur for images of ``shape`` (B, C, H, W): one random camera path per image
    (translation as in ``shake_kernels``) plus an in-plane rotation of up to ``max_roll`` radians, which moves
    each point of the image along its own path; the kernel at each of grid × grid nodes is that point's path,
    and the kernels are blended with raised-cosine weights."""
    b, _, h, w = shape
    if size < 3 or size % 2 == 0:
        raise ValueError(f"kernel size must be an odd number ≥ 3, got {size}")
    if size > h or size > w:
        raise ValueError(f"kernel of size {size} is larger than the image {(h, w)}")
    u = _draws(b, generator)
    nodes_y = torch.linspace(-0.5, 0.5, grid, dtype=torch.float64) * h if grid > 1 else torch.zeros(1, dtype=torch.float64)
    nodes_x = torch.linspace(-0.5, 0.5, grid, dtype=torch.float64) * w if grid > 1 else torch.zeros(1, dtype=torch.float64)
    kernels = []
    for i in range(b):
        p, roll = _trajectory(u[i, :-1], intensity)
        roll = roll - roll.mean()
        span = roll.abs().max().clamp_min(1e-12)
        theta = roll / span * max_roll * float(u[i, -1])
        extent = (size - 1) * 0.5
        ks = []
        for ny in nodes_y.tolist():
            for nx in nodes_x.tolist():
                # displacement of the point (ny, nx) under translation p and rotation θ about the centre
                dy = p[:, 0] * extent + ny * (torch.cos(theta) - 1) + nx * torch.sin(theta)
                dx = p[:, 1] * extent - ny * torch.sin(theta) + nx * (torch.cos(theta) - 1)
                d = torch.stack([dy, dx], 1)
                d = d - d.mean(0)
                lim = (size - 1) / 2
                d = d * min(1.0, lim / float(d.abs().max().clamp_min(1e-12)))
                ks.append(rasterise(d, size))
        kernels.append(torch.stack(ks))
    weights = blend_weights(h, w, grid)[None]
    return NonUniformBlur(torch.stack(kernels).float(), weights.float(), padding=padding)
