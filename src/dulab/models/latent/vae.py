"""Variational autoencoder and importance-weighted autoencoder.

A VAE pairs a decoder ``p(x|z)`` with a standard-normal prior ``p(z)`` and an encoder ``q(z|x) = N(mu(x),
diag(sigma^2(x)))``, and is trained on the evidence lower bound ``E_q[log p(x|z)] - KL(q || p)`` with the
reparameterisation ``z = mu + sigma * eps`` and the KL in closed form. ``beta`` weights the KL (beta-VAE);
``free_bits`` floors each latent dimension's batch-mean KL; ``kl_warmup_steps`` ramps the KL weight linearly from
``beta / kl_warmup_steps`` to ``beta`` over the first optimiser steps (deterministic warm-up, Bowman et al. 2016,
Sonderby et al. 2016), so that the decoder learns to use z before the KL can pull q(z|x) onto the prior. The
step counter is a buffer (``num_updates``, saved with the weights) advanced by each ``loss`` call in training
mode with gradients on, so a resumed run continues the schedule exactly. The IWAE trains the same networks on the
K-sample importance-weighted bound, which is tighter.

q(z|x)'s parameters are capped (``bound_posterior``): the means are the identity on [-5, 5] and stay within +-10, the
log-variances the identity up to 2 and below 5. Without the caps the default lr 2e-3 exploded on ``sprites`` 32x32
at the fourth Adam step (the log-variance jumped from 3 to 19, |mean| to 15, the reconstruction to 3e5 nats, the
gradient norm to 2e5): that one step filled Adam's second-moment estimates, froze the encoder for hundreds of
steps, and the decoder settled on the blank mean image with KL 0 (the "posterior collapse" of BENCHMARKS.md
section 17, which KL warm-up alone did not prevent). A posterior wider than the N(0, I) prior never helps the
bound, so the cap costs nothing at an optimum. For both, ``log_prob(x, num_samples=K)`` is the importance-sampled
estimate ``log (1/K) sum_k p(x, z_k) / q(z_k|x)`` of log p(x): a stochastic lower bound in expectation that rises
to log p(x) as K grows. For discrete data the decoder is a normalised pmf, so bits/dim compare directly with
autoregressive models.

References:
    Kingma, Welling. "Auto-Encoding Variational Bayes", ICLR 2014, arXiv:1312.6114.
    Burda, Grosse, Salakhutdinov. "Importance Weighted Autoencoders", ICLR 2016, arXiv:1509.00519.
    Higgins et al. "beta-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework", ICLR 2017.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. "Improved Variational Inference with Inverse
    Autoregressive Flow", NeurIPS 2016, arXiv:1606.04934 (free bits, appendix C.8).
    Bowman, Vilnis, Vinyals, Dai, Jozefowicz, Bengio. "Generating Sentences from a Continuous Space", CoNLL 2016,
    arXiv:1511.06349 (KL annealing).
    Sonderby, Raiko, Maaloe, Sonderby, Winther. "Ladder Variational Autoencoders", NeurIPS 2016, arXiv:1602.02282
    (warm-up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from dulab.config import check_choices, require_at_least, require_widths
from dulab.distributions.gaussian import diag_gaussian_log_prob, standard_normal_log_prob
from dulab.errors import UserError
from dulab.losses.elbo import free_bits_kl, gaussian_kl_standard, iwae_bound
from dulab.models.base import DensityModel
from dulab.models.latent.networks import (
    Decoder,
    Encoder,
    Observation,
    choose_architecture,
    choose_observation,
    input_features,
)

__all__ = ["VAE", "VAEConfig", "IWAE", "IWAEConfig"]

#: rows (samples x examples) per decoder pass in ``log_prob``, scaled by the data size, so K = 1000 fits in memory
_ROW_BUDGET = 2**21
#: q(z|x)'s bounds: means are the identity on [-5, 5] and approach +-10 beyond; log-variances the identity up to 2 and
#: approach 5 above (no lower bound: sharp posteriors are fine), see ``VAE.posterior``
MEAN_LINEAR, MEAN_BOUND, LOG_VAR_LINEAR, LOG_VAR_BOUND = 5.0, 10.0, 2.0, 5.0


def soft_cap(x: torch.Tensor, linear: float, bound: float) -> torch.Tensor:
    """The identity up to ``linear``, then ``linear + s tanh((x - linear) / s)`` with ``s = bound - linear``:
    continuous with a continuous slope, bounded above by ``bound``, exact below ``linear``."""
    s = bound - linear
    return torch.where(x <= linear, x, linear + s * torch.tanh((x - linear) / s))


def bound_posterior(mean: torch.Tensor, log_var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Caps of q(z|x)'s parameters: ``|mean|`` by ``soft_cap(., 5, 10)``, ``log_var`` from above by
    ``soft_cap(., 2, 5)``."""
    capped = soft_cap(mean.abs(), MEAN_LINEAR, MEAN_BOUND)
    return torch.where(mean < 0, -capped, capped), soft_cap(log_var, LOG_VAR_LINEAR, LOG_VAR_BOUND)


#: default ``kl_warmup_steps`` of ``vae``. Measured with seed 0, K = 1000 (BENCHMARKS.md section 22): CLI defaults
#: on ``digits`` 1.943 IWAE bpd with 300 steps of warm-up against 1.998 without, ``digits_binary`` 0.389 against
#: 0.432; on ``sprites`` 32x32 (5 epochs) no gain once q(z|x) is capped (0.060 with, 0.059 without)
KL_WARMUP_STEPS = 300


@dataclass
class VAEConfig:
    """Hyperparameters of ``VAE``.

    Attributes:
        latent_dim: Z, the size of the latent vector.
        hidden_sizes: MLP widths of the encoder (mirrored in the decoder); with conv nets, the last one is the
            width of the hidden linear layer.
        hidden_channels: channels of the first conv layer (doubled per halving of the resolution, at most 4x).
        architecture: ``auto`` (conv for images with H, W >= 8, else MLP), ``mlp`` or ``conv``.
        decoder: the likelihood p(x|z): ``auto`` (Bernoulli for 2 levels, one discretized logistic per pixel for
            images with more levels, categorical logits for other discrete data up to 64 levels, Gaussian for
            continuous data; see ``networks.choose_observation``), or one of ``bernoulli``, ``categorical``
            (per-dimension logits over the levels), ``logistic``, ``gaussian``.
        learned_std: Gaussian decoder: learn a standard deviation per dimension (else ``decoder_std``).
        decoder_std: Gaussian decoder: the fixed standard deviation when ``learned_std`` is off.
        beta: weight of the KL term in the training loss (beta-VAE; 1 is the ELBO).
        free_bits: nats per latent dimension below which the batch-mean KL is not penalised (0: off).
        kl_warmup_steps: training steps over which the KL weight rises linearly to ``beta`` (0: off; default 300,
            see ``KL_WARMUP_STEPS``).
    """

    latent_dim: int = 16
    hidden_sizes: tuple[int, ...] = (256, 256)
    hidden_channels: int = 32
    architecture: Literal["auto", "mlp", "conv"] = "auto"
    decoder: Literal["auto", "bernoulli", "categorical", "logistic", "gaussian"] = "auto"
    learned_std: bool = True
    decoder_std: float = 1.0
    beta: float = 1.0
    free_bits: float = 0.0
    kl_warmup_steps: int = KL_WARMUP_STEPS

    def __post_init__(self):
        check_choices(self)
        require_widths(self, "hidden_sizes")
        require_at_least(self, 1, "latent_dim", "hidden_channels")
        require_at_least(self, 0, "kl_warmup_steps")
        if self.beta < 0 or self.free_bits < 0 or self.decoder_std <= 0:
            raise UserError(f"need beta >= 0, free_bits >= 0 and decoder_std > 0; got beta={self.beta}, "
                            f"free_bits={self.free_bits}, decoder_std={self.decoder_std}")


class VAE(DensityModel):
    """Gaussian encoder, standard-normal prior, a decoder likelihood that suits the data (see ``VAEConfig``).

    The encoder outputs ``(B, 2Z)``: the posterior means, then the log-variances.
    """

    Config = VAEConfig
    family = "latent"
    train_defaults = {"epochs": 40, "lr": 2e-3, "batch_size": 64}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c = self.config
        self.architecture = choose_architecture(spec, c.architecture)
        self.observation = Observation(spec, choose_observation(spec, c.decoder), learned_std=c.learned_std,
                                       fixed_std=c.decoder_std)
        self.encoder = Encoder(spec, 2 * c.latent_dim, self.architecture, c.hidden_sizes, c.hidden_channels)
        self.decoder = Decoder(spec, c.latent_dim, self.observation.params_per_dim, self.architecture,
                               c.hidden_sizes, c.hidden_channels)
        self._init_warmup()

    # ------------------------------------------------------------------ KL warm-up
    def _init_warmup(self) -> None:
        """Register the training-step counter ``num_updates`` of the KL warm-up (every subclass calls this)."""
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # weights saved before the warm-up existed have no step counter: those runs trained with the full KL
        # weight, so they continue with the warm-up over
        key = prefix + "num_updates"
        if key not in state_dict:
            state_dict[key] = torch.tensor(self.config.kl_warmup_steps, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def kl_weight(self) -> float:
        """The KL weight of the next training step: ``beta * min(1, (num_updates + 1) / kl_warmup_steps)``."""
        c = self.config
        if c.kl_warmup_steps == 0:
            return c.beta
        return c.beta * min(1.0, (int(self.num_updates) + 1) / c.kl_warmup_steps)

    def _training_kl_weight(self) -> float:
        """``kl_weight()`` and one step counted in training mode with gradients on; ``beta`` otherwise."""
        if self.training and torch.is_grad_enabled():
            weight = self.kl_weight()
            self.num_updates += 1
            return weight
        return self.config.beta

    # ------------------------------------------------------------------ networks
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Parameters of q(z|x): ``(B, *event) -> (mean (B, Z), log_var (B, Z))``, capped by ``bound_posterior``
        (see the module docstring)."""
        self.check_input(x)
        h = self.encoder(input_features(x, self.spec, self._param_dtype()))
        return bound_posterior(*h.chunk(2, dim=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean ``E_q[z | x]``: ``(B, *event) -> (B, Z)``."""
        return self.posterior(x)[0]

    def decoder_params(self, z: torch.Tensor) -> torch.Tensor:
        """``(N, Z) -> (N, P, *event)``, the parameters of p(x|z) (see ``networks.Observation``)."""
        return self.decoder(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's mode (mean for a Gaussian): ``(N, Z) -> (N, *event)``, int64 levels for discrete data."""
        return self.observation.mode(self.decoder(z))

    def _randn(self, shape, generator, like: torch.Tensor) -> torch.Tensor:
        device = generator.device if generator is not None else like.device
        return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)

    # ------------------------------------------------------------------ bounds
    def _terms(self, x, generator=None):
        """One reparameterised sample: reconstruction log-likelihood ``(B,)`` and KL per dimension ``(B, Z)``."""
        mean, log_var = self.posterior(x)
        z = mean + torch.exp(0.5 * log_var) * self._randn(mean.shape, generator, mean)
        recon = self.observation.log_likelihood(x, self.decoder(z))
        return recon, gaussian_kl_standard(mean, log_var)

    def elbo(self, x: torch.Tensor, context=None, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """Single-sample estimate of the ELBO ``E_q[log p(x|z)] - KL(q(z|x) || N(0, I))`` (analytic KL), nats.

        Args:
            x: ``(B, *event)``.
            generator: the randomness of the reparameterisation.
        Returns:
            ``(B,)`` nats (an unbiased estimate of the ELBO, itself a lower bound on log p(x)).
        """
        recon, kl = self._terms(x, generator)
        return recon - kl.sum(1)

    def log_weights(self, x: torch.Tensor, num_samples: int, *, generator: torch.Generator | None = None,
                    max_rows: int | None = None) -> torch.Tensor:
        """Log importance weights ``log p(x|z_k) + log p(z_k) - log q(z_k|x)``, ``z_k ~ q(z|x)``.

        Args:
            x: ``(B, *event)``.
            num_samples: K.
            generator: the randomness of the samples.
            max_rows: samples x examples per decoder pass (default: scaled so that the pass stays small).
        Returns:
            ``(K, B)`` nats.
        """
        if num_samples < 1:
            raise UserError(f"num_samples must be >= 1, got {num_samples}")
        mean, log_var = self.posterior(x)
        B, Z = mean.shape
        std = torch.exp(0.5 * log_var)
        rows = max_rows or max(B, _ROW_BUDGET // max(1, self.spec.num_dims * self.observation.params_per_dim))
        chunk = max(1, rows // B)
        out = []
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            z = mean + std * self._randn((k, B, Z), generator, mean)  # (k, B, Z)
            flat = z.reshape(k * B, Z)
            xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * B, *x.shape[1:])  # (k * B, *event)
            log_px = self.observation.log_likelihood(xs, self.decoder(flat)).view(k, B)
            log_pz = standard_normal_log_prob(flat).view(k, B)
            log_qz = diag_gaussian_log_prob(flat, mean.repeat(k, 1), 0.5 * log_var.repeat(k, 1)).view(k, B)
            out.append(log_px + log_pz - log_qz)
        return torch.cat(out, 0)

    def iwae_bound(self, x: torch.Tensor, num_samples: int, *, generator: torch.Generator | None = None,
                   max_rows: int | None = None) -> torch.Tensor:
        """The K-sample importance-weighted bound ``log (1/K) sum_k w_k`` (Burda et al., eq. 8): ``(B,)`` nats."""
        return iwae_bound(self.log_weights(x, num_samples, generator=generator, max_rows=max_rows), dim=0)

    def log_prob(self, x: torch.Tensor, context=None, *, num_samples: int = 100,
                 generator: torch.Generator | None = None, max_rows: int | None = None) -> torch.Tensor:
        """Importance-sampled estimate of log p(x) with ``num_samples`` samples from q(z|x): ``(B,)`` nats.

        The same quantity as ``iwae_bound``: ``exp`` of it is an unbiased estimate of p(x), so by Jensen the
        estimate itself is low in expectation; the gap shrinks as ``num_samples`` grows (Burda et al., theorem 1).
        Samples are drawn in chunks of at most ``max_rows`` decoder rows, so K = 1000 fits in memory.
        """
        return self.iwae_bound(x, num_samples, generator=generator, max_rows=max_rows)

    def loss(self, x: torch.Tensor, context=None) -> dict:
        """Negative ELBO per dimension (with ``beta`` and ``free_bits`` applied; in training mode the KL weight
        follows the warm-up, ``kl_weight()``) as ``"loss"``.

        Returns:
            ``"loss"``; ``"nll"``: the negative ELBO (beta = 1, no free bits) in nats per example, batch mean;
            an upper bound on the NLL, so the bits/dim derived from it bound the true bits/dim from above;
            ``"recon"``: ``-E_q log p(x|z)`` (nats per example); ``"kl"``: ``KL(q(z|x) || p(z))`` (nats per example).
        """
        c = self.config
        recon, kl = self._terms(x)
        kl_sum = kl.sum(1).mean()
        kl_term = free_bits_kl(kl, c.free_bits) if c.free_bits > 0 else kl_sum
        nll = kl_sum - recon.mean()
        loss = (self._training_kl_weight() * kl_term - recon.mean()) / self.spec.num_dims
        return {"loss": loss, "nll": nll, "recon": -recon.mean(), "kl": kl_sum}

    @torch.no_grad()
    def posterior_diagnostics(self, x: torch.Tensor, batch_size: int = 512) -> dict:
        """Posterior-collapse diagnostics over a set of examples.

        Args:
            x: ``(N, *event)``, N >= 2.
        Returns:
            ``kl_per_dim`` ``(Z,)``: the mean KL of each latent dimension (nats); ``mean_variance`` ``(Z,)``:
            ``Cov_x(E_q[z_i | x])``; ``active_units``: how many exceed 0.01 (Burda et al. 2016, section 5.2).
        """
        if len(x) < 2:
            raise UserError("posterior_diagnostics needs at least 2 examples")
        means, kls = [], []
        for chunk in x.split(batch_size):
            mean, log_var = self.posterior(chunk)
            means.append(mean.double())
            kls.append(gaussian_kl_standard(mean, log_var).double())
        means, kls = torch.cat(means), torch.cat(kls)
        variance = means.var(0, unbiased=False)
        return {"kl_per_dim": kls.mean(0), "mean_variance": variance, "active_units": int((variance > 0.01).sum())}

    #: Importance samples per example for the log-likelihood estimate reported at each evaluation.
    eval_importance_samples: int = 100

    @torch.no_grad()
    def evaluation_metrics(self, dataset, batch_size: int = 256) -> dict:
        """Metrics the training task adds to each evaluation (the ``Task.evaluate`` hook).

        Returns:
            ``iwae_nll``: mean ``-log_prob(x, num_samples=eval_importance_samples)`` in nats (an estimate of the NLL
            that is tighter than the ELBO; biased high, Burda et al. 2016), ``iwae_bpd`` for discrete data, and
            ``active_units`` (posterior-collapse diagnostic, Burda et al. 2016 section 5.2).
        """
        device = self._param_device()
        x = dataset.x
        total = 0.0
        for chunk in x.split(batch_size):
            total += float(-self.log_prob(chunk.to(device), num_samples=self.eval_importance_samples).double().sum())
        nll = total / len(x)
        out = {"iwae_nll": nll}
        if self.spec.is_discrete:
            out["iwae_bpd"] = float(self.bits_per_dim(nll, self.spec.num_dims))
        if len(x) >= 2:
            out["active_units"] = self.posterior_diagnostics(x.to(device))["active_units"]
        return out

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
               use_decoder_noise: bool = True) -> torch.Tensor:
        """``z ~ N(0, I)``, then ``x ~ p(x|z)`` (or the decoder's mode/mean when ``use_decoder_noise`` is off).

        Returns:
            ``(num_samples, *event)``: int64 levels for discrete data, floats for continuous data.
        """
        like = torch.empty((), dtype=self._param_dtype(), device=self._param_device())
        z = self._randn((num_samples, self.config.latent_dim), generator, like)
        params = self.decoder(z)
        return self.observation.sample(params, generator) if use_decoder_noise else self.observation.mode(params)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's mode at the posterior mean: ``(B, *event) -> (B, *event)``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def interpolate(self, x0: torch.Tensor, x1: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decode ``(1 - t) E_q[z|x0] + t E_q[z|x1]`` for ``steps`` values of t from 0 to 1 (decoder mode).

        Args:
            x0, x1: ``(B, *event)``.
            steps: points along the line, >= 2.
        Returns:
            ``(B, steps, *event)``.
        """
        if steps < 2:
            raise UserError(f"steps must be >= 2, got {steps}")
        z0, z1 = self.encode(x0), self.encode(x1)
        t = torch.linspace(0, 1, steps, dtype=z0.dtype, device=z0.device)[None, :, None]  # (1, S, 1)
        z = (1 - t) * z0[:, None] + t * z1[:, None]  # (B, S, Z)
        out = self.decode(z.reshape(-1, z.shape[-1]))  # (B * S, *event)
        return out.view(z0.shape[0], steps, *self.spec.shape)


@dataclass
class IWAEConfig(VAEConfig):
    """Hyperparameters of ``IWAE``: those of ``VAEConfig`` (without ``beta``, ``free_bits`` and ``kl_warmup_steps``,
    which belong to the single-sample ELBO and must stay off) plus

    Attributes:
        num_importance_samples: K, the samples of the training bound (named so as not to clash with the
            training option ``num_samples``).
    """

    num_importance_samples: int = 5
    kl_warmup_steps: int = 0

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, 1, "num_importance_samples")
        if self.beta != 1.0 or self.free_bits != 0.0 or self.kl_warmup_steps != 0:
            raise UserError("iwae trains on the K-sample bound: beta, free_bits and kl_warmup_steps do not apply "
                            "(use vae)")


class IWAE(VAE):
    """The VAE's networks trained on the K-sample importance-weighted bound (K = ``num_importance_samples``)."""

    Config = IWAEConfig

    def loss(self, x: torch.Tensor, context=None) -> dict:
        """Negative K-sample bound per dimension as ``"loss"``.

        Returns:
            ``"loss"``; ``"nll"``: the negative K-sample bound in nats per example (batch mean; an upper bound on
            the NLL); ``"recon"`` and ``"kl"`` of one reparameterised sample, as for ``VAE`` (diagnostics only).
        """
        bound = self.iwae_bound(x, self.config.num_importance_samples)
        nll = -bound.mean()
        with torch.no_grad():
            recon, kl = self._terms(x)
        return {"loss": nll / self.spec.num_dims, "nll": nll, "recon": -recon.mean(), "kl": kl.sum(1).mean()}
