"""Energy-based model ``p(x) = exp(-E(x)) / Z`` trained by contrastive divergence with short-run Langevin MCMC and a
replay buffer.

The gradient of the log-likelihood of an EBM is ``E_data[grad E] - E_model[grad E]``; contrastive divergence
estimates the second expectation with MCMC samples. Following Du & Mordatch (2019), each training step

1. starts ``B`` chains, each from a random entry of a replay buffer of past samples with probability
   ``1 - reinit_prob`` (95%) or from fresh uniform noise otherwise (5%), so chains persist across steps and the
   sampler mixes over many more steps than it runs per iteration;
2. runs ``num_steps`` Langevin steps ``x <- x - step_size clip(grad_x E(x)) + noise_std z`` (each gradient element
   clipped to ``[-mcmc_grad_clip, mcmc_grad_clip]``; the state clamped to the data's box);
3. minimises ``E(x+) - E(x-) + reg_weight (E(x+)^2 + E(x-)^2)`` (batch means) over the energy's parameters, the
   samples ``x-`` held fixed; the L2 term keeps the energies near 0 so that they cannot drift to infinity;
4. pushes the new samples into the buffer (a ring of ``buffer_size`` entries).

The recipe is not maximum likelihood, so the model names its own task: ``ContrastiveDivergenceTask``
(``dulab.training.tasks``), which holds the replay buffer and saves it with the checkpoint (resume is exact). The
energy network is an MLP for vectors and a small conv net for images, optionally spectrally normalised.
Z is unknown, so the model has no ``log_prob``; evaluations score samples (``sample_metrics``: FID/KID, the NLL of
samples under a toy's true density). Discrete data live on ``[-1, 1]`` and samples are rounded to levels.

References:
    Du, Mordatch. "Implicit Generation and Generalization in Energy-Based Models", NeurIPS 2019, arXiv:1903.08689.
    Hinton. "Training Products of Experts by Minimizing Contrastive Divergence", Neural Computation 2002.
    Tieleman. "Training Restricted Boltzmann Machines using Approximations to the Likelihood Gradient", ICML 2008
    (persistent chains).
    Nijkamp, Hill, Zhu, Wu. "Learning Non-Convergent Non-Persistent Short-Run MCMC Toward Energy-Based Model",
    NeurIPS 2019, arXiv:1904.09770.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from dulab.config import check_choices, require_at_least, require_widths
from dulab.errors import UserError
from dulab.models.base import Model
from dulab.models.diffusion.langevin import LangevinSampler
from dulab.models.diffusion.score_networks import EnergyConvNet, EnergyMLP, from_unit, to_unit

__all__ = ["EBM", "EBMConfig", "ReplayBuffer"]


class ReplayBuffer:
    """A ring buffer of past MCMC samples that seeds new chains (Du & Mordatch 2019, section 3.1).

    Args:
        capacity: entries kept (the oldest are overwritten).
        shape: the event shape of one entry.
        reinit_prob: probability that a chain starts from fresh noise instead of a buffer entry.
        device, dtype: of the stored samples.
    """

    def __init__(self, capacity: int, shape: tuple, *, reinit_prob: float, device=None, dtype=torch.float32):
        if capacity < 1 or not 0 <= reinit_prob <= 1:
            raise UserError(f"need buffer capacity >= 1 and reinit_prob in [0, 1], got {capacity}, {reinit_prob}")
        self.capacity, self.shape, self.reinit_prob = int(capacity), tuple(shape), float(reinit_prob)
        self.data = torch.zeros((self.capacity, *self.shape), device=device, dtype=dtype)
        self.count = 0  # filled entries
        self.position = 0  # next entry to write

    def __len__(self) -> int:
        return self.count

    def sample_init(self, num: int, fresh: Callable[..., torch.Tensor], *,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Initial states of ``num`` chains.

        Args:
            num: how many chains.
            fresh: ``fresh(num, generator=generator) -> (num, *shape)``, the noise new chains start from.
            generator: the randomness of the choice (and of ``fresh``).
        Returns:
            ``(x (num, *shape), from_buffer (num,) bool)``; every chain is fresh while the buffer is empty.
        """
        x = fresh(num, generator=generator)
        device = generator.device if generator is not None else self.data.device
        from_buffer = torch.zeros(num, dtype=torch.bool, device=x.device)
        if self.count > 0:
            keep = torch.rand(num, generator=generator, device=device) >= self.reinit_prob
            idx = torch.randint(0, self.count, (num,), generator=generator, device=device)
            from_buffer = keep.to(x.device)
            old = self.data[idx.to(self.data.device)].to(x.device, x.dtype)
            x = torch.where(from_buffer.view(-1, *[1] * len(self.shape)), old, x)
        return x, from_buffer

    def push(self, x: torch.Tensor) -> None:
        """Store the rows of ``x`` (``(B, *shape)``), overwriting the oldest entries once full."""
        x = x.detach().to(self.data.device, self.data.dtype)
        if len(x) >= self.capacity:
            x = x[-self.capacity:]
        idx = (self.position + torch.arange(len(x), device=self.data.device)) % self.capacity
        self.data[idx] = x
        self.position = (self.position + len(x)) % self.capacity
        self.count = min(self.capacity, self.count + len(x))

    def state_dict(self) -> dict:
        """Tensors and ints only (``state.pt`` is read with ``weights_only=True``)."""
        return {"data": self.data[:self.count].detach().cpu().clone(), "count": self.count,
                "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        count = int(state["count"])
        if count > self.capacity or tuple(state["data"].shape[1:]) != self.shape:
            raise UserError("the saved replay buffer does not fit this model (capacity or shape differ)")
        self.data.zero_()
        self.data[:count] = state["data"].to(self.data.device, self.data.dtype)
        self.count, self.position = count, int(state["position"])


@dataclass
class EBMConfig:
    """Hyperparameters of ``EBM``.

    Attributes:
        architecture: ``auto`` (conv for images, else MLP), ``mlp`` or ``conv``.
        hidden_sizes: MLP widths.
        fourier_features: F random Fourier features of the coordinates feed the MLP (0: raw coordinates;
            ``score_networks.FourierFeatures``): a SiLU MLP on raw 2-D coordinates gives a blurry energy.
        fourier_scale: the frequency scale of those features (angular frequency per unit of the data).
        hidden_channels: conv width at full resolution.
        use_spectral_norm: spectrally normalise every weight of the energy network.
        num_steps: Langevin steps per training iteration (K).
        sample_steps: Langevin steps from fresh noise when sampling (0: ``4 num_steps``; chains from noise need
            more steps than the persistent ones of training).
        step_size: the Langevin step on ``-grad E``.
        noise_std: the standard deviation of the noise added at each step (``sqrt(2 step_size)`` would be exact
            Langevin at temperature 1; Du & Mordatch use far less).
        mcmc_grad_clip: elementwise bound on ``grad_x E`` in each Langevin step (0: off).
        buffer_size: replay buffer entries.
        reinit_prob: fraction of chains started from fresh noise (Du & Mordatch: 5%).
        reg_weight: alpha of the L2 energy regulariser ``alpha (E(x+)^2 + E(x-)^2)``.
        init_range: chains start uniform on ``[-r, r]`` per coordinate and stay clamped there (``None``: 1 for
            discrete data on ``[-1, 1]``, 4 for continuous data such as the 2-D toys).
    """

    architecture: Literal["auto", "mlp", "conv"] = "auto"
    hidden_sizes: tuple[int, ...] = (128, 128, 128)
    fourier_features: int = 32
    fourier_scale: float = 2.0
    hidden_channels: int = 32
    use_spectral_norm: bool = False
    num_steps: int = 40
    sample_steps: int = 0
    step_size: float = 0.01
    noise_std: float = 0.1414
    mcmc_grad_clip: float = 0.0
    buffer_size: int = 10000
    reinit_prob: float = 0.05
    reg_weight: float = 0.01
    init_range: float | None = None

    def __post_init__(self):
        check_choices(self)
        require_widths(self, "hidden_sizes")
        require_at_least(self, 1, "hidden_channels", "buffer_size", "num_steps")
        require_at_least(self, 0, "sample_steps", "fourier_features")
        require_at_least(self, 0.0, "noise_std", "mcmc_grad_clip", "reg_weight", "fourier_scale")
        if self.step_size <= 0:
            raise UserError(f"step_size must be > 0, got {self.step_size}")
        if not 0 <= self.reinit_prob <= 1:
            raise UserError(f"reinit_prob must be in [0, 1], got {self.reinit_prob}")
        if self.init_range is not None and self.init_range <= 0:
            raise UserError(f"init_range must be > 0 (or None), got {self.init_range}")


class EBM(Model):
    """An energy network ``E(x)``, ``p(x) ~ exp(-E(x))``, trained by contrastive divergence with a replay buffer."""

    Config = EBMConfig
    family = "energy"
    task = "contrastive_divergence"
    has_likelihood = False
    default_data = "eight_gaussians"
    train_defaults = {"epochs": 20, "batch_size": 128, "lr": 1e-3, "betas": (0.0, 0.999), "eval_every": 10}
    #: samples drawn for the sample scores of each evaluation (at most the dataset's size)
    eval_samples: int = 500

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c = self.config
        arch = c.architecture if c.architecture != "auto" else ("conv" if spec.is_image else "mlp")
        if arch == "conv":
            self.net = EnergyConvNet(spec.shape[0], c.hidden_channels, c.use_spectral_norm)
        else:
            self.net = EnergyMLP(spec.num_dims, c.hidden_sizes, c.use_spectral_norm,
                                 fourier_features=c.fourier_features, fourier_scale=c.fourier_scale)
        self.architecture = arch
        self.init_range = c.init_range if c.init_range is not None else (1.0 if spec.is_discrete else 4.0)

    @classmethod
    def check_spec(cls, spec, config) -> None:
        arch = config.architecture if config.architecture != "auto" else ("conv" if spec.is_image else "mlp")
        if arch == "conv" and not spec.is_image:
            raise UserError(f"architecture=conv needs images (C, H, W), the data are {spec.describe()}")

    # ------------------------------------------------------------------ energy and its gradient
    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """``E(x)``: ``(B, *event)`` floats on the model's scale (``[-1, 1]`` for discrete data) -> ``(B,)``."""
        return self.net(x)

    def to_model_input(self, x: torch.Tensor) -> torch.Tensor:
        """Data (int64 levels or floats) to the float representation the energy is defined on."""
        if tuple(x.shape[1:]) != self.spec.shape:
            raise UserError(f"EBM expects inputs of shape (B, {', '.join(map(str, self.spec.shape))}),"
                            f" got {tuple(x.shape)}")
        return to_unit(x, self.spec, self._param_dtype())

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``-grad_x E(x)`` (the score of the model density), by autograd; parameters get no gradient."""
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(x).sum(), x)
        return -grad

    def mcmc(self, num_steps: int | None = None) -> LangevinSampler:
        """The short-run Langevin sampler of the config (``num_steps`` default: the training K)."""
        c = self.config
        return LangevinSampler(step_size=c.step_size, num_steps=c.num_steps if num_steps is None else num_steps,
                               noise_scale=c.noise_std / (2 * c.step_size) ** 0.5, grad_clip=c.mcmc_grad_clip,
                               clamp=(-self.init_range, self.init_range))

    def initial_noise(self, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Fresh chain starts: uniform on ``[-init_range, init_range]`` per coordinate."""
        device = generator.device if generator is not None else self._param_device()
        u = torch.rand((num_samples, *self.spec.shape), generator=generator, device=device, dtype=self._param_dtype())
        return ((2 * u - 1) * self.init_range).to(self._param_device())

    def langevin(self, x: torch.Tensor, *, num_steps: int | None = None, generator: torch.Generator | None = None,
                 callback=None) -> torch.Tensor:
        """Run the short-run sampler from ``x`` (float representation); returns detached states."""
        with torch.inference_mode(False):
            x = x.detach().clone()
            out = self.mcmc(num_steps)(self.score, x, generator=generator, callback=callback)
        return out.detach()

    def make_replay_buffer(self, device=None) -> ReplayBuffer:
        """An empty buffer for ``ContrastiveDivergenceTask`` (the config's size and re-initialisation rate)."""
        return ReplayBuffer(self.config.buffer_size, self.spec.shape, reinit_prob=self.config.reinit_prob,
                            device=device or self._param_device(), dtype=self._param_dtype())

    # ------------------------------------------------------------------ the objective
    def loss(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
             negatives: torch.Tensor | None = None) -> dict:
        """The contrastive-divergence objective on data ``x`` against MCMC samples.

        Args:
            x: data ``(B, *event)``.
            negatives: ``(B', *event)`` samples on the model's float scale (held fixed); default: ``B`` chains of
                ``num_steps`` Langevin steps from fresh noise (global RNG), i.e. short-run CD without a buffer.
        Returns:
            ``"loss"``: ``mean E(x+) - mean E(x-) + reg_weight (mean E(x+)^2 + mean E(x-)^2)``; ``"cd"``: the
            first difference; ``"reg"``; ``"energy_data"``, ``"energy_samples"``: the batch-mean energies.
        """
        pos = self.to_model_input(x)
        if negatives is None:
            negatives = self.langevin(self.initial_noise(pos.shape[0]))
        e_pos, e_neg = self.energy(pos), self.energy(negatives.detach().to(pos.dtype))
        cd = e_pos.mean() - e_neg.mean()
        reg = e_pos.pow(2).mean() + e_neg.pow(2).mean()
        return {"loss": cd + self.config.reg_weight * reg, "cd": cd.detach(), "reg": reg.detach(),
                "energy_data": e_pos.mean().detach(), "energy_samples": e_neg.mean().detach()}

    # ------------------------------------------------------------------ sampling and evaluation
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
               num_steps: int | None = None, return_float: bool = False) -> torch.Tensor:
        """Langevin samples from fresh noise, ``(num_samples, *event)``.

        Args:
            num_samples: how many.
            generator: the randomness of the initial noise and the Langevin noise.
            num_steps: Langevin steps (default ``sample_steps``, or ``4 num_steps`` when that is 0).
            return_float: return the float representation instead of int64 levels (discrete data).
        """
        if context is not None:
            raise UserError("EBM is unconditional: call sample() without context=")
        c = self.config
        steps = num_steps if num_steps is not None else (c.sample_steps or 4 * c.num_steps)
        x = self.langevin(self.initial_noise(num_samples, generator), num_steps=steps, generator=generator)
        return x if return_float else from_unit(x, self.spec)

    def evaluation_metrics(self, dataset, *, num_samples: int | None = None,
                           generator: torch.Generator | None = None, seed: int = 0) -> dict:
        """What ``ContrastiveDivergenceTask.evaluate`` reports: the CD loss and mean energies of
        ``num_samples`` dataset examples against as many samples from noise, and ``sample_metrics`` of those
        samples (FID/KID; with a true density, ``sample_nll``, ``sample_outside``, ``true_entropy``)."""
        from dulab.models.diffusion.sample_metrics import sample_metrics

        n = min(len(dataset), num_samples or self.eval_samples)
        if n < 4:
            raise UserError(f"EBM evaluation needs at least 4 examples, got {len(dataset)}")
        neg = self.sample(n, generator=generator, return_float=True)
        idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
        with torch.no_grad():
            out = {k: float(v) for k, v in self.loss(dataset.x[idx].to(self._param_device()), negatives=neg).items()}
        out.update(sample_metrics(from_unit(neg, self.spec), dataset, seed=seed))
        return out
