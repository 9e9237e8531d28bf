"""Denoising diffusion probabilistic model: the simple objective, ancestral/DDIM sampling and the variational bound.

The forward process adds Gaussian noise over T steps (``NoiseSchedule``); a network (``UNet`` for images,
``MLPDenoiser`` for vectors) predicts ``eps``, ``x0`` or ``v`` from ``(x_t, t)`` and is trained on Ho et al.'s
simple objective ``E_{t, eps} ||target - net(x_t, t)||^2`` (eq. 14; here the mean over dimensions) with ``t``
uniform on ``1..T``. Sampling runs the configured sampler (``samplers.py``): DDPM ancestral or DDIM with any number
of steps and any eta, and DDIM inversion encodes data into ``x_T``.

``log_prob(x)`` is the variational lower bound (Ho et al. eq. 5; Sohl-Dickstein et al. 2015):
``-log p(x0) <= L = L_T + sum_{t=2}^T L_{t-1} + L_0`` with

* ``L_T = KL(q(x_T | x_0) || N(0, I))`` (the prior term, closed form);
* ``L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))`` at one draw ``x_t ~ q(x_t | x_0)`` (Gaussian KLs, each
  >= 0); ``p``'s mean is the posterior mean at the network's ``x0_hat``, its variance ``beta_tilde_t`` (``small``)
  or ``beta_t`` (``large``);
* ``L_0 = -log p(x_0 | x_1)``: for discrete data a *discretized Gaussian* over the levels scaled to ``[-1, 1]``
  (bins of width ``2 / (K - 1)``, the outer ones stretched to infinity, so the levels' probabilities sum to 1;
  Ho et al. section 3.3, with ``torch.special.log_ndtr`` for stable tails); for continuous data the Gaussian
  density itself, so ``-L`` bounds the log *density* (nats; the data are divided by ``data_scale`` and the
  Jacobian ``-D log data_scale`` added back). The variance at ``t = 1`` is ``beta_tilde_2`` (the clipped
  log-variance of Ho et al.'s code, since ``beta_tilde_1 = 0``).

Evaluating all T - 1 middle terms costs T network passes. ``num_bound_steps = S`` (0: all) instead splits
``{2..T}`` into S contiguous strata of sizes ``n_i``, draws one ``t`` uniformly from each (independently per
example) and weights its term by ``n_i``: a stratified, unbiased estimate of the sum (the prior and decoder terms
are always exact). ``bound_terms`` exposes every weighted term. ``evaluation_metrics`` (run by the training task at
every evaluation and by ``dulab eval``) reports the bound as ``nll``/``bpd`` with ``eval_bound_steps`` strata.

Class-conditional (``conditional=True``, labels from the data's ``num_classes``): the label embedding joins the
time embedding; during training each label is replaced by the null token with probability ``p_uncond``, so one
network is both conditional and unconditional, and sampling uses classifier-free guidance
``out = out_uncond + s (out_cond - out_uncond)`` (Ho & Salimans 2022, eq. 6 with ``s = 1 + w``): ``s = 0`` is the
unconditional model, ``s = 1`` the conditional one, ``s > 1`` sharpens towards the class.

References:
    Ho, Jain, Abbeel. "Denoising Diffusion Probabilistic Models", NeurIPS 2020, arXiv:2006.11239.
    Sohl-Dickstein, Weiss, Maheswaranathan, Ganguli. "Deep Unsupervised Learning using Nonequilibrium
    Thermodynamics", ICML 2015, arXiv:1503.03585.
    Song, Meng, Ermon. "Denoising Diffusion Implicit Models", ICLR 2021, arXiv:2010.02502.
    Nichol, Dhariwal. "Improved Denoising Diffusion Probabilistic Models", ICML 2021, arXiv:2102.09672.
    Ho, Salimans. "Classifier-Free Diffusion Guidance", 2022, arXiv:2207.12598.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from dulab.config import check_choices, require_at_least, require_fraction, require_widths
from dulab.errors import UserError
from dulab.models.base import DensityModel
from dulab.models.diffusion.samplers import DDIMSampler, DDPMSampler, randn
from dulab.models.diffusion.schedules import NoiseSchedule, convert, target_of
from dulab.nn.unet import MLPDenoiser, UNet

__all__ = ["DDPM", "DDPMConfig", "discretized_gaussian_log_likelihood", "gaussian_kl"]

_LOG_2PI = math.log(2 * math.pi)


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(d))`` for ``d <= 0``, accurate on both sides of ``-log 2`` (Maechler 2012)."""
    d = d.clamp(max=-1e-30 if d.dtype == torch.float64 else -1e-12)
    return torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
                                        num_levels: int) -> torch.Tensor:
    """``log P(x)`` per dimension for levels ``x`` scaled to ``[-1, 1]`` under a Gaussian discretized to the bins.

    Bin of level ``u``: ``[u - 1/(K-1), u + 1/(K-1)]``, the lowest extended to ``-inf`` and the highest to ``+inf``,
    so the K probabilities sum to 1 (Ho et al. 2020, eq. 13). ``log(Phi(b) - Phi(a))`` is computed in whichever
    tail keeps it accurate (``log_ndtr`` of the upper edge, or of the negated lower edge).

    Args:
        x: levels in ``[-1, 1]`` (float), any shape.
        mean, log_std: broadcastable to ``x``.
        num_levels: K >= 2.
    Returns:
        Log-probabilities (nats), the shape of ``x``.
    """
    half = 1.0 / (num_levels - 1)
    inv = torch.exp(-log_std)
    a = (x - half - mean) * inv  # lower edge, standardised
    b = (x + half - mean) * inv  # upper edge
    lo_edge, hi_edge = x < -1 + half / 2, x > 1 - half / 2
    a = torch.where(lo_edge, torch.full_like(a, -math.inf), a)
    b = torch.where(hi_edge, torch.full_like(b, math.inf), b)
    ndtr = torch.special.log_ndtr
    # lower tail form: log Phi(b) + log(1 - Phi(a)/Phi(b)); upper tail: log Phi(-a) + log(1 - Phi(-b)/Phi(-a))
    lower = ndtr(b) + _log1mexp(ndtr(a) - ndtr(b))
    upper = ndtr(-a) + _log1mexp(ndtr(-b) - ndtr(-a))
    use_upper = (a + b) > 0
    # the infinite edges make (a + b) infinite or NaN; pick the form that stays finite there
    use_upper = torch.where(lo_edge, torch.zeros_like(use_upper), use_upper)
    use_upper = torch.where(hi_edge, torch.ones_like(use_upper), use_upper)
    both = lo_edge & hi_edge
    out = torch.where(use_upper, upper, lower)
    return torch.where(both, torch.zeros_like(out), out)


def gaussian_kl(mean_q, log_var_q, mean_p, log_var_p) -> torch.Tensor:
    """``KL(N(mean_q, exp(log_var_q)) || N(mean_p, exp(log_var_p)))`` per dimension, nats (broadcasting)."""
    return 0.5 * (log_var_p - log_var_q + torch.exp(log_var_q - log_var_p)
                  + (mean_q - mean_p) ** 2 * torch.exp(-log_var_p) - 1.0)


@dataclass
class DDPMConfig:
    """Hyperparameters of ``DDPM``.

    Attributes:
        num_timesteps: T, the diffusion steps.
        noise_schedule: ``linear`` (Ho et al.), ``cosine`` (Nichol & Dhariwal) or ``continuous_cosine``
            (``alpha = cos(pi t / 2)`` on ``t = i / T``); see ``schedules.py``.
        prediction: what the network predicts: ``eps``, ``x0`` or ``v``; ``auto``: ``eps`` for discrete data
            (images, whose ``x0_hat`` is clipped to ``[-1, 1]``) and ``v`` for continuous data. With ``eps`` and no
            clipping, ``x0_hat = (x_t - sigma_t eps_hat) / alpha_t`` multiplies the network's error by
            ``1 / alpha_T`` at the first sampling step (6400 for ``continuous_cosine``): on ``swiss_roll`` the
            first DDIM steps then scatter the points (energy distance 0.53 at 512 DDIM steps after 5 epochs, 0.009
            with ``v``, whose ``x0_hat = alpha_t x_t - sigma_t v_hat`` is stable at every t).
        variance: reverse-process variance: ``small`` (``beta_tilde``) or ``large`` (``beta``).
        architecture: ``auto`` (U-Net for images, MLP for vectors), ``unet`` or ``mlp``.
        hidden_channels: U-Net width at full resolution.
        channel_mult: U-Net width multipliers per resolution (empty: ``1, 2, 2, ...``).
        num_res_blocks: U-Net residual blocks per resolution.
        attention_max_size: U-Net self-attention at resolutions whose larger side is at most this.
        num_heads: U-Net attention heads.
        hidden_sizes: MLP denoiser widths.
        dropout: dropout in the residual blocks.
        conditional: class-conditional on the data's labels (``num_classes`` of the data), with classifier-free
            guidance at sampling.
        p_uncond: conditional models: probability of training a label as the null token.
        guidance_scale: default guidance scale of ``sample`` (0: unconditional, 1: conditional).
        sampler: default sampler of ``sample``: ``ddpm`` or ``ddim``.
        sample_steps: default number of sampling steps (0: T).
        eta: default DDIM eta.
        clip_denoised: clamp ``x0_hat`` to ``[-1, 1]`` for discrete data (sampling and the bound).
        data_scale: continuous data are divided by this (the bound accounts for it).
        num_bound_steps: default strata of ``log_prob``'s estimate of the sum over t (0: every t, exact).
        eval_bound_steps: strata of the bound reported at each evaluation (0: every t).
        eval_bound_examples: examples of the evaluation set the bound is averaged over (0: all).
    """

    num_timesteps: int = 1000
    noise_schedule: Literal["linear", "cosine", "continuous_cosine"] = "cosine"
    prediction: Literal["auto", "eps", "x0", "v"] = "auto"
    variance: Literal["small", "large"] = "small"
    architecture: Literal["auto", "unet", "mlp"] = "auto"
    hidden_channels: int = 32
    channel_mult: tuple[int, ...] = ()
    num_res_blocks: int = 1
    attention_max_size: int = 8
    num_heads: int = 1
    hidden_sizes: tuple[int, ...] = (256, 256, 256)
    dropout: float = 0.1
    conditional: bool = False
    p_uncond: float = 0.1
    guidance_scale: float = 1.0
    sampler: Literal["ddpm", "ddim"] = "ddpm"
    sample_steps: int = 0
    eta: float = 0.0
    clip_denoised: bool = True
    data_scale: float = 1.0
    num_bound_steps: int = 0
    eval_bound_steps: int = 20
    eval_bound_examples: int = 0

    def __post_init__(self):
        check_choices(self)
        require_widths(self, "hidden_sizes")
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        require_at_least(self, 1, "num_timesteps", "hidden_channels", "num_res_blocks", "num_heads")
        require_at_least(self, 0, "sample_steps", "num_bound_steps", "eval_bound_steps", "eval_bound_examples")
        require_fraction(self, "dropout", "p_uncond")
        if any(m < 1 for m in self.channel_mult):
            raise UserError(f"channel_mult entries must be >= 1, got {self.channel_mult}")
        if self.sample_steps > self.num_timesteps:
            raise UserError(f"sample_steps ({self.sample_steps}) cannot exceed num_timesteps ({self.num_timesteps})")
        if self.eta < 0 or self.data_scale <= 0:
            raise UserError(f"need eta >= 0 and data_scale > 0; got eta={self.eta}, data_scale={self.data_scale}")


class DDPM(DensityModel):
    """Gaussian diffusion (Ho et al. 2020) with a U-Net or MLP denoiser; ``log_prob`` is the variational bound."""

    Config = DDPMConfig
    family = "diffusion"
    # eval_every 10: each evaluation estimates the bound (eval_bound_steps network passes per test example, for the
    # raw and the EMA weights), which on digits costs more than an epoch of training
    train_defaults = {"epochs": 40, "lr": 2e-3, "batch_size": 64, "ema_decay": 0.995, "warmup_steps": 100,
                      "grad_clip": 1.0, "eval_every": 10}

    @classmethod
    def check_spec(cls, spec, config) -> None:
        if config.architecture == "unet" and len(spec.shape) != 3:
            raise UserError(f"ddpm with architecture=unet needs images (C, H, W), got shape {spec.shape}")
        if len(spec.shape) not in (1, 3) and config.architecture != "mlp":
            raise UserError(f"ddpm models vectors (D,) or images (C, H, W), got shape {spec.shape}")
        if config.conditional and not spec.num_classes:
            raise UserError("ddpm with conditional=true needs labelled data (the dataset has no num_classes)")

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c = self.config
        self.schedule = NoiseSchedule(c.noise_schedule, c.num_timesteps)
        self.num_classes = spec.num_classes if c.conditional else None
        self.is_conditional = bool(c.conditional)
        #: the resolved ``config.prediction`` (``auto``: ``eps`` for discrete data, ``v`` for continuous data)
        self.prediction = c.prediction if c.prediction != "auto" else ("eps" if spec.is_discrete else "v")
        time_scale = 1000.0 / c.num_timesteps  # the embedding sees t on 0..1000 whatever T is
        use_unet = c.architecture == "unet" or (c.architecture == "auto" and len(spec.shape) == 3)
        self.architecture = "unet" if use_unet else "mlp"
        if use_unet:
            C, H, W = spec.shape
            self.net = UNet(C, C, (H, W), hidden_channels=c.hidden_channels, channel_mult=c.channel_mult,
                            num_res_blocks=c.num_res_blocks, attention_max_size=c.attention_max_size,
                            num_heads=c.num_heads, dropout=c.dropout, num_classes=self.num_classes,
                            time_scale=time_scale)
        else:
            D = spec.num_dims
            self.net = MLPDenoiser(D, D, c.hidden_sizes, dropout=c.dropout, num_classes=self.num_classes,
                                   time_scale=time_scale)

    # ------------------------------------------------------------------ representation
    def to_model_scale(self, x: torch.Tensor) -> torch.Tensor:
        """Data to the diffusion's space: levels ``{0..K-1}`` to ``[-1, 1]``; continuous data / ``data_scale``."""
        dtype = self._param_dtype()
        if self.spec.is_discrete:
            return x.to(dtype) * (2.0 / (self.spec.num_levels - 1)) - 1.0
        return x.to(dtype) / self.config.data_scale

    def from_model_scale(self, u: torch.Tensor) -> torch.Tensor:
        """The diffusion's space back to data: the nearest level (int64) or ``u * data_scale``."""
        if self.spec.is_discrete:
            levels = torch.round((u + 1.0) * ((self.spec.num_levels - 1) / 2.0))
            return levels.clamp(0, self.spec.num_levels - 1).long()
        return u * self.config.data_scale

    @property
    def _clip(self) -> float | None:
        return 1.0 if (self.spec.is_discrete and self.config.clip_denoised) else None

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The network's prediction (kind ``self.prediction``): ``(B, *event), (B,) -> (B, *event)``.

        ``y``: class labels in ``[0, K]`` (``K`` is the null token; ``None``: null for conditional models).
        """
        if self.architecture == "mlp":
            B = x_t.shape[0]
            return self.net(x_t.reshape(B, -1), t, y).view(x_t.shape)
        return self.net(x_t, t, y)

    def _null(self, n: int, device) -> torch.Tensor:
        return torch.full((n,), self.num_classes, dtype=torch.long, device=device)

    def guided_denoiser(self, context: torch.Tensor | None = None, guidance_scale: float = 1.0):
        """``(x_t, t) -> prediction`` with classifier-free guidance (Ho & Salimans 2022, eq. 6).

        ``out_u + s (out_c - out_u)``; ``s = 1`` is the conditional network alone, ``s = 0`` the unconditional one.
        Unconditional models (or ``context=None``) ignore ``guidance_scale``.
        """
        if not self.is_conditional or context is None:
            return lambda x, t: self.denoise(x, t)
        s = float(guidance_scale)
        if s == 1.0:
            return lambda x, t: self.denoise(x, t, context)
        if s == 0.0:
            return lambda x, t: self.denoise(x, t, self._null(x.shape[0], x.device))

        def guided(x, t):
            B = x.shape[0]
            out = self.denoise(torch.cat([x, x]), torch.cat([t, t]),
                               torch.cat([context, self._null(B, x.device)]))  # (2B, *event)
            cond, uncond = out[:B], out[B:]
            return uncond + s * (cond - uncond)

        return guided

    def _labels(self, context, batch: int) -> torch.Tensor | None:
        if not self.is_conditional or context is None:
            return None
        return self._check_context(context, batch)

    # ------------------------------------------------------------------ training
    def loss(self, x: torch.Tensor, context=None) -> dict:
        """Ho et al.'s simple objective: ``mean ||target - net(x_t, t)||^2`` over batch and dimensions.

        ``t`` uniform on ``1..T``, ``eps ~ N(0, I)`` and (conditional models) label dropout from the global RNG.

        Returns:
            ``"loss"`` (the mean squared error of the configured target; not a bound, see ``log_prob``).
        """
        self.check_input(x)
        x0 = self.to_model_scale(x)
        B = x0.shape[0]
        t = torch.randint(1, self.config.num_timesteps + 1, (B,), device=x0.device)
        eps = torch.randn_like(x0)
        a, s = self.schedule.coefficients(t, x0)
        x_t = a * x0 + s * eps
        y = None
        if self.is_conditional:
            y = self._check_context(context, B)
            drop = torch.rand(B, device=x0.device) < self.config.p_uncond
            y = torch.where(drop, self._null(B, x0.device), y)
        out = self.denoise(x_t, t, y)
        target = target_of(self.prediction, x0, eps, a, s)
        return {"loss": (out - target).pow(2).mean()}

    # ------------------------------------------------------------------ the variational bound
    def _table(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """A float64 schedule quantity at timesteps ``t (B,)`` or ``(B, S)``, cast to ``like``'s dtype."""
        bars = self.schedule.alpha_bar64
        tt = t.cpu().long()
        abar_t = bars[tt]
        abar_s = bars[(tt - 1).clamp(min=0)]
        beta = 1.0 - abar_t / abar_s
        if name == "abar":
            v = abar_t
        elif name == "c_x0":
            v = abar_s.sqrt() * beta / (1.0 - abar_t)
        elif name == "c_xt":
            v = (1.0 - beta).sqrt() * (1.0 - abar_s) / (1.0 - abar_t)
        elif name == "log_var_q":
            v = torch.log(((1.0 - abar_s) / (1.0 - abar_t) * beta).clamp(min=1e-300))
        elif name == "log_var_p":
            v = torch.log((1.0 - abar_s) / (1.0 - abar_t) * beta) if self.config.variance == "small" \
                else torch.log(beta)
        else:
            raise KeyError(name)
        return v.to(like.device, like.dtype)

    def _decoder_log_var(self) -> float:
        """Variance of ``p(x_0 | x_1)``: ``beta_tilde_2`` (the clipped variance of Ho et al.'s code); T = 1: beta_1."""
        bars = self.schedule.alpha_bar64
        if self.config.num_timesteps == 1:
            return math.log(float(1.0 - bars[1]))
        return math.log(float((1.0 - bars[1]) / (1.0 - bars[2]) * (1.0 - bars[2] / bars[1])))

    def _strata(self, B: int, num_bound_steps: int, generator, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Timesteps ``(B, S)`` in ``2..T`` and their weights ``(S,)`` for the middle terms (module docstring)."""
        T = self.config.num_timesteps
        M = T - 1  # terms L_1 .. L_{T-1}, i.e. t = 2..T
        if M == 0:
            return torch.zeros(B, 0, dtype=torch.long), torch.zeros(0, dtype=torch.float64)
        if num_bound_steps == 0 or num_bound_steps >= M:
            return torch.arange(2, T + 1).expand(B, M).clone(), torch.ones(M, dtype=torch.float64)
        S = num_bound_steps
        edges = torch.round(torch.linspace(0, M, S + 1, dtype=torch.float64)).long()  # (S + 1,)
        sizes = edges[1:] - edges[:-1]  # each >= 1 because S < M
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand((B, S), generator=generator, device=gen_device, dtype=torch.float64).cpu()
        offsets = torch.minimum((u * sizes).long(), sizes - 1)
        return 2 + edges[:-1] + offsets, sizes.double()

    def bound_terms(self, x: torch.Tensor, context=None, *, num_bound_steps: int | None = None,
                    generator: torch.Generator | None = None) -> dict:
        """Every term of the (estimated) negative variational bound, nats per example, in the model's scale.

        Args:
            x: ``(B, *event)`` data.
            context: class labels of a conditional model (the conditional bound).
            num_bound_steps: strata of the middle sum (default ``config.num_bound_steps``; 0: every t).
            generator: the randomness of the strata draws and of every ``x_t ~ q(x_t | x_0)``.
        Returns:
            ``prior`` ``(B,)`` (L_T), ``diffusion`` ``(B, S)`` (the weighted middle terms, weights applied),
            ``timesteps`` ``(B, S)``, ``weights`` ``(S,)``, ``decoder`` ``(B,)`` (L_0), ``total`` ``(B,)`` (their
            sum), ``jacobian`` (the nats ``-log p`` gains from ``data_scale``: ``D log data_scale``, 0 for discrete
            data). ``log_prob(x) = -(total + jacobian)``.
        """
        self.check_input(x)
        S = self.config.num_bound_steps if num_bound_steps is None else int(num_bound_steps)
        if S < 0:
            raise UserError(f"num_bound_steps must be >= 0, got {S}")
        x0 = self.to_model_scale(x)
        B, dims = x0.shape[0], tuple(range(1, x0.dim()))
        device = x0.device
        y = self._labels(context, B)
        T = self.config.num_timesteps

        # L_T: KL(N(alpha_T x0, sigma_T^2) || N(0, 1)) per dimension, closed form
        abar_T = self._table("abar", torch.full((B,), T), x0).view(-1, *[1] * len(dims))
        prior = gaussian_kl(abar_T.sqrt() * x0, torch.log1p(-abar_T), torch.zeros_like(x0),
                            torch.zeros_like(x0)).sum(dims)

        def x0_hat_at(x_t, t):
            a, s = self.schedule.coefficients(t, x_t)
            x0_hat = convert(self.denoise(x_t, t.to(device), y), self.prediction, "x0", x_t, a, s)
            return x0_hat.clamp(-self._clip, self._clip) if self._clip is not None else x0_hat

        # middle terms L_{t-1}, t in 2..T
        ts, weights = self._strata(B, S, generator, device)
        terms = []
        for j in range(ts.shape[1]):
            t = ts[:, j].to(device)
            x_t = self.schedule.q_sample(x0, t, randn(x0.shape, generator, device, x0.dtype))
            x0_hat = x0_hat_at(x_t, t)
            shape = (-1,) + (1,) * len(dims)
            c_x0, c_xt = self._table("c_x0", t, x0).view(shape), self._table("c_xt", t, x0).view(shape)
            mean_q, mean_p = c_x0 * x0 + c_xt * x_t, c_x0 * x0_hat + c_xt * x_t
            kl = gaussian_kl(mean_q, self._table("log_var_q", t, x0).view(shape), mean_p,
                             self._table("log_var_p", t, x0).view(shape)).sum(dims)
            terms.append(kl * float(weights[j]))
        diffusion = torch.stack(terms, 1) if terms else x0.new_zeros(B, 0)

        # L_0 = -log p(x_0 | x_1)
        t1 = torch.ones(B, dtype=torch.long, device=device)
        x_1 = self.schedule.q_sample(x0, t1, randn(x0.shape, generator, device, x0.dtype))
        mean = x0_hat_at(x_1, t1)  # the posterior mean at t = 1 is x0_hat (alpha_bar_0 = 1)
        log_var = self._decoder_log_var()
        if self.spec.is_discrete:
            log_px = discretized_gaussian_log_likelihood(x0, mean, torch.full_like(mean, 0.5 * log_var),
                                                         self.spec.num_levels)
        else:
            log_px = -0.5 * (_LOG_2PI + log_var + (x0 - mean) ** 2 / math.exp(log_var))
        decoder = -log_px.sum(dims)
        total = prior + diffusion.sum(1) + decoder
        jacobian = 0.0 if self.spec.is_discrete else self.spec.num_dims * math.log(self.config.data_scale)
        return {"prior": prior, "diffusion": diffusion, "timesteps": ts, "weights": weights, "decoder": decoder,
                "total": total, "jacobian": jacobian}

    def log_prob(self, x: torch.Tensor, context=None, *, num_bound_steps: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The variational lower bound on ``log p(x)`` (nats, ``(B,)``): exact in its sum over t when
        ``num_bound_steps`` is 0 (default ``config.num_bound_steps``), else an unbiased stratified estimate.

        For discrete data a bound on the log pmf over the levels; for continuous data on the log density.
        A single draw of each ``x_t``: the bound holds in expectation over those draws.
        """
        terms = self.bound_terms(x, context, num_bound_steps=num_bound_steps, generator=generator)
        return -(terms["total"] + terms["jacobian"])

    @torch.no_grad()
    def evaluation_metrics(self, dataset, batch_size: int = 256) -> dict:
        """The bound at each evaluation (the ``Task.evaluate`` hook; ``dulab eval`` reports it too).

        Returns:
            ``nll``: mean negative bound in nats (``eval_bound_steps`` strata, over the first
            ``eval_bound_examples`` examples or all); ``bpd`` for discrete data; ``kl_to_truth`` (``nll`` minus the
            true entropy estimate) where the dataset has ``true_log_prob``; ``bound_prior``, ``bound_decoder``,
            ``bound_diffusion``: the means of the three parts.
        """
        c = self.config
        device = self._param_device()
        n = len(dataset) if c.eval_bound_examples == 0 else min(len(dataset), c.eval_bound_examples)
        x = dataset.x[:n]
        ys = dataset.labels_or_default()[:n] if self.is_conditional else None
        sums = {"nll": 0.0, "bound_prior": 0.0, "bound_decoder": 0.0, "bound_diffusion": 0.0}
        for start in range(0, n, batch_size):
            xb = x[start:start + batch_size].to(device)
            yb = ys[start:start + batch_size].to(device) if ys is not None else None
            if yb is not None and (yb < 0).any():
                yb = torch.where(yb < 0, self._null(len(yb), device), yb)
            terms = self.bound_terms(xb, yb, num_bound_steps=c.eval_bound_steps)
            sums["nll"] += float((terms["total"] + terms["jacobian"]).double().sum())
            sums["bound_prior"] += float(terms["prior"].double().sum())
            sums["bound_decoder"] += float(terms["decoder"].double().sum())
            sums["bound_diffusion"] += float(terms["diffusion"].double().sum())
        out = {k: v / n for k, v in sums.items()}
        if self.spec.is_discrete:
            out["bpd"] = float(self.bits_per_dim(out["nll"], self.spec.num_dims))
        if dataset.true_log_prob is not None:
            out["kl_to_truth"] = out["nll"] + float(dataset.true_log_prob(dataset.x[:n].double()).mean())
        return out

    def _check_context(self, context, batch=None):
        # labels may include the null token K (the unconditional model) besides the classes 0..K-1
        if context is None:
            raise UserError("this ddpm is class-conditional: pass context= labels")
        context = torch.as_tensor(context, device=self._param_device()).long().reshape(-1)
        if batch is not None and context.numel() == 1 and batch > 1:
            context = context.expand(batch)
        if context.min() < 0 or context.max() > self.num_classes:
            raise UserError(f"context labels must lie in [0, {self.num_classes}) ({self.num_classes}: no label)")
        return context

    # ------------------------------------------------------------------ sampling
    def make_sampler(self, sampler: str | None = None, eta: float | None = None):
        """The configured ``DDPMSampler`` or ``DDIMSampler`` (defaults from the config)."""
        c = self.config
        kind = c.sampler if sampler is None else sampler
        if kind == "ddpm":
            return DDPMSampler(self.schedule, prediction=self.prediction, clip_denoised=self._clip, variance=c.variance)
        if kind == "ddim":
            return DDIMSampler(self.schedule, prediction=self.prediction, clip_denoised=self._clip,
                               eta=c.eta if eta is None else eta)
        raise UserError(f"sampler must be 'ddpm' or 'ddim', got {kind!r}")

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
               num_steps: int | None = None, sampler: str | None = None, eta: float | None = None,
               guidance_scale: float | None = None, x_T: torch.Tensor | None = None,
               return_model_scale: bool = False) -> torch.Tensor:
        """Draw samples by running the reverse process.

        Args:
            num_samples: B.
            generator: the randomness of ``x_T`` and of every step.
            context: class labels ``(B,)`` (or one label) for conditional models; ``None``: unconditional.
            num_steps: sampling steps in ``[1, T]`` (default ``sample_steps`` or T).
            sampler: ``ddpm`` (ancestral) or ``ddim`` (default ``config.sampler``).
            eta: DDIM's eta (default ``config.eta``; 0 deterministic).
            guidance_scale: classifier-free guidance scale (default ``config.guidance_scale``).
            x_T: start from this ``(B, *event)`` noise (model scale) instead of drawing it.
            return_model_scale: return the final ``x_0`` in the model's float scale (no rounding to levels).
        Returns:
            ``(B, *event)``: int64 levels for discrete data, floats for continuous data.
        """
        c = self.config
        y = self._labels(context, num_samples)
        steps = num_steps if num_steps is not None else (c.sample_steps or None)
        scale = c.guidance_scale if guidance_scale is None else guidance_scale
        out = self.make_sampler(sampler, eta).sample(
            self.guided_denoiser(y, scale), (num_samples, *self.spec.shape), num_steps=steps, generator=generator,
            device=self._param_device(), dtype=self._param_dtype(), x_T=x_T)
        return out if return_model_scale else self.from_model_scale(out)

    @torch.no_grad()
    def invert(self, x: torch.Tensor, *, num_steps: int | None = None, context=None,
               guidance_scale: float | None = None) -> torch.Tensor:
        """DDIM inversion (eta = 0): data ``(B, *event)`` to ``x_T`` (model scale); ``sample(x_T=..., sampler=
        "ddim", eta=0, num_steps=...)`` maps it back."""
        self.check_input(x)
        y = self._labels(context, x.shape[0])
        scale = self.config.guidance_scale if guidance_scale is None else guidance_scale
        steps = num_steps if num_steps is not None else (self.config.sample_steps or None)
        sampler = DDIMSampler(self.schedule, prediction=self.prediction, eta=0.0)
        return sampler.invert(self.guided_denoiser(y, scale), self.to_model_scale(x), num_steps=steps)
