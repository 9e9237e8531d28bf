"""Builders shared by the coupling flows (NICE, Real NVP, Glow): a coupling layer with the right conditioner for
vectors (an MLP) or images (a small convolutional net), and normalization layers by name."""

from __future__ import annotations

import math

import torch

from dulab.bijectors import ActNorm, BatchNorm, Coupling, Identity
from dulab.nn.coupling_nets import MLP, ConvNet

__all__ = ["coupling", "norm_layer"]


def coupling(mask: torch.Tensor, transformer, *, hidden_sizes=(64, 64), hidden_channels: int = 32,
             num_blocks: int = 1, context_features: int = 0) -> Coupling:
    """A ``Coupling`` on events shaped like ``mask``: MLP conditioner for ``(D,)``, ConvNet for ``(C, H, W)``."""
    P = transformer.num_params
    if mask.dim() == 3:
        C = mask.shape[0]
        net = ConvNet(C, C * P, hidden_channels, num_blocks, context_channels=context_features)
    else:
        D = math.prod(mask.shape)
        net = MLP(D, D * P, hidden_sizes, context_features=context_features)
    return Coupling(mask, net, transformer)


def norm_layer(kind: str, num_features: int):
    """``"actnorm"``, ``"batchnorm"`` or ``"none"`` (the identity)."""
    if kind == "actnorm":
        return ActNorm(num_features)
    if kind == "batchnorm":
        return BatchNorm(num_features)
    return Identity()
