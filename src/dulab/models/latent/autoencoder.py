"""Deterministic autoencoder, optionally sparse and/or denoising.

An encoder maps x to a code h, a decoder maps h back to the parameters of a reconstruction likelihood that suits
the data (Bernoulli or categorical cross-entropy for discrete data, squared error for continuous data). A sparse
autoencoder adds a penalty on the code: the L1 norm, or the KL form of Ng's sparse autoencoder,
``sum_j KL(rho || rho_hat_j)`` with ``rho_hat_j`` the batch-mean activation of a sigmoid code unit. A denoising
autoencoder corrupts the encoder's input during training only (additive Gaussian noise, masking to the lowest
value, or salt-and-pepper) and reconstructs the clean input. It is a representation model, not a density model:
``loss`` has ``"loss"`` and ``"recon"`` only, and ``encode(x)`` gives the code.

References:
    Vincent, Larochelle, Bengio, Manzagol. "Extracting and Composing Robust Features with Denoising Autoencoders",
    ICML 2008.
    Ng. "Sparse autoencoder", CS294A lecture notes, Stanford, 2011.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from dulab.config import check_choices, require_at_least, require_widths
from dulab.errors import UserError
from dulab.models.base import Model
from dulab.models.latent.networks import (
    Decoder,
    Encoder,
    Observation,
    choose_architecture,
    choose_observation,
    input_features,
)

__all__ = ["Autoencoder", "AutoencoderConfig", "corrupt"]


@dataclass
class AutoencoderConfig:
    """Hyperparameters of ``Autoencoder``.

    Attributes:
        code_dim: size of the code.
        hidden_sizes, hidden_channels, architecture: the networks, as for ``VAEConfig``.
        code_activation: ``auto`` (sigmoid with the KL sparsity penalty, else linear), ``linear`` or ``sigmoid``.
        use_sparsity: add a sparsity penalty on the code.
        sparsity: ``l1`` (mean absolute code value) or ``kl`` (``sum_j KL(rho || rho_hat_j)``, sigmoid code).
        sparsity_weight: weight of the penalty (added to the per-dimension reconstruction loss).
        sparsity_target: rho, the target mean activation of the KL form, in (0, 1).
        noise: input corruption in training: ``none``, ``gaussian``, ``masking`` or ``salt_and_pepper``.
        noise_level: standard deviation of the Gaussian noise (in the [-1, 1] input units of discrete data), or
            the fraction of corrupted dimensions for masking and salt-and-pepper.
    """

    code_dim: int = 32
    hidden_sizes: tuple[int, ...] = (256,)
    hidden_channels: int = 32
    architecture: Literal["auto", "mlp", "conv"] = "auto"
    code_activation: Literal["auto", "linear", "sigmoid"] = "auto"
    use_sparsity: bool = False
    sparsity: Literal["l1", "kl"] = "l1"
    sparsity_weight: float = 0.1
    sparsity_target: float = 0.05
    noise: Literal["none", "gaussian", "masking", "salt_and_pepper"] = "none"
    noise_level: float = 0.25

    def __post_init__(self):
        check_choices(self)
        require_widths(self, "hidden_sizes")
        require_at_least(self, 1, "code_dim", "hidden_channels")
        if not 0 < self.sparsity_target < 1:
            raise UserError(f"sparsity_target must be in (0, 1), got {self.sparsity_target}")
        if self.sparsity_weight < 0 or self.noise_level < 0:
            raise UserError("sparsity_weight and noise_level must be >= 0")
        if self.noise in ("masking", "salt_and_pepper") and self.noise_level > 1:
            raise UserError(f"noise_level is a fraction for {self.noise} noise: must be <= 1, got {self.noise_level}")
        if self.use_sparsity and self.sparsity == "kl" and self.code_activation == "linear":
            raise UserError("the KL sparsity penalty needs code activations in (0, 1): set code_activation=sigmoid")


def corrupt(features: torch.Tensor, kind: str, level: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Corrupt network inputs in [-1, 1] units (Vincent et al. 2008, section 2.3).

    Args:
        features: ``(B, *event)`` float inputs.
        kind: ``gaussian`` (add ``N(0, level^2)``), ``masking`` (a ``level`` fraction of dimensions set to -1, the
            lowest value) or ``salt_and_pepper`` (a ``level`` fraction set to -1 or +1 with equal odds); ``none``.
        level: noise standard deviation or corrupted fraction.
        generator: the randomness.
    Returns:
        the corrupted features, same shape.
    """
    if kind == "none" or level == 0:
        return features
    device = generator.device if generator is not None else features.device

    def draw(fn):
        return fn(features.shape, generator=generator, device=device, dtype=features.dtype).to(features.device)

    if kind == "gaussian":
        return features + level * draw(torch.randn)
    hit = draw(torch.rand) < level
    if kind == "masking":
        return features.masked_fill(hit, -1.0)
    salt = draw(torch.rand) < 0.5
    return torch.where(hit, torch.where(salt, 1.0, -1.0).to(features.dtype), features)


class Autoencoder(Model):
    """Deterministic encoder and decoder; ``encode`` gives the code ``(B, code_dim)``."""

    Config = AutoencoderConfig
    family = "latent"
    is_representation = True
    train_defaults = {"epochs": 30, "lr": 2e-3, "batch_size": 64}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c = self.config
        self.architecture = choose_architecture(spec, c.architecture)
        kind = "gaussian" if not spec.is_discrete else choose_observation(spec, "auto")
        if kind == "logistic":
            kind = "categorical"  # cross-entropy over the levels for any discrete data
        # a fixed unit-variance Gaussian: -log p is the squared error / 2 plus a constant
        self.observation = Observation(spec, kind, learned_std=False, fixed_std=1.0)
        self.encoder = Encoder(spec, c.code_dim, self.architecture, c.hidden_sizes, c.hidden_channels)
        self.decoder = Decoder(spec, c.code_dim, self.observation.params_per_dim, self.architecture,
                               c.hidden_sizes, c.hidden_channels)
        self.sigmoid_code = c.code_activation == "sigmoid" or (
            c.code_activation == "auto" and c.use_sparsity and c.sparsity == "kl")

    def check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.spec.shape:
            raise UserError(f"Autoencoder expects inputs of shape (B, {', '.join(map(str, self.spec.shape))}),"
                            f" got {tuple(x.shape)}")
        if self.spec.is_discrete and x.is_floating_point():
            raise UserError(f"Autoencoder models discrete data: pass int64 levels, got {x.dtype}")

    def _code(self, features: torch.Tensor) -> torch.Tensor:
        h = self.encoder(features)
        return torch.sigmoid(h) if self.sigmoid_code else h

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The code of the clean input: ``(B, *event) -> (B, code_dim)``."""
        self.check_input(x)
        return self._code(input_features(x, self.spec, self._param_dtype()))

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """The reconstruction from a code: ``(B, code_dim) -> (B, *event)`` (int64 levels for discrete data)."""
        return self.observation.mode(self.decoder(code))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def reconstruction_error(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """``-log p(x | decoder(code))`` per example ``(B,)``: cross-entropy (discrete) or squared error / 2
        (continuous), summed over the event, in nats."""
        params = self.decoder(code)
        if self.observation.kind == "gaussian":
            return 0.5 * (x.to(params.dtype) - params[:, 0]).square().flatten(1).sum(1)
        return -self.observation.log_likelihood(x, params)

    def sparsity_penalty(self, code: torch.Tensor) -> torch.Tensor:
        """L1: ``mean |h|``; KL: ``sum_j KL(rho || rho_hat_j)`` with ``rho_hat_j`` the batch-mean activation."""
        c = self.config
        if c.sparsity == "l1":
            return code.abs().mean()
        rho, rho_hat = c.sparsity_target, code.mean(0).clamp(1e-6, 1 - 1e-6)
        return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()

    def loss(self, x: torch.Tensor, context=None) -> dict:
        """``"loss"``: reconstruction error per dimension (+ the weighted sparsity penalty); ``"recon"``: the
        reconstruction error in nats per example (batch mean). The input is corrupted in training mode only."""
        self.check_input(x)
        c = self.config
        features = input_features(x, self.spec, self._param_dtype())
        if self.training:
            features = corrupt(features, c.noise, c.noise_level)
        code = self._code(features)
        recon = self.reconstruction_error(x, code).mean()
        loss = recon / self.spec.num_dims
        if c.use_sparsity:
            loss = loss + c.sparsity_weight * self.sparsity_penalty(code)
        return {"loss": loss, "recon": recon}
