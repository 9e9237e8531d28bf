"""Categorical distributions over the last axis of a logits tensor."""

from __future__ import annotations

import torch

__all__ = ["categorical_log_prob", "categorical_sample"]


def categorical_log_prob(logits: torch.Tensor, x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """log softmax(logits)[x] along ``dim``; ``x`` has the shape of ``logits`` without ``dim`` (int64)."""
    log_p = torch.log_softmax(logits, dim=dim)
    return log_p.gather(dim, x.unsqueeze(dim)).squeeze(dim)


def categorical_sample(logits: torch.Tensor, generator: torch.Generator | None = None,
                       temperature: float = 1.0) -> torch.Tensor:
    """One draw per row of ``logits`` ``(..., K) -> (...)`` (int64), with an optional temperature."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    out = torch.multinomial(flat, 1, generator=generator).squeeze(-1)
    return out.view(probs.shape[:-1])
