"""DCGAN: convolutional G and D with strided (transposed) convolutions instead of pooling, batch norm, ReLU in G,
LeakyReLU(0.2) in D and a ``tanh`` output.

As in Radford et al. (2016, Sec. 3), batch norm is left out of the generator's output layer and the discriminator's
input layer. (Issue 8 words it as "G's first layer"; the paper names the output layer, which this follows.) D's
batch norm can be turned off (``d_norm="none"``) or replaced by layer norm over each example's ``(C, H, W)``
map (``d_norm="layer"``, the drop-in Gulrajani et al. 2017 suggest for the WGAN-GP critic, whose penalty is per
example), and spectral normalisation put on every D layer (``use_spectral_norm``, SN-GAN).

The number of stride-2 stages ``s`` is chosen from the image size ``H x W``: the largest ``s`` with ``H`` and
``W`` divisible by ``2^s`` and ``H / 2^s, W / 2^s >= 4`` (DCGAN's 4x4 base), plus one more stage down to a 2x2
base when that leaves fewer than 2 stages. No padding or cropping is needed:

=============  ======  =========  ==============================
image          stages  base map   G: channels per stage (base c)
=============  ======  =========  ==============================
8x8 digits     2       2x2        2c -> c -> C
20x20 shapes   2       5x5        2c -> c -> C
32x32          3       4x4        4c -> 2c -> c -> C
64x64 sprites  4       4x4        8c -> 4c -> 2c -> c -> C
=============  ======  =========  ==============================

Odd sizes (``s = 0``) get one 3x3 convolution in G and in D. G starts with a linear projection of ``z`` to the
base map; D ends with a linear layer on the flattened last map. Kernel 4, stride 2, padding 1 doubles (halves)
every even size exactly.

Activations are kept in the channels-last memory format (``torch.channels_last``: G's base map is laid out so from
the start, D's input is converted once): the convolutions then run without the layout reorders that the default
format costs on CPU (oneDNN) and use the tensor-core path on CUDA; the values are the same up to float rounding and
the weights (and checkpoints) keep the default layout (BENCHMARKS section 24: 0.8-0.9x the step time).

References:
    Radford, Metz, Chintala. "Unsupervised Representation Learning with Deep Convolutional Generative Adversarial
    Networks", 2016, arXiv:1511.06434.
    Miyato, Kataoka, Koyama, Yoshida. "Spectral Normalization for Generative Adversarial Networks", 2018,
    arXiv:1802.05957.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from dulab.config import check_choices, require_at_least
from dulab.errors import UserError
from dulab.models.gan.base import GANConfig, GANModel

__all__ = ["DCGAN", "DCGANConfig", "UnflattenChannelsLast", "auto_r1_gamma", "d_norm_layer", "num_stages"]


class UnflattenChannelsLast(nn.Unflatten):
    """``nn.Unflatten`` to ``(B, C, H, W)`` whose output is laid out channels-last (same values, same indices)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).contiguous(memory_format=torch.channels_last)


@dataclass
class DCGANConfig(GANConfig):
    """Hyperparameters of ``DCGAN``.

    Attributes:
        base_channels: channels of D's first stage (and of G's last hidden stage); stage ``i`` of D has
            ``base_channels * 2^i``.
        d_norm: normalisation in D's hidden layers (not the input layer): ``batch`` (DCGAN), ``layer`` (per
            example over ``(C, H, W)`` with a per-channel scale and shift, ``GroupNorm(1, C)``; the WGAN-GP
            critic's default) or ``none``.
        use_spectral_norm: spectral normalisation of every D weight (Miyato et al. 2018).
        progressive_steps: progressive growing (Karras et al. 2018; ``progressive.py``) with this many training
            steps per fade-in and per stable phase (0: the fixed full-resolution networks).

    Defaults beyond the paper (BENCHMARKS section 24): the R1 penalty on every 4th D step (lazy R1) and, in
    ``train_defaults``, an EMA of the weights (0.999). Without them D wins outright within ~20 steps on 64x64
    ``sprites`` and G stays on one speckle image. ``r1_gamma=None`` (the default) is ``10 * H * W / 64^2``: 10 at
    64x64, 2.5 at 32x32, 0.98 for 20x20 ``shapes``, 0.16 for 8x8 ``digits``, the scaling with the pixel count of
    Karras et al.'s heuristic ("Training Generative Adversarial Networks with Limited Data", 2020, whose
    ``0.0002 N / M`` also divides by the batch size; the constant here is ours, for batch 64): gamma 10 on ``digits``
    held D at chance and cost FID (32.6 against 23-24 with gamma 0-1). ``--set r1_gamma=0 --ema 0`` is the paper's
    recipe. With D's batch norm the input gradient of a batch also runs through the batch statistics, so R1 here is
    a smoothness penalty on the batch rather than strictly per example.
    """

    latent_dim: int = 64
    base_channels: int = 32
    r1_gamma: float | None = None
    r1_every: int = 4
    d_norm: Literal["batch", "layer", "none"] = "batch"
    use_spectral_norm: bool = False
    progressive_steps: int = 0

    def __post_init__(self):
        super().__post_init__()
        check_choices(self)
        require_at_least(self, 1, "base_channels")
        require_at_least(self, 0, "progressive_steps")


def auto_r1_gamma(height: int, width: int) -> float:
    """dcgan's default R1 gamma, ``10 * H * W / 64^2`` (``DCGANConfig``)."""
    return 10.0 * height * width / 64**2


def num_stages(height: int, width: int) -> int:
    """Stride-2 stages for an ``height x width`` image (the table in the module docstring)."""
    def fits(s: int, minimum: int) -> bool:
        return all(n % 2**s == 0 and n // 2**s >= minimum for n in (height, width))

    s = 0
    while fits(s + 1, 4):
        s += 1
    if s < 2 and fits(s + 1, 2):
        s += 1
    return s


def d_norm_layer(kind: str, channels: int) -> nn.Module | None:
    """D's hidden-layer normalisation ``d_norm`` for ``channels`` maps (``None`` for ``none``)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":  # per example: the critic's output for one example does not depend on the others
        return nn.GroupNorm(1, channels)
    return None


class DCGAN(GANModel):
    """Deep convolutional GAN for images ``(C, H, W)``."""

    Config = DCGANConfig
    train_defaults = {"epochs": 30, "batch_size": 64, "lr": 2e-4, "betas": (0.5, 0.999), "schedule": "constant",
                      "ema_decay": 0.999}
    supports_packing = True

    @classmethod
    def check_spec(cls, spec, config):
        if len(spec.shape) != 3:
            raise UserError(f"{cls.__name__.lower()} needs images (C, H, W), got data of shape {spec.shape};"
                            " use gan for vectors")
        if config.progressive_steps > 0 and num_stages(*spec.shape[1:]) == 0:
            raise UserError(f"progressive growing needs an image size divisible by 2 (got {spec.shape[1:]})")

    @classmethod
    def default_r1_gamma(cls, spec) -> float:
        # from the image size (DCGANConfig); non-images are refused by check_spec
        return auto_r1_gamma(*spec.shape[1:]) if len(spec.shape) == 3 else 0.0

    def set_training_step(self, step: int) -> None:
        """Progressive growing: set G's and D's growth from the training step (the task calls this)."""
        if self.config.progressive_steps > 0:
            from dulab.models.gan.progressive import growth_at

            g = growth_at(step, self.config.progressive_steps, self.stages)
            for net in (self.G, self.D):
                for m in net.modules():
                    if hasattr(m, "growth") and isinstance(m.growth, torch.Tensor):
                        m.growth.fill_(g)

    @property
    def stages(self) -> int:
        return num_stages(*self.spec.shape[1:])

    def _widths(self) -> list[int]:
        """Channels of D's stages, ``[c, 2c, ..., 2^(s-1) c]`` (at least one entry)."""
        return [self.config.base_channels * 2**i for i in range(max(1, self.stages))]

    def build_generator(self) -> nn.Module:
        C, H, W = self.spec.shape
        s, widths = self.stages, self._widths()
        bh, bw = H // 2**s, W // 2**s
        top = widths[-1]
        if self.config.progressive_steps > 0:
            from dulab.models.gan.progressive import ProgressiveGenerator

            return ProgressiveGenerator(self.config.latent_dim, C, widths, (bh, bw), s)
        layers: list[nn.Module] = [nn.Linear(self.config.latent_dim, top * bh * bw),
                                   # (B, top * bh * bw) -> (B, top, bh, bw), channels-last from here on
                                   UnflattenChannelsLast(1, (top, bh, bw)),
                                   nn.BatchNorm2d(top), nn.ReLU()]
        if s == 0:
            layers += [nn.Conv2d(top, C, 3, padding=1), nn.Tanh()]
        else:
            chans = widths[::-1] + [C]  # [2^(s-1) c, ..., c, C]
            for i in range(s):
                layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, stride=2, padding=1))
                if i < s - 1:
                    layers += [nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]  # no batch norm on the output layer
            layers.append(nn.Tanh())
        return nn.Sequential(*layers)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last for D's convolutions: a no-op for G's output, one copy for a batch of real images
        return super().discriminate(x.contiguous(memory_format=torch.channels_last))

    def build_discriminator(self) -> nn.Module:
        C, H, W = self.spec.shape
        c, s, widths = self.config, self.stages, self._widths()
        C = C * c.pack  # PacGAN: m packed images along the channels
        sn = spectral_norm if c.use_spectral_norm else (lambda m: m)
        if c.progressive_steps > 0:
            from dulab.models.gan.progressive import ProgressiveDiscriminator

            return ProgressiveDiscriminator(C, widths, (H // 2**s, W // 2**s), s, norm=c.d_norm, sn=sn)
        layers: list[nn.Module] = []
        if s == 0:
            layers += [sn(nn.Conv2d(C, widths[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        else:
            chans = [C] + widths
            for i in range(s):
                layers.append(sn(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1)))
                norm = d_norm_layer(c.d_norm, chans[i + 1]) if i > 0 else None  # none on the input layer
                if norm is not None:
                    layers.append(norm)
                layers.append(nn.LeakyReLU(0.2))
        bh, bw = H // 2**s, W // 2**s
        layers += [nn.Flatten(), sn(nn.Linear(widths[-1] * bh * bw, 1))]  # (B, top, bh, bw) -> (B, 1)
        return nn.Sequential(*layers)
