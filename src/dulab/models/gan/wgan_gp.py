"""WGAN-GP: the DCGAN networks with a critic without batch norm, trained on the Wasserstein loss with a gradient
penalty (lambda = 10) on per-example interpolates between real and generated data, 5 critic steps per generator
step and Adam(lr=1e-4, betas=(0, 0.9)), the settings of Gulrajani et al. (2017, Algorithm 1). Batch norm is left
out of the critic because the penalty is per example (the paper suggests layer norm as a drop-in; none is used here).

References:
    Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville. "Improved Training of Wasserstein GANs", 2017,
    arXiv:1704.00028.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dulab.errors import UserError
from dulab.losses.gan import LossKind
from dulab.models.gan.dcgan import DCGAN, DCGANConfig

__all__ = ["WGANGP", "WGANGPConfig"]


@dataclass
class WGANGPConfig(DCGANConfig):
    """``DCGANConfig`` with the WGAN-GP defaults (see the module docstring)."""

    loss: LossKind = "wasserstein"
    n_critic: int = 5
    clip_value: float = 0.0
    gp_weight: float = 10.0
    d_norm: Literal["batch", "none"] = "none"
    betas_g: tuple[float, float] | None = (0.0, 0.9)
    betas_d: tuple[float, float] | None = (0.0, 0.9)

    def __post_init__(self):
        super().__post_init__()
        if self.gp_weight > 0 and self.d_norm == "batch":
            raise UserError("the gradient penalty is per example: use d_norm=none with gp_weight > 0")


class WGANGP(DCGAN):
    """DCGAN networks, Wasserstein loss with gradient penalty."""

    Config = WGANGPConfig
    train_defaults = {"epochs": 100, "batch_size": 64, "lr": 1e-4, "schedule": "constant"}  # 5 D steps per G step
