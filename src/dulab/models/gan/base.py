"""The shared base of the GAN family: a generator G and a discriminator (critic) D, trained by ``AdversarialTask``.

A GAN learns a sampler ``x = G(z)``, ``z ~ N(0, I)``, against a discriminator that tells real data from samples
(Goodfellow et al. 2014). The model only holds the two networks and the map between the data's representation and
the one D sees; the recipe (two optimisers, ``n_critic``, penalties, clipping) is ``AdversarialTask``'s, and the
objectives are the pure functions of ``dulab.losses.gan``.

The interface the task relies on (a subclass provides ``build_generator`` and ``build_discriminator``; the rest
is here):

* ``generator_parameters()`` / ``discriminator_parameters()``: the two disjoint parameter sets;
* ``sample_latent(num_samples, *, generator=None) -> (B, latent_dim)``: ``z ~ N(0, I)``;
* ``generate(z) -> (B, *event)``: samples in D's input representation (float; ``[-1, 1]`` for discrete data);
* ``discriminate(x) -> (B,)``: D's logits (critic values) for inputs in that representation;
* ``to_critic_input(x)`` / ``from_critic_input(x)``: data <-> D's representation. Discrete data (int64 levels in
  ``[0, L)``) map affinely to ``[-1, 1]`` (``2 x / (L - 1) - 1``) and back by rounding to the nearest level;
  continuous data pass through as float;
* ``config``: a ``GANConfig`` (loss kind, ``n_critic``, clipping, penalty weights, per-network lr/betas);
* ``generator_regularizer() -> Tensor | None``: an extra term the task adds to G's loss (default ``None``; BigGAN's
  orthogonal regularisation);
* class-conditional models (``is_conditional = True``) take ``context=`` labels ``(B,)`` in ``generate`` and
  ``discriminate``; the task passes the batch's labels to both (fakes are drawn for the real batch's labels).

References:
    Goodfellow, Pouget-Abadie, Mirza, Xu, Warde-Farley, Ozair, Courville, Bengio. "Generative Adversarial
    Networks", 2014, arXiv:1406.2661.
    Heusel, Ramsauer, Unterthiner, Nessler, Hochreiter. "GANs Trained by a Two Time-Scale Update Rule Converge to
    a Local Nash Equilibrium", 2017, arXiv:1706.08500 (TTUR: separate learning rates for G and D).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dulab.config import check_choices, require_at_least
from dulab.errors import UserError
from dulab.losses.gan import LossKind
from dulab.models.base import Model

__all__ = ["GANConfig", "GANModel"]


@dataclass
class GANConfig:
    """Hyperparameters every GAN shares (the adversarial recipe); subclasses add the networks' own.

    Attributes:
        latent_dim: size of ``z``.
        loss: the objective (``dulab.losses.gan``).
        n_critic: discriminator steps per generator step.
        clip_value: weight clipping bound for ``loss="wasserstein"`` (Arjovsky et al. 2017 use 0.01; 0 disables);
            ignored by the other losses.
        gp_weight: lambda of the WGAN-GP gradient penalty (0 disables; Gulrajani et al. 2017 use 10).
        r1_gamma: gamma of the R1 penalty ``gamma / 2 E||grad D(x)||^2`` on real data (0 disables; ``None``, where a
            model allows it, lets the model choose from the data's spec:
            ``GANModel.default_r1_gamma``, 0 unless a model says otherwise).
        r1_every: lazy R1 (Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN", Sec. 3.1):
            the penalty only on every ``r1_every``-th discriminator step, weighted ``r1_every * gamma / 2`` so that
            its average weight is unchanged (1: every step).
        lr_g, lr_d: learning rates of G and D (``None``: the ``TrainConfig`` lr); different values give TTUR.
        betas_g, betas_d: Adam betas of G and D (``None``: the ``TrainConfig`` betas).
        optimizer: ``adam`` (AdamW with the ``TrainConfig`` weight decay) or ``rmsprop`` (as WGAN with clipping;
            betas unused).

    Improved training (``dulab.models.gan.tricks``; every one off by default, any combination with any model):

    Attributes:
        feature_matching: G minimises ``||mean f(x_real) - mean f(G(z))||^2`` over D's last hidden features
            instead of its adversarial loss (Salimans et al. 2016).
        minibatch_kernels: number of minibatch-discrimination kernels ``B`` before D's last linear layer (0: off).
        minibatch_kernel_dim: their dimension ``C``.
        historical_averaging: weight lambda of ``||theta - mean of past theta||^2`` for each player (0: off).
        label_smoothing: one-sided label smoothing: D's real target is ``1 - label_smoothing`` (logistic losses).
        virtual_batch_norm: size of the fixed reference batch of latents for virtual batch norm in G (0: off;
            G's batch norm becomes virtual batch norm).
        instance_noise: std of Gaussian noise added to every input of D (0: off), annealed linearly to 0 over
            ``instance_noise_steps`` D steps (0: constant).
        vdb_bottleneck: size of the variational discriminator bottleneck's code (0: off; Peng et al. 2019).
        vdb_info_constraint: its bound ``I_c`` on the mean KL (nats).
        vdb_beta_step: the dual step size ``alpha_beta`` of the KL multiplier beta.
        vdb_beta_init: beta's starting value.
        pack: PacGAN packing degree ``m`` (Lin et al. 2018): D scores ``m`` samples at once, all real or all
            fake, concatenated (vectors: along the features, images: along the channels), so the batch of ``B``
            gives ``B // m`` logits (a remainder of ``B mod m`` examples is left out). 1: off. For the models whose
            discriminator is built for it (``gan``, ``dcgan``, ``wgan``, ``sngan``); not with the gradient
            penalties (their norm would be per packed group) nor class-conditional models.
    """

    latent_dim: int = 64
    loss: LossKind = "non_saturating"
    n_critic: int = 1
    clip_value: float = 0.01
    gp_weight: float = 0.0
    r1_gamma: float | None = 0.0
    r1_every: int = 1
    lr_g: float | None = None
    lr_d: float | None = None
    betas_g: tuple[float, float] | None = None
    betas_d: tuple[float, float] | None = None
    optimizer: Literal["adam", "rmsprop"] = "adam"
    feature_matching: bool = False
    minibatch_kernels: int = 0
    minibatch_kernel_dim: int = 5
    historical_averaging: float = 0.0
    label_smoothing: float = 0.0
    virtual_batch_norm: int = 0
    instance_noise: float = 0.0
    instance_noise_steps: int = 0
    vdb_bottleneck: int = 0
    vdb_info_constraint: float = 0.5
    vdb_beta_step: float = 1e-5
    vdb_beta_init: float = 0.0
    pack: int = 1

    def __post_init__(self):
        from dulab.models.gan.tricks import check_tricks

        check_choices(self)
        check_tricks(self)
        require_at_least(self, 1, "latent_dim", "n_critic", "pack", "r1_every")
        if self.pack > 1 and self.gp_weight > 0:
            raise UserError("pack > 1 (PacGAN) does not go with gp_weight: the penalty's unit gradient norm would be"
                            " per packed group of examples")
        require_at_least(self, 0.0, "clip_value", "gp_weight")
        if self.r1_gamma is not None:  # None: the model chooses (GANModel.default_r1_gamma)
            require_at_least(self, 0.0, "r1_gamma")
        for name in ("lr_g", "lr_d"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UserError(f"{name} must be > 0 (or None for the TrainConfig lr), got {value}")
        for name in ("betas_g", "betas_d"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(b) for b in value)
                if len(value) != 2 or not all(0 <= b < 1 for b in value):
                    raise UserError(f"{name} must be two numbers in [0, 1), got {getattr(self, name)}")
                setattr(self, name, value)


class GANModel(Model):
    """A generator and a discriminator; subclasses build both networks.

    Subclass obligations: ``Config`` (a ``GANConfig`` subclass), ``build_generator() -> nn.Module`` mapping
    ``(B, latent_dim)`` to ``(B, *event)`` in D's representation, ``build_discriminator() -> nn.Module`` mapping
    ``(B, *event)`` to ``(B,)`` or ``(B, 1)`` logits; optionally ``check_spec``.
    """

    Config = GANConfig
    family = "gan"
    task = "adversarial"
    has_likelihood = False
    #: whether ``build_discriminator`` sizes D's input for ``config.pack`` packed examples (PacGAN)
    supports_packing = False

    def __init__(self, spec, config=None):
        from dulab.models.gan import tricks

        config = self.Config() if config is None else config
        if isinstance(config, GANConfig) and config.r1_gamma is None:
            # the model's choice (``default_r1_gamma``); a copy, so that the caller's config stays as given
            config = dataclasses.replace(config, r1_gamma=self.default_r1_gamma(spec))
        super().__init__(spec, config)
        if self.config.pack > 1 and (not self.supports_packing or self.is_conditional):
            raise UserError(f"{type(self).__name__.lower()} does not support pack > 1 (PacGAN packing); use gan,"
                            " dcgan, wgan or sngan")
        self.G = self.build_generator()
        self.D = tricks.wrap_discriminator(self.build_discriminator(), self.config)  # minibatch discr., VDB
        if self.config.virtual_batch_norm > 0:
            if self.is_conditional:
                raise UserError("virtual_batch_norm is for unconditional generators")
            reference = self.sample_latent(self.config.virtual_batch_norm)  # global RNG: fixed from the seed
            self.G = tricks.wrap_generator(self.G, self.config, reference)

    @classmethod
    def default_r1_gamma(cls, spec) -> float:
        """The R1 gamma that ``r1_gamma=None`` stands for, from the data's spec (0: no R1)."""
        return 0.0

    def build_generator(self) -> nn.Module:
        raise NotImplementedError

    def build_discriminator(self) -> nn.Module:
        raise NotImplementedError

    # -- the task's interface
    def generator_parameters(self) -> list[nn.Parameter]:
        return list(self.G.parameters())

    def discriminator_parameters(self) -> list[nn.Parameter]:
        return list(self.D.parameters())

    def sample_latent(self, num_samples: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``z ~ N(0, I)``, ``(num_samples, latent_dim)``, on the model's device."""
        return torch.randn(num_samples, self.config.latent_dim, generator=generator, device=self._param_device(),
                           dtype=self._param_dtype())

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """G(z): ``(B, latent_dim) -> (B, *event)`` in D's representation."""
        return self.G(z).reshape(z.shape[0], *self.spec.shape)

    def pack_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """PacGAN: ``(B, *event) -> (B // m, m * event[0], *event[1:])``, groups of ``m`` consecutive examples
        concatenated along the first event axis (features or channels); the identity for ``pack = 1``."""
        m = self.config.pack
        if m == 1:
            return x
        n = (x.shape[0] // m) * m
        if n == 0:
            raise UserError(f"pack={m} needs batches of at least {m} examples, got {x.shape[0]}")
        x = x[:n].reshape(n // m, m, *x.shape[1:])
        return x.reshape(n // m, m * x.shape[2], *x.shape[3:])

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """D(x): ``(B, *event)`` in D's representation -> logits ``(B,)`` (``(B // pack,)`` with packing)."""
        x = self.pack_inputs(x)
        return self.D(x).reshape(x.shape[0])

    def discriminator_features(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """D's last hidden features ``(B, F)`` (the input of its last linear layer), for feature matching."""
        from dulab.models.gan.tricks import discriminator_features

        return discriminator_features(self.D, self.pack_inputs(x))

    def set_training_step(self, step: int) -> None:
        """Called by the task before each training step (progressive growing sets its fade-in here)."""

    def generator_regularizer(self) -> torch.Tensor | None:
        """An extra scalar the task adds to G's loss in each G step (weighted already), or ``None``."""
        return None

    def to_critic_input(self, x: torch.Tensor) -> torch.Tensor:
        """Data ``(B, *event)`` (int64 levels or float) to D's float representation."""
        if self.spec.is_discrete:
            # in place on a fresh copy: one allocation per batch instead of three, the same values bit for bit
            return x.to(self._param_dtype(), copy=True).mul_(2.0 / (self.spec.num_levels - 1)).sub_(1.0)
        return x.to(self._param_dtype())

    def from_critic_input(self, x: torch.Tensor) -> torch.Tensor:
        """D's representation to data: nearest int64 level for discrete data, unchanged float otherwise."""
        if self.spec.is_discrete:
            levels = torch.round((x + 1.0) * ((self.spec.num_levels - 1) / 2.0))
            return levels.clamp(0, self.spec.num_levels - 1).long()
        return x

    # -- the family's public methods
    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """Draw ``(num_samples, *event)`` samples in the data's representation (int64 levels for discrete data).

        Uses G as it is (call ``eval()`` first for batch-norm running statistics).
        """
        if context is not None and not self.is_conditional:
            raise UserError(f"{type(self).__name__} is unconditional: call sample() without context=")
        z = self.sample_latent(num_samples, generator=generator)
        if self.is_conditional:
            return self.from_critic_input(self.generate(z, context=self._check_context(context, num_samples)))
        return self.from_critic_input(self.generate(z))

    def loss(self, x: torch.Tensor, context: torch.Tensor | None = None) -> dict:
        """Both players' losses on real ``x`` against ``len(x)`` fresh samples (global RNG); no penalties.

        Returns:
            ``{"loss": D loss, "d_loss": D loss, "g_loss": G loss}`` (scalars, this model's ``config.loss``).
        """
        from dulab.losses.gan import discriminator_loss, generator_loss

        fake_logits = self.discriminate(self.generate(self.sample_latent(x.shape[0])))
        d = discriminator_loss(self.discriminate(self.to_critic_input(x)), fake_logits, self.config.loss)
        return {"loss": d, "d_loss": d, "g_loss": generator_loss(fake_logits, self.config.loss)}
