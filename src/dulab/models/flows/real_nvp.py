"""Real NVP: affine coupling layers with normalization between them. On vectors the coupling masks alternate; on
images each scale applies three checkerboard couplings, squeezes 2x2 blocks into channels, applies three channel
couplings and factors half of the channels out, and the last scale applies four checkerboard couplings.

References:
    Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP", 2016, arXiv:1605.08803 (sections 3.3-3.7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dulab.bijectors import (
    Chain,
    FactorOut,
    Inverse,
    Squeeze,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    make_transformer,
)
from dulab.errors import UserError
from dulab.models.flows.base import FlowConfig, FlowModel
from dulab.models.flows.layers import coupling, norm_layer

__all__ = ["RealNVP", "RealNVPConfig"]


@dataclass
class RealNVPConfig(FlowConfig):
    """Hyperparameters of ``RealNVP``.

    Attributes:
        num_layers: coupling layers for vector data.
        hidden_sizes: MLP widths of the conditioners (vectors).
        num_scales: scales of the multi-scale architecture (images); height and width must be divisible by
            ``2 ** (num_scales - 1)``.
        hidden_channels: width of the convolutional conditioners (images).
        num_blocks: residual blocks per convolutional conditioner.
        transformer: ``"affine"`` (the paper) or ``"spline"`` (rational-quadratic, Neural Spline Flows).
        num_bins: spline bins.
        tail_bound: half-width of the spline interval.
        norm: ``"actnorm"``, ``"batchnorm"`` (the paper) or ``"none"`` after each coupling.
    """

    num_layers: int = 8
    hidden_sizes: tuple[int, ...] = (128, 128)
    num_scales: int = 2
    hidden_channels: int = 32
    num_blocks: int = 1
    transformer: Literal["affine", "spline"] = "affine"
    num_bins: int = 8
    tail_bound: float = 5.0
    norm: Literal["actnorm", "batchnorm", "none"] = "actnorm"

    def __post_init__(self):
        super().__post_init__()
        self._check_positive("num_layers", "hidden_sizes", "num_scales", "hidden_channels", "num_bins")
        if self.num_blocks < 0 or self.tail_bound <= 0:
            raise UserError("num_blocks must be >= 0 and tail_bound > 0")


class RealNVP(FlowModel):
    """Affine couplings (checkerboard and channel masks, squeeze, multi-scale factoring out on images)."""

    Config = RealNVPConfig
    train_defaults = {"epochs": 40, "batch_size": 256, "lr": 2e-3, "grad_clip": 5.0}

    @classmethod
    def check_spec(cls, spec, config):
        super().check_spec(spec, config)
        if spec.is_image:
            f = 2 ** (config.num_scales - 1)
            if spec.shape[1] % f or spec.shape[2] % f:
                raise UserError(f"real_nvp with num_scales={config.num_scales} needs height and width divisible by"
                                f" {f}, got {spec.shape[1]}x{spec.shape[2]}; lower num_scales")
        elif spec.num_dims < 2:
            raise UserError("real_nvp needs at least 2 dimensions (a coupling splits them); use cdf_flow or maf")

    def _coupling(self, mask):
        c = self.config
        return coupling(mask, self._transformer, hidden_sizes=c.hidden_sizes, hidden_channels=c.hidden_channels,
                        num_blocks=c.num_blocks, context_features=self.context_features)

    def build_flow(self):
        c = self.config
        self._transformer = make_transformer(c.transformer, num_bins=c.num_bins, bound=c.tail_bound)
        if not self.spec.is_image:
            shape = self.spec.shape
            D = self.spec.num_dims
            layers = []
            for i in range(c.num_layers):
                layers.append(self._coupling(alternating_mask(D, i % 2).view(shape)))
                if i < c.num_layers - 1:
                    layers.append(norm_layer(c.norm, D))
            return Chain(layers)
        return self._scale(*self.spec.shape, 0)

    def _scale(self, C, H, W, s):
        c = self.config
        last = s == c.num_scales - 1
        layers = []
        for i in range(4 if last else 3):
            layers += [self._coupling(checkerboard_mask(C, H, W, i % 2)), norm_layer(c.norm, C)]
        if last:
            return Chain(layers)
        layers.append(Squeeze())  # (C, H, W) -> (4C, H/2, W/2)
        for i in range(3):
            layers += [self._coupling(channel_mask(4 * C, H // 2, W // 2, i % 2 == 0)), norm_layer(c.norm, 4 * C)]
        layers.append(FactorOut(self._scale(2 * C, H // 2, W // 2, s + 1)))  # half the channels leave
        layers.append(Inverse(Squeeze()))  # back to (C, H, W) so the latent has the data's shape
        return Chain(layers)
