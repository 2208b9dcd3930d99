"""Checks at ``restore``'s entry: what a caller passes is validated once, up front, and a mistake is one ValueError
that says what was expected (instead of a torch error from deep inside a sampler, or a silent default).

``None`` means "the default" for ``steps`` and ``batch_size``; zero, negative and non-finite values are errors."""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor


def _positive_int(value, name: str, *, allow: tuple = ()) -> None:
    if value is None or value in allow:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        extra = f" or {', '.join(repr(a) for a in allow)}" if allow else ""
        raise ValueError(f"{name} must be a positive integer{extra} (None for the default), got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (None for the default), got {value!r}")


def noise_sigma_of(noise) -> float | None:
    """σ of a noise model or a number (None when the model has no σ)."""
    if noise is None:
        return 0.0
    if isinstance(noise, bool):
        raise ValueError(f"noise must be a noise model or a non-negative σ, got {noise!r}")
    if isinstance(noise, numbers.Real):
        return float(noise)
    s = getattr(noise, "sigma", None)
    if s is None:
        return None
    if isinstance(s, Tensor):
        return s.detach().float().cpu()
    return float(s)


def check_noise(noise) -> None:
    s = noise_sigma_of(noise)
    if s is None:
        return
    t = torch.as_tensor(s, dtype=torch.float64)
    if not torch.isfinite(t).all() or (t < 0).any():
        raise ValueError(f"noise σ must be a finite non-negative number (on the [-1, 1] scale), got {s!r}")


def check_generators(generator, device: torch.device) -> None:
    gens = [generator] if isinstance(generator, torch.Generator) else list(generator or [])
    for g in gens:
        if not isinstance(g, torch.Generator):
            raise ValueError(f"generator must be a torch.Generator or a sequence of them, got {type(g).__name__}")


def check_operator_device(operator, device: torch.device) -> None:
    for b in list(operator.buffers()) + list(operator.parameters()):
        if b.device.type != device.type:
            raise ValueError(f"the operator's buffers are on {b.device} but the measurement is on {device}: "
                             "move it with operator.to(device)")
        break


def check_prior_device(prior, device: torch.device) -> None:
    net = getattr(prior, "net", None)
    for p in (net.parameters() if hasattr(net, "parameters") else ()):
        if p.device.type != device.type:
            raise ValueError(f"the prior is on {p.device} but the measurement is on {device}: load it with "
                             f"invdiff.prior.load(..., device={str(device)!r}) or move the measurement")
        break


def _probe(operator, xs: tuple[int, ...], y: Tensor) -> None:
    """Apply the operator to an image of shape xs (on the meta device, else zeros on y's device) so that a mask or
    kernel that does not fit the image is reported here and not from inside a sampler."""
    try:
        with torch.no_grad():
            operator.forward(torch.empty(xs, device="meta"))
        return
    except Exception:
        pass
    try:
        with torch.no_grad():
            operator.forward(torch.zeros(xs, device=y.device, dtype=y.dtype))
    except Exception as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{type(operator).__name__} cannot act on images of shape {xs} (the shape this measurement "
                         f"implies): a mask or kernel of another size? ({detail})") from None


def check_measurement(y, operator, x_shape=None) -> tuple[int, ...]:
    """y must be a (B, C, H, W) tensor of the shape the operator produces; returns the image shape x."""
    if not isinstance(y, Tensor):
        raise ValueError(f"the measurement must be a torch.Tensor (B, C, H, W), got {type(y).__name__}")
    if y.ndim != 4:
        hint = " (add the batch dimension: y[None])" if y.ndim == 3 else ""
        raise ValueError(f"the measurement must be a 4-D tensor (B, C, H, W), got shape {tuple(y.shape)}{hint}")
    if not y.is_floating_point():
        raise ValueError(f"the measurement must be a float tensor on the [-1, 1] scale, got {y.dtype}")
    if y.shape[0] < 1 or y.numel() == 0:
        raise ValueError(f"the measurement is empty: shape {tuple(y.shape)}")
    if x_shape is not None:
        xs = tuple(int(v) for v in x_shape)
        if len(xs) != 4 or xs[0] != y.shape[0]:
            raise ValueError(f"x_shape must be (B, C, H, W) with B = {y.shape[0]} (the measurement's batch), got {xs}")
    else:
        try:
            xs = tuple(int(v) for v in operator.in_shape(tuple(y.shape)))
        except Exception as e:  # an operator that cannot invert its shape map for this y
            raise ValueError(f"a measurement of shape {tuple(y.shape)} does not fit {type(operator).__name__}: {e}") from None
    try:
        expected = tuple(int(v) for v in operator.out_shape(xs))
    except Exception as e:
        raise ValueError(f"{type(operator).__name__} cannot act on images of shape {xs}: {e}") from None
    _probe(operator, xs, y)
    if expected != tuple(y.shape):
        raise ValueError(f"the measurement has shape {tuple(y.shape)} but {type(operator).__name__} maps images of shape "
                         f"{xs} to {expected}")
    b = getattr(operator, "batch_size", 1)
    if b != 1 and b != y.shape[0]:
        raise ValueError(f"{type(operator).__name__} holds parameters (kernels, masks) for {b} images but the measurement "
                         f"has a batch of {y.shape[0]}")
    return xs


def check_restore_inputs(y, operator, noise, prior, *, steps=None, samples=1, batch_size=None, generator=None,
                         x_shape=None) -> None:
    """Every check of ``restore``'s arguments (one line added at its start calls this)."""
    _positive_int(steps, "steps")
    _positive_int(samples, "samples")
    if samples is None:
        raise ValueError("samples must be a positive integer, got None")
    if isinstance(batch_size, str):
        if batch_size != "auto":
            raise ValueError(f"batch_size must be a positive integer or 'auto' (None for all at once), got {batch_size!r}")
    else:
        _positive_int(batch_size, "batch_size")
    check_noise(noise)
    if not isinstance(y, Tensor):
        raise ValueError(f"the measurement must be a torch.Tensor (B, C, H, W), got {type(y).__name__}")
    check_measurement(y, operator, x_shape)
    check_operator_device(operator, y.device)
    check_prior_device(prior, y.device)
    if x_shape is None and hasattr(prior, "check_image"):
        prior.check_image(torch.empty(operator.in_shape(tuple(y.shape)), device="meta"))
    if generator is not None:
        check_generators(generator, y.device)
        if not isinstance(generator, torch.Generator) and len(list(generator)) != y.shape[0]:
            raise ValueError(f"got {len(list(generator))} generators for {y.shape[0]} measurement(s): give one per image")


def check_device_name(name) -> str:
    """A device string that exists on this machine, else a ValueError naming what does ('cpu', 'cuda', 'cuda:N',
    'mps' where available)."""
    if not isinstance(name, (str, torch.device)):
        raise ValueError(f"device must be a string such as 'cpu' or 'cuda', got {name!r}")
    s = str(name)
    available = ["cpu"]
    if torch.cuda.is_available():
        available += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        available.append("mps")
    try:
        dev = torch.device(s)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {s!r}; available here: {', '.join(available)}") from None
    if dev.type == "cpu":
        return "cpu" if dev.index is None else s
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {s!r} requested but CUDA is not available on this machine; available: cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {s!r} does not exist; available here: {', '.join(available)}")
        return s
    if dev.type == "mps" and "mps" in available:
        return s
    raise ValueError(f"device {s!r} is not available on this machine; available: {', '.join(available)}")


def finite_positive(value, name: str) -> None:
    if value is None:
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
