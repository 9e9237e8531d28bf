"""Noise-conditional score network (NCSN): denoising score matching over a ladder of noise levels, sampled by
annealed Langevin dynamics.

A network ``s(x, i)`` learns the score ``grad_x log q_i(x)`` of the data perturbed by ``N(0, sigma_i^2 I)`` for a
geometric ladder ``sigma_1 > ... > sigma_L`` (Song & Ermon 2019, section 4.2). For one level, denoising score
matching (Vincent 2011) regresses ``s(x + sigma z, i)`` on the perturbation's score ``-z / sigma``; weighting level
i by ``lambda(sigma_i) = sigma_i^2`` (the paper's eq. 6) gives the per-example objective

    l_i(x) = 1/2 || sigma_i s(x + sigma_i z, i) + z ||^2,   z ~ N(0, I),

averaged over the levels (one uniform level per example). The network outputs ``sigma_i s`` directly
(``s(x, i) = net(x, i) / sigma_i``, Song & Ermon 2020, technique 3), so its output has unit scale at every level.
Sampling runs ``AnnealedLangevinSampler`` (Algorithm 1) through the levels, from uniform noise on ``[-1, 1]`` for
discrete data or ``N(0, sigma_1^2 I)`` for continuous data, ending with a denoising step.

Discrete data are modelled on ``[-1, 1]`` (``score_networks.to_unit``) and samples are rounded to the nearest level.
NCSN has no likelihood: ``loss`` is the DSM objective, and each evaluation adds sample scores
(``sample_metrics``: FID/KID, and the NLL of samples under a toy's true density).

References:
    Song, Ermon. "Generative Modeling by Estimating Gradients of the Data Distribution", NeurIPS 2019,
    arXiv:1907.05600.
    Song, Ermon. "Improved Techniques for Training Score-Based Generative Models", NeurIPS 2020, arXiv:2006.09011.
    Vincent. "A Connection Between Score Matching and Denoising Autoencoders", Neural Computation 2011.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from dulab.config import check_choices, require_at_least, require_widths
from dulab.errors import UserError
from dulab.models.base import Model
from dulab.models.diffusion.langevin import AnnealedLangevinSampler, geometric_sigmas
from dulab.models.diffusion.score_networks import ConditionalConvNet, ConditionalMLP, from_unit, to_unit

__all__ = ["NCSN", "NCSNConfig", "dsm_loss"]


def dsm_loss(score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, sigmas: torch.Tensor,
             index: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Denoising score matching at the levels ``index``, weighted by ``sigma^2`` (Song & Ermon 2019, eq. 5-6).

    Args:
        score_fn: ``(x_tilde (B, *event), index (B,)) -> (B, *event)``, the model's score of the perturbed data.
        x: clean data ``(B, *event)`` (float).
        sigmas: ``(L,)`` the noise levels.
        index: ``(B,)`` int64, each example's level.
        noise: ``(B, *event)`` standard normal draws z.
    Returns:
        ``(B,)``: ``1/2 ||sigma s(x + sigma z) + z||^2`` summed over the event. For data ``N(mu, s^2 I)`` in D
        dimensions and the exact score of ``N(mu, (s^2 + sigma^2) I)`` its mean is ``D s^2 / (2 (s^2 + sigma^2))``,
        the minimum over all score functions.
    """
    sigma = sigmas.to(x.dtype)[index].view(-1, *[1] * (x.dim() - 1))  # (B, 1, ...)
    s = score_fn(x + sigma * noise, index)
    return 0.5 * (sigma * s + noise).pow(2).reshape(x.shape[0], -1).sum(1)


@dataclass
class NCSNConfig:
    """Hyperparameters of ``NCSN``.

    Attributes:
        sigma_max: sigma_1, the largest noise level (``None``: 1 for discrete data on ``[-1, 1]``, 5 for continuous
            data such as the 2-D toys, which lie within ``[-4, 4]^2``; Song & Ermon 2020 advise about the largest
            distance between two examples).
        sigma_min: sigma_L, the smallest noise level.
        num_noise_levels: L.
        architecture: ``auto`` (conv for images, else MLP), ``mlp`` or ``conv``.
        hidden_sizes: MLP widths.
        fourier_features: F random Fourier features of the coordinates feed the MLP (0: raw coordinates). Without
            them a SiLU MLP on the 2-D toys learns the scores of the middle noise levels (pulls towards eight modes
            with sharp borders) so slowly that 30 epochs give a ring, not the modes (``FourierFeatures``).
        fourier_scale: the frequency scale of those features (angular frequency per unit of the data).
        hidden_channels: conv width.
        num_blocks: residual blocks of the conv net.
        langevin_eps: eps, the Langevin step at the smallest level (level i: ``eps sigma_i^2 / sigma_L^2``).
        num_steps: T, Langevin steps per noise level when sampling (Song & Ermon use 100).
        denoise: end sampling with the denoising step ``x + sigma_L^2 s(x, L)``.
    """

    sigma_max: float | None = None
    sigma_min: float = 0.01
    num_noise_levels: int = 10
    architecture: Literal["auto", "mlp", "conv"] = "auto"
    hidden_sizes: tuple[int, ...] = (128, 128, 128)
    fourier_features: int = 32
    fourier_scale: float = 2.0
    hidden_channels: int = 32
    num_blocks: int = 3
    langevin_eps: float = 2e-5
    num_steps: int = 100
    denoise: bool = True

    def __post_init__(self):
        check_choices(self)
        require_widths(self, "hidden_sizes")
        require_at_least(self, 1, "num_noise_levels", "hidden_channels", "num_blocks")
        require_at_least(self, 0, "num_steps", "fourier_features")
        require_at_least(self, 0.0, "fourier_scale")
        if self.sigma_min <= 0 or (self.sigma_max is not None and self.sigma_max <= self.sigma_min):
            raise UserError(f"need sigma_max > sigma_min > 0, got sigma_max={self.sigma_max},"
                            f" sigma_min={self.sigma_min}")
        if self.langevin_eps <= 0:
            raise UserError(f"langevin_eps must be > 0, got {self.langevin_eps}")


class NCSN(Model):
    """A noise-conditional score network trained by denoising score matching, sampled by annealed Langevin."""

    Config = NCSNConfig
    family = "diffusion"
    has_likelihood = False
    default_data = "eight_gaussians"
    train_defaults = {"epochs": 100, "batch_size": 128, "lr": 1e-3, "eval_every": 25}
    #: samples drawn for the sample scores of each evaluation (at most the dataset's size)
    eval_samples: int = 500

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c = self.config
        sigma_max = c.sigma_max if c.sigma_max is not None else (1.0 if spec.is_discrete else 5.0)
        if sigma_max <= c.sigma_min:
            raise UserError(f"sigma_max ({sigma_max}) must exceed sigma_min ({c.sigma_min})")
        # Derived from the config, so not saved with the weights (computed in float64, kept in float32).
        self.register_buffer("sigmas", geometric_sigmas(sigma_max, c.sigma_min, c.num_noise_levels).float(),
                             persistent=False)
        arch = c.architecture if c.architecture != "auto" else ("conv" if spec.is_image else "mlp")
        if arch == "conv":
            self.net = ConditionalConvNet(spec.shape[0], c.hidden_channels, c.num_blocks, c.num_noise_levels)
        else:
            self.net = ConditionalMLP(spec.num_dims, c.hidden_sizes, c.num_noise_levels,
                                      fourier_features=c.fourier_features, fourier_scale=c.fourier_scale)
        self.architecture = arch

    @classmethod
    def check_spec(cls, spec, config) -> None:
        arch = config.architecture if config.architecture != "auto" else ("conv" if spec.is_image else "mlp")
        if arch == "conv" and not spec.is_image:
            raise UserError(f"architecture=conv needs images (C, H, W), the data are {spec.describe()}")

    # ------------------------------------------------------------------ the score
    def score(self, x: torch.Tensor, index: torch.Tensor | int) -> torch.Tensor:
        """``s(x, i)``, the score of the data perturbed at level ``index``, on the float representation.

        Args:
            x: ``(B, *event)`` float, the (perturbed) data on the model's scale (``[-1, 1]`` for discrete data).
            index: ``(B,)`` int64 level indices, or one int for all.
        Returns:
            ``(B, *event)``.
        """
        B = x.shape[0]
        if isinstance(index, int):
            index = torch.full((B,), index, dtype=torch.long, device=x.device)
        sigma = self.sigmas.to(x.dtype)[index].view(B, *[1] * (x.dim() - 1))
        if self.architecture == "mlp":
            out = self.net(x.reshape(B, -1), index).reshape(x.shape)
        else:
            out = self.net(x, index)
        return out / sigma

    def to_model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Data (int64 levels or floats) to the float representation the score is defined on."""
        if tuple(x.shape[1:]) != self.spec.shape:
            raise UserError(f"NCSN expects inputs of shape (B, {', '.join(map(str, self.spec.shape))}),"
                            f" got {tuple(x.shape)}")
        return to_unit(x, self.spec, self._param_dtype())

    def loss(self, x: torch.Tensor, context: torch.Tensor | None = None) -> dict:
        """DSM over the noise ladder, one uniformly drawn level per example (global RNG).

        Returns:
            ``"loss"``: the batch mean of ``l_i(x)`` per dimension; ``"dsm"``: the same per example (nats-free
            squared error, summed over the event).
        """
        u = self.to_model_input(x)
        index = torch.randint(0, len(self.sigmas), (u.shape[0],), device=u.device)
        per_example = dsm_loss(self.score, u, self.sigmas, index, torch.randn_like(u))
        dsm = per_example.mean()
        return {"loss": dsm / self.spec.num_dims, "dsm": dsm}

    # ------------------------------------------------------------------ sampling
    def sampler(self, num_steps: int | None = None) -> AnnealedLangevinSampler:
        """The annealed Langevin sampler of this model's ladder (``num_steps`` per level; default the config's)."""
        c = self.config
        return AnnealedLangevinSampler(self.sigmas.double().cpu(), eps=c.langevin_eps,
                                       steps_per_level=c.num_steps if num_steps is None else num_steps,
                                       denoise=c.denoise)

    def initial_noise(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Where the chains start: uniform on ``[-1, 1]`` for discrete data, ``N(0, sigma_1^2 I)`` otherwise."""
        shape = (num_samples, *self.spec.shape)
        device = generator.device if generator is not None else self._param_device()
        if self.spec.is_discrete:
            x = 2 * torch.rand(shape, generator=generator, device=device, dtype=self._param_dtype()) - 1
        else:
            x = float(self.sigmas[0]) * torch.randn(shape, generator=generator, device=device,
                                                    dtype=self._param_dtype())
        return x.to(self._param_device())

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
               num_steps: int | None = None, return_float: bool = False) -> torch.Tensor:
        """Annealed Langevin samples ``(num_samples, *event)``.

        Args:
            num_samples: how many.
            generator: the randomness of the initial noise and of every Langevin step.
            num_steps: T, steps per noise level (default ``config.num_steps``); ``L T`` network passes in all.
            return_float: return the float representation (``[-1, 1]`` for discrete data) instead of levels.
        Returns:
            int64 levels for discrete data (rounded), floats for continuous data.
        """
        if context is not None:
            raise UserError("NCSN is unconditional: call sample() without context=")
        x = self.sampler(num_steps)(self.score, self.initial_noise(num_samples, generator), generator=generator)
        return x if return_float else from_unit(x, self.spec)

    @torch.no_grad()
    def evaluation_metrics(self, dataset) -> dict:
        """Sample scores added to each evaluation: ``sample_metrics`` of ``min(len(dataset), eval_samples)``
        samples (FID/KID; with a true density, ``sample_nll``, ``sample_outside``, ``true_entropy``)."""
        from dulab.models.diffusion.sample_metrics import sample_metrics

        n = min(len(dataset), self.eval_samples)
        if n < 4:
            return {}
        g = torch.Generator(device=self._param_device()).manual_seed(0)
        return sample_metrics(self.sample(n, generator=g), dataset)
