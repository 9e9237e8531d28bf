"""Networks of the score-based and energy-based models (``ncsn``, ``ebm``), and the data representation they share.

Both models work on a continuous representation of the data: discrete levels ``{0..K-1}`` map affinely onto
``[-1, 1]`` (``u = 2 x / (K - 1) - 1``) and back by rounding to the nearest level; continuous data pass through.

* ``ConditionalMLP`` / ``ConditionalConvNet``: noise-conditional networks ``(x, level index i) -> (B, *event)``;
  the level enters through a learned embedding added to every hidden layer (a conditional bias, the simplest form
  of the conditional normalisation of NCSN).
* ``FourierFeatures``: fixed random sinusoids of the coordinates, the MLPs' optional first layer (vector data).
* ``EnergyMLP`` / ``EnergyConvNet``: scalar energies ``x -> (B,)``, with smooth (SiLU) activations so that the
  Langevin gradient ``grad_x E`` is continuous, and optional spectral normalisation of every weight.

References:
    Song, Ermon. "Generative Modeling by Estimating Gradients of the Data Distribution", NeurIPS 2019,
    arXiv:1907.05600.
    Du, Mordatch. "Implicit Generation and Generalization in Energy-Based Models", NeurIPS 2019, arXiv:1903.08689.
    Tancik et al. "Fourier Features Let Networks Learn High Frequency Functions in Low Dimensional Domains",
    NeurIPS 2020, arXiv:2006.10739.
    Miyato, Kataoka, Koyama, Yoshida. "Spectral Normalization for Generative Adversarial Networks", ICLR 2018,
    arXiv:1802.05957.
"""

from __future__ import annotations

import torch
from torch import nn

from dulab.data.base import DataSpec

__all__ = ["to_unit", "from_unit", "FourierFeatures", "ConditionalMLP", "ConditionalConvNet", "EnergyMLP",
           "EnergyConvNet", "group_count"]


def to_unit(x: torch.Tensor, spec: DataSpec, dtype: torch.dtype) -> torch.Tensor:
    """Data ``(B, *event)`` to the models' float representation (``[-1, 1]`` for discrete levels)."""
    if spec.is_discrete:
        return x.to(dtype) * (2.0 / (spec.num_levels - 1)) - 1.0
    return x.to(dtype)


def from_unit(u: torch.Tensor, spec: DataSpec) -> torch.Tensor:
    """The float representation back to data: the nearest int64 level for discrete data, unchanged otherwise."""
    if spec.is_discrete:
        levels = torch.round((u + 1.0) * ((spec.num_levels - 1) / 2.0))
        return levels.clamp(0, spec.num_levels - 1).long()
    return u


def group_count(channels: int, max_groups: int = 8) -> int:
    """The largest number of groups <= ``max_groups`` that divides ``channels`` (for ``nn.GroupNorm``)."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


class FourierFeatures(nn.Module):
    """``x (B, D) -> [x, sin(x W), cos(x W)] (B, D + 2 F)`` with a fixed Gaussian ``W (D, F)``, entries
    ``N(0, scale^2)`` (Tancik et al. 2020). A smooth MLP on raw 2-D coordinates learns sharp functions slowly (its
    spectral bias); the scores of the 2-D toys at the middle noise levels (pulls towards eight modes with sharp
    boundaries between them) and the energies of the checkerboard are such functions. ``W`` comes from a fixed seed,
    so it is part of the architecture, not of the weights (not saved).

    Args:
        dim: D.
        num_features: F (the output has ``D + 2 F`` columns).
        scale: the standard deviation of ``W``'s entries (angular frequency per unit of the data).
    """

    def __init__(self, dim: int, num_features: int, scale: float):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("weight", scale * torch.randn(dim, num_features, generator=g),
                             persistent=False)
        self.out_dim = dim + 2 * num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = x @ self.weight.to(x.dtype)
        return torch.cat([x, torch.sin(f), torch.cos(f)], dim=-1)


class ConditionalMLP(nn.Module):
    """``(x (B, D), i (B,)) -> (B, D)``: SiLU layers, each with a learned per-level scale and shift (FiLM), on the
    coordinates or on their Fourier features.

    Args:
        dim: D.
        hidden_sizes: widths of the hidden layers.
        num_conditions: number of noise levels L (the embedding table size).
        fourier_features: F > 0 feeds ``FourierFeatures(dim, F, fourier_scale)`` instead of x (0: the raw x).
        fourier_scale: their frequency scale.
    """

    def __init__(self, dim: int, hidden_sizes: tuple[int, ...], num_conditions: int, *, fourier_features: int = 0,
                 fourier_scale: float = 1.0):
        super().__init__()
        self.features = FourierFeatures(dim, fourier_features, fourier_scale) if fourier_features > 0 else None
        sizes = (self.features.out_dim if self.features is not None else dim, *hidden_sizes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        # per level and layer: a scale (initialised to 1) and a shift (initialised to 0) of the pre-activations
        self.embeddings = nn.ModuleList(nn.Embedding(num_conditions, 2 * b) for b in hidden_sizes)
        for emb, b in zip(self.embeddings, hidden_sizes):
            nn.init.zeros_(emb.weight)
            emb.weight.data[:, :b] = 1.0
        self.out = nn.Linear(sizes[-1], dim)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        h = self.features(x) if self.features is not None else x
        for layer, emb in zip(self.layers, self.embeddings):
            scale, shift = emb(index).chunk(2, dim=-1)  # (B, width) each
            h = nn.functional.silu(scale * layer(h) + shift)
        return self.out(h)


class _ConditionalResBlock(nn.Module):
    def __init__(self, channels: int, num_conditions: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(group_count(channels), channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.emb = nn.Embedding(num_conditions, channels)
        self.norm2 = nn.GroupNorm(group_count(channels), channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, h: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        r = self.conv1(nn.functional.silu(self.norm1(h))) + self.emb(index)[:, :, None, None]  # (B, C, H, W)
        r = self.conv2(nn.functional.silu(self.norm2(r)))
        return h + r


class ConditionalConvNet(nn.Module):
    """``(x (B, C, H, W), i (B,)) -> (B, C, H, W)``: residual 3x3 conv blocks at full resolution (group norm, SiLU),
    each with a learned per-level channel bias. ``num_blocks`` blocks see ``4 num_blocks + 3`` pixels across.

    Args:
        channels: C of the data.
        hidden_channels: width of the blocks.
        num_blocks: residual blocks.
        num_conditions: number of noise levels L.
    """

    def __init__(self, channels: int, hidden_channels: int, num_blocks: int, num_conditions: int):
        super().__init__()
        self.inp = nn.Conv2d(channels, hidden_channels, 3, padding=1)
        self.blocks = nn.ModuleList(_ConditionalResBlock(hidden_channels, num_conditions) for _ in range(num_blocks))
        self.norm = nn.GroupNorm(group_count(hidden_channels), hidden_channels)
        self.out = nn.Conv2d(hidden_channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, index)
        return self.out(nn.functional.silu(self.norm(h)))


def _maybe_sn(layer: nn.Module, use_spectral_norm: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if use_spectral_norm else layer


class EnergyMLP(nn.Module):
    """``x (B, D) -> E(x) (B,)``: SiLU layers and a linear output.

    Args:
        dim: D.
        hidden_sizes: widths of the hidden layers.
        use_spectral_norm: spectrally normalise every weight (a Lipschitz energy, smoother Langevin).
        fourier_features: F > 0 feeds ``FourierFeatures(dim, F, fourier_scale)`` instead of x (0: the raw x).
        fourier_scale: their frequency scale.
    """

    def __init__(self, dim: int, hidden_sizes: tuple[int, ...], use_spectral_norm: bool = False, *,
                 fourier_features: int = 0, fourier_scale: float = 1.0):
        super().__init__()
        features = FourierFeatures(dim, fourier_features, fourier_scale) if fourier_features > 0 else None
        sizes = (features.out_dim if features is not None else dim, *hidden_sizes)
        layers: list[nn.Module] = [features] if features is not None else []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [_maybe_sn(nn.Linear(a, b), use_spectral_norm), nn.SiLU()]
        layers.append(_maybe_sn(nn.Linear(sizes[-1], 1), use_spectral_norm))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.reshape(x.shape[0], -1)).reshape(x.shape[0])


class EnergyConvNet(nn.Module):
    """``x (B, C, H, W) -> E(x) (B,)``: 3x3 convs (SiLU) at full, half and quarter resolution, a spatial mean and
    a linear output.

    Args:
        channels: C.
        hidden_channels: width at full resolution (doubled at each halving).
        use_spectral_norm: spectrally normalise every weight.
    """

    def __init__(self, channels: int, hidden_channels: int, use_spectral_norm: bool = False):
        super().__init__()
        h = hidden_channels
        sn = lambda m: _maybe_sn(m, use_spectral_norm)  # noqa: E731
        self.features = nn.Sequential(
            sn(nn.Conv2d(channels, h, 3, padding=1)), nn.SiLU(),
            sn(nn.Conv2d(h, h, 3, padding=1)), nn.SiLU(),
            sn(nn.Conv2d(h, 2 * h, 3, stride=2, padding=1)), nn.SiLU(),  # (B, 2h, H/2, W/2)
            sn(nn.Conv2d(2 * h, 2 * h, 3, stride=2, padding=1)), nn.SiLU(),  # (B, 2h, H/4, W/4)
        )
        self.out = sn(nn.Linear(2 * h, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x).mean(dim=(2, 3))  # (B, 2h)
        return self.out(h).reshape(x.shape[0])
