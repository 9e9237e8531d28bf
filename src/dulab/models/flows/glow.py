"""Glow: steps of actnorm (data-dependent initialisation), an invertible 1x1 convolution with an LU-decomposed
weight, and an affine coupling; on images, levels of squeeze, K steps and a split that factors half the channels
out (multi-scale). On vectors the 1x1 convolution is an invertible linear map and the coupling splits the features
in halves.

With ``learned_prior=true`` the factored-out channels get Glow's learned conditional prior: a Gaussian whose mean
and log-scale are computed from the channels that continue, by a zero-initialised convolutional net. It is
implemented as an affine coupling on the factored-out channels conditioned on the rest, right before the split
(``(z1 - mu(h)) / sigma(h)`` then the standard normal), which is exactly that density. The top level keeps the
standard normal.

References:
    Kingma, Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018, arXiv:1807.03039.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dulab.bijectors import (
    ActNorm,
    Chain,
    FactorOut,
    Inverse,
    InvertibleConv1x1,
    Squeeze,
    channel_mask,
    half_mask,
    make_transformer,
)
from dulab.errors import UserError
from dulab.models.flows.base import FlowConfig, FlowModel
from dulab.models.flows.layers import coupling

__all__ = ["Glow", "GlowConfig"]


@dataclass
class GlowConfig(FlowConfig):
    """Hyperparameters of ``Glow``.

    Attributes:
        num_steps: steps (actnorm, 1x1 conv, coupling) per level (K).
        num_squeezes: scales of the multi-scale architecture on images (the paper's L levels): each squeezes
            2x2 pixels into channels, so height and width must be divisible by ``2 ** num_squeezes``.
        hidden_sizes: MLP widths of the conditioners (vectors).
        hidden_channels: width of the convolutional conditioners (images).
        num_blocks: residual blocks per convolutional conditioner.
        transformer: coupling map, ``"affine"``, ``"additive"`` or ``"spline"``.
        num_bins: spline bins.
        tail_bound: half-width of the spline interval.
        learned_prior: a learned conditional Gaussian prior for the channels factored out at each split.
    """

    num_steps: int = 8
    num_squeezes: int = 2
    hidden_sizes: tuple[int, ...] = (128, 128)
    hidden_channels: int = 32
    num_blocks: int = 1
    transformer: Literal["affine", "additive", "spline"] = "affine"
    num_bins: int = 8
    tail_bound: float = 5.0
    learned_prior: bool = False

    def __post_init__(self):
        super().__post_init__()
        self._check_positive("num_steps", "num_squeezes", "hidden_sizes", "hidden_channels", "num_bins")
        if self.num_blocks < 0 or self.tail_bound <= 0:
            raise UserError("num_blocks must be >= 0 and tail_bound > 0")


class Glow(FlowModel):
    """Actnorm, invertible 1x1 convolution (LU), affine coupling; multi-scale on images."""

    Config = GlowConfig
    train_defaults = {"epochs": 40, "batch_size": 256, "lr": 2e-3, "grad_clip": 5.0}

    @classmethod
    def check_spec(cls, spec, config):
        super().check_spec(spec, config)
        if spec.is_image:
            H, W = spec.shape[1], spec.shape[2]
            f = 2 ** config.num_squeezes
            if H % f or W % f:
                fits = [k for k in range(1, config.num_squeezes) if H % 2**k == 0 and W % 2**k == 0]
                hint = (f"--set num_squeezes={fits[-1]} fits {H}x{W}" if fits else
                        f"no num_squeezes fits {H}x{W} (odd); resize the images to a multiple of {f}"
                        f" (image_folder: --data-option size={(max(H, W) + f - 1) // f * f})")
                raise UserError(f"glow with num_squeezes={config.num_squeezes} needs height and width divisible by"
                                f" {f} (e.g. {f * max(1, H // f)}x{f * max(1, W // f)}), got {H}x{W}; {hint}")
        elif spec.num_dims < 2:
            raise UserError("glow needs at least 2 dimensions (a coupling splits them); use cdf_flow or maf")

    def _step(self, mask, num_features):
        c = self.config
        return Chain([ActNorm(num_features), InvertibleConv1x1(num_features),
                      coupling(mask, self._transformer, hidden_sizes=c.hidden_sizes,
                               hidden_channels=c.hidden_channels, num_blocks=c.num_blocks,
                               context_features=self.context_features)])

    def build_flow(self):
        c = self.config
        self._transformer = make_transformer(c.transformer, num_bins=c.num_bins, bound=c.tail_bound)
        if not self.spec.is_image:
            D = self.spec.num_dims
            mask = half_mask(D).view(self.spec.shape)
            return Chain([self._step(mask, D) for _ in range(c.num_steps)])
        return self._level(*self.spec.shape, 0)

    def _level(self, C, H, W, level):
        c = self.config
        C2, H2, W2 = 4 * C, H // 2, W // 2
        layers = [Squeeze()]  # (C, H, W) -> (4C, H/2, W/2)
        layers += [self._step(channel_mask(C2, H2, W2), C2) for _ in range(c.num_steps)]
        if level < c.num_squeezes - 1:
            if c.learned_prior:  # the factored-out half (first channels) given the half that continues
                layers.append(coupling(channel_mask(C2, H2, W2, first=False), make_transformer("affine"),
                                       hidden_channels=c.hidden_channels, num_blocks=0,
                                       context_features=self.context_features))
            layers.append(FactorOut(self._level(C2 // 2, H2, W2, level + 1)))
        layers.append(Inverse(Squeeze()))
        return Chain(layers)
