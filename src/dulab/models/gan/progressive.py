"""Progressive growing of the DCGAN generator and discriminator (Karras et al. 2018, Sec. 2).

Training starts at the networks' base resolution (``H / 2^s``) and adds one stride-2 stage to G and D at a time.
A new stage is faded in: G's output is ``alpha * tanh(toRGB_l(stage_l(h)))
+ (1 - alpha) * upsample(tanh(toRGB_{l-1}(h)))`` and D's first features are ``alpha * stage(fromRGB_l(x))
+ (1 - alpha) * fromRGB_{l-1}(avgpool(x))``, with ``alpha`` rising linearly from 0 to 1 over ``steps_per_phase``
steps, then the new resolution trains on its own (``alpha = 1``) for as many steps before the next stage fades in
(Karras et al. grow every 600k images in each half of the phase). ``toRGB``/``fromRGB`` are 1x1 convolutions.

G always returns full-size images (the current resolution upsampled by nearest neighbour), and D average-pools its
input to the current resolution, so the rest of the library sees one image shape throughout. The growth is a
buffer (``growth``: the level, minus 1, plus alpha), saved with the weights and set from the training step by
``DCGAN.set_training_step``. Only the growth schedule is implemented: no equalised learning rate, pixel norm or
minibatch standard deviation (the paper's other contributions).

References:
    Karras, Aila, Laine, Lehtinen. "Progressive Growing of GANs for Improved Quality, Stability, and Variation",
    2018, arXiv:1710.10196.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ProgressiveGenerator", "ProgressiveDiscriminator", "growth_at", "level_and_alpha"]


def growth_at(step: int, steps_per_phase: int, num_stages: int) -> float:
    """The growth after ``step`` steps: ``level - 1 + alpha``. Phases of ``steps_per_phase`` steps alternate
    between stable (``alpha = 1``) and fading in the next level (``alpha`` from 0 to 1): stable level 0, fade in
    level 1, stable level 1, ..., stable level ``num_stages`` from then on."""
    k, within = divmod(step, steps_per_phase)
    if k % 2 == 0:
        return float(min(k // 2, num_stages))
    level = (k + 1) // 2
    if level > num_stages:
        return float(num_stages)
    return level - 1 + within / steps_per_phase


def level_and_alpha(growth: float) -> tuple[int, float]:
    """``growth -> (level, alpha)``: the resolution level ``ceil(growth)`` and its fade-in weight in ``(0, 1]``."""
    level = max(0, math.ceil(growth))
    return level, (1.0 if level == 0 else growth - level + 1)


class ProgressiveGenerator(nn.Module):
    """DCGAN's generator with a toRGB per resolution; ``forward_at(z, level, alpha)`` and ``forward(z)`` (at the
    ``growth`` buffer). Level ``l`` produces ``(H / 2^(s - l), W / 2^(s - l))`` images, upsampled to ``(H, W)``."""

    def __init__(self, latent_dim: int, channels: int, widths: list[int], base: tuple[int, int], num_stages: int):
        super().__init__()
        s, top = num_stages, widths[-1]
        bh, bw = base
        self.num_stages = s
        self.stem = nn.Sequential(nn.Linear(latent_dim, top * bh * bw),
                                  nn.Unflatten(1, (top, bh, bw)),  # (B, top * bh * bw) -> (B, top, bh, bw)
                                  nn.BatchNorm2d(top), nn.ReLU())
        chans = widths[::-1] + [channels]  # [2^(s-1) c, ..., c, C]
        self.stages = nn.ModuleList()
        for i in range(s):
            layers: list[nn.Module] = [nn.ConvTranspose2d(chans[i], chans[i + 1], 4, stride=2, padding=1)]
            if i < s - 1:
                layers += [nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
            self.stages.append(nn.Sequential(*layers))
        # toRGB of levels 0..s-1 (level s's last stage already outputs C channels)
        self.to_rgb = nn.ModuleList(nn.Conv2d(chans[level], channels, 1) for level in range(s))
        self.register_buffer("growth", torch.zeros(()))

    def _rgb(self, h: torch.Tensor, level: int) -> torch.Tensor:
        return torch.tanh(h if level == self.num_stages else self.to_rgb[level](h))

    def forward_at(self, z: torch.Tensor, level: int, alpha: float) -> torch.Tensor:
        h = self.stem(z)
        for i in range(level - 1):
            h = self.stages[i](h)
        if level == 0:
            out = self._rgb(h, 0)
        else:
            high = self._rgb(self.stages[level - 1](h), level)
            out = high if alpha >= 1 else alpha * high + (1 - alpha) * F.interpolate(
                self._rgb(h, level - 1), scale_factor=2, mode="nearest")
        factor = 2 ** (self.num_stages - level)
        return out if factor == 1 else F.interpolate(out, scale_factor=factor, mode="nearest")  # (B, C, H, W)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward_at(z, *level_and_alpha(float(self.growth)))


class ProgressiveDiscriminator(nn.Module):
    """DCGAN's discriminator with a fromRGB per resolution; ``features_at(x, level, alpha)``, ``features(x)`` and
    ``forward(x) = head(features(x))`` (at the ``growth`` buffer); ``x`` is always full size ``(B, C, H, W)``."""

    def __init__(self, channels: int, widths: list[int], base: tuple[int, int], num_stages: int, *,
                 norm: str, sn):
        from dulab.models.gan.dcgan import d_norm_layer

        super().__init__()
        s = num_stages
        self.num_stages = s
        chans = [channels] + widths
        self.stages = nn.ModuleList()
        for i in range(s):
            layers: list[nn.Module] = [sn(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1))]
            norm_layer = d_norm_layer(norm, chans[i + 1]) if i > 0 else None  # none on the input layer
            if norm_layer is not None:
                layers.append(norm_layer)
            layers.append(nn.LeakyReLU(0.2))
            self.stages.append(nn.Sequential(*layers))
        # fromRGB of levels 0..s-1: an image at level l enters stage s - l, which takes chans[s - l] channels
        self.from_rgb = nn.ModuleList(nn.Sequential(sn(nn.Conv2d(channels, chans[s - level], 1)), nn.LeakyReLU(0.2))
                                      for level in range(s))
        self.head = sn(nn.Linear(widths[-1] * base[0] * base[1], 1))
        self.register_buffer("growth", torch.zeros(()))

    def _enter(self, x: torch.Tensor, level: int) -> torch.Tensor:
        return x if level == self.num_stages else self.from_rgb[level](x)

    def features_at(self, x: torch.Tensor, level: int, alpha: float) -> torch.Tensor:
        s = self.num_stages
        if level < s:
            x = F.avg_pool2d(x, 2 ** (s - level))  # (B, C, H / 2^(s-l), W / 2^(s-l))
        if level == 0:
            h = self._enter(x, 0)
        else:
            h = self.stages[s - level](self._enter(x, level))
            if alpha < 1:
                h = alpha * h + (1 - alpha) * self._enter(F.avg_pool2d(x, 2), level - 1)
        for i in range(s - level + 1, s):
            h = self.stages[i](h)
        return h.flatten(1)  # (B, top * bh * bw)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_at(x, *level_and_alpha(float(self.growth)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
