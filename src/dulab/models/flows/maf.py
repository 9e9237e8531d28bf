"""Masked autoregressive flow (MAF) and inverse autoregressive flow (IAF) on MADE conditioners.

MAF's layers map data to latent with ``z_i = tau(x_i; theta_i(x_<i))``: the density of any point is one MADE pass
per layer, sampling is D sequential passes. IAF stacks the same layers the other way round (``x_i =
tau(z_i; theta_i(z_<i))``): sampling, and scoring its own samples, is one pass per layer, while the density of an
arbitrary data point, needed for maximum-likelihood training, takes D passes per layer. The transformer ``tau`` is
affine or a rational-quadratic spline (Neural Spline Flows); the order of dimensions is permuted between layers.
Images are flattened to vectors.

References:
    Papamakarios, Pavlakou, Murray. "Masked Autoregressive Flow for Density Estimation", 2017, arXiv:1705.07057.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. "Improved Variational Inference with Inverse
    Autoregressive Flow", 2016, arXiv:1606.04934.
    Durkan, Bekasov, Murray, Papamakarios. "Neural Spline Flows", 2019, arXiv:1906.04032.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from dulab.bijectors import (
    ActNorm,
    BatchNorm,
    Chain,
    Inverse,
    MaskedAutoregressive,
    Permutation,
    Reshape,
    Reverse,
    make_transformer,
)
from dulab.errors import UserError
from dulab.models.flows.base import FlowConfig, FlowModel

__all__ = ["MAF", "IAF", "MAFConfig"]


@dataclass
class MAFConfig(FlowConfig):
    """Hyperparameters of ``MAF`` and ``IAF``.

    Attributes:
        num_layers: autoregressive layers.
        hidden_sizes: MADE hidden widths.
        transformer: ``"affine"`` or ``"spline"`` (rational-quadratic, ``num_bins`` bins on ``[-tail_bound,
            tail_bound]``, identity outside).
        num_bins: spline bins.
        tail_bound: half-width of the spline interval.
        permutation: between layers, ``"reverse"`` the order or a fixed ``"random"`` permutation.
        norm: ``"none"``, ``"actnorm"`` or ``"batchnorm"`` between layers.
    """

    num_layers: int = 5
    hidden_sizes: tuple[int, ...] = (128, 128)
    transformer: Literal["affine", "spline"] = "spline"
    num_bins: int = 16
    tail_bound: float = 5.0
    permutation: Literal["reverse", "random"] = "reverse"
    norm: Literal["none", "actnorm", "batchnorm"] = "none"

    def __post_init__(self):
        super().__post_init__()
        self._check_positive("num_layers", "hidden_sizes", "num_bins")
        if self.tail_bound <= 0:
            raise UserError(f"tail_bound must be > 0, got {self.tail_bound}")


class MAF(FlowModel):
    """Masked autoregressive flow: fast density (one pass per layer), sequential sampling (D passes)."""

    Config = MAFConfig
    train_defaults = {"epochs": 60, "batch_size": 256, "lr": 3e-3, "grad_clip": 5.0}

    def _layers(self) -> list:
        c, D = self.config, self.spec.num_dims
        transformer = make_transformer(c.transformer, num_bins=c.num_bins, bound=c.tail_bound)
        layers = []
        for i in range(c.num_layers):
            if i > 0 and D > 1:
                layers.append(Reverse(D) if c.permutation == "reverse" else Permutation.random(D))
            if c.norm == "actnorm":
                layers.append(ActNorm(D))
            elif c.norm == "batchnorm":
                layers.append(BatchNorm(D))
            layers.append(MaskedAutoregressive(D, c.hidden_sizes, transformer,
                                               context_features=self.context_features))
        return layers

    def build_flow(self):
        shape, D = self.spec.shape, self.spec.num_dims
        return Chain([Reshape(shape, (D,)), Chain(self._layers()), Reshape((D,), shape)])


class IAF(MAF):
    """Inverse autoregressive flow: fast sampling (one pass per layer), density of data D passes per layer.

    Its normalizing direction (``transform``) is the inverse of a MAF-like stack that maps latent to data, so
    training by maximum likelihood is the slow direction; ``sample_and_log_prob`` scores samples fast.
    """

    train_defaults = {"epochs": 40, "batch_size": 256, "lr": 2e-3, "grad_clip": 5.0}

    @classmethod
    def check_spec(cls, spec, config):
        super().check_spec(spec, config)
        if config.norm != "none":
            raise UserError("iaf supports norm='none' only (data-dependent normalisation needs the data direction)")

    def build_flow(self):
        shape, D = self.spec.shape, self.spec.num_dims
        # The layers map latent to data; Inverse makes forward the normalizing direction (data to latent).
        return Chain([Reshape(shape, (D,)), Inverse(Chain(self._layers())), Reshape((D,), shape)])
