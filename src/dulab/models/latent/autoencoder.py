"""Deterministic autoencoder, optionally sparse and/or denoising.

An encoder maps x to a code h, a decoder maps h back to the parameters of a reconstruction likelihood that suits
the data (Bernoulli or categorical cross-entropy for discrete data, squared error for continuous data). A sparse
autoencoder adds a penalty on the code: the L1 norm, or the KL form of Ng's sparse autoencoder,
``sum_j KL(rho || rho_hat_j)`` with ``rho_hat_j`` the batch-mean activation of a sigmoid code unit. A denoising
autoencoder corrupts the encoder's input during training only (additive Gaussian noise, masking to the lowest
value, or salt-and-pepper) and reconstructs the clean input. It is a representation model, not a density model:
``loss`` has ``"loss"`` and ``"recon"`` only, and ``encode(x)`` gives the code.

With ``use_stacking`` (MLP only) the network is a stacked denoising autoencoder trained greedily layer by layer
(Vincent et al. 2010, section 3.2): in phase ``l`` (``stack_phase_steps`` optimiser steps each) only encoder
layer ``l`` and its decoder layer are trained, as a one-layer denoising autoencoder on the clean representation
``h_l`` that the frozen layers below compute (corrupted by the same ``noise``); after one phase per layer, the
whole stack is fine-tuned end to end on the reconstruction of x. Hidden layers of the stack use tanh, so the
corruptions' lowest and highest values (-1, +1) mean the same at every layer, and a hidden layer's
reconstruction error is the squared error. The phase follows a step counter kept as a buffer
(``num_updates``, saved with the weights), advanced by each ``loss`` call in training mode with gradients on, so
resuming a run continues the schedule exactly.

References:
    Vincent, Larochelle, Bengio, Manzagol. "Extracting and Composing Robust Features with Denoising Autoencoders",
    ICML 2008.
    Vincent, Larochelle, Lajoie, Bengio, Manzagol. "Stacked Denoising Autoencoders: Learning Useful
    Representations in a Deep Network with a Local Denoising Criterion", JMLR 11, 2010.
    Ng. "Sparse autoencoder", CS294A lecture notes, Stanford, 2011.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

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
        use_stacking: greedy layer-wise pre-training of a stacked (denoising) autoencoder, then end-to-end
            fine-tuning (MLP only; the layers are ``hidden_sizes`` then ``code_dim``).
        stack_phase_steps: optimiser steps of each layer-wise phase (one phase per layer, then fine-tuning).
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
    use_stacking: bool = False
    stack_phase_steps: int = 200

    def __post_init__(self):
        check_choices(self)
        require_widths(self, "hidden_sizes")
        require_at_least(self, 1, "code_dim", "hidden_channels", "stack_phase_steps")
        if self.use_stacking and self.architecture == "conv":
            raise UserError("use_stacking builds an MLP stack: set architecture=mlp (or auto)")
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


class StackedEncoder(nn.Module):
    """``(B, *event)`` -> code: ``Linear`` layers ``D -> hidden_sizes... -> code_dim``, tanh between them.

    ``forward(x, upto=l)`` returns the clean representation ``h_l`` (``h_0`` the flattened input)."""

    def __init__(self, sizes):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))

    def layer(self, h: torch.Tensor, index: int) -> torch.Tensor:
        out = self.layers[index](h)
        return torch.tanh(out) if index < len(self.layers) - 1 else out  # the code layer stays linear here

    def forward(self, x: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        h = x.flatten(1)  # (B, *event) -> (B, D)
        for index in range(len(self.layers) if upto is None else upto):
            h = self.layer(h, index)
        return h


class StackedDecoder(nn.Module):
    """code -> ``(N, P, *event)``: decoder layer ``l`` maps ``h_{l+1}`` back to ``h_l`` (tanh for ``l > 0``; the
    parameters of the reconstruction likelihood for ``l = 0``)."""

    def __init__(self, spec, sizes, params_per_dim: int):
        super().__init__()
        self.spec, self.params_per_dim = spec, params_per_dim
        outs = [spec.num_dims * params_per_dim, *sizes[1:-1]]
        self.layers = nn.ModuleList(nn.Linear(b, a) for a, b in zip(outs, sizes[1:]))

    def layer(self, h: torch.Tensor, index: int) -> torch.Tensor:
        out = self.layers[index](h)
        if index == 0:
            return out.view(len(h), self.params_per_dim, *self.spec.shape)  # (N, P * D) -> (N, P, *event)
        return torch.tanh(out)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h = code
        for index in reversed(range(len(self.layers))):
            h = self.layer(h, index)
        return h


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
        if c.use_stacking:
            if self.architecture != "mlp":
                raise UserError("use_stacking builds an MLP stack: set architecture=mlp")
            sizes = [spec.num_dims, *c.hidden_sizes, c.code_dim]
            self.encoder = StackedEncoder(sizes)
            self.decoder = StackedDecoder(spec, sizes, self.observation.params_per_dim)
            self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        else:
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

    @property
    def num_stack_layers(self) -> int:
        """Layers of the stack (``len(hidden_sizes) + 1``); 0 without ``use_stacking``."""
        return len(self.encoder.layers) if self.config.use_stacking else 0

    def stack_phase(self) -> int:
        """The current phase: ``l < num_stack_layers`` trains layer ``l`` alone; ``num_stack_layers``: fine-tuning
        (always, without ``use_stacking``)."""
        if not self.config.use_stacking:
            return 0
        return min(int(self.num_updates) // self.config.stack_phase_steps, self.num_stack_layers)

    def _layer_loss(self, x: torch.Tensor, features: torch.Tensor, index: int) -> dict:
        """Phase ``index`` of greedy pre-training: a one-layer denoising AE on the frozen layers' output."""
        c = self.config
        with torch.no_grad():
            target = self.encoder(features, upto=index)  # clean h_l, (B, sizes[l])
        h = self.encoder.layer(corrupt(target, c.noise, c.noise_level), index)
        top = index == self.num_stack_layers - 1
        if top and self.sigmoid_code:
            h = torch.sigmoid(h)
        if index == 0:
            recon = -self.observation.log_likelihood(x, self.decoder.layer(h, 0)) \
                if self.observation.kind != "gaussian" else \
                0.5 * (x.to(h.dtype) - self.decoder.layer(h, 0)[:, 0]).square().flatten(1).sum(1)
            dims = self.spec.num_dims
        else:
            recon = 0.5 * (self.decoder.layer(h, index) - target).square().sum(1)
            dims = target.shape[1]
        recon = recon.mean()
        loss = recon / dims
        if c.use_sparsity and top:
            loss = loss + c.sparsity_weight * self.sparsity_penalty(h)
        return {"loss": loss, "recon": recon}

    def loss(self, x: torch.Tensor, context=None) -> dict:
        """``"loss"``: reconstruction error per dimension (+ the weighted sparsity penalty); ``"recon"``: the
        reconstruction error in nats per example (batch mean). The input is corrupted in training mode only.

        With ``use_stacking``, in training mode during layer-wise phase ``l`` the loss and ``"recon"`` are those of
        layer ``l``'s denoising autoencoder (squared error of ``h_l`` for ``l > 0``); in evaluation mode, and while
        fine-tuning, they are those of the whole stack."""
        self.check_input(x)
        c = self.config
        features = input_features(x, self.spec, self._param_dtype())
        if self.training and c.use_stacking and torch.is_grad_enabled():
            phase = self.stack_phase()
            self.num_updates += 1
            if phase < self.num_stack_layers:
                return self._layer_loss(x, features, phase)
        if self.training:
            features = corrupt(features, c.noise, c.noise_level)
        code = self._code(features)
        recon = self.reconstruction_error(x, code).mean()
        loss = recon / self.spec.num_dims
        if c.use_sparsity:
            loss = loss + c.sparsity_weight * self.sparsity_penalty(code)
        return {"loss": loss, "recon": recon}
