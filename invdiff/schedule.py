"""Diffusion noise schedules (DDPM, Ho et al. 2020; improved DDPM cosine, Nichol & Dhariwal 2021).

All coefficients are float64 tensors on the CPU; ``at(t, like=x)`` gathers and broadcasts them
onto a batch in the batch tensor's device and dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

Kind = Literal["linear", "cosine"]
#: timestep spacings of ``NoiseSchedule.timesteps``
Spacing = Literal["uniform", "leading", "trailing", "quad", "quad-ddim"]
SPACINGS: tuple[str, ...] = ("uniform", "leading", "trailing", "quad", "quad-ddim")


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """β_t for t = 0..T-1 (index t stands for DDPM's step t+1) and everything derived from it."""

    betas: Tensor
    kind: str = "custom"
    alphas: Tensor = field(init=False)
    alphas_cumprod: Tensor = field(init=False)
    alphas_cumprod_prev: Tensor = field(init=False)
    posterior_variance: Tensor = field(init=False)
    posterior_log_variance_clipped: Tensor = field(init=False)
    posterior_mean_coef1: Tensor = field(init=False)
    posterior_mean_coef2: Tensor = field(init=False)

    def __post_init__(self) -> None:
        b = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu().clone()
        if b.ndim != 1 or len(b) < 1:
            raise ValueError("betas must be a non-empty 1-D sequence")
        if not bool(((b > 0) & (b < 1)).all()):
            raise ValueError("betas must lie in (0, 1)")
        a = 1.0 - b
        ac = torch.cumprod(a, 0)
        ac_prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        s = object.__setattr__
        s(self, "betas", b)
        s(self, "alphas", a)
        s(self, "alphas_cumprod", ac)
        s(self, "alphas_cumprod_prev", ac_prev)
        s(self, "posterior_variance", post_var)
        # β̃_0 = 0: clip the log with β̃_1 as improved DDPM does
        s(self, "posterior_log_variance_clipped", torch.log(torch.cat([post_var[1:2], post_var[1:]])))
        s(self, "posterior_mean_coef1", b * ac_prev.sqrt() / (1.0 - ac))
        s(self, "posterior_mean_coef2", (1.0 - ac_prev) * a.sqrt() / (1.0 - ac))

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """DDPM's linear schedule. ``beta_start/end`` are for T=1000 and rescaled for other T
        (as guided-diffusion does) so the total noise stays the same."""
        scale = 1000.0 / num_timesteps
        return cls(torch.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=torch.float64), kind="linear")

    @classmethod
    def cosine(cls, num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "NoiseSchedule":
        def f(t: float) -> float:
            return math.cos((t / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2

        betas = [min(1 - f(i + 1) / f(i), max_beta) for i in range(num_timesteps)]
        return cls(torch.tensor(betas, dtype=torch.float64), kind="cosine")

    @classmethod
    def from_config(cls, cfg: dict) -> "NoiseSchedule":
        kind = cfg.get("kind", "linear")
        T = int(cfg.get("num_timesteps", 1000))
        if kind == "linear":
            return cls.linear(T, cfg.get("beta_start", 1e-4), cfg.get("beta_end", 0.02))
        if kind == "cosine":
            return cls.cosine(T, cfg.get("s", 0.008))
        raise ValueError(f"unknown schedule kind {kind!r} (expected 'linear' or 'cosine')")

    def to_config(self) -> dict:
        T = self.num_timesteps
        if self.kind == "linear":
            scale = 1000.0 / T
            return {"kind": "linear", "num_timesteps": T,
                    "beta_start": float(self.betas[0]) / scale, "beta_end": float(self.betas[-1]) / scale}
        if self.kind == "cosine":
            return {"kind": "cosine", "num_timesteps": T}
        raise ValueError("a custom schedule has no config form")

    # ---- queries ------------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return int(self.betas.shape[0])

    def at(self, name_or_values: str | Tensor, t: Tensor | int, like: Tensor) -> Tensor:
        """Coefficient(s) at timestep(s) ``t`` shaped to broadcast against ``like`` (B, ...)."""
        values = getattr(self, name_or_values) if isinstance(name_or_values, str) else name_or_values
        t = torch.as_tensor(t, dtype=torch.long).cpu()
        v = values[t].to(device=like.device, dtype=like.dtype)
        if v.ndim == 0:
            return v
        return v.reshape(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: Tensor, t: Tensor | int, noise: Tensor) -> Tensor:
        """x_t = √ᾱ_t x0 + √(1-ᾱ_t) ε."""
        ac = self.at("alphas_cumprod", t, x0)
        return ac.sqrt() * x0 + (1 - ac).sqrt() * noise

    def q_posterior(self, x0: Tensor, x_t: Tensor, t: Tensor | int) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x0)."""
        mean = self.at("posterior_mean_coef1", t, x_t) * x0 + self.at("posterior_mean_coef2", t, x_t) * x_t
        return mean, self.at("posterior_variance", t, x_t)

    def timesteps(self, steps: int | None = None, *, spacing: Spacing = "uniform") -> Tensor:
        """Descending timestep indices for a sampler of ``steps`` steps (respacing, as DDIM).

        ``uniform`` takes t = round(i·(T-1)/(S-1)), which includes both ends; ``leading`` takes i·⌊T/S⌋ (the
        "uniform" of the DDIM, DDRM and DDNM code); ``trailing`` takes T-1, T-1-T/S, …; ``quad`` is DiffPIR's
        (yuanzhi-zhu/DiffPIR ``skip_type='quad'``): t = T-1-⌊T·√(i/(S-1))⌋, the last one 0, denser near t = 0;
        ``quad-ddim`` is the DDIM code's ⌊(i·√(0.8T)/(S-1))²⌋. Steps that the rounding would repeat are pushed
        apart by one."""
        T = self.num_timesteps
        S = T if steps is None else int(steps)
        if not 1 <= S <= T:
            raise ValueError(f"steps must be between 1 and {T}, got {S}")
        if S == T:
            ts = torch.arange(T)
        elif spacing == "uniform":
            ts = torch.round(torch.linspace(0, T - 1, S, dtype=torch.float64)).long()
        elif spacing == "leading":
            ts = torch.arange(S, dtype=torch.long) * (T // S)
        elif spacing == "trailing":
            ts = torch.round(torch.arange(T, 0, -T / S, dtype=torch.float64)).long() - 1
            ts = ts.flip(0)
        elif spacing == "quad":
            # as numpy's linspace(0, T², S): i·step with the end point exact, then √ and truncation
            v = torch.arange(S, dtype=torch.float64) * (float(T * T) / (S - 1))
            v[-1] = float(T * T)
            seq = v.sqrt().floor().long().tolist()
            seq[-1] -= 1
            for i in range(1, S):  # distinct steps where truncation repeats one
                seq[i] = max(seq[i], seq[i - 1] + 1)
            ts = (T - 1 - torch.tensor(seq)).clamp(min=0).flip(0)
        elif spacing == "quad-ddim":
            raw = (torch.linspace(0, math.sqrt(T * 0.8), S, dtype=torch.float64) ** 2).floor().long().tolist()
            for i in range(1, S):
                raw[i] = max(raw[i], raw[i - 1] + 1)
            ts = torch.tensor(raw).clamp(max=T - 1)
        else:
            raise ValueError(f"unknown spacing {spacing!r}")
        return ts.flip(0).contiguous()

    def alpha_bar(self, t: int) -> float:
        """ᾱ at index t; index -1 means ᾱ = 1 (clean data)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])
