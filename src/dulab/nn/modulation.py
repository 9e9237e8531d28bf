"""Normalisation and convolution layers whose scale and shift come from a conditioning vector (class embedding,
latent chunk or style), and the helpers of the style-based generator.

* ``ConditionalBatchNorm2d``: batch norm without its own affine parameters; gain ``1 + gamma(c)`` and bias
  ``beta(c)`` are linear maps of a conditioning vector ``c`` (de Vries et al. 2017; Dumoulin et al. 2017; in
  BigGAN ``c`` is the shared class embedding concatenated with a chunk of ``z``). With ``gamma(c) = beta(c) = 0``
  it is plain batch norm.
* ``AdaIN``: adaptive instance normalisation ``y_s (x - mu(x)) / sigma(x) + y_b`` with the style ``(y_s, y_b)``
  an affine map of ``w`` (Huang & Belongie 2017; StyleGAN, Karras et al. 2019, Eq. 1); ``y_s = 1 + A_s w`` so that
  zero style modulation is plain instance norm.
* ``ModulatedConv2d``: StyleGAN2's replacement of AdaIN: the convolution weights are scaled per input channel by
  the style and (optionally) demodulated, normalised so that each output has unit expected std (Karras et al. 2020,
  Eqs. 1-3), as one grouped convolution over the batch.
* ``NoiseInjection``: per-pixel Gaussian noise, one map per example shared across channels, scaled by a learned
  per-channel factor initialised to 0 (StyleGAN, Sec. 2, "B").
* ``EqualLinear`` / ``EqualConv2d``: the equalised learning rate of Karras et al. (2018, Sec. 4.1): weights drawn
  from ``N(0, 1) / lr_mul`` and multiplied at run time by ``lr_mul / sqrt(fan_in)``, so Adam's step size acts on
  every layer alike; ``lr_mul`` < 1 slows a layer down (StyleGAN's mapping network uses 0.01).

References:
    de Vries, Strub, Mary, Larochelle, Pietquin, Courville. "Modulating early visual processing by language",
    2017, arXiv:1707.00683.
    Dumoulin, Shlens, Kudlur. "A Learned Representation For Artistic Style", 2017, arXiv:1610.07629.
    Huang, Belongie. "Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization", 2017,
    arXiv:1703.06868.
    Karras, Aila, Laine, Lehtinen. "Progressive Growing of GANs for Improved Quality, Stability, and Variation",
    2018, arXiv:1710.10196.
    Karras, Laine, Aila. "A Style-Based Generator Architecture for Generative Adversarial Networks", 2019,
    arXiv:1812.04948.
    Karras, Laine, Aittala, Hellsten, Lehtinen, Aila. "Analyzing and Improving the Image Quality of StyleGAN", 2020,
    arXiv:1912.04958.
    Brock, Donahue, Simonyan. "Large Scale GAN Training for High Fidelity Natural Image Synthesis", 2019,
    arXiv:1809.11096.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConditionalBatchNorm2d", "AdaIN", "ModulatedConv2d", "NoiseInjection", "EqualLinear", "EqualConv2d"]


class ConditionalBatchNorm2d(nn.Module):
    """``BN(x) * (1 + gamma(c)) + beta(c)``; ``BN`` normalises with batch (training) or running (eval) statistics.

    Args:
        channels: C of ``x``.
        cond_dim: size of the conditioning vector ``c``.
        wrap: applied to the two linear maps (e.g. spectral normalisation, as BigGAN's G does).
        eps, momentum: as ``nn.BatchNorm2d``.
    """

    def __init__(self, channels: int, cond_dim: int, *, wrap=None, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False, eps=eps, momentum=momentum)
        self.gain = nn.Linear(cond_dim, channels, bias=False)
        self.bias = nn.Linear(cond_dim, channels, bias=False)
        if wrap is None:  # start as plain batch norm (gain 1, bias 0)
            nn.init.zeros_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)
        else:  # a zero weight has no spectral norm to divide by: keep the default initialisation
            self.gain, self.bias = wrap(self.gain), wrap(self.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``x (B, C, H, W)``, ``c (B, cond_dim)`` -> ``(B, C, H, W)``."""
        gain = 1.0 + self.gain(c)[:, :, None, None]  # (B, C) -> (B, C, 1, 1)
        return self.bn(x) * gain + self.bias(c)[:, :, None, None]


class EqualLinear(nn.Module):
    """A linear layer with the equalised learning rate (module docstring)."""

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul)) if bias else None
        self.scale, self.lr_mul = lr_mul / math.sqrt(in_features), lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        return F.linear(x, self.weight * self.scale, bias)


class EqualConv2d(nn.Module):
    """A same-padded convolution with the equalised learning rate."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale, self.padding = 1.0 / math.sqrt(in_channels * kernel_size**2), kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class AdaIN(nn.Module):
    """``(1 + A_s w) * IN(x) + A_b w`` (StyleGAN Eq. 1 with the scale written as a residual around 1).

    Args:
        channels: C.
        w_dim: size of the style vector ``w``.
        eps: of the instance norm.
    """

    def __init__(self, channels: int, w_dim: int, eps: float = 1e-8):
        super().__init__()
        self.scale = EqualLinear(w_dim, channels)
        self.shift = EqualLinear(w_dim, channels)
        self.eps = eps

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x (B, C, H, W)``, ``w (B, w_dim)`` -> ``(B, C, H, W)``."""
        x = F.instance_norm(x, eps=self.eps)
        return x * (1.0 + self.scale(w))[:, :, None, None] + self.shift(w)[:, :, None, None]


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated (and demodulated) same-padded convolution.

    ``w'_{ijk} = s_i w_{ijk}`` with ``s = 1 + A w`` per input channel ``i``; with ``demodulate``,
    ``w''_{ijk} = w'_{ijk} / sqrt(sum_{i,k} w'^2_{ijk} + eps)`` per output channel ``j`` (Karras et al. 2020,
    Eqs. 1 and 3). One grouped convolution applies every example's own weights.

    Args:
        in_channels, out_channels, kernel_size: of the convolution.
        w_dim: size of the style vector.
        demodulate: normalise each output channel's weights (Eq. 3).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, *,
                 demodulate: bool = True, eps: float = 1e-8):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.style = EqualLinear(w_dim, in_channels)
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.demodulate, self.eps, self.padding = demodulate, eps, kernel_size // 2

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``x (B, C_in, H, W)``, ``w (B, w_dim)`` -> ``(B, C_out, H, W)``."""
        B, C, H, W = x.shape
        s = 1.0 + self.style(w)  # (B, C_in)
        weight = self.scale * self.weight[None] * s[:, None, :, None, None]  # (B, C_out, C_in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=(2, 3, 4), keepdim=True) + self.eps)
        # fold the batch into groups: (1, B C_in, H, W) conv (B C_out, C_in, k, k) -> (1, B C_out, H, W)
        out = F.conv2d(x.reshape(1, B * C, H, W), weight.reshape(-1, C, *weight.shape[3:]), padding=self.padding,
                       groups=B)
        return out.reshape(B, -1, H, W)


class NoiseInjection(nn.Module):
    """``x + strength * noise`` with one ``N(0, 1)`` map per example, ``strength`` per channel (init 0).

    Args:
        channels: C.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.strength = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """``x (B, C, H, W)``; ``noise (B, 1, H, W)`` or drawn from ``generator`` (the global RNG when ``None``)."""
        if noise is None:
            B, _, H, W = x.shape
            noise = torch.randn(B, 1, H, W, generator=generator, device=x.device, dtype=x.dtype)
        return x + self.strength[None, :, None, None] * noise
