"""Gaussian log densities (nats), summed over all but the batch axis."""

from __future__ import annotations

import math

import torch

__all__ = ["standard_normal_log_prob", "diag_gaussian_log_prob"]

_LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the event: ``(B, *event) -> (B,)``."""
    return (-0.5 * (z**2 + _LOG_2PI)).flatten(1).sum(1)


def diag_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(2 log_std))) summed over the event: ``(B, *event) -> (B,)``."""
    z = (x - mean) * torch.exp(-log_std)
    return (-0.5 * (z**2 + _LOG_2PI) - log_std).flatten(1).sum(1)
