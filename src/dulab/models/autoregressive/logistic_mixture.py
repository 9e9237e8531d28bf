"""Discretized mixture of logistics for 1-D discrete data (one independent mixture per dimension).

Each dimension has ``M`` logistic components; a level's probability is the mass of its bin, and the first and
last bins take the tails, so the pmf over ``{0..K-1}`` is normalised exactly (see
``dulab.distributions.logistic``). Lecture 1 of the Berkeley course uses it to fit 1-D distributions with few
parameters; it is the likelihood PixelCNN++ uses per sub-pixel.

References:
    Salimans, Karpathy, Chen, Kingma. "PixelCNN++: Improving the PixelCNN with Discretized Logistic Mixture
    Likelihood and Other Modifications", 2017, arXiv:1701.05517.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dulab.distributions import discretized_logistic_mixture_log_prob, discretized_logistic_mixture_sample
from dulab.errors import UserError
from dulab.models.base import DensityModel

__all__ = ["LogisticMixture", "LogisticMixtureConfig"]


@dataclass
class LogisticMixtureConfig:
    """Hyperparameters of ``LogisticMixture``.

    Attributes:
        num_components: logistic components per dimension (M).
    """

    num_components: int = 4

    def __post_init__(self):
        if self.num_components < 1:
            raise UserError("num_components must be >= 1")


class LogisticMixture(DensityModel):
    """Independent discretized logistic mixtures, one per dimension."""

    Config = LogisticMixtureConfig
    family = "autoregressive"
    train_defaults = {"epochs": 20, "lr": 0.05, "batch_size": 128}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        D, M = spec.num_dims, self.config.num_components
        self.logit_weights = nn.Parameter(torch.zeros(D, M))
        # Spread the means over [-1, 1] so every component starts on data; scales a bin-spacing-aware width.
        self.means = nn.Parameter(torch.linspace(-1 + 1 / M, 1 - 1 / M, M).repeat(D, 1))
        self.log_scales = nn.Parameter(torch.full((D, M), math.log(1.0 / M)))

    @classmethod
    def check_spec(cls, spec, config):
        if not spec.is_discrete:
            raise UserError("logistic_mixture needs discrete data (int levels); got continuous data")

    def _params(self, batch: int):
        D, M = self.logit_weights.shape
        log_scales = self.log_scales.clamp(min=-7.0)
        return (self.logit_weights.expand(batch, D, M), self.means.expand(batch, D, M),
                log_scales.expand(batch, D, M))

    def log_prob(self, x, context=None):
        self.check_input(x)
        flat = x.reshape(x.shape[0], -1)  # (B, *event) -> (B, D)
        w, mu, ls = self._params(flat.shape[0])
        return discretized_logistic_mixture_log_prob(flat, w, mu, ls, self.spec.num_levels).sum(1)

    @torch.no_grad()
    def sample(self, num_samples, *, generator=None, context=None):
        w, mu, ls = self._params(num_samples)
        x = discretized_logistic_mixture_sample(w, mu, ls, self.spec.num_levels, generator)  # (N, D)
        return x.view(num_samples, *self.spec.shape)
