"""The original GAN: multilayer perceptrons for G and D on flattened data of any shape (1-D and 2-D toys included).

G maps ``z ~ N(0, I)`` through ReLU layers to the data (a ``tanh`` output in ``[-1, 1]`` for discrete data, whose
levels D sees on that scale; a linear output for continuous data); D maps data through LeakyReLU(0.2) layers to
one logit. Trained by ``AdversarialTask`` with the loss of ``config.loss``.

References:
    Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville, Bengio. "Generative Adversarial
    Networks", 2014, arXiv:1406.2661.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from dulab.config import check_choices
from dulab.errors import UserError
from dulab.models.gan.base import GANConfig, GANModel

__all__ = ["GAN", "GANMLPConfig"]


@dataclass
class GANMLPConfig(GANConfig):
    """Hyperparameters of ``GAN``.

    Attributes:
        hidden_sizes: widths of the hidden layers of G and of D.
        g_norm: normalisation after each hidden layer of G: ``none`` or ``batch`` (which
            ``virtual_batch_norm`` turns into virtual batch norm).
    """

    latent_dim: int = 8
    hidden_sizes: tuple[int, ...] = (128, 128)
    g_norm: Literal["none", "batch"] = "none"

    def __post_init__(self):
        super().__post_init__()
        check_choices(self)
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise UserError(f"hidden_sizes must be one or more widths >= 1, got {self.hidden_sizes}")


def _mlp(sizes, activation) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), activation()]
    return layers


class GAN(GANModel):
    """MLP generator and discriminator on flattened data."""

    Config = GANMLPConfig
    default_data = "moons"
    supports_packing = True
    train_defaults = {"epochs": 20, "batch_size": 128, "lr": 1e-3, "betas": (0.5, 0.999), "schedule": "constant"}

    def build_generator(self) -> nn.Module:
        c, D = self.config, self.spec.num_dims
        layers = _mlp((c.latent_dim, *c.hidden_sizes), nn.ReLU)
        if c.g_norm == "batch":  # Linear, BatchNorm1d, ReLU per hidden layer
            normed: list[nn.Module] = []
            for layer in layers:
                normed.append(layer)
                if isinstance(layer, nn.Linear):
                    normed.append(nn.BatchNorm1d(layer.out_features))
            layers = normed
        layers.append(nn.Linear(c.hidden_sizes[-1], D))
        if self.spec.is_discrete:
            layers.append(nn.Tanh())
        return nn.Sequential(*layers)  # (B, latent_dim) -> (B, D); generate() reshapes to (B, *event)

    def build_discriminator(self) -> nn.Module:
        c, D = self.config, self.spec.num_dims * self.config.pack  # PacGAN: m packed examples per input
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        return nn.Sequential(nn.Flatten(), *_mlp((D, *c.hidden_sizes), act), nn.Linear(c.hidden_sizes[-1], 1))
