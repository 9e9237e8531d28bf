"""SN-GAN: the DCGAN networks with spectral normalisation of every discriminator weight (and no batch norm in D),
trained on the hinge loss. Spectral norm divides each weight by an estimate of its largest singular value (one
power-iteration step per training forward pass), which bounds each layer's Lipschitz constant by 1.

Unlike the paper, D has minibatch discrimination by default (``minibatch_kernels=16``; Salimans et al. 2016,
``tricks.py``; ``--set minibatch_kernels=0`` for the paper's SN-GAN). Without batch norm in D nothing in D sees
the batch, and on ``sprites`` (32x32, 869 steps) G collapsed to one dot pattern for every latent, D's hinge loss
at exactly 0 from step 50 (FID 711, recall 0.0); with the 16 kernels: FID 7.8 after 316 steps (8.3 after 1343),
and on ``digits`` 32.8 against 46.0 after 2070 steps (BENCHMARKS section 21). DCGAN's batch-normalised D does
not collapse there. The minibatch layer's tensor is not spectrally normalised (D's last linear layer, after it,
is).

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
    """``DCGANConfig`` with the SN-GAN defaults: hinge loss, spectral norm in D, no batch norm in D, minibatch
    discrimination with 16 kernels (see the module docstring)."""

    loss: LossKind = "hinge"
    minibatch_kernels: int = 16
    d_norm: Literal["batch", "none"] = "none"
    use_spectral_norm: bool = True
    r1_gamma: float = 0.0  # not the dcgan default


class SNGAN(DCGAN):
    """DCGAN networks, spectrally normalised D, hinge loss."""

    Config = SNGANConfig
    train_defaults = {"epochs": 30, "batch_size": 64, "lr": 2e-4, "betas": (0.5, 0.999), "schedule": "constant"}
