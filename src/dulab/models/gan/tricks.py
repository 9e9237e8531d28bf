"""Improved GAN training, as options of every GAN (fields of ``GANConfig``, applied by ``AdversarialTask``).

From Salimans et al. (2016): *feature matching* (G matches the batch mean of D's last hidden features on real data
instead of maximising D's output, Sec. 3.1), *minibatch discrimination* (a layer before D's last linear one that
appends, per example, its closeness to the other examples of its batch, Sec. 3.2), *historical averaging* (each
player pays ``lambda ||theta - mean of its past theta||^2``, Sec. 3.3), *one-sided label smoothing* (D's target for
real data is ``1 - alpha``, the fake target stays 0, Sec. 3.4) and *virtual batch normalisation* (G's batch-norm
layers normalise every example with the statistics of a reference batch fixed at the start, combined with the
example itself, Sec. 3.5). Besides those: *instance noise* (Gaussian noise, annealed linearly to zero, on every
input D sees; Sonderby et al. 2017, Arjovsky & Bottou 2017) and the *variational discriminator bottleneck* (D
encodes its features into a stochastic code ``z ~ N(mu, sigma^2)`` and its expected KL to ``N(0, I)`` is held at
``I_c`` by a Lagrange multiplier beta updated by dual gradient ascent; Peng et al. 2019, Eq. 9-10).

Progressive growing (Karras et al. 2018) is a property of the convolutional networks: ``progressive.py``.

The discriminator's *head* is its last linear layer; its *features* are that layer's input. A discriminator is
either an ``nn.Sequential`` whose last module is the head, or a module with a ``features(x)`` method and a
``head`` attribute. Minibatch discrimination and the bottleneck replace the head by
``[MinibatchDiscrimination] -> [VariationalBottleneck] -> Linear(., 1)`` (spectrally normalised where the old head
was).

References:
    Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen. "Improved Techniques for Training GANs", 2016,
    arXiv:1606.03498.
    Sonderby, Caballero, Theis, Shi, Huszar. "Amortised MAP Inference for Image Super-resolution", 2017,
    arXiv:1610.04490 (instance noise).
    Arjovsky, Bottou. "Towards Principled Methods for Training Generative Adversarial Networks", 2017,
    arXiv:1701.04862.
    Peng, Kanazawa, Toyer, Abbeel, Levine. "Variational Discriminator Bottleneck: Improving Imitation Learning,
    Inverse RL, and GANs by Constraining Information Flow", 2019, arXiv:1810.00821.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from dulab.errors import UserError

__all__ = ["MinibatchDiscrimination", "VariationalBottleneck", "VirtualBatchNorm", "VBNGenerator",
           "HistoricalAverage", "TrainingTricks", "check_tricks", "wrap_discriminator", "wrap_generator",
           "discriminator_features", "gaussian_kl", "instance_noise_std", "update_beta"]


# ============================================================================================ layers

class MinibatchDiscrimination(nn.Module):
    """Salimans et al. (2016), Sec. 3.2: ``M_i = f_i T`` as ``num_kernels`` rows of ``kernel_dim``;
    ``o(x_i)_b = sum_{j != i} exp(-||M_{i,b} - M_{j,b}||_1)``; output ``[f_i, o(x_i)]``.

    Args:
        in_features: ``A``, the size of ``f``.
        num_kernels: ``B``.
        kernel_dim: ``C``.
    """

    def __init__(self, in_features: int, num_kernels: int, kernel_dim: int):
        super().__init__()
        self.num_kernels, self.kernel_dim = num_kernels, kernel_dim
        self.T = nn.Parameter(0.1 * torch.randn(in_features, num_kernels * kernel_dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        m = (f @ self.T).reshape(f.shape[0], self.num_kernels, self.kernel_dim).transpose(0, 1)  # (B, N, C)
        # (B, N, N) L1 distances between the rows of each kernel, written out rather than torch.cdist: cdist has
        # no double backward, which the gradient penalty (WGAN-GP, R1) through this layer needs
        dist = (m[:, :, None, :] - m[:, None, :, :]).abs().sum(-1)
        o = torch.exp(-dist).sum(2).transpose(0, 1) - 1.0  # (N, B); the j = i term is exp(0) = 1
        return torch.cat([f, o], dim=1)  # (N, A + B)


def gaussian_kl(mu: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, sigma^2) || N(0, I))`` per example, summed over the last dimension: ``(N, k) -> (N,)`` nats."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 2 * log_sigma - 1).sum(-1)


class VariationalBottleneck(nn.Module):
    """Peng et al. (2019): ``E(z | x) = N(mu(x), sigma(x)^2)`` with ``(mu, log sigma)`` a linear map of the
    features; returns ``z = mu + sigma eps`` in training mode (global RNG) and ``mu`` in eval mode. The KL of the
    latest call, ``(N,)``, is left in ``self.kl`` for the task."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.encoder = nn.Linear(in_features, 2 * dim)
        self.kl: torch.Tensor | None = None

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        mu, log_sigma = self.encoder(f).chunk(2, dim=1)  # (N, k) each
        self.kl = gaussian_kl(mu, log_sigma)
        if not self.training:
            return mu
        return mu + torch.exp(log_sigma) * torch.randn_like(mu)


class VirtualBatchNorm(nn.Module):
    """Virtual batch norm (Salimans et al. 2016, Sec. 3.5) for ``(N, F)`` or ``(N, C, H, W)`` inputs.

    The batch's first ``num_reference`` rows are the reference batch (``VBNGenerator`` puts them there): they are
    normalised with their own batch statistics (per feature/channel, over rows and positions). Every other row
    ``x_i`` is normalised with the statistics of the reference batch together with ``x_i`` itself, weight
    ``1 / (R + 1)`` for ``x_i`` (its own mean and mean square over positions) and ``R / (R + 1)`` for the
    reference, so that an example's output never depends on the other non-reference examples of its batch.
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.eps = eps
        self.num_reference = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.num_reference
        if r < 1 or x.shape[0] < r:
            raise RuntimeError("VirtualBatchNorm needs its reference batch in front (use it through VBNGenerator)")
        shape = (1, -1) + (1,) * (x.dim() - 2)  # broadcast over (N, C, *positions)
        positions = tuple(range(2, x.dim()))
        ref = x[:r]
        ref_mean = ref.mean(dim=(0, *positions), keepdim=True)  # (1, C, 1, 1)
        ref_sq = ref.pow(2).mean(dim=(0, *positions), keepdim=True)
        rest = x[r:]
        w = 1.0 / (r + 1)
        own_mean = rest.mean(dim=positions, keepdim=True) if positions else rest  # (N - R, C, 1, 1)
        own_sq = rest.pow(2).mean(dim=positions, keepdim=True) if positions else rest.pow(2)
        mean = torch.cat([ref_mean.expand(r, *ref_mean.shape[1:]), w * own_mean + (1 - w) * ref_mean])
        sq = torch.cat([ref_sq.expand(r, *ref_sq.shape[1:]), w * own_sq + (1 - w) * ref_sq])
        var = (sq - mean.pow(2)).clamp_min(0.0)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.reshape(shape) + self.bias.reshape(shape)


class VBNGenerator(nn.Module):
    """A generator whose batch-norm layers are ``VirtualBatchNorm``: every call runs the fixed reference latents
    ``reference`` (a buffer, drawn once when the model is built and saved with its weights) in front of ``z``."""

    def __init__(self, generator: nn.Module, reference: torch.Tensor):
        super().__init__()
        self.net = generator
        self.register_buffer("reference", reference)
        self.vbn_layers = [m for m in generator.modules() if isinstance(m, VirtualBatchNorm)]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = self.reference.shape[0]
        for m in self.vbn_layers:
            m.num_reference = r
        out = self.net(torch.cat([self.reference.to(z.dtype), z]))  # (R + B, ...)
        return out[r:]


def _convert_batch_norm(module: nn.Module) -> int:
    """Replace every ``BatchNorm1d/2d`` below ``module`` by a ``VirtualBatchNorm`` (same affine init); the count."""
    count = 0
    for name, child in module.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
            vbn = VirtualBatchNorm(child.num_features, child.eps)
            if child.affine:
                with torch.no_grad():
                    vbn.weight.copy_(child.weight)
                    vbn.bias.copy_(child.bias)
            setattr(module, name, vbn)
            count += 1
        else:
            count += _convert_batch_norm(child)
    return count


# ============================================================================================ wrapping

def check_tricks(c) -> None:
    """Validate the improved-training fields of a ``GANConfig`` (``UserError`` on a bad value)."""
    for name in ("minibatch_kernels", "virtual_batch_norm", "vdb_bottleneck", "instance_noise_steps"):
        if getattr(c, name) < 0:
            raise UserError(f"{name} must be >= 0 (0 disables), got {getattr(c, name)}")
    if c.minibatch_kernel_dim < 1:
        raise UserError(f"minibatch_kernel_dim must be >= 1, got {c.minibatch_kernel_dim}")
    for name in ("historical_averaging", "instance_noise", "vdb_beta_step", "vdb_beta_init"):
        if getattr(c, name) < 0:
            raise UserError(f"{name} must be >= 0, got {getattr(c, name)}")
    if c.vdb_info_constraint <= 0:
        raise UserError(f"vdb_info_constraint (I_c, nats) must be > 0, got {c.vdb_info_constraint}")
    if not 0 <= c.label_smoothing < 1:
        raise UserError(f"label_smoothing must be in [0, 1), got {c.label_smoothing}")
    if c.label_smoothing > 0 and c.loss not in ("minimax", "non_saturating"):
        raise UserError(f"one-sided label smoothing needs a logistic loss (minimax or non_saturating), got"
                        f" loss={c.loss}")


def _head_of(D: nn.Module):
    if isinstance(D, nn.Sequential):
        return D[-1]
    if hasattr(D, "features") and hasattr(D, "head"):
        return D.head
    return None


def discriminator_features(D: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """D's features (the input of its head) for ``x``, ``(B, *event) -> (B, F)``."""
    if isinstance(D, nn.Sequential):
        return D[:-1](x)
    if hasattr(D, "features") and hasattr(D, "head"):
        return D.features(x)
    raise UserError(f"{type(D).__name__} does not expose its features: feature matching needs a discriminator that"
                    " is an nn.Sequential ending in its last linear layer, or has features(x) and head")


def wrap_discriminator(D: nn.Module, c) -> nn.Module:
    """Put minibatch discrimination and/or the variational bottleneck in front of D's last linear layer."""
    if c.minibatch_kernels == 0 and c.vdb_bottleneck == 0:
        return D
    head = _head_of(D)
    if not isinstance(head, nn.Linear) or head.out_features != 1:
        raise UserError(f"minibatch discrimination and the discriminator bottleneck need a discriminator ending in"
                        f" a linear layer to one logit; {type(D).__name__} ends in {type(head).__name__}")
    sn = spectral_norm if hasattr(head, "parametrizations") else (lambda m: m)
    layers: list[nn.Module] = []
    width = head.in_features
    if c.minibatch_kernels > 0:
        layers.append(MinibatchDiscrimination(width, c.minibatch_kernels, c.minibatch_kernel_dim))
        width += c.minibatch_kernels
    if c.vdb_bottleneck > 0:
        layers.append(VariationalBottleneck(width, c.vdb_bottleneck))
        width = c.vdb_bottleneck
    new_head = nn.Sequential(*layers, sn(nn.Linear(width, 1)))
    if isinstance(D, nn.Sequential):
        return nn.Sequential(*D[:-1], new_head)
    D.head = new_head
    return D


def wrap_generator(G: nn.Module, c, latent: torch.Tensor | None) -> nn.Module:
    """Virtual batch norm: convert G's batch norm and run the reference latents ``latent`` with every batch."""
    if c.virtual_batch_norm == 0:
        return G
    if _convert_batch_norm(G) == 0:
        raise UserError("virtual_batch_norm needs batch-norm layers in the generator; this one has none"
                        " (for the MLP gan set g_norm=batch)")
    return VBNGenerator(G, latent)


# ============================================================================================ task-side state

def instance_noise_std(step: int, std: float, anneal_steps: int) -> float:
    """Instance noise std at D step ``step``: ``std`` falling linearly to 0 at ``anneal_steps`` (0: constant)."""
    if anneal_steps == 0:
        return std
    return std * max(0.0, 1.0 - step / anneal_steps)


def update_beta(beta: torch.Tensor, kl: torch.Tensor, info_constraint: float, step_size: float) -> torch.Tensor:
    """Peng et al. (2019), Eq. 10: ``beta <- max(0, beta + alpha_beta (E KL - I_c))``."""
    return (beta + step_size * (kl - info_constraint)).clamp_min(0.0)


class HistoricalAverage:
    """The running mean of a parameter list over the steps taken, and the penalty ``||theta - mean||^2``
    (Salimans et al. 2016, Sec. 3.3). The mean starts at the parameters of the first penalty (no history yet)."""

    def __init__(self):
        self.mean: list[torch.Tensor] | None = None
        self.count = 0

    def penalty(self, params: list[torch.Tensor]) -> torch.Tensor:
        if self.mean is None:
            self.mean = [p.detach().clone() for p in params]
            self.count = 1
        elif self.mean[0].device != params[0].device:  # restored from a checkpoint on the CPU
            self.mean = [m.to(p.device) for p, m in zip(params, self.mean)]
        return sum((p - m).pow(2).sum() for p, m in zip(params, self.mean))

    @torch.no_grad()
    def update(self, params: list[torch.Tensor]) -> None:
        """Include the parameters after a step: ``mean <- mean + (theta - mean) / (count + 1)``."""
        self.count += 1
        for p, m in zip(params, self.mean):
            m.add_((p.detach() - m) / self.count)

    def state_dict(self) -> dict:
        return {"mean": [] if self.mean is None else [m.clone() for m in self.mean], "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.count = int(state.get("count", 0))
        mean = state.get("mean", [])
        self.mean = [m.clone() for m in mean] if mean else None


class TrainingTricks:
    """The state and the pieces ``AdversarialTask`` uses for the options of a ``GANConfig``: instance noise, label
    smoothing, historical averages of both players, the bottleneck's beta, feature matching."""

    #: the options read from the model's config, with their "off" values for configs that lack them
    OPTIONS = {"instance_noise": 0.0, "instance_noise_steps": 0, "historical_averaging": 0.0, "label_smoothing": 0.0,
               "feature_matching": False, "vdb_info_constraint": 0.5, "vdb_beta_step": 0.0, "vdb_beta_init": 0.0}

    def __init__(self, model):
        self.model = model
        self.c = SimpleNamespace(**{k: getattr(model.config, k, v) for k, v in self.OPTIONS.items()})
        self.history = {"d": HistoricalAverage(), "g": HistoricalAverage()}
        self.beta: torch.Tensor | None = None
        self.bottleneck = next((m for m in model.modules() if isinstance(m, VariationalBottleneck)), None)

    def noisy(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """``x + sigma_t eps`` (global RNG) with the annealed std of D step ``step``; ``x`` when off."""
        if self.c.instance_noise == 0:
            return x
        std = instance_noise_std(step, self.c.instance_noise, self.c.instance_noise_steps)
        return x + std * torch.randn_like(x) if std > 0 else x

    def last_kl(self) -> torch.Tensor | None:
        return None if self.bottleneck is None else self.bottleneck.kl

    def historical_penalty(self, player: str, params: list[torch.Tensor]) -> torch.Tensor | None:
        if self.c.historical_averaging == 0:
            return None
        return self.c.historical_averaging * self.history[player].penalty(params)

    def after_step(self, player: str, params: list[torch.Tensor]) -> None:
        if self.c.historical_averaging > 0:
            self.history[player].update(params)

    def bottleneck_term(self, kl_real: torch.Tensor, kl_fake: torch.Tensor):
        """``beta (E KL - I_c)`` with ``E KL`` the mean of the real and fake halves, and that mean (detached)."""
        kl = 0.5 * (kl_real.mean() + kl_fake.mean())
        if self.beta is None:
            self.beta = torch.full((), float(self.c.vdb_beta_init), dtype=kl.dtype, device=kl.device)
        self.beta = self.beta.to(kl.device)
        return self.beta * (kl - self.c.vdb_info_constraint), kl.detach()

    def update_beta(self, kl: torch.Tensor) -> None:
        self.beta = update_beta(self.beta, kl, self.c.vdb_info_constraint, self.c.vdb_beta_step)

    def state_dict(self) -> dict:
        out = {}
        if self.c.historical_averaging > 0:
            out["history"] = {k: h.state_dict() for k, h in self.history.items()}
        if self.beta is not None:
            out["vdb_beta"] = self.beta.clone()
        return out

    def load_state_dict(self, state: dict) -> None:
        for k, h in state.get("history", {}).items():
            self.history[k].load_state_dict(h)
        if "vdb_beta" in state:
            self.beta = state["vdb_beta"].clone()
