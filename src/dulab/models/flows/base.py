"""The common machinery of dulab's normalizing flows: a base distribution, a bijector from data to latent, and
(for discrete data) dequantization and the logit preprocessing.

``log p(x) = log p_Z(z) + log|det dz/dx|`` with ``z = f(x)`` (the change of variables). Discrete data (images,
discrete toys) are dequantized inside the model. Uniform dequantization adds ``u ~ U[0, 1)^D`` to the levels and
models the continuous density on ``[0, K)^D``; ``E_u[log p(x + u)] <= log P(x)`` (Jensen), so ``log_prob``
returns a lower bound on the discrete log-likelihood, directly comparable (in bits/dim) with the autoregressive
models. The change of scale from ``[0, K)`` to ``[0, 1)`` (``-D log K``) and the logit preprocessing of Real NVP
are bijectors in the chain, so their log-dets are counted. Variational dequantization (Flow++) draws ``u`` from a
learned conditional flow ``q(u | x)`` and returns ``log p(x + u) - log q(u | x)``, a tighter bound in expectation.
Each ``log_prob`` call draws one noise sample from the *global* torch RNG (``torch.manual_seed`` makes it
repeatable; the training engine seeds evaluation with ``isolated_rng``).

References:
    Theis, van den Oord, Bethge. "A note on the evaluation of generative models", 2016, arXiv:1511.01844
    (uniform dequantization bound).
    Ho, Chen, Srinivas, Duan, Abbeel. "Flow++: Improving Flow-Based Generative Models with Variational
    Dequantization and Architecture Design", 2019, arXiv:1902.00275 (section 3.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dulab.bijectors import AffineScalar, Bijector, Chain, Coupling, Identity, Logit, make_transformer
from dulab.bijectors.coupling import alternating_mask, checkerboard_mask
from dulab.config import check_choices
from dulab.distributions import standard_normal_log_prob
from dulab.errors import UserError
from dulab.models.base import DensityModel
from dulab.nn.coupling_nets import MLP, ConvNet

__all__ = ["FlowConfig", "FlowModel", "VariationalDequantizer"]


@dataclass
class FlowConfig:
    """Hyperparameters shared by every flow.

    Attributes:
        dequantization: for discrete data, ``"uniform"`` (``u ~ U[0, 1)``) or ``"variational"`` (a learned
            conditional flow ``q(u | x)``, Flow++).
        num_dequant_layers: coupling layers of the variational dequantizer.
        dequant_hidden: hidden width of the variational dequantizer's conditioners.
        logit_alpha: discrete data in ``[0, 1)`` are mapped by ``logit(alpha + (1 - 2 alpha) x)`` before the flow.
        use_context: condition on class labels (``context=``; the dataset must have labels).
    """

    dequantization: Literal["uniform", "variational"] = "uniform"
    num_dequant_layers: int = 2
    dequant_hidden: int = 32
    logit_alpha: float = 0.05
    use_context: bool = False

    def __post_init__(self):
        check_choices(self)
        if self.num_dequant_layers < 1 or self.dequant_hidden < 1:
            raise UserError("num_dequant_layers and dequant_hidden must be >= 1")
        if not 0 <= self.logit_alpha < 0.5:
            raise UserError(f"logit_alpha must be in [0, 0.5), got {self.logit_alpha}")

    def _check_positive(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            values = value if isinstance(value, tuple) else (value,)
            if not values or any(v < 1 for v in values):
                raise UserError(f"{name} must be >= 1 (each entry), got {value}")


class VariationalDequantizer(nn.Module):
    """``q(u | x)`` on ``(0, 1)^D``: ``u = sigmoid(g(eps; x))`` with ``eps ~ N(0, I)`` and ``g`` a conditional
    affine-coupling flow whose conditioners see ``x`` (scaled to ``[-0.5, 0.5]``).

    The first layer has an empty mask (an element-wise affine map conditioned on ``x`` only, which also covers
    one-dimensional data); the next ones alternate (vectors) or use checkerboards (images).

    Args:
        shape: event shape.
        num_levels: K.
        num_layers: number of coupling layers.
        hidden: hidden width of the conditioners.
    """

    def __init__(self, shape: tuple, num_levels: int, num_layers: int = 2, hidden: int = 32):
        super().__init__()
        self.shape, self.num_levels = tuple(shape), num_levels
        layers = []
        affine = make_transformer("affine")
        for i in range(num_layers):
            if len(shape) == 3:
                C, H, W = shape
                mask = torch.zeros(shape) if i == 0 else checkerboard_mask(C, H, W, i % 2)
                net = ConvNet(C, 2 * C, hidden, 1, context_channels=C)
            else:
                D = math.prod(shape)
                mask = torch.zeros(D) if i == 0 or D == 1 else alternating_mask(D, i % 2)
                net = MLP(D, 2 * D, (hidden, hidden), context_features=D)
            layers.append(Coupling(mask, net, affine))
        self.flow = Chain(layers)

    def forward(self, x: torch.Tensor, dtype: torch.dtype,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``u ~ q(u | x)`` (from ``generator``, or the global RNG).

        Args:
            x: ``(B, *event)`` int levels.
            dtype: the float dtype of the model.
            generator: the random stream for the noise.
        Returns:
            ``(u, log_q)``: ``u`` float ``(B, *event)`` in ``(0, 1)``, ``log_q`` ``(B,)`` nats.
        """
        feats = x.to(dtype) / (self.num_levels - 1) - 0.5
        if len(self.shape) != 3:
            feats = feats.reshape(x.shape[0], -1)  # (B, *event) -> (B, D)
        eps = torch.randn(feats.shape, generator=generator, dtype=dtype, device=x.device)
        h, log_det = self.flow(eps, feats)
        u = torch.sigmoid(h)
        log_det = log_det + (-F.softplus(-h) - F.softplus(h)).flatten(1).sum(1)  # log sigmoid'(h)
        log_q = standard_normal_log_prob(eps) - log_det
        return u.reshape(x.shape), log_q


class FlowModel(DensityModel):
    """A normalizing flow: ``transform`` (data to latent), ``inverse``, ``log_prob``, ``sample``.

    Subclass obligations: set ``Config`` (a subclass of ``FlowConfig``) and implement ``build_flow()``, returning
    the bijector from the (preprocessed) data, ``(B, *spec.shape)``, to the latent of the same shape; it receives
    ``self.context_features`` (one-hot class labels, 0 when unconditional). Override ``base_log_prob`` and
    ``base_sample`` for a base distribution other than the standard normal.

    The continuous space of the flow is the data itself for continuous data and the level scale ``[0, K)`` for
    discrete data (levels plus dequantization noise); ``transform`` accepts either float points of that space or,
    for discrete data, int levels (then dequantized uniformly with one draw of the global RNG).
    """

    family = "flow"
    Config = FlowConfig

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c = self.config
        self.is_conditional = bool(c.use_context)
        self.context_features = spec.num_classes if c.use_context else 0
        if spec.is_discrete:
            K = spec.num_levels
            self.preprocess = Chain([AffineScalar(1.0 / K), Logit(c.logit_alpha)])
            self.dequantizer = (VariationalDequantizer(spec.shape, K, c.num_dequant_layers, c.dequant_hidden)
                                if c.dequantization == "variational" else None)
        else:
            self.preprocess = Identity()
            self.dequantizer = None
        self.flow = self.build_flow()

    @classmethod
    def check_spec(cls, spec, config):
        if config.use_context and not spec.num_classes:
            raise UserError(f"{cls.__name__}: use_context=true needs labelled data (the dataset has no classes)")

    def build_flow(self) -> Bijector:
        raise NotImplementedError

    # ------------------------------------------------------------------ base distribution
    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p_Z(z) in nats, ``(B, *event) -> (B,)`` (standard normal)."""
        return standard_normal_log_prob(z)

    def base_sample(self, shape: tuple, generator=None, temperature: float = 1.0) -> torch.Tensor:
        """``(N, *event)`` draws from the base, scaled by ``temperature`` (``N(0, T^2 I)``)."""
        z = torch.randn(shape, generator=generator, dtype=self._param_dtype(), device=self._param_device())
        return z * temperature

    # ------------------------------------------------------------------ helpers
    def _context_features(self, context, batch: int):
        labels = self._check_context(context, batch)
        if labels is None:
            return None
        return F.one_hot(labels, self.context_features).to(self._param_dtype())

    def _to_continuous(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._param_dtype()
        if self.spec.is_discrete and not x.is_floating_point():
            return x.to(dtype) + torch.rand(x.shape, dtype=dtype, device=x.device)
        return x.to(dtype)

    # ------------------------------------------------------------------ the flow contract
    def transform(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Data to latent.

        Args:
            x: ``(B, *event)``: continuous data, or for discrete data float points of ``[0, K)^D`` (or int levels,
                dequantized uniformly here).
            context: ``(B,)`` class labels for conditional models.
        Returns:
            ``(z, log_det)``: ``z`` ``(B, *event)``, ``log_det = log|det dz/dx|`` ``(B,)`` in nats.
        """
        ctx = self._context_features(context, x.shape[0])
        y, ld_pre = self.preprocess(self._to_continuous(x))
        z, ld = self.flow(y, ctx)
        return z, ld_pre + ld

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Latent to data space: ``(B, *event)`` floats (the level scale ``[0, K)`` for discrete data)."""
        return self.inverse_and_log_det(z, context)[0]

    def inverse_and_log_det(self, z, context=None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, log|det dx/dz|)`` for latents ``z`` ``(B, *event)``."""
        ctx = self._context_features(context, z.shape[0])
        y, ld = self.flow.inverse(z, ctx)
        x, ld_pre = self.preprocess.inverse(y)
        return x, ld + ld_pre

    def dequantize(self, x: torch.Tensor,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Discrete levels to ``(x + u, log q(u | x))``: ``(B, *event)`` floats in ``[0, K)`` and ``(B,)`` nats
        (0 for uniform dequantization). One noise draw from ``generator`` (the global RNG when ``None``)."""
        dtype = self._param_dtype()
        if self.dequantizer is None:
            u = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
            return x.to(dtype) + u, u.new_zeros(x.shape[0])
        u, log_q = self.dequantizer(x, dtype, generator)
        return x.to(dtype) + u, log_q

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """log p(x) in nats, ``(B,)``; for discrete data the one-sample dequantized bound
        ``log p(x + u) - log q(u | x)`` (``q`` uniform unless variational), whose expectation is <= log P(x).
        The noise ``u`` comes from ``generator`` (the global RNG when ``None``)."""
        self.check_input(x)
        if self.spec.is_discrete:
            y, log_q = self.dequantize(x, generator)
        else:
            y, log_q = x.to(self._param_dtype()), 0.0
        z, log_det = self.transform(y, context)
        return self.base_log_prob(z) + log_det - log_q

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               context: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """``(num_samples, *event)`` samples: floats for continuous data, int64 levels for discrete data.

        Args:
            num_samples: N.
            generator: the random generator for the latent draws.
            context: class labels ``(N,)`` (or one label) for conditional models.
            temperature: scale of the latent draws (< 1 trades diversity for quality, Glow section 5).
        """
        if temperature <= 0:
            raise UserError(f"temperature must be > 0, got {temperature}")
        z = self.base_sample((num_samples, *self.spec.shape), generator, temperature)
        x = self.inverse(z, context)
        if self.spec.is_discrete:
            return x.floor().clamp(0, self.spec.num_levels - 1).long()
        return x

    @torch.no_grad()
    def sample_and_log_prob(self, num_samples: int, *, generator=None, context=None):
        """Samples and their log-density from the sampling path, ``log p_Z(z) - log|det dx/dz|`` (continuous data;
        for IAF this is the fast way to score its own samples).

        Returns:
            ``(x, log_prob)``: ``(N, *event)`` and ``(N,)`` nats.
        """
        z = self.base_sample((num_samples, *self.spec.shape), generator)
        x, ld = self.inverse_and_log_det(z, context)
        return x, self.base_log_prob(z) - ld

    @torch.no_grad()
    def entropy(self, num_samples: int = 4096, *, generator=None, context=None) -> float:
        """Monte-Carlo estimate of the differential entropy ``-E[log p(x)]`` in nats from the sampling path."""
        return -float(self.sample_and_log_prob(num_samples, generator=generator, context=context)[1].mean())

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, num_steps: int = 8,
                    context: torch.Tensor | None = None) -> torch.Tensor:
        """Decode the straight line between the latents of ``x0`` and ``x1``.

        Discrete examples are placed at the centres of their bins (``x + 0.5``) so the result is deterministic.

        Args:
            x0, x1: ``(B, *event)`` examples.
            num_steps: points on the line, end points included.
        Returns:
            ``(num_steps, B, *event)``: floats for continuous data, int64 levels for discrete data.
        """
        if num_steps < 2:
            raise UserError("num_steps must be >= 2")
        if self.spec.is_discrete:
            x0, x1 = x0.to(self._param_dtype()) + 0.5, x1.to(self._param_dtype()) + 0.5
        z0, _ = self.transform(x0, context)
        z1, _ = self.transform(x1, context)
        t = torch.linspace(0, 1, num_steps, dtype=z0.dtype, device=z0.device).view(-1, *[1] * z0.dim())
        z = (1 - t) * z0 + t * z1  # (S, B, *event)
        ctx = None if context is None else torch.as_tensor(context).reshape(-1).repeat(num_steps)
        x = self.inverse(z.reshape(-1, *z0.shape[1:]), ctx).reshape(z.shape)
        if self.spec.is_discrete:
            return x.floor().clamp(0, self.spec.num_levels - 1).long()
        return x
