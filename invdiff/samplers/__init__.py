"""Samplers: the DDPM/DDIM loop, guidance methods and the ``restore`` API."""

from .core import ddim_step, sample, step_coefficients

__all__ = ["sample", "ddim_step", "step_coefficients"]
