"""SN-GAN: the DCGAN networks with spectral normalisation of every discriminator weight (and no batch norm in D),
trained on the hinge loss. Spectral norm divides each weight by an estimate of its largest singular value (one
power-iteration step per training forward pass), which bounds each layer's Lipschitz constant by 1.

References:
    Miyato, Kataoka, Koyama, Yoshida. "Spectral Normalization for Generative Adversarial Networks", 2018,
    arXiv:1802.05957.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dulab.losses.gan import LossKind
from dulab.models.gan.dcgan import DCGAN, DCGANConfig

__all__ = ["SNGAN", "SNGANConfig"]


@dataclass
class SNGANConfig(DCGANConfig):
    """``DCGANConfig`` with the SN-GAN defaults: hinge loss, spectral norm in D, no batch norm in D."""

    loss: LossKind = "hinge"
    d_norm: Literal["batch", "none"] = "none"
    use_spectral_norm: bool = True


class SNGAN(DCGAN):
    """DCGAN networks, spectrally normalised D, hinge loss."""

    Config = SNGANConfig
    train_defaults = {"epochs": 30, "batch_size": 64, "lr": 2e-4, "betas": (0.5, 0.999), "schedule": "constant"}
