"""Separable linear operators A x = M_h X M_wᵀ (per channel) with their exact SVD from the SVDs of the two small
matrices: block-average and bicubic (antialiased) downsampling, and the separable Gaussian blur."""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import Tensor

from .base import SVDOperator, cached
from .padding import Padding, check_padding, pad


class Separable(SVDOperator):
    """A x = M_h X M_wᵀ where the 1-D matrices depend on the image size (``matrix(n)`` builds them, in float64).
    SVD: M = U S Vᵀ on each axis; singular values s_h ⊗ s_w, paired with the first m_h × m_w spectral entries."""

    def matrices(self, h: int, w: int) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """(M_h, M_w) for an image of h × w, float64."""
        raise NotImplementedError

    def out_size(self, n: int) -> int:
        return n

    def in_size(self, m: int) -> int:
        return m

    def y_shape(self, x_shape):
        return (*x_shape[:2], self.out_size(x_shape[2]), self.out_size(x_shape[3]))

    def in_shape(self, out_shape):
        return (*out_shape[:2], self.in_size(out_shape[2]), self.in_size(out_shape[3]))

    def _factors(self, h: int, w: int, like: Tensor) -> dict:
        return cached(self, "_mats", (h, w, like.dtype, like.device), lambda: self._svd_factors(h, w, like))

    def _svd_factors(self, h: int, w: int, like: Tensor) -> dict:
        out = {}
        for axis, M in zip("hw", self.matrices(h, w)):
            U, S, Vh = torch.linalg.svd(M, full_matrices=True)
            out[axis] = {k: v.to(device=like.device, dtype=like.dtype) for k, v in
                         {"M": M, "U": U, "S": S, "V": Vh.T.contiguous()}.items()}
        mh, mw = out["h"]["M"].shape[0], out["w"]["M"].shape[0]
        idx = torch.arange(h * w).reshape(h, w)
        first = idx[:mh, :mw].flatten()
        keep = torch.zeros(h * w, dtype=torch.bool)
        keep[first] = True
        perm = torch.cat([first, idx.flatten()[~keep]])
        out["perm"] = perm.to(like.device)
        out["m"] = mh * mw
        out["iperm"] = torch.argsort(perm).to(like.device)
        return out

    def _matrices(self, h: int, w: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(M_h, M_w, M_hᵀM_h, M_wᵀM_w) in ``like``'s dtype and device (no SVD: what forward, adjoint and normal
        need)."""
        def make():
            mh, mw = self.matrices(h, w)
            return tuple(m.to(device=like.device, dtype=like.dtype) for m in (mh, mw, mh.T @ mh, mw.T @ mw))

        return cached(self, "_mats", ("M", h, w, like.dtype, like.device), make)

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        h, w = x.shape[-2:]
        if self.out_size(h) < 1 or self.out_size(w) < 1:
            raise ValueError(f"{type(self).__name__}: image {tuple(x.shape[-2:])} too small")

    def forward(self, x: Tensor) -> Tensor:
        self.check_input(x)
        return self.forward_unchecked(x)

    def forward_unchecked(self, x: Tensor) -> Tensor:
        """A x = M_h X M_wᵀ without the input checks."""
        mh, mw, _, _ = self._matrices(*x.shape[-2:], x)
        return mh @ x @ mw.T

    def adjoint(self, y: Tensor) -> Tensor:
        h, w = self.in_shape(y.shape)[-2:]
        mh, mw, _, _ = self._matrices(h, w, y)
        return mh.T @ y @ mw

    def normal(self, x: Tensor) -> Tensor:
        """AᵀA x = (M_hᵀM_h) X (M_wᵀM_w) with the two Gram matrices computed once."""
        _, _, gh, gw = self._matrices(*x.shape[-2:], x)
        return gh @ x @ gw

    def Vt(self, x):
        h, w = x.shape[-2:]
        f = self._factors(h, w, x)
        z = torch.einsum("hi,bchw,wj->bcij", f["h"]["V"], x, f["w"]["V"]).flatten(2)[..., f["perm"]]
        m = f["m"]
        return torch.cat([z[..., :m].flatten(1), z[..., m:].flatten(1)], 1)  # every channel's paired block first

    def V(self, z, shape):
        h, w = shape[-2:]
        f = self._factors(h, w, z)
        b, c, m = z.shape[0], shape[1], f["m"]
        z = torch.cat([z[:, : c * m].reshape(b, c, m), z[:, c * m :].reshape(b, c, h * w - m)], 2)
        z = z[..., f["iperm"]].reshape(b, c, h, w)
        return torch.einsum("hi,bcij,wj->bchw", f["h"]["V"], z, f["w"]["V"])

    def Ut(self, y):
        h, w = self.in_shape(y.shape)[-2:]
        f = self._factors(h, w, y)
        z = torch.einsum("pi,bcpq,qj->bcij", f["h"]["U"], y, f["w"]["U"])
        return z.flatten(1)

    def U(self, z, shape):
        h, w = self.in_shape(shape)[-2:]
        f = self._factors(h, w, z)
        mh, mw = shape[-2:]
        z = z.reshape(z.shape[0], shape[1], mh, mw)
        return torch.einsum("pi,bcij,qj->bcpq", f["h"]["U"], z, f["w"]["U"])

    def singular_values(self, x_shape) -> Tensor:
        like = torch.empty(0, dtype=torch.float64)
        f = self._factors(*x_shape[-2:], like)
        s = (f["h"]["S"][:, None] * f["w"]["S"][None, :]).flatten()
        return s.repeat(x_shape[1])[None]


class BlockAverage(Separable):
    """Super-resolution by block averaging: each output pixel is the mean of a scale × scale block."""

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale = int(scale)

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        if x.shape[-1] % self.scale or x.shape[-2] % self.scale:
            raise ValueError(f"image sides {tuple(x.shape[-2:])} must be multiples of the scale {self.scale}")

    def out_size(self, n: int) -> int:
        return n // self.scale

    def in_size(self, m: int) -> int:
        return m * self.scale

    def matrices(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        return self.matrix(h), self.matrix(w)

    def matrix(self, n: int) -> Tensor:
        m = n // self.scale
        M = torch.zeros(m, n, dtype=torch.float64)
        for i in range(m):
            M[i, i * self.scale : (i + 1) * self.scale] = 1.0 / self.scale
        return M

    def on_grid(self, y: Tensor, x_shape) -> Tensor:
        """y upsampled (bicubic) to the image grid: the conditioning input of Palette super-resolution models."""
        return F.interpolate(y, size=tuple(x_shape[-2:]), mode="bicubic", align_corners=False)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


class BicubicDownsample(BlockAverage):
    """Super-resolution by antialiased bicubic downsampling (torch's ``interpolate(mode='bicubic',
    antialias=True)``, the same filter as PIL/MATLAB ``imresize``), as in DPS's SR×4. Separable, so it has an
    exact SVD."""

    def matrix(self, n: int) -> Tensor:
        # Keys' cubic (a = -0.5) stretched by the scale and renormalised at the borders: exactly what torch and
        # PIL compute for antialiased bicubic downsampling (checked in the tests against F.interpolate).
        m, s = n // self.scale, self.scale
        j = torch.arange(n, dtype=torch.float64)
        centres = (torch.arange(m, dtype=torch.float64) + 0.5) * s
        w = keys_cubic((j[None, :] + 0.5 - centres[:, None]) / s)
        return w / w.sum(1, keepdim=True)


def keys_cubic(x: Tensor, a: float = -0.5) -> Tensor:
    x = x.abs()
    inner = (a + 2) * x**3 - (a + 3) * x**2 + 1
    outer = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, inner, torch.where(x < 2, outer, torch.zeros_like(x)))


class SeparableBlur(Separable):
    """Blur with a separable kernel k_h k_wᵀ (e.g. the Gaussian), any padding mode, with the exact SVD of its
    two 1-D Toeplitz-plus-boundary matrices."""

    def __init__(self, kernel_h, kernel_w=None, *, padding: Padding = "reflect") -> None:
        super().__init__()
        check_padding(padding)
        kh = torch.as_tensor(kernel_h, dtype=torch.float64).flatten()
        kw = kh if kernel_w is None else torch.as_tensor(kernel_w, dtype=torch.float64).flatten()
        for k in (kh, kw):
            if k.numel() % 2 == 0 or not torch.isfinite(k).all():
                raise ValueError("separable kernels must be finite with an odd length")
        self.padding = padding
        self.register_buffer("kh", kh)
        self.register_buffer("kw", kw)

    @classmethod
    def gaussian(cls, size: int = 61, sigma: float = 3.0, *, padding: Padding = "reflect") -> "SeparableBlur":
        from kornia.filters import get_gaussian_kernel1d

        if size < 1 or size % 2 == 0 or not sigma > 0:
            raise ValueError(f"need an odd kernel size and a positive sigma, got {size}, {sigma}")
        k = get_gaussian_kernel1d(size, float(sigma))[0].double()
        return cls(k / k.sum(), padding=padding)

    @property
    def kernel(self) -> Tensor:
        return (self.kh[:, None] * self.kw[None, :]).float()

    def check_input(self, x: Tensor) -> None:
        super().check_input(x)
        if self.kh.numel() > x.shape[-2] or self.kw.numel() > x.shape[-1]:
            raise ValueError(f"kernel of size {(self.kh.numel(), self.kw.numel())} is larger than the image {tuple(x.shape[-2:])}")

    def matrices(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        return self._axis_matrix(self.kh.cpu(), h), self._axis_matrix(self.kw.cpu(), w)

    def _axis_matrix(self, k: Tensor, n: int) -> Tensor:
        r = k.numel() // 2
        eye = torch.eye(n, dtype=torch.float64)[:, None, None, :]  # (n, 1, 1, n)
        xp = pad(eye, 0, r, self.padding)
        out = F.conv2d(xp, k.flip(0).reshape(1, 1, 1, -1))  # true convolution
        return out[:, 0, 0, :].T.contiguous()

    def extra_repr(self) -> str:
        return f"kernel=({self.kh.numel()}, {self.kw.numel()}), padding={self.padding}"
