"""WGAN-GP: the DCGAN networks with a critic without batch norm, trained on the Wasserstein loss with a gradient
penalty (lambda = 10) on per-example interpolates between real and generated data, 5 critic steps per generator
step and Adam(betas=(0, 0.9)), the settings of Gulrajani et al. (2017, Algorithm 1). Batch norm is left out of the
critic because the penalty is per example; layer norm takes its place (``d_norm="layer"``, over each example's
``(C, H, W)`` map, the drop-in the paper suggests in Sec. 4).

Two defaults depart from Algorithm 1's Adam(lr=1e-4) for both players: the critic keeps lr 1e-4 (the ``--lr``),
but G's is ``lr_g = 5e-4``. With 5 critic steps per G step, G gets a fifth of the steps, and Adam moves each weight
by about lr per step: on sprites at 32x32 (BENCHMARKS section 21, follow-up) G had to move its output's
pre-``tanh`` mean from about 0 to about -2.5 (real sprites are 96% background at exactly -1), which at 1e-4 takes
about 500 G steps; within the zoo's ~1000 steps it never did (FID 399, one dot lattice for every latent).
``gan_diag.py wgan_gp --data sprites --data-option size=32 --epochs 13`` (1027 steps): the paper's settings
FID 399, layer norm alone 219, lr_g 5e-4 alone 15.4, both 14.1 (11.5 at step 711). Zoo with both: sprites 32x32
13.4 (1264 steps), digits 28.9 (2070 steps; 43.8 before).
``--set lr_g=1e-4 --set d_norm=none`` gives Algorithm 1 exactly (``--lr`` sets the critic's lr only).

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
    r1_gamma: float = 0.0  # not the dcgan default
    d_norm: Literal["batch", "layer", "none"] = "layer"
    lr_g: float | None = 5e-4
    betas_g: tuple[float, float] | None = (0.0, 0.9)
    betas_d: tuple[float, float] | None = (0.0, 0.9)

    def __post_init__(self):
        super().__post_init__()
        if self.gp_weight > 0 and self.d_norm == "batch":
            raise UserError("the gradient penalty is per example: use d_norm=layer or none with gp_weight > 0")


class WGANGP(DCGAN):
    """DCGAN networks, Wasserstein loss with gradient penalty."""

    Config = WGANGPConfig
    # lr: the critic's (G's is lr_g); 5 D steps per G step
    train_defaults = {"epochs": 100, "batch_size": 64, "lr": 1e-4, "schedule": "constant"}
