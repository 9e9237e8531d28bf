"""Two-layer hierarchical VAE with a residual-normal posterior (a simplified NVAE).

The generative model is ``p(z2) p(z1 | z2) p(x | z1, z2)``: a standard-normal top layer, a learned diagonal
Gaussian ``p(z1 | z2) = N(mu_p(z2), sigma_p(z2)^2)`` and one of the VAE's decoders, fed with both layers (NVAE's
decoder sees every latent group through its top-down path). Inference runs top-down too: a bottom-up encoder
gives features ``h(x)``, then ``q(z2 | x) = N(mu_2(h), sigma_2(h)^2)`` and the residual normal
``q(z1 | x, z2) = N(mu_p + dmu, (sigma_p * exp(dlog_sigma))^2)`` with ``(dmu, dlog_sigma)`` a function of
``(h, z2)`` (Vahdat & Kautz 2020, eq. 2): the posterior is parameterised relative to the prior, so the KL of the
lower layer is ``0.5 (dmu^2 / sigma_p^2 + exp(2 dlog_sigma) - 1 - 2 dlog_sigma)`` per dimension and starts near
zero. The ELBO has two analytic KL terms, ``KL(q(z2|x) || p(z2))`` and ``E_q(z2|x) KL(q(z1|x,z2) || p(z1|z2))``
(the outer expectation by the same reparameterised sample of ``z2``). ``log_prob(x, num_samples=K)`` is the
importance-sampled estimate with ``q(z1, z2 | x)`` as proposal, in chunks so that K = 1000 fits in memory.

KL warm-up (NVAE section 3.2): the KL weight rises linearly from ``beta / kl_warmup_steps`` to ``beta`` over the
first ``kl_warmup_steps`` optimiser steps. Without it the top-down posterior, which starts almost equal to the
prior, collapses within the first 50 steps on ``digits_binary`` (KL 0.006 nats and falling; test KL 0.0001 and 0
of 24 active units after the 40 default epochs), where warm-up over 300 steps reaches a KL of 4 nats and a
training negative ELBO of 19.6 nats by step 400 (25.4 without). The step counter is a buffer
(``num_updates``, saved with the weights) advanced by
each ``loss`` call in training mode with gradients on, so resumed runs continue the schedule exactly.

Bounded parameters (NVAE's official code, ``distributions.py``: ``Normal`` soft-clamps ``mu`` and ``log_sigma`` by
``5 tanh(x / 5)``): the mean of every Gaussian here (q(z2|x), p(z1|z2), q(z1|x,z2)) is soft-clamped to (-5, 5) and
its log-variance to (-10, 10) (log-sigma to (-5, 5)), by ``b tanh(x / b)``. Without the bounds the default lr 2e-3
diverged on ``sprites`` 32x32 within four Adam steps: the encoder features grew tenfold in one step, q(z2|x)'s
log-variance jumped from 2 to 14 (a standard deviation of 1100), the sampled z2 fed the residual network, whose
log-variance then reached ~80 and ``exp`` gave a KL of 1e35 and then inf (``NonFiniteLossError``; BENCHMARKS.md
sections 17 and 22). The KL warm-up makes this easier to reach, since a near-zero KL weight does not hold the variance
back. With the bounds no ``exp`` in the bounds sees more than 20, so every term stays finite in float32.

Simplifications against NVAE: two vector-valued latent layers instead of many spatial groups, no spectral
regularisation, no squeeze-and-excitation cells, no normalizing flows in the posterior.

References:
    Vahdat, Kautz. "NVAE: A Deep Hierarchical Variational Autoencoder", NeurIPS 2020, arXiv:2007.03898.
    Sonderby, Raiko, Maaloe, Sonderby, Winther. "Ladder Variational Autoencoders", NeurIPS 2016, arXiv:1602.02282.
    Kingma et al. "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016,
    arXiv:1606.04934 (free bits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dulab.config import require_at_least
from dulab.distributions.gaussian import diag_gaussian_log_prob, standard_normal_log_prob
from dulab.errors import UserError
from dulab.losses.elbo import free_bits_kl, gaussian_kl, gaussian_kl_standard
from dulab.models.base import DensityModel
from dulab.models.latent.networks import (
    Decoder,
    Encoder,
    Observation,
    choose_architecture,
    choose_observation,
    input_features,
)
from dulab.models.latent.vae import _ROW_BUDGET, VAE, VAEConfig

__all__ = ["HierarchicalVAE", "HierarchicalVAEConfig"]


@dataclass
class HierarchicalVAEConfig(VAEConfig):
    """Hyperparameters of ``HierarchicalVAE``: those of ``VAEConfig`` (``latent_dim`` is the size of the lower
    layer z1; ``free_bits`` applies per dimension of both layers) plus

    Attributes:
        top_latent_dim: size of the top layer z2.
        prior_hidden: width of the hidden layer of the prior network ``p(z1 | z2)`` and of the residual
            posterior network ``(h(x), z2) -> (dmu, dlog_sigma)``.
        kl_warmup_steps: training steps over which the KL weight rises linearly to ``beta`` (0: off; the
            option of ``VAEConfig``, with another default here).
    """

    top_latent_dim: int = 8
    prior_hidden: int = 128
    kl_warmup_steps: int = 300

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, 1, "top_latent_dim", "prior_hidden")


#: soft bounds of the means and log-variances of every Gaussian of the model (NVAE's ``soft_clamp5``)
MEAN_BOUND, LOG_VAR_BOUND = 5.0, 10.0


def soft_clamp(x: torch.Tensor, bound: float) -> torch.Tensor:
    """``bound * tanh(x / bound)``: the identity near 0 (slope 1), smoothly bounded to ``(-bound, bound)``."""
    return bound * torch.tanh(x / bound)


def _gaussian_params(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 2Z)`` network output -> ``(mean, log_var)``, each soft-clamped (see ``MEAN_BOUND``)."""
    mean, log_var = raw.chunk(2, dim=1)
    return soft_clamp(mean, MEAN_BOUND), soft_clamp(log_var, LOG_VAR_BOUND)


def _two_layer(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.ELU(), nn.Linear(hidden, n_out))


class HierarchicalVAE(VAE):
    """``p(z2) p(z1|z2) p(x|z1,z2)`` with a residual-normal top-down posterior (see the module docstring).

    ``encode(x)`` gives ``(B, Z1 + Z2)``: the posterior mean of z1 (at z2 = its posterior mean), then that of z2;
    ``decode`` takes the same layout.
    """

    Config = HierarchicalVAEConfig

    def __init__(self, spec, config=None):
        DensityModel.__init__(self, spec, config)
        c = self.config
        Z1, Z2 = c.latent_dim, c.top_latent_dim
        self.architecture = choose_architecture(spec, c.architecture)
        self.observation = Observation(spec, choose_observation(spec, c.decoder), learned_std=c.learned_std,
                                       fixed_std=c.decoder_std)
        features = c.hidden_sizes[-1] if c.hidden_sizes else 2 * (Z1 + Z2)
        self.encoder = nn.Sequential(
            Encoder(spec, features, self.architecture, c.hidden_sizes, c.hidden_channels), nn.ELU())
        self.top_posterior = nn.Linear(features, 2 * Z2)  # h -> (mu_2, log_var_2)
        self.prior_net = _two_layer(Z2, c.prior_hidden, 2 * Z1)  # z2 -> (mu_p, log_var_p)
        self.residual_net = _two_layer(features + Z2, c.prior_hidden, 2 * Z1)  # (h, z2) -> (dmu, dlog_var)
        self.decoder = Decoder(spec, Z1 + Z2, self.observation.params_per_dim, self.architecture,
                               c.hidden_sizes, c.hidden_channels)
        self._init_warmup()

    # ------------------------------------------------------------------ distributions
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The bottom-up encoder features ``h(x)``: ``(B, *event) -> (B, F)``."""
        self.check_input(x)
        return self.encoder(input_features(x, self.spec, self._param_dtype()))

    def posterior2(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z2|x) from the features ``h (N, F)``: ``(mean (N, Z2), log_var (N, Z2))``, soft-clamped."""
        return _gaussian_params(self.top_posterior(h))

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of the top layer's posterior q(z2|x): ``(mean (B, Z2), log_var (B, Z2))``."""
        return self.posterior2(self.features(x))

    def prior1(self, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``p(z1 | z2)``: ``(N, Z2) -> (mean (N, Z1), log_var (N, Z1))``; means soft-clamped to (-5, 5),
        log-variances to (-10, 10)."""
        return _gaussian_params(self.prior_net(z2))

    def posterior1(self, h: torch.Tensor, z2: torch.Tensor, prior=None):
        """The residual normal ``q(z1 | x, z2)`` relative to ``p(z1 | z2)`` (NVAE eq. 2).

        Args:
            h: ``(N, F)`` encoder features; z2: ``(N, Z2)``; prior: ``prior1(z2)`` if already computed.
        Returns:
            ``(mean, log_var, prior_mean, prior_log_var)``, each ``(N, Z1)``: ``mean = mu_p + dmu``,
            ``log_var = log_var_p + dlog_var``, both sums soft-clamped as in NVAE (``Normal(mu_p + dmu, ...)``).
        """
        prior_mean, prior_log_var = self.prior1(z2) if prior is None else prior
        d_mean, d_log_var = self.residual_net(torch.cat([h, z2], 1)).chunk(2, dim=1)
        return (soft_clamp(prior_mean + d_mean, MEAN_BOUND), soft_clamp(prior_log_var + d_log_var, LOG_VAR_BOUND),
                prior_mean, prior_log_var)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *event) -> (B, Z1 + Z2)``: ``E_q[z1 | x, z2 = E_q[z2|x]]`` then ``E_q[z2 | x]``."""
        h = self.features(x)
        mean2 = self.posterior2(h)[0]
        return torch.cat([self.posterior1(h, mean2)[0], mean2], 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mode from ``(N, Z1 + Z2)`` (z1 then z2): ``(N, *event)``."""
        return self.observation.mode(self.decoder(z))

    # ------------------------------------------------------------------ bounds
    def _terms(self, x, generator=None):
        """One reparameterised sample of (z2, z1): reconstruction ``(B,)`` and the per-dimension KL terms
        ``kl1 (B, Z1)`` (given the sampled z2) and ``kl2 (B, Z2)``."""
        h = self.features(x)
        mean2, log_var2 = self.posterior2(h)
        z2 = mean2 + torch.exp(0.5 * log_var2) * self._randn(mean2.shape, generator, mean2)
        mean1, log_var1, p_mean, p_log_var = self.posterior1(h, z2)
        z1 = mean1 + torch.exp(0.5 * log_var1) * self._randn(mean1.shape, generator, mean1)
        recon = self.observation.log_likelihood(x, self.decoder(torch.cat([z1, z2], 1)))
        return recon, gaussian_kl(mean1, log_var1, p_mean, p_log_var), gaussian_kl_standard(mean2, log_var2)

    def elbo(self, x: torch.Tensor, context=None, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Single-sample ELBO ``E_q[log p(x|z1,z2)] - KL_2 - KL_1`` (both KL terms analytic), ``(B,)`` nats."""
        recon, kl1, kl2 = self._terms(x, generator)
        return recon - kl1.sum(1) - kl2.sum(1)

    def log_weights(self, x: torch.Tensor, num_samples: int, *, generator: torch.Generator | None = None,
                    max_rows: int | None = None) -> torch.Tensor:
        """``log p(x|z1,z2) + log p(z1|z2) + log p(z2) - log q(z1|x,z2) - log q(z2|x)`` for ``(z1, z2) ~ q``.

        Returns:
            ``(K, B)`` nats; samples drawn in chunks of at most ``max_rows`` decoder rows.
        """
        if num_samples < 1:
            raise UserError(f"num_samples must be >= 1, got {num_samples}")
        h = self.features(x)
        mean2, log_var2 = self.posterior2(h)
        B, Z2 = mean2.shape
        std2 = torch.exp(0.5 * log_var2)
        rows = max_rows or max(B, _ROW_BUDGET // max(1, self.spec.num_dims * self.observation.params_per_dim))
        chunk = max(1, rows // B)
        out = []
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            z2 = (mean2 + std2 * self._randn((k, B, Z2), generator, mean2)).reshape(k * B, Z2)  # (k * B, Z2)
            mean1, log_var1, p_mean, p_log_var = self.posterior1(h.repeat(k, 1), z2)
            z1 = mean1 + torch.exp(0.5 * log_var1) * self._randn(mean1.shape, generator, mean1)
            xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * B, *x.shape[1:])  # (k * B, *event)
            log_px = self.observation.log_likelihood(xs, self.decoder(torch.cat([z1, z2], 1)))
            log_prior = standard_normal_log_prob(z2) + diag_gaussian_log_prob(z1, p_mean, 0.5 * p_log_var)
            log_q = (diag_gaussian_log_prob(z2, mean2.repeat(k, 1), 0.5 * log_var2.repeat(k, 1))
                     + diag_gaussian_log_prob(z1, mean1, 0.5 * log_var1))
            out.append((log_px + log_prior - log_q).view(k, B))
        return torch.cat(out, 0)

    def loss(self, x: torch.Tensor, context=None) -> dict:
        """Negative ELBO per dimension (``beta`` on both KL terms, ``free_bits`` per dimension of each layer;
        in training mode the KL weight follows the warm-up, ``kl_weight()``).

        Returns:
            ``"loss"``, ``"nll"`` (negative ELBO, nats per example), ``"recon"``, ``"kl"`` (both layers),
            ``"kl_z1"`` and ``"kl_z2"`` (the two analytic terms), all batch means in nats per example.
        """
        c = self.config
        recon, kl1, kl2 = self._terms(x)
        kl1_sum, kl2_sum = kl1.sum(1).mean(), kl2.sum(1).mean()
        if c.free_bits > 0:
            kl_term = free_bits_kl(kl1, c.free_bits) + free_bits_kl(kl2, c.free_bits)
        else:
            kl_term = kl1_sum + kl2_sum
        nll = kl1_sum + kl2_sum - recon.mean()
        loss = (self._training_kl_weight() * kl_term - recon.mean()) / self.spec.num_dims
        return {"loss": loss, "nll": nll, "recon": -recon.mean(), "kl": kl1_sum + kl2_sum, "kl_z1": kl1_sum,
                "kl_z2": kl2_sum}

    @torch.no_grad()
    def posterior_diagnostics(self, x: torch.Tensor, batch_size: int = 512) -> dict:
        """Collapse diagnostics per layer: ``kl_per_dim`` ``(Z1 + Z2,)`` (z1's KL at z2 = its posterior mean),
        ``mean_variance`` ``Cov_x`` of the ``encode`` means, ``active_units`` (> 0.01, Burda et al. 2016) in
        total and ``active_units_z1``, ``active_units_z2``."""
        if len(x) < 2:
            raise UserError("posterior_diagnostics needs at least 2 examples")
        means, kls = [], []
        Z1 = self.config.latent_dim
        for chunk in x.split(batch_size):
            h = self.features(chunk)
            mean2, log_var2 = self.posterior2(h)
            mean1, log_var1, p_mean, p_log_var = self.posterior1(h, mean2)
            means.append(torch.cat([mean1, mean2], 1).double())
            kls.append(torch.cat([gaussian_kl(mean1, log_var1, p_mean, p_log_var),
                                  gaussian_kl_standard(mean2, log_var2)], 1).double())
        means, kls = torch.cat(means), torch.cat(kls)
        active = means.var(0, unbiased=False) > 0.01
        return {"kl_per_dim": kls.mean(0), "mean_variance": means.var(0, unbiased=False),
                "active_units": int(active.sum()), "active_units_z1": int(active[:Z1].sum()),
                "active_units_z2": int(active[Z1:].sum())}

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
               use_decoder_noise: bool = True) -> torch.Tensor:
        """``z2 ~ N(0, I)``, ``z1 ~ p(z1|z2)``, then ``x ~ p(x|z1,z2)`` (or its mode without decoder noise)."""
        like = torch.empty((), dtype=self._param_dtype(), device=self._param_device())
        z2 = self._randn((num_samples, self.config.top_latent_dim), generator, like)
        p_mean, p_log_var = self.prior1(z2)
        z1 = p_mean + torch.exp(0.5 * p_log_var) * self._randn(p_mean.shape, generator, like)
        params = self.decoder(torch.cat([z1, z2], 1))
        return self.observation.sample(params, generator) if use_decoder_noise else self.observation.mode(params)
