"""CDF flows: each dimension is mapped through the CDF of a mixture of logistics (or Gaussians), which sends any
1-D density to Uniform(0, 1); with a MADE conditioner the mixture of dimension ``i`` depends on ``x_<i``, which for
2-D data is the course's autoregressive flow (``x1`` by a CDF flow, ``x2`` by a CDF flow conditioned on ``x1``).

Layers compose through the logit: each layer outputs ``logit F(x)``, and the latent is that of the last layer, so
the base distribution is the standard logistic, whose ``sigmoid`` is Uniform(0, 1) — the same model as a uniform
base on the last CDF's output. Lecture 2 of the Berkeley CS294-158 course ("Flow models") builds these.

References:
    Papamakarios, Nalisnick, Rezende, Mohamed, Lakshminarayanan. "Normalizing Flows for Probabilistic Modeling
    and Inference", 2021, arXiv:1912.02762 (section 3.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from dulab.bijectors import Chain, MixtureCDF, Reverse
from dulab.errors import UserError
from dulab.models.flows.base import FlowConfig, FlowModel

__all__ = ["CDFFlow", "CDFFlowConfig"]


@dataclass
class CDFFlowConfig(FlowConfig):
    """Hyperparameters of ``CDFFlow``.

    Attributes:
        num_layers: stacked mixture-CDF layers (the order of dimensions is reversed between layers).
        num_components: mixture components per dimension (K).
        component: ``"logistic"`` or ``"gaussian"``.
        hidden_sizes: hidden widths of the MADE conditioner (D >= 2).
    """

    num_layers: int = 2
    num_components: int = 16
    component: Literal["logistic", "gaussian"] = "logistic"
    hidden_sizes: tuple[int, ...] = (64, 64)

    def __post_init__(self):
        super().__post_init__()
        self._check_positive("num_layers", "num_components", "hidden_sizes")


class CDFFlow(FlowModel):
    """Autoregressive mixture-CDF flow with a standard logistic base (sigmoid of the latent is uniform)."""

    Config = CDFFlowConfig
    train_defaults = {"epochs": 30, "batch_size": 128, "lr": 5e-3}

    @classmethod
    def check_spec(cls, spec, config):
        super().check_spec(spec, config)
        if spec.is_image or spec.num_dims > 16:
            raise UserError("cdf_flow models low-dimensional vectors (D <= 16, e.g. toy 1-D/2-D data);"
                            " use maf, real_nvp or glow for images")

    def build_flow(self):
        c, D = self.config, self.spec.num_dims
        layers = []
        for i in range(c.num_layers):
            if i > 0 and D > 1:
                layers.append(Reverse(D))
            layers.append(MixtureCDF(D, c.num_components, c.hidden_sizes, component=c.component,
                                     context_features=self.context_features))
        return Chain(layers)

    def base_log_prob(self, z):
        """Standard logistic, ``log sigmoid(z) + log sigmoid(-z)`` summed over the event."""
        return (-F.softplus(-z) - F.softplus(z)).flatten(1).sum(1)

    def base_sample(self, shape, generator=None, temperature=1.0):
        """Standard logistic draws ``logit(U)``, scaled by ``temperature``."""
        u = torch.rand(shape, generator=generator, dtype=self._param_dtype(), device=self._param_device())
        u = u.clamp(1e-12, 1 - 1e-12)
        return (torch.log(u) - torch.log1p(-u)) * temperature
