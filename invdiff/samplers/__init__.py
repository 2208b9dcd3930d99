"""Samplers: the one DDPM/DDIM loop (``sample``) and the restoration methods behind ``restore``."""

from .core import sample
from .palette import palette_condition
from .registry import METHODS, Method, Restoration, get_method, restore

__all__ = ["sample", "restore", "Restoration", "METHODS", "Method", "get_method", "palette_condition"]
