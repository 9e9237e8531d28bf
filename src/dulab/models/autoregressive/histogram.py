"""Histogram: the simplest likelihood model, a table of probabilities fitted by maximum likelihood.

For a small discrete domain the table is the full joint pmf over all ``K^D`` configurations (exact, no
independence assumption); otherwise it is one categorical per dimension (independent dimensions). Logits are
learned by stochastic gradient descent on the NLL, as in lecture 1 of the Berkeley course.

References:
    Abbeel, Chen, Ho, Srinivas et al. "CS294-158 Deep Unsupervised Learning", UC Berkeley, 2019/2020, lecture 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dulab.distributions import categorical_log_prob, categorical_sample
from dulab.errors import UserError
from dulab.models.base import DensityModel

__all__ = ["Histogram", "HistogramConfig"]


@dataclass
class HistogramConfig:
    """Hyperparameters of ``Histogram``.

    Attributes:
        mode: ``"joint"`` (one table over all K^D configurations), ``"independent"`` (one categorical per
            dimension) or ``"auto"`` (joint when K^D <= max_joint_size).
        max_joint_size: largest joint table ``"auto"`` will build.
    """

    mode: Literal["auto", "joint", "independent"] = "auto"
    max_joint_size: int = 65536


class Histogram(DensityModel):
    """Categorical table(s) over discrete data of any shape."""

    Config = HistogramConfig
    family = "autoregressive"
    train_defaults = {"epochs": 20, "lr": 0.05, "batch_size": 128}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        K, D = spec.num_levels, spec.num_dims
        self.joint = self.config.mode == "joint" or (
            self.config.mode == "auto" and K**D <= self.config.max_joint_size)
        if self.joint:
            if K**D > 2**26:
                raise UserError(f"a joint histogram over {K}^{D} configurations is too large; use mode=independent")
            self.logits = nn.Parameter(torch.zeros(K**D))
            # place values of the flattened event, most significant first: (D,)
            self.register_buffer("radix", K ** torch.arange(D - 1, -1, -1), persistent=False)
        else:
            self.logits = nn.Parameter(torch.zeros(D, K))

    @classmethod
    def check_spec(cls, spec, config):
        if not spec.is_discrete:
            raise UserError("histogram needs discrete data (int levels); got continuous data")

    def log_prob(self, x, context=None):
        self.check_input(x)
        flat = x.reshape(x.shape[0], -1)  # (B, *event) -> (B, D)
        if self.joint:
            index = (flat * self.radix).sum(1)
            return torch.log_softmax(self.logits, 0)[index]
        logits = self.logits.expand(flat.shape[0], *self.logits.shape)  # (B, D, K)
        return categorical_log_prob(logits, flat).sum(1)

    @torch.no_grad()
    def sample(self, num_samples, *, generator=None, context=None):
        K, D = self.spec.num_levels, self.spec.num_dims
        if self.joint:
            index = categorical_sample(self.logits.expand(num_samples, -1), generator)  # (N,)
            digits = (index[:, None] // self.radix) % K  # (N, D)
        else:
            digits = categorical_sample(self.logits.expand(num_samples, D, K), generator)  # (N, D)
        return digits.view(num_samples, *self.spec.shape)

    def probs(self) -> torch.Tensor:
        """The fitted table: ``(K^D,)`` for the joint, ``(D, K)`` per dimension otherwise."""
        return torch.softmax(self.logits, -1)

    def extra_repr(self) -> str:
        kind = "joint" if self.joint else "independent"
        return f"{kind}, levels={self.spec.num_levels}, dims={self.spec.num_dims}, table={math.prod(self.logits.shape)}"
