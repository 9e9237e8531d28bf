"""NICE: additive coupling layers (volume preserving, trivially invertible) followed by a learnable diagonal
scaling that lets the flow change volume. Images are flattened; the coupling masks alternate between even and odd
features. The base distribution is the standard normal or, with ``base="logistic"``, the standard logistic (the
paper's choice for its image experiments: ``log p(z_d) = -softplus(z_d) - softplus(-z_d)``, heavier tails).

References:
    Dinh, Krueger, Bengio. "NICE: Non-linear Independent Components Estimation", 2014, arXiv:1410.8516.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from dulab.bijectors import Chain, ElementwiseScale, Reshape, alternating_mask, make_transformer
from dulab.errors import UserError
from dulab.models.flows.base import FlowConfig, FlowModel
from dulab.models.flows.layers import coupling

__all__ = ["NICE", "NICEConfig"]


@dataclass
class NICEConfig(FlowConfig):
    """Hyperparameters of ``NICE``.

    Attributes:
        num_layers: additive coupling layers (the paper uses 4).
        hidden_sizes: hidden widths of each coupling's MLP.
        base: the factorised base distribution, ``"normal"`` or ``"logistic"`` (NICE paper).
    """

    num_layers: int = 6
    hidden_sizes: tuple[int, ...] = (128, 128, 128)
    base: Literal["normal", "logistic"] = "normal"

    def __post_init__(self):
        super().__post_init__()
        self._check_positive("num_layers", "hidden_sizes")


class NICE(FlowModel):
    """Additive couplings on flattened data, then a diagonal scaling."""

    Config = NICEConfig
    train_defaults = {"epochs": 40, "batch_size": 256, "lr": 2e-3, "grad_clip": 5.0}

    @classmethod
    def check_spec(cls, spec, config):
        super().check_spec(spec, config)
        if spec.num_dims < 2:
            raise UserError("nice needs at least 2 dimensions (a coupling splits them); use cdf_flow or maf for 1-D")

    def build_flow(self):
        c, shape, D = self.config, self.spec.shape, self.spec.num_dims
        additive = make_transformer("additive")
        layers = [Reshape(shape, (D,))]
        for i in range(c.num_layers):
            layers.append(coupling(alternating_mask(D, i % 2), additive, hidden_sizes=c.hidden_sizes,
                                   context_features=self.context_features))
        layers += [ElementwiseScale((D,)), Reshape((D,), shape)]
        return Chain(layers)

    def base_log_prob(self, z):
        if self.config.base == "normal":
            return super().base_log_prob(z)
        return -(F.softplus(z) + F.softplus(-z)).flatten(1).sum(1)

    def base_sample(self, shape, generator=None, temperature: float = 1.0):
        if self.config.base == "normal":
            return super().base_sample(shape, generator, temperature)
        u = torch.rand(shape, generator=generator, dtype=self._param_dtype(), device=self._param_device())
        u = u.clamp(torch.finfo(u.dtype).tiny, 1 - torch.finfo(u.dtype).eps)
        return (torch.log(u) - torch.log1p(-u)) * temperature  # the logistic quantile function
