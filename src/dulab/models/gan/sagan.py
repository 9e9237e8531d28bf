"""SAGAN: DCGAN-style G and D with a self-attention block in each, spectral normalisation of every weight of both
networks, the hinge loss and the two time-scale update rule (D at 4x G's learning rate, Adam betas (0, 0.9)),
the recipe of Zhang et al. (2019, Sec. 4-5).

Convolutions see a local neighbourhood; the attention block (``dulab.nn.attention.SelfAttention2d``) lets every
position of a feature map draw on every other one, with a learned weight ``gamma`` that starts at 0. It sits in G
on the largest hidden map with at most ``attention_max_positions`` positions (H W) and in D on the first such map
(the paper puts it on 32x32 maps of 128x128 images; here the maps are small):

=============  ==========================  ==========================
image          G's attention map           D's attention map
=============  ==========================  ==========================
8x8 digits     4x4                         4x4
20x20 shapes   10x10                       10x10
32x32          16x16                       16x16
64x64 sprites  16x16                       16x16
=============  ==========================  ==========================

D has minibatch discrimination by default (``minibatch_kernels=16``, as ``sngan``; not in the paper,
``--set minibatch_kernels=0`` turns it off): with the paper's batch-free critic G collapsed on ``shapes`` (after
632 steps FID 229, precision 1.00, recall 0.08: nearly one pattern), with the 16 kernels FID 199, precision 0.23,
recall 0.45 (varied blobs) at the same step, and FID 59.9 after 1027 steps (729.5 before); on ``digits`` 43.0
against 42.9 after 2070 steps (BENCHMARKS section 21).

The stages follow ``dcgan.num_stages`` (``image_base``); G keeps batch norm (as in the paper, whose
conditional version uses
conditional batch norm; this one is unconditional), D has none. Spectral norm in G is the paper's finding that it
steadies G as well as D.

References:
    Zhang, Goodfellow, Metaxas, Odena. "Self-Attention Generative Adversarial Networks", 2019, arXiv:1805.08318.
    Miyato, Kataoka, Koyama, Yoshida. "Spectral Normalization for Generative Adversarial Networks", 2018,
    arXiv:1802.05957.
    Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter. "GANs Trained by a Two Time-Scale Update Rule Converge to
    a Local Nash Equilibrium", 2017, arXiv:1706.08500.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from dulab.config import require_at_least
from dulab.losses.gan import LossKind
from dulab.models.gan.image_base import ImageGAN, ImageGANConfig, attention_index, conv_critic, spectral_normalize_all
from dulab.nn.attention import SelfAttention2d

__all__ = ["SAGAN", "SAGANConfig"]


@dataclass
class SAGANConfig(ImageGANConfig):
    """Hyperparameters of ``SAGAN``.

    Attributes:
        use_spectral_norm: spectral normalisation of every D weight.
        use_g_spectral_norm: spectral normalisation of every G weight too (the paper's choice).
        attention_max_positions: the attention blocks go on the largest maps with at most this many positions.
        attention_reduction: channel reduction of keys, queries and values (8 in the paper).
    """

    loss: LossKind = "hinge"
    minibatch_kernels: int = 16
    use_spectral_norm: bool = True
    use_g_spectral_norm: bool = True
    attention_max_positions: int = 256
    attention_reduction: int = 8
    lr_g: float | None = 1e-4
    lr_d: float | None = 4e-4
    betas_g: tuple[float, float] | None = (0.0, 0.9)
    betas_d: tuple[float, float] | None = (0.0, 0.9)

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, 1, "attention_max_positions", "attention_reduction")


class SAGAN(ImageGAN):
    """Self-attention GAN for images ``(C, H, W)``."""

    Config = SAGANConfig
    train_defaults = {"epochs": 30, "batch_size": 64, "lr": 2e-4, "schedule": "constant"}  # lr_g/lr_d override

    def build_generator(self) -> nn.Module:
        C, H, W = self.spec.shape
        c, s, widths = self.config, self.stages, self._widths()
        bh, bw = H // 2**s, W // 2**s
        top = widths[-1]
        chans = widths[::-1] + [C]  # [2^(s-1) c, ..., c, C]
        # hidden maps: the base (index 0), then after each stage but the last (its output is the image)
        sizes = [(bh * 2**i, bw * 2**i) for i in range(max(1, s))]
        at = attention_index(sizes, c.attention_max_positions)
        layers: list[nn.Module] = [nn.Linear(c.latent_dim, top * bh * bw),
                                   nn.Unflatten(1, (top, bh, bw)),  # (B, top * bh * bw) -> (B, top, bh, bw)
                                   nn.BatchNorm2d(top), nn.ReLU()]
        if at == 0:
            layers.append(SelfAttention2d(top, c.attention_reduction))
        if s == 0:
            layers += [nn.Conv2d(top, C, 3, padding=1)]
        for i in range(s):
            layers.append(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, stride=2, padding=1))
            if i < s - 1:
                layers += [nn.BatchNorm2d(chans[i + 1]), nn.ReLU()]
                if at == i + 1:
                    layers.append(SelfAttention2d(chans[i + 1], c.attention_reduction))
        layers.append(nn.Tanh())
        g = nn.Sequential(*layers)
        return spectral_normalize_all(g) if c.use_g_spectral_norm else g

    def build_discriminator(self) -> nn.Module:
        c = self.config
        return conv_critic(self.spec.shape, self._widths(), self.stages, use_spectral_norm=c.use_spectral_norm,
                           attention_reduction=c.attention_reduction,
                           attention_max_positions=c.attention_max_positions)
