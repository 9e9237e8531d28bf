"""Noise schedules of Gaussian diffusion, the forward process, and the eps / x0 / v parameterisations.

A schedule fixes ``alpha_bar_t`` for the discrete timesteps ``t = 1..T`` (``alpha_bar_0 = 1``), so that
``q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)`` (Ho et al. 2020, eq. 4). We write
``alpha_t = sqrt(alpha_bar_t)`` and ``sigma_t = sqrt(1 - alpha_bar_t)`` for the signal and noise scales, so
``x_t = alpha_t x_0 + sigma_t eps``. Three schedules:

* ``linear``: ``beta_t`` linear from ``1e-4`` to ``0.02`` for ``T = 1000`` (Ho et al. 2020, section 4); for other
  ``T`` both ends are scaled by ``1000 / T`` so the total noise added stays about the same (as in Nichol &
  Dhariwal's code for respaced linear schedules).
* ``cosine``: ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2(pi/2 (t/T + s) / (1 + s))``, ``s = 0.008``, with
  ``beta_t`` clipped to 0.999 (Nichol & Dhariwal 2021, eq. 17).
* ``continuous_cosine``: the continuous-time ``alpha(tau) = cos(pi tau / 2)``, ``sigma(tau) = sin(pi tau / 2)`` of
  the CS294-158 homework, evaluated on the grid ``tau_t = t / T`` (clamped to ``1 - 1e-4`` so that
  ``alpha_bar_T > 0``).

Everything is computed in float64 and stored as float32 buffers (the float64 tables stay available for tests).

Prediction targets (Salimans & Ho 2022 for v): a network may predict the noise ``eps``, the clean data ``x0`` or
the velocity ``v = alpha_t eps - sigma_t x_0``; given ``x_t`` each determines the others exactly
(``convert``), because ``(x_t, v)`` is a rotation of ``(x_0, eps)`` by the angle ``phi_t`` with
``alpha_t = cos phi_t``.

References:
    Ho, Jain, Abbeel. "Denoising Diffusion Probabilistic Models", NeurIPS 2020, arXiv:2006.11239.
    Nichol, Dhariwal. "Improved Denoising Diffusion Probabilistic Models", ICML 2021, arXiv:2102.09672.
    Salimans, Ho. "Progressive Distillation for Fast Sampling of Diffusion Models", ICLR 2022, arXiv:2202.00512.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from dulab.errors import UserError

__all__ = ["NoiseSchedule", "SCHEDULES", "PREDICTIONS", "convert", "to_x0", "to_eps", "target_of"]

SCHEDULES = ("linear", "cosine", "continuous_cosine")
PREDICTIONS = ("eps", "x0", "v")


def _alpha_bars(kind: str, T: int) -> torch.Tensor:
    """``alpha_bar_t`` for ``t = 0..T`` in float64, ``(T + 1,)``, with ``alpha_bar_0 = 1``."""
    t = torch.arange(T + 1, dtype=torch.float64)
    if kind == "linear":
        scale = 1000.0 / T
        betas = torch.linspace(1e-4 * scale, 0.02 * scale, T, dtype=torch.float64).clamp(max=0.999)
        return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, 0)])
    if kind == "cosine":
        s = 0.008
        f = torch.cos((t / T + s) / (1 + s) * (math.pi / 2)) ** 2
        bars = f / f[0]
        betas = (1.0 - bars[1:] / bars[:-1]).clamp(max=0.999)  # Nichol & Dhariwal clip beta_t at 0.999
        return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1.0 - betas, 0)])
    if kind == "continuous_cosine":
        tau = (t / T).clamp(max=1.0 - 1e-4)
        return torch.cos(tau * (math.pi / 2)) ** 2
    raise UserError(f"unknown schedule {kind!r}: choose one of {', '.join(SCHEDULES)}")


class NoiseSchedule(nn.Module):
    """The table of ``alpha_bar_t`` for ``t = 0..T`` and what derives from it (buffers, float32).

    Buffers (index ``t`` in ``0..T``; index 0 is the clean data, ``alpha_bar_0 = 1``, ``beta_0 = 0``):
    ``alpha_bar``, ``beta`` (``1 - alpha_bar_t / alpha_bar_{t-1}``), ``alpha`` (``sqrt(alpha_bar)``) and
    ``sigma`` (``sqrt(1 - alpha_bar)``). ``alpha_bar64`` etc. are the same in float64 (attributes, not buffers).

    Args:
        kind: ``linear``, ``cosine`` or ``continuous_cosine`` (module docstring).
        num_timesteps: T >= 1.
    """

    def __init__(self, kind: Literal["linear", "cosine", "continuous_cosine"] = "cosine", num_timesteps: int = 1000):
        super().__init__()
        if num_timesteps < 1:
            raise UserError(f"num_timesteps must be >= 1, got {num_timesteps}")
        self.kind, self.num_timesteps = kind, int(num_timesteps)
        bars = _alpha_bars(kind, self.num_timesteps)
        self.alpha_bar64 = bars
        self.beta64 = torch.cat([torch.zeros(1, dtype=torch.float64), 1.0 - bars[1:] / bars[:-1]])
        # persistent=False: the table is a function of the config, so checkpoints need not carry it
        self.register_buffer("alpha_bar", bars.float(), persistent=False)
        self.register_buffer("beta", self.beta64.float(), persistent=False)
        self.register_buffer("alpha", bars.sqrt().float(), persistent=False)
        self.register_buffer("sigma", (1.0 - bars).sqrt().float(), persistent=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, num_timesteps={self.num_timesteps}"

    def coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)`` at integer timesteps ``t (B,)``, shaped to broadcast against ``like (B, ...)``.

        In ``like``'s dtype: float64 inputs get the float64 table (exact tests), others the float32 buffers.
        """
        t = t.to(self.alpha.device).long()
        if like.dtype == torch.float64:
            bars = self.alpha_bar64.to(like.device)[t.to(like.device)]
            a, s = bars.sqrt(), (1.0 - bars).sqrt()
        else:
            a, s = self.alpha[t].to(like.device, like.dtype), self.sigma[t].to(like.device, like.dtype)
        shape = (-1,) + (1,) * (like.dim() - 1)
        return a.view(shape), s.view(shape)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw from ``q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I)`` (Ho et al. eq. 4).

        Args:
            x0: ``(B, *event)`` clean data (float, the model's scale).
            t: ``(B,)`` integer timesteps in ``0..T``.
            noise: ``eps`` of the same shape (default: drawn from ``generator``).
        Returns:
            ``x_t = alpha_t x_0 + sigma_t eps``, ``(B, *event)``.
        """
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype,
                                device=generator.device if generator is not None else x0.device).to(x0.device)
        a, s = self.coefficients(t, x0)
        return a * x0 + s * noise

    def timesteps(self, num_steps: int | None = None) -> torch.Tensor:
        """The ``num_steps`` sampling timesteps ``round(i T / N)``, ``i = N..1`` (descending, distinct, int64).

        ``None`` or ``T``: every timestep ``T..1``. The uniform spacing of DDIM (Song et al. 2021, section 4.2).
        """
        T = self.num_timesteps
        n = T if num_steps is None else int(num_steps)
        if not 1 <= n <= T:
            raise UserError(f"num_steps must be in [1, {T}] (the number of diffusion timesteps), got {num_steps}")
        i = torch.arange(n, 0, -1, dtype=torch.float64)
        return torch.round(i * T / n).long()


def convert(value: torch.Tensor, source: str, dest: str, x_t: torch.Tensor, alpha: torch.Tensor,
            sigma: torch.Tensor) -> torch.Tensor:
    """Turn a prediction of kind ``source`` into kind ``dest`` (each of ``eps``, ``x0``, ``v``) given ``x_t``.

    With ``x_t = alpha x0 + sigma eps`` and ``alpha^2 + sigma^2 = 1``:
    ``x0 = (x_t - sigma eps) / alpha``, ``eps = (x_t - alpha x0) / sigma``, ``v = alpha eps - sigma x0``;
    ``x0 = alpha x_t - sigma v``, ``eps = sigma x_t + alpha v`` (Salimans & Ho 2022, appendix D).
    Division by ``alpha`` (``sigma``) is unstable where it is near 0 (t near T; t near 0): prefer ``v`` there.
    """
    if source not in PREDICTIONS or dest not in PREDICTIONS:
        raise UserError(f"predictions are one of {', '.join(PREDICTIONS)}; got {source!r} -> {dest!r}")
    if source == dest:
        return value
    # to x0 first, then on to dest
    if source == "eps":
        x0 = (x_t - sigma * value) / alpha
    elif source == "v":
        x0 = alpha * x_t - sigma * value
    else:
        x0 = value
    if dest == "x0":
        return x0
    if source == "v" and dest == "eps":
        return sigma * x_t + alpha * value  # exact without the division by alpha
    eps = value if source == "eps" else (x_t - alpha * x0) / sigma
    if dest == "eps":
        return eps
    return alpha * eps - sigma * x0


def to_x0(value, source, x_t, alpha, sigma):
    """``convert(value, source, "x0", ...)``."""
    return convert(value, source, "x0", x_t, alpha, sigma)


def to_eps(value, source, x_t, alpha, sigma):
    """``convert(value, source, "eps", ...)``."""
    return convert(value, source, "eps", x_t, alpha, sigma)


def target_of(kind: str, x0: torch.Tensor, eps: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor):
    """The regression target of a network predicting ``kind``: ``eps``, ``x0`` or ``v = alpha eps - sigma x0``."""
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "v":
        return alpha * eps - sigma * x0
    raise UserError(f"predictions are one of {', '.join(PREDICTIONS)}; got {kind!r}")
