"""Langevin dynamics samplers, configured apart from any network: they take a score function ``x -> grad log p(x)``.

``LangevinSampler`` runs the unadjusted Langevin algorithm ``x <- x + h s(x) + noise_scale sqrt(2 h) z`` with
``z ~ N(0, I)`` (``noise_scale = 1`` targets ``p``; smaller values, as in the short-run MCMC of energy-based models,
a colder version of it), optionally clipping each element of the gradient and clamping the state to a box.
``AnnealedLangevinSampler`` is Algorithm 1 of Song & Ermon (2019): for noise levels ``sigma_1 > ... > sigma_L`` it
runs ``T`` steps at each level with step ``alpha_i = eps sigma_i^2 / sigma_L^2``,
``x <- x + (alpha_i / 2) s(x, i) + sqrt(alpha_i) z`` (so ``alpha_i / sigma_i^2`` is the same at every level), and
optionally ends with the denoising step ``x + sigma_L^2 s(x, L)`` (Tweedie's formula; Jolicoeur-Martineau et al.
2021, Song & Ermon 2020).

References:
    Song, Ermon. "Generative Modeling by Estimating Gradients of the Data Distribution", NeurIPS 2019,
    arXiv:1907.05600 (annealed Langevin dynamics, Algorithm 1).
    Song, Ermon. "Improved Techniques for Training Score-Based Generative Models", NeurIPS 2020, arXiv:2006.09011.
    Roberts, Tweedie. "Exponential convergence of Langevin distributions and their discrete approximations",
    Bernoulli 1996 (the unadjusted Langevin algorithm).
    Du, Mordatch. "Implicit Generation and Generalization in Energy-Based Models", NeurIPS 2019, arXiv:1903.08689
    (short-run Langevin with clipped gradients).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from dulab.errors import UserError

__all__ = ["LangevinSampler", "AnnealedLangevinSampler", "geometric_sigmas"]


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> torch.Tensor:
    """``num_levels`` noise levels from ``sigma_max`` down to ``sigma_min`` in geometric progression (float64).

    Song & Ermon (2019), section 4.2: ``sigma_1 / sigma_2 = ... = sigma_{L-1} / sigma_L > 1``.
    """
    if not sigma_max > sigma_min > 0:
        raise UserError(f"need sigma_max > sigma_min > 0, got sigma_max={sigma_max}, sigma_min={sigma_min}")
    if num_levels < 1:
        raise UserError(f"the number of noise levels must be >= 1, got {num_levels}")
    if num_levels == 1:
        return torch.tensor([float(sigma_min)], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_levels, dtype=torch.float64))


class LangevinSampler:
    """Unadjusted Langevin dynamics with a fixed step.

    Each step: ``g = s(x)`` (elementwise clipped to ``[-grad_clip, grad_clip]`` when ``grad_clip > 0``), then
    ``x <- x + step_size g + noise_scale sqrt(2 step_size) z``, then clamped to ``[low, high]`` when a ``clamp``
    is given. With ``noise_scale = 1`` and no clipping the chain's stationary law approaches ``p`` as the step
    shrinks (for a Gaussian ``N(mu, s^2)`` exactly ``N(mu, s^2 / (1 - step_size / (2 s^2)))``).

    Args:
        step_size: h > 0.
        num_steps: steps per call (>= 0).
        noise_scale: multiplies the injected noise (1: Langevin; 0: gradient ascent on log p).
        grad_clip: elementwise bound on the score before the step (0: off; Du & Mordatch 2019 clip it).
        clamp: ``(low, high)`` box the state is kept in after each step, or ``None``.
    """

    def __init__(self, *, step_size: float, num_steps: int, noise_scale: float = 1.0, grad_clip: float = 0.0,
                 clamp: tuple[float, float] | None = None):
        if step_size <= 0 or num_steps < 0 or noise_scale < 0 or grad_clip < 0:
            raise UserError(f"Langevin needs step_size > 0, num_steps >= 0, noise_scale >= 0 and grad_clip >= 0; got"
                            f" {step_size}, {num_steps}, {noise_scale}, {grad_clip}")
        self.step_size, self.num_steps = float(step_size), int(num_steps)
        self.noise_scale, self.grad_clip, self.clamp = float(noise_scale), float(grad_clip), clamp

    def step(self, score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """One Langevin step from ``x`` (``(B, *event)``); returns the new state (not in place)."""
        g = score_fn(x)
        if self.grad_clip > 0:
            g = g.clamp(-self.grad_clip, self.grad_clip)
        x = x + self.step_size * g
        if self.noise_scale > 0:
            x = x + (self.noise_scale * math.sqrt(2 * self.step_size)) * _randn_like(x, generator)
        if self.clamp is not None:
            x = x.clamp(*self.clamp)
        return x

    def __call__(self, score_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *,
                 num_steps: int | None = None, generator: torch.Generator | None = None,
                 callback: Callable[[int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Run ``num_steps`` (default ``self.num_steps``) steps from ``x``.

        Args:
            score_fn: ``(B, *event) -> (B, *event)``, the gradient of log p (minus that of an energy).
            x: the initial states ``(B, *event)``.
            num_steps: overrides the configured number of steps.
            generator: the randomness of the injected noise.
            callback: called as ``callback(k, x)`` after step ``k`` (1-based) and with ``k = 0`` before the first.
        Returns:
            ``(B, *event)``, the states after the last step.
        """
        n = self.num_steps if num_steps is None else int(num_steps)
        if callback is not None:
            callback(0, x)
        for k in range(n):
            x = self.step(score_fn, x, generator=generator)
            if callback is not None:
                callback(k + 1, x)
        return x


class AnnealedLangevinSampler:
    """Annealed Langevin dynamics over a ladder of noise levels (Song & Ermon 2019, Algorithm 1).

    Args:
        sigmas: ``(L,)`` decreasing noise levels ``sigma_1 > ... > sigma_L``.
        eps: the step size at the last level; level i uses ``alpha_i = eps sigma_i^2 / sigma_L^2``.
        steps_per_level: T, Langevin steps at each level.
        denoise: finish with ``x + sigma_L^2 s(x, L)`` (the posterior mean of the clean data under the smallest
            noise level, Tweedie's formula), which removes the last level's noise from the samples.
        clamp: ``(low, high)`` box the state is kept in after each step, or ``None``.
    """

    def __init__(self, sigmas, *, eps: float, steps_per_level: int, denoise: bool = True,
                 clamp: tuple[float, float] | None = None):
        sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
        if len(sigmas) < 1 or (sigmas <= 0).any() or (len(sigmas) > 1 and (sigmas[1:] >= sigmas[:-1]).any()):
            raise UserError("sigmas must be positive and strictly decreasing")
        if eps <= 0 or steps_per_level < 0:
            raise UserError(f"need eps > 0 and steps_per_level >= 0, got eps={eps}, steps_per_level={steps_per_level}")
        self.sigmas, self.eps, self.steps_per_level = sigmas, float(eps), int(steps_per_level)
        self.denoise, self.clamp = bool(denoise), clamp

    @property
    def step_sizes(self) -> torch.Tensor:
        """``alpha_i = eps sigma_i^2 / sigma_L^2``, ``(L,)`` float64."""
        return self.eps * self.sigmas**2 / self.sigmas[-1] ** 2

    def __call__(self, score_fn: Callable[[torch.Tensor, int], torch.Tensor], x: torch.Tensor, *,
                 steps_per_level: int | None = None, generator: torch.Generator | None = None,
                 callback: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Anneal from ``x`` through every level.

        Args:
            score_fn: ``(x (B, *event), level index i) -> (B, *event)``, the score of the data perturbed by
                ``N(0, sigma_i^2 I)``.
            x: initial states ``(B, *event)``.
            steps_per_level: overrides T.
            generator: the randomness of the injected noise.
            callback: ``callback(i, t, x)`` after step t (1-based) of level i.
        Returns:
            ``(B, *event)``.
        """
        T = self.steps_per_level if steps_per_level is None else int(steps_per_level)
        for i, alpha in enumerate(self.step_sizes.tolist()):
            noise = math.sqrt(alpha)
            for t in range(T):
                x = x + (0.5 * alpha) * score_fn(x, i) + noise * _randn_like(x, generator)
                if self.clamp is not None:
                    x = x.clamp(*self.clamp)
                if callback is not None:
                    callback(i, t + 1, x)
        if self.denoise:
            x = x + float(self.sigmas[-1]) ** 2 * score_fn(x, len(self.sigmas) - 1)
        return x
