"""Latent diffusion: a ``ddpm`` over the latents of a frozen, trained VAE or autoencoder, decoded to images.

``dulab train vae ...`` (or ``iwae``, ``autoencoder``) trains the first stage; ``dulab train latent_ddpm --set
latent_run=RUN`` then fits the existing ``DDPM`` (unchanged: an MLP denoiser over the latent vectors, its schedule,
samplers, bound and classifier-free guidance) to the first stage's latents of the training images. As with
``vq_prior``, the model trains on the images themselves: ``loss(x)`` encodes them with the frozen first stage (its
parameters have ``requires_grad`` off, so the training task leaves them out of the optimiser) and returns the
DDPM's loss on the latents, so the training engine needs no change. ``sample()`` runs the reverse process in latent
space and decodes: images end to end, with every sampler option of ``ddpm`` (``num_steps``, ``sampler``, ``eta``,
``guidance_scale`` for ``conditional=true``).

Which latents: a VAE's draw ``z ~ q(z | x)`` (``posterior=sample``, the default: the diffusion then models the
aggregate posterior, the prior that maximises the ELBO) or its mean (``posterior=mean``); an autoencoder's code.
Latents are standardised before diffusion, ``u = (z - shift) / scale``: ``shift`` is the per-dimension mean and
``scale`` one standard deviation over all dimensions, estimated on the first training batch (Rombach et al.
section 4.3.2 and appendix G rescale by the standard deviation of the first batch's latents) and stored as buffers
(so they travel with the checkpoint; the EMA copy, which averages floating buffers from their initial 0 and 1
with the warm-up decay, gives the initial values a weight below 2e-3 after 4 steps and below 1e-12 after 100);
``fit_latent_stats(x)`` sets them from any data instead,
``latent_scale > 0`` fixes the scale.

Likelihood (VAE first stage only): with the diffusion as the prior, ``log p(x) >= E_q[log p(x | z) + log p(z) -
log q(z | x)]`` and ``log p(z) >= -L(u) - Z log scale`` (``L``: the DDPM's negative bound on the standardised
latent, whose Jacobian is ``-Z log scale``). ``log_prob(x, num_samples=K)`` averages K single-draw estimates of
this bound. It averages, not logsumexp: ``L`` is itself a stochastic (stratified) estimate, and inside a logsumexp
``E[exp(-L_hat)] >= exp(-L)`` would no longer keep the importance-weighted estimate below ``log p(x)``. An
autoencoder has no likelihood: ``log_prob`` then raises and evaluation reports the latent loss only.

Where the frozen first stage lives: its weights are part of this module's state dict and its architecture is
copied into ``first_stage`` (filled automatically); ``latent_run`` is stored for provenance only, so the first-stage
run may be moved or deleted after training.

References:
    Rombach, Blattmann, Lorenz, Esser, Ommer. "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR
    2022, arXiv:2112.10752.
    Vahdat, Kreis, Kautz. "Score-based Generative Modeling in Latent Space", NeurIPS 2021, arXiv:2106.05931 (the
    ELBO with a score-based prior over a VAE's latents).
    Ho, Jain, Abbeel. "Denoising Diffusion Probabilistic Models", NeurIPS 2020, arXiv:2006.11239.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from dulab.data.base import DataSpec
from dulab.distributions.gaussian import diag_gaussian_log_prob
from dulab.errors import UserError
from dulab.models.base import DensityModel
from dulab.models.diffusion.ddpm import DDPM, DDPMConfig
from dulab.models.latent.autoencoder import Autoencoder
from dulab.models.latent.vae import IWAE, VAE

__all__ = ["LatentDDPM", "LatentDDPMConfig"]

_FIRST_STAGES = (VAE, IWAE, Autoencoder)  # exact types: hierarchical/pixel VAEs have other latents and decoders


@dataclass
class LatentDDPMConfig(DDPMConfig):
    """Hyperparameters of ``LatentDDPM``: every field of ``DDPMConfig`` (the diffusion over the latents; its
    ``architecture`` resolves to the MLP denoiser, ``prediction=auto`` to ``v``; ``variance`` defaults to
    ``large``, the optimal fixed reverse variance for data near N(0, I) (Ho et al. 2020, section 3.2), which
    standardised VAE latents are: with the exact denoiser of N(0, 1) data and the cosine schedule the bound exceeds
    the entropy by 0.53 nats per dimension with ``small`` and 0.15 with ``large``) plus

    Attributes:
        latent_run: the run directory of a trained ``vae``, ``iwae`` or ``autoencoder``.
        posterior: VAE first stage: train on draws ``z ~ q(z | x)`` (``sample``) or on the posterior mean.
        latent_scale: the standardising scale of the latents (0: estimated on the first training batch).
        first_stage: filled in automatically (the frozen model's registry name, hyperparameters and data spec as
            JSON, so the run rebuilds it without ``latent_run``); leave it empty.
    """

    variance: Literal["small", "large"] = "large"
    latent_run: str = ""
    posterior: Literal["sample", "mean"] = "sample"
    latent_scale: float = 0.0
    first_stage: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.latent_scale < 0:
            raise UserError(f"latent_scale must be >= 0 (0: from the first batch), got {self.latent_scale}")
        if self.architecture == "unet":
            raise UserError("latent_ddpm diffuses latent vectors: architecture must be auto or mlp")


def _first_stage_from_config(config: LatentDDPMConfig):
    """The frozen first stage: from ``first_stage`` (architecture only; the weights come from this model's
    checkpoint) or loaded from the ``latent_run`` directory (architecture and weights)."""
    from dulab.api import build_model

    if config.first_stage:
        try:
            info = json.loads(config.first_stage)
            return build_model(info["name"], DataSpec.from_dict(info["spec"]), **info["hparams"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"first_stage is not what latent_ddpm writes there ({e}); leave it empty") from None
    if not config.latent_run:
        raise UserError("latent_ddpm needs a trained first stage: --set latent_run=RUN, the run directory of"
                        " `dulab train vae ...` (or iwae, autoencoder)")
    path = Path(config.latent_run).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise UserError(f"latent_run={config.latent_run!r} is not a run directory (no config.json); train one with"
                        " `dulab train vae --data DATA --out RUN`")
    from dulab.training.run import load  # reading a run is the training layer's job; imported late (one way)

    config.latent_run = str(path)
    return load(path)


class LatentDDPM(DensityModel):
    """A ``DDPM`` over the latents of a frozen VAE / autoencoder; samples images by decoding.

    Args:
        spec: the data (the same data the first stage was trained on).
        config: ``LatentDDPMConfig``.
        first_stage: a trained ``VAE``/``IWAE``/``Autoencoder`` to use instead of ``config.latent_run`` (copied and
            frozen).
    """

    Config = LatentDDPMConfig
    family = "diffusion"
    # an MLP over a few latent dimensions: epochs are cheap, the evaluation (bound over 20 strata) is too
    train_defaults = {"epochs": 200, "lr": 1e-3, "batch_size": 64, "ema_decay": 0.995, "warmup_steps": 100,
                      "grad_clip": 1.0, "eval_every": 20}

    @classmethod
    def check_spec(cls, spec, config):
        if config.conditional and not spec.num_classes:
            raise UserError("latent_ddpm with conditional=true needs labelled data (the dataset has no num_classes)")

    def __init__(self, spec, config=None, *, first_stage=None):
        super().__init__(spec, config)
        from dulab.api import model_hparams, model_name_of

        c = self.config = dataclasses.replace(self.config)  # filled in below: never the caller's object
        stage = copy.deepcopy(first_stage) if first_stage is not None else _first_stage_from_config(c)
        if type(stage) not in _FIRST_STAGES:
            raise UserError(f"latent_run must hold a vae, iwae or autoencoder run, it holds a {type(stage).__name__}")
        if (stage.spec.shape, stage.spec.kind, stage.spec.num_levels) != (spec.shape, spec.kind, spec.num_levels):
            raise UserError(f"the first stage was trained on {stage.spec.describe()} data, these are "
                            f"{spec.describe()}: train latent_ddpm on the first stage's dataset")
        c.first_stage = json.dumps({"name": model_name_of(stage), "hparams": model_hparams(stage),
                                    "spec": stage.spec.to_dict()}, sort_keys=True)
        for p in stage.parameters():
            p.requires_grad_(False)
        self.first_stage = stage.eval()
        self.has_likelihood = isinstance(stage, VAE)
        Z = stage.config.latent_dim if self.has_likelihood else stage.config.code_dim
        self.latent_dim = Z
        self.latent_spec = DataSpec((Z,), "continuous", num_classes=spec.num_classes)
        inner = {f.name: getattr(c, f.name) for f in dataclasses.fields(DDPMConfig)}
        inner["architecture"], inner["data_scale"] = "mlp", 1.0
        self.diffusion = DDPM(self.latent_spec, DDPMConfig(**inner))
        self.is_conditional = self.diffusion.is_conditional
        self.num_classes = self.diffusion.num_classes
        self.register_buffer("latent_shift", torch.zeros(Z))
        self.register_buffer("latent_scale", torch.ones(()) * (c.latent_scale or 1.0))
        self.register_buffer("stats_fitted", torch.tensor(False))

    def train(self, mode: bool = True):
        super().train(mode)
        self.first_stage.eval()  # frozen: never in training mode
        return self

    # ------------------------------------------------------------------ latents
    @torch.no_grad()
    def latents(self, x: torch.Tensor, *, generator: torch.Generator | None = None,
                posterior: str | None = None) -> torch.Tensor:
        """The first stage's latents of ``x``: ``(B, Z)`` (a VAE's draw or mean per ``posterior``)."""
        self.check_input(x)
        if not self.has_likelihood:
            return self.first_stage.encode(x)
        mean, log_var = self.first_stage.posterior(x)
        if (posterior or self.config.posterior) == "mean":
            return mean
        return mean + torch.exp(0.5 * log_var) * self.first_stage._randn(mean.shape, generator, mean)

    @torch.no_grad()
    def fit_latent_stats(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> None:
        """Set ``shift`` (per-dimension mean) and, unless ``latent_scale`` is fixed, ``scale`` (one standard
        deviation over all dimensions) from the latents of ``x`` the diffusion trains on (VAE: draws or means per
        ``posterior``; at least 2 examples)."""
        if len(x) < 2:
            raise UserError("fit_latent_stats needs at least 2 examples")
        self._set_stats(self.latents(x, generator=generator))

    @torch.no_grad()
    def _set_stats(self, z: torch.Tensor) -> None:
        z = z.to(self.latent_shift.dtype)
        self.latent_shift.copy_(z.mean(0))
        if self.config.latent_scale == 0:
            self.latent_scale.copy_((z - z.mean(0)).std().clamp(min=1e-6))
        self.stats_fitted.fill_(True)

    def standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_shift) / self.latent_scale

    def unstandardise(self, u: torch.Tensor) -> torch.Tensor:
        return u * self.latent_scale + self.latent_shift

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The first stage's latent (VAE: posterior mean; autoencoder: code), ``(B, Z)``."""
        return self.latents(x, posterior="mean")

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The first stage's decoder (its mode): ``(N, Z) -> (N, *event)``."""
        return self.first_stage.decode(z)

    # ------------------------------------------------------------------ training
    def loss(self, x: torch.Tensor, context=None) -> dict:
        """The DDPM's loss on the standardised latents of ``x`` (``"loss"``; the first training batch also sets
        the latent statistics when they are not fitted yet)."""
        z = self.latents(x)
        if self.training and not bool(self.stats_fitted):
            self._set_stats(z)
        u = self.standardise(z)
        return self.diffusion.loss(u, context)

    # ------------------------------------------------------------------ likelihood
    def latent_log_prob(self, z: torch.Tensor, context=None, *, num_bound_steps: int | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """The diffusion's lower bound on ``log p(z)`` of unstandardised latents ``(B, Z) -> (B,)`` nats (the
        DDPM's bound on ``u`` plus the Jacobian ``-Z log scale``)."""
        u = self.standardise(z)
        return (self.diffusion.log_prob(u, context, num_bound_steps=num_bound_steps, generator=generator)
                - self.latent_dim * torch.log(self.latent_scale))

    def log_prob(self, x: torch.Tensor, context=None, *, num_samples: int = 1, num_bound_steps: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """A lower bound on ``log p(x)`` (VAE first stage): the mean of ``num_samples`` single-draw estimates of
        ``log p(x | z) + log p(z) - log q(z | x)``, ``z ~ q(z | x)``, with the diffusion's bound for ``log p(z)``
        (module docstring): ``(B,)`` nats."""
        if not self.has_likelihood:
            raise UserError("this latent_ddpm's first stage is an autoencoder, which has no likelihood: use a vae"
                            " or iwae run as latent_run for log_prob / bits per dimension")
        if num_samples < 1:
            raise UserError(f"num_samples must be >= 1, got {num_samples}")
        self.check_input(x)
        vae = self.first_stage
        mean, log_var = vae.posterior(x)
        total = torch.zeros(x.shape[0], dtype=mean.dtype, device=mean.device)
        for _ in range(num_samples):
            z = mean + torch.exp(0.5 * log_var) * vae._randn(mean.shape, generator, mean)
            recon = vae.observation.log_likelihood(x, vae.decoder(z))
            log_q = diag_gaussian_log_prob(z, mean, 0.5 * log_var)
            prior = self.latent_log_prob(z, context, num_bound_steps=num_bound_steps, generator=generator)
            total = total + recon + prior - log_q
        return total / num_samples

    @torch.no_grad()
    def evaluation_metrics(self, dataset, batch_size: int = 256) -> dict:
        """At each evaluation (and ``dulab eval``), VAE first stage: ``nll`` (the negative bound of ``log_prob``
        with ``eval_bound_steps`` strata, one draw per example), ``bpd`` for discrete data, ``latent_nll`` (the
        diffusion's negative bound on ``log p(z)`` of the posterior draws) and ``prior_kl_gain``: how many nats the
        diffusion prior gains over the first stage's N(0, I) prior on the same draws. Autoencoders: nothing."""
        if not self.has_likelihood:
            return {}
        device = self._param_device()
        c = self.config
        n = len(dataset) if c.eval_bound_examples == 0 else min(len(dataset), c.eval_bound_examples)
        ys = dataset.labels_or_default()[:n] if self.is_conditional else None
        sums = {"nll": 0.0, "latent_nll": 0.0, "prior_kl_gain": 0.0}
        vae = self.first_stage
        for start in range(0, n, batch_size):
            xb = dataset.x[start:start + batch_size].to(device)
            yb = ys[start:start + batch_size].to(device) if ys is not None else None
            if yb is not None and (yb < 0).any():
                yb = torch.where(yb < 0, self.diffusion._null(len(yb), device), yb)
            mean, log_var = vae.posterior(xb)
            z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
            recon = vae.observation.log_likelihood(xb, vae.decoder(z))
            log_q = diag_gaussian_log_prob(z, mean, 0.5 * log_var)
            prior = self.latent_log_prob(z, yb, num_bound_steps=c.eval_bound_steps)
            normal = diag_gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
            sums["nll"] += float(-(recon + prior - log_q).double().sum())
            sums["latent_nll"] += float(-prior.double().sum())
            sums["prior_kl_gain"] += float((prior - normal).double().sum())
        out = {k: v / n for k, v in sums.items()}
        if self.spec.is_discrete:
            out["bpd"] = float(self.bits_per_dim(out["nll"], self.spec.num_dims))
        return out

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_latents(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
                       **kwargs) -> torch.Tensor:
        """Latents ``(N, Z)`` from the reverse process (``DDPM.sample``'s options: ``num_steps``, ``sampler``,
        ``eta``, ``guidance_scale``, ``x_T``), unstandardised."""
        u = self.diffusion.sample(num_samples, generator=generator, context=context, **kwargs)
        return self.unstandardise(u)

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
               num_steps: int | None = None, sampler: str | None = None, eta: float | None = None,
               guidance_scale: float | None = None, use_decoder_noise: bool = False) -> torch.Tensor:
        """Images end to end: latents from the diffusion, then the frozen decoder's mode (a draw from ``p(x | z)``
        with ``use_decoder_noise``, VAE first stage). Returns ``(N, *event)``."""
        z = self.sample_latents(num_samples, generator=generator, context=context, num_steps=num_steps,
                                sampler=sampler, eta=eta, guidance_scale=guidance_scale)
        if use_decoder_noise:
            if not self.has_likelihood:
                raise UserError("an autoencoder has no decoder noise: use_decoder_noise needs a vae first stage")
            return self.first_stage.observation.sample(self.first_stage.decoder(z), generator)
        return self.decode(z)
