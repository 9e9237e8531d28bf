"""Samplers of Gaussian diffusion models: DDPM ancestral sampling, DDIM (any eta) and DDIM inversion.

A sampler is a configured object apart from the network: it holds a ``NoiseSchedule`` and the kind of
prediction the network makes (``eps``, ``x0`` or ``v``), and takes the network as a *denoiser*, a callable
``(x_t (B, *event), t (B,) int64) -> prediction (B, *event)``. Sampling runs over the ``N`` timesteps
``t_N > ... > t_1`` of ``NoiseSchedule.timesteps(N)`` and finally to ``t_0 = 0`` (``alpha_bar = 1``), so every
sampler returns its last ``x0`` estimate. Step coefficients are computed in float64 from the schedule's table.

* ``DDPMSampler``: ancestral sampling from ``p(x_s | x_t) = q(x_s | x_t, x0_hat)`` (Ho et al. 2020, eqs. 6-7,
  with ``x0_hat`` the network's estimate); with fewer steps than T it uses the respaced process whose
  ``beta = 1 - alpha_bar_t / alpha_bar_s`` (Nichol & Dhariwal 2021, section 4). Variance ``small``
  (``beta_tilde``, the posterior's) or ``large`` (``beta``); no noise on the last step.
* ``DDIMSampler``: ``x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - s^2) eps_hat + s z`` with
  ``s = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)`` (Song et al. 2021, eqs. 12 and 16);
  ``eta = 0`` is deterministic given ``x_T``, ``eta = 1`` is the DDPM sampler with ``small`` variance.
  ``invert`` runs the eta = 0 update backwards (x0 -> x_T), evaluating the network at the current point with the
  next (larger) timestep, for encoding.

References:
    Ho, Jain, Abbeel. "Denoising Diffusion Probabilistic Models", NeurIPS 2020, arXiv:2006.11239.
    Song, Meng, Ermon. "Denoising Diffusion Implicit Models", ICLR 2021, arXiv:2010.02502.
    Nichol, Dhariwal. "Improved Denoising Diffusion Probabilistic Models", ICML 2021, arXiv:2102.09672.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dulab.errors import UserError
from dulab.models.diffusion.schedules import PREDICTIONS, NoiseSchedule, convert

__all__ = ["Sampler", "DDPMSampler", "DDIMSampler", "Denoiser", "randn"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def randn(shape, generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Standard normal noise drawn on ``generator``'s device, moved to ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


class Sampler:
    """Base of the samplers: the schedule, the prediction kind, optional clipping of ``x0_hat``.

    Args:
        schedule: the ``NoiseSchedule`` the network was trained with.
        prediction: what the denoiser predicts: ``eps``, ``x0`` or ``v``.
        clip_denoised: clamp ``x0_hat`` to ``[-c, c]`` (``None``: no clipping; images in ``[-1, 1]`` use 1).
    Subclasses implement ``step(x_t, x0_hat, eps_hat, t, s, generator)``, the move from timestep ``t`` to
    ``s < t``.
    """

    def __init__(self, schedule: NoiseSchedule, *, prediction: str = "eps", clip_denoised: float | None = None):
        if prediction not in PREDICTIONS:
            raise UserError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
        self.schedule, self.prediction, self.clip_denoised = schedule, prediction, clip_denoised

    def _abar(self, t: int) -> float:
        return float(self.schedule.alpha_bar64[t])

    def predict(self, denoiser: Denoiser, x: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0_hat, eps_hat)`` at ``x_t`` (``x0_hat`` clipped when configured, ``eps_hat`` consistent with it)."""
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        out = denoiser(x, tt)
        a, s = math.sqrt(self._abar(t)), math.sqrt(1.0 - self._abar(t))
        x0 = convert(out, self.prediction, "x0", x, a, s)
        if self.clip_denoised is not None:
            x0 = x0.clamp(-self.clip_denoised, self.clip_denoised)
            eps = (x - a * x0) / s
        else:
            eps = convert(out, self.prediction, "eps", x, a, s)
        return x0, eps

    def step(self, x, x0, eps, t: int, s: int, generator):
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, denoiser: Denoiser, shape, *, num_steps: int | None = None,
               generator: torch.Generator | None = None, device=None, dtype=torch.float32,
               x_T: torch.Tensor | None = None) -> torch.Tensor:
        """Run the reverse process from ``x_T ~ N(0, I)`` (or the given ``x_T``) to ``x_0``.

        Args:
            denoiser: ``(x_t, t) -> prediction``.
            shape: ``(B, *event)``.
            num_steps: N in ``[1, T]`` (default T).
            generator: the randomness of ``x_T`` and of every step's noise.
            x_T: start here instead of drawing ``x_T``.
        Returns:
            ``(B, *event)``, the model's scale (``[-1, 1]`` for images).
        """
        from tqdm.auto import tqdm  # noqa: PLC0415

        ts = self.schedule.timesteps(num_steps).tolist()
        x = randn(shape, generator, device, dtype) if x_T is None else x_T
        # a progress bar for long chains, on a terminal only (disable=None: off when stderr is not a TTY)
        bar = tqdm(ts, desc=type(self).__name__.removesuffix("Sampler").lower(), unit="step", leave=False,
                   disable=None if len(ts) >= 100 else True)
        for i, t in enumerate(bar):
            s = ts[i + 1] if i + 1 < len(ts) else 0
            x0, eps = self.predict(denoiser, x, t)
            x = self.step(x, x0, eps, t, s, generator)
        return x


class DDPMSampler(Sampler):
    """Ancestral sampling (Ho et al. 2020, algorithm 2), respaced for ``num_steps < T``.

    Args:
        variance: ``small`` (the posterior variance ``beta_tilde``) or ``large`` (``beta``); Ho et al. section 3.2.
    """

    def __init__(self, schedule, *, prediction="eps", clip_denoised=None, variance: str = "small"):
        super().__init__(schedule, prediction=prediction, clip_denoised=clip_denoised)
        if variance not in ("small", "large"):
            raise UserError(f"variance must be 'small' or 'large', got {variance!r}")
        self.variance = variance

    def posterior(self, t: int, s: int) -> tuple[float, float, float]:
        """``(c_x0, c_xt, var)`` of ``q(x_s | x_t, x_0) = N(c_x0 x_0 + c_xt x_t, beta_tilde)`` (Ho eq. 7).

        ``var`` is the sampler's variance (``beta_tilde`` or ``beta`` of the respaced step).
        """
        abar_t, abar_s = self._abar(t), self._abar(s)
        beta = 1.0 - abar_t / abar_s
        c_x0 = math.sqrt(abar_s) * beta / (1.0 - abar_t)
        c_xt = math.sqrt(1.0 - beta) * (1.0 - abar_s) / (1.0 - abar_t)
        var = (1.0 - abar_s) / (1.0 - abar_t) * beta if self.variance == "small" else beta
        return c_x0, c_xt, var

    def step(self, x, x0, eps, t, s, generator):
        c_x0, c_xt, var = self.posterior(t, s)
        mean = c_x0 * x0 + c_xt * x
        if s == 0:  # the last step returns the mean (Ho et al. algorithm 2, z = 0 at t = 1)
            return mean
        return mean + math.sqrt(var) * randn(x.shape, generator, x.device, x.dtype)


class DDIMSampler(Sampler):
    """DDIM (Song et al. 2021, eq. 12): deterministic for ``eta = 0``, DDPM-like for ``eta = 1``.

    Args:
        eta: scale of the per-step noise, >= 0.
    """

    def __init__(self, schedule, *, prediction="eps", clip_denoised=None, eta: float = 0.0):
        super().__init__(schedule, prediction=prediction, clip_denoised=clip_denoised)
        if eta < 0:
            raise UserError(f"eta must be >= 0, got {eta}")
        self.eta = float(eta)

    def step_sigma(self, t: int, s: int) -> float:
        """``sigma_t(eta)`` of Song et al. eq. 16 for the move ``t -> s``."""
        abar_t, abar_s = self._abar(t), self._abar(s)
        return self.eta * math.sqrt((1.0 - abar_s) / (1.0 - abar_t)) * math.sqrt(1.0 - abar_t / abar_s)

    def step(self, x, x0, eps, t, s, generator):
        abar_s = self._abar(s)
        sig = self.step_sigma(t, s)
        # eta > 1 can ask for more noise than 1 - abar_s holds: the direction term then vanishes
        direction = math.sqrt(max(0.0, 1.0 - abar_s - sig**2))
        out = math.sqrt(abar_s) * x0 + direction * eps
        if sig > 0 and s > 0:
            out = out + sig * randn(x.shape, generator, x.device, x.dtype)
        return out

    @torch.no_grad()
    def invert(self, denoiser: Denoiser, x0: torch.Tensor, *, num_steps: int | None = None) -> torch.Tensor:
        """DDIM inversion: the eta = 0 update run from ``x_0`` up to ``x_T`` (Song et al. 2021, section 5.4).

        From ``s`` to the next timestep ``t > s``: ``eps_hat`` is the network's at ``(x_s, t)`` (the point where
        it is, the time it goes to), ``x0_hat = (x_s - sigma_s eps_hat) / alpha_s`` and
        ``x_t = alpha_t x0_hat + sigma_t eps_hat``. Round-trips with ``sample(x_T=...)`` on the same ``num_steps``
        up to the discretisation error of the ODE.

        Args:
            x0: ``(B, *event)`` in the model's scale.
        Returns:
            ``x_T``, ``(B, *event)``.
        """
        ts = list(reversed(self.schedule.timesteps(num_steps).tolist()))
        x, s = x0, 0
        for t in ts:
            tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
            a_t, s_t = math.sqrt(self._abar(t)), math.sqrt(1.0 - self._abar(t))
            a_s, s_s = math.sqrt(self._abar(s)), math.sqrt(1.0 - self._abar(s))
            eps = convert(denoiser(x, tt), self.prediction, "eps", x, a_t, s_t)
            x0_hat = (x - s_s * eps) / a_s
            x, s = a_t * x0_hat + s_t * eps, t
        return x
