"""Continuous 2-D toy densities for flows, VAEs and GANs: moons, circles, eight Gaussians, checkerboard,
spirals, swiss roll, a face, single 2-D Gaussians, and the mode-collapse mixtures ``ring8`` and ``grid25``.

All are generated here from a fixed seed (option ``seed``) and lie roughly within ``[-4, 4]^2`` (``grid25``'s outer
modes sit on its edge); the scale of each is in its docstring. ``num_samples`` examples are drawn once (cached per
option set) and the last sixth is the test split, so train and test are disjoint draws from the same distribution.
Where the generator has a closed-form density (``eight_gaussians``, ``checkerboard``, ``gaussians2d``, ``ring8``,
``grid25``) the dataset carries ``true_log_prob`` (nats), so a model's test NLL can be compared with the true
entropy. The eight-Gaussians and checkerboard densities follow the toy benchmarks of FFJORD (Grathwohl et al.,
2018, arXiv:1810.01367); ``gaussians2d`` follows the posterior-collapse exercise of the Berkeley CS294-158 Deep
Unsupervised Learning course (homework 3).
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import numpy as np
import torch

from dulab.data._util import positional_range, readonly, require, tensor
from dulab.data.base import DataSpec, TensorDataset

__all__ = ["moons", "circles", "eight_gaussians", "checkerboard", "spirals", "swiss_roll", "face",
           "gaussians2d", "ring8", "grid25", "mode_centres", "TEST_FRACTION"]

TEST_FRACTION = 1 / 6
"""Fraction of ``num_samples`` that forms the test split (the last draws)."""

# eight_gaussians: component centres on a circle of this radius.
_RING_RADIUS = 2.5
# grid25: 5 x 5 component centres at {-4, -2, 0, 2, 4}^2 (VEEGAN, PacGAN).
_GRID_HALF_WIDTH = 4
_GRID_SPACING = 2
# checkerboard: a 4x4 board of 2x2 squares covering [-4, 4)^2; the 8 squares with an even index sum are black.
_BOARD_HALF_WIDTH = 4.0
_SQUARE = 2.0
_NUM_SQUARES = 4
# Samples are kept this far (in units of one square) from square edges, so that casting to float32 cannot move
# a sample across an edge into a white square, where the true density is zero.
_EDGE_MARGIN = 1e-5
# gaussians2d: (mean, covariance) for each covariance type. "full": standard deviations 1.2 and 0.3 along the
# diagonals (rotated by 45 degrees); "diagonal": standard deviations 0.3 and 1.2 along the axes.
_GAUSSIANS = {
    "full": ((0.5, 0.5), ((0.765, 0.675), (0.675, 0.765))),
    "diagonal": ((-0.5, 0.5), ((0.09, 0.0), (0.0, 1.44))),
}


# ------------------------------------------------------------------------------------------------ samplers
# Each sampler: (rng, n, **params) -> (x float64 (n, 2), labels int64 (n,) or None).

def _sample_moons(rng, n, *, noise):
    y = rng.integers(0, 2, n)
    t = rng.uniform(0.0, math.pi, n)
    upper = np.stack([np.cos(t), np.sin(t)], axis=1)  # (n, 2)
    lower = np.stack([1.0 - np.cos(t), 0.5 - np.sin(t)], axis=1)
    x = np.where(y[:, None] == 0, upper, lower)
    x = 2.0 * (x - np.array([0.5, 0.25]))  # centre, then x in [-3, 3], y in [-1.5, 1.5]
    return x + noise * rng.standard_normal((n, 2)), y


def _sample_circles(rng, n, *, noise):
    y = rng.integers(0, 2, n)  # 0: outer circle (radius 3), 1: inner circle (radius 1.5)
    radius = np.where(y == 0, 3.0, 1.5)
    angle = rng.uniform(0.0, 2 * math.pi, n)
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return x + noise * rng.standard_normal((n, 2)), y


def _ring_centres() -> np.ndarray:
    angle = np.arange(8) * (math.pi / 4)
    return _RING_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (8, 2)


def _sample_eight_gaussians(rng, n, *, noise):
    y = rng.integers(0, 8, n)
    return _ring_centres()[y] + noise * rng.standard_normal((n, 2)), y


def _grid_centres() -> np.ndarray:
    c = np.arange(-_GRID_HALF_WIDTH, _GRID_HALF_WIDTH + 1, _GRID_SPACING, dtype=np.float64)  # -4, -2, 0, 2, 4
    return np.stack(np.meshgrid(c, c, indexing="ij"), axis=-1).reshape(-1, 2)  # (25, 2), row-major


def _mode_centres(name: str, radius: float = 2.0) -> np.ndarray:
    if name == "ring8":
        angle = np.arange(8) * (math.pi / 4)
        return radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)  # (8, 2)
    return _grid_centres()


def _sample_modes(rng, n, *, std, radius=2.0, kind):
    centres = _mode_centres(kind, radius)
    y = rng.integers(0, len(centres), n)
    return centres[y] + std * rng.standard_normal((n, 2)), y


def _sample_ring8(rng, n, *, std, radius):
    return _sample_modes(rng, n, std=std, radius=radius, kind="ring8")


def _sample_grid25(rng, n, *, std):
    return _sample_modes(rng, n, std=std, kind="grid25")


def _sample_checkerboard(rng, n):
    col = rng.integers(0, _NUM_SQUARES, n)
    row = 2 * rng.integers(0, _NUM_SQUARES // 2, n) + col % 2  # col + row even: a black square
    u = rng.uniform(_EDGE_MARGIN, 1.0 - _EDGE_MARGIN, (n, 2))
    cell = np.stack([col, row], axis=1)
    return -_BOARD_HALF_WIDTH + _SQUARE * (cell + u), None


def _sample_spirals(rng, n, *, noise):
    y = rng.integers(0, 2, n)  # the arm
    t_max = 3 * math.pi + 0.5
    t = 0.5 + 3 * math.pi * np.sqrt(rng.uniform(0.0, 1.0, n))  # sqrt: fewer points near the centre
    angle = t + math.pi * y
    radius = 3.5 * t / t_max
    x = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return x + noise * rng.standard_normal((n, 2)), y


def _sample_swiss_roll(rng, n, *, noise):
    t = 1.5 * math.pi * (1.0 + 2.0 * rng.uniform(0.0, 1.0, n))  # the parametrisation of the 3-D swiss roll
    x = (3.5 / (4.5 * math.pi)) * t[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1)
    return x + noise * rng.standard_normal((n, 2)), None


def _sample_face(rng, n, *, noise, eye_std):
    y = rng.choice(3, size=n, p=[0.25, 0.25, 0.5])  # 0 left eye, 1 right eye, 2 mouth
    eyes = np.array([[-1.2, 1.2], [1.2, 1.2]])[np.minimum(y, 1)] + eye_std * rng.standard_normal((n, 2))
    theta = rng.uniform(math.pi, 2 * math.pi, n)  # the lower half of a circle of radius 2: a smile
    mouth = 2.0 * np.stack([np.cos(theta), np.sin(theta)], axis=1) + noise * rng.standard_normal((n, 2))
    return np.where(y[:, None] == 2, mouth, eyes), y


def _sample_gaussian(rng, n, *, covariance):
    mean, cov = _GAUSSIANS[covariance]
    chol = np.linalg.cholesky(np.array(cov))
    return np.array(mean) + rng.standard_normal((n, 2)) @ chol.T, None


_SAMPLERS = {
    "moons": _sample_moons, "circles": _sample_circles, "eight_gaussians": _sample_eight_gaussians,
    "checkerboard": _sample_checkerboard, "spirals": _sample_spirals, "swiss_roll": _sample_swiss_roll,
    "face": _sample_face, "gaussians2d": _sample_gaussian, "ring8": _sample_ring8, "grid25": _sample_grid25,
}


@functools.lru_cache(maxsize=64)
def _generate(name: str, num_samples: int, seed: int, params: tuple) -> tuple[np.ndarray, np.ndarray | None]:
    """All ``num_samples`` draws of one dataset (train, then test), cached: both splits come from one draw."""
    rng = np.random.default_rng(seed)
    x, y = _SAMPLERS[name](rng, num_samples, **dict(params))
    x = x.astype(np.float32)
    y = None if y is None else y.astype(np.int64)
    return readonly(x, y)


# ----------------------------------------------------------------------------------------- true densities

def _mixture_log_prob(x: torch.Tensor, *, centres: tuple, std: float) -> torch.Tensor:
    """log of an equal mixture of isotropic Gaussians N(c_k, std^2 I), ``x (..., 2) -> (...)`` in nats."""
    c = torch.tensor(centres, dtype=x.dtype, device=x.device)  # (K, 2)
    sq_dist = ((x.unsqueeze(-2) - c) ** 2).sum(-1)  # (..., K)
    log_norm = math.log(len(centres)) + math.log(2 * math.pi * std**2)
    return torch.logsumexp(-0.5 * sq_dist / std**2, dim=-1) - log_norm


def _checkerboard_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log of the uniform density on the 8 black squares (area 32), -inf elsewhere; ``(..., 2) -> (...)``."""
    cell = torch.floor((x + _BOARD_HALF_WIDTH) / _SQUARE)  # (..., 2), in {0..3} on the board
    on_board = ((cell >= 0) & (cell < _NUM_SQUARES)).all(-1)
    black = torch.remainder(cell.sum(-1), 2) == 0
    black_area = _NUM_SQUARES**2 / 2 * _SQUARE**2
    out = torch.full(x.shape[:-1], -math.log(black_area), dtype=x.dtype, device=x.device)
    return out.masked_fill(~(on_board & black), float("-inf"))


def _gaussian_log_prob(x: torch.Tensor, *, mean: tuple, cov: tuple) -> torch.Tensor:
    """log N(x; mean, cov) for a 2-D Gaussian, ``x (..., 2) -> (...)`` in nats."""
    mu = torch.tensor(mean, dtype=x.dtype, device=x.device)
    sigma = torch.tensor(cov, dtype=x.dtype, device=x.device)
    precision = torch.linalg.inv(sigma)
    d = x - mu
    mahalanobis = torch.einsum("...i,ij,...j->...", d, precision, d)
    return -0.5 * mahalanobis - math.log(2 * math.pi) - 0.5 * torch.logdet(sigma)


# ------------------------------------------------------------------------------------------------ builders

def _build(name: str, split: str, num_samples: int, seed: int, *, num_classes: int | None = None,
           true_log_prob=None, **params) -> TensorDataset:
    require(num_samples >= 12, f"{name}: num_samples must be >= 12, got {num_samples}")
    require(seed >= 0, f"{name}: seed must be >= 0, got {seed}")
    for key in ("noise", "eye_std", "std", "radius"):
        if key in params:
            require(params[key] >= 0, f"{name}: {key} must be >= 0, got {params[key]}")
    x, y = _generate(name, num_samples, seed, tuple(sorted(params.items())))
    part = positional_range(num_samples, split, TEST_FRACTION, name)
    spec = DataSpec((2,), "continuous", None, num_classes if y is not None else None)
    return TensorDataset(tensor(x, part), None if y is None else tensor(y, part), spec, name=name,
                         true_log_prob=true_log_prob)


def moons(split: str = "train", root: str | None = None, *, num_samples: int = 12000, noise: float = 0.15,
          seed: int = 0) -> TensorDataset:
    """Two interleaving half circles of radius 2, in ``[-3, 3] x [-1.5, 1.5]`` before noise.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        noise: standard deviation of the Gaussian noise added to each coordinate.
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points; labels ``(N,)`` in {0, 1}: the moon.
    """
    return _build("moons", split, num_samples, seed, num_classes=2, noise=noise)


def circles(split: str = "train", root: str | None = None, *, num_samples: int = 12000, noise: float = 0.1,
            seed: int = 0) -> TensorDataset:
    """Two concentric circles of radii 3 and 1.5 around the origin, half of the points on each.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        noise: standard deviation of the Gaussian noise added to each coordinate.
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points; labels ``(N,)``: 0 outer circle, 1 inner circle.
    """
    return _build("circles", split, num_samples, seed, num_classes=2, noise=noise)


def eight_gaussians(split: str = "train", root: str | None = None, *, num_samples: int = 12000,
                    noise: float = 0.3, seed: int = 0) -> TensorDataset:
    """An equal mixture of 8 isotropic Gaussians centred on a circle of radius 2.5 at angles ``k * pi / 4``.

    ``true_log_prob`` is the mixture density: ``log(1/8 sum_k N(x; c_k, noise^2 I))`` in nats.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        noise: standard deviation of each component (> 0).
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points; labels ``(N,)`` in {0..7}: the component.
    """
    require(noise > 0, f"eight_gaussians: noise (the components' std) must be > 0, got {noise}")
    centres = tuple(map(tuple, _ring_centres().tolist()))
    log_prob = functools.partial(_mixture_log_prob, centres=centres, std=float(noise))
    return _build("eight_gaussians", split, num_samples, seed, num_classes=8, true_log_prob=log_prob,
                  noise=noise)


def checkerboard(split: str = "train", root: str | None = None, *, num_samples: int = 12000,
                 seed: int = 0) -> TensorDataset:
    """Uniform on the black squares of a 4x4 checkerboard of 2x2 squares covering ``[-4, 4)^2``.

    The square with corner ``(-4, -4)`` is black (squares ``(i, j)`` with ``i + j`` even). ``true_log_prob``
    is ``-log 32`` nats on the black squares and ``-inf`` elsewhere. Samples stay ``2e-5`` away from square
    edges so that float32 rounding cannot place one on a white square.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points, no labels.
    """
    return _build("checkerboard", split, num_samples, seed, true_log_prob=_checkerboard_log_prob)


def spirals(split: str = "train", root: str | None = None, *, num_samples: int = 12000, noise: float = 0.1,
            seed: int = 0) -> TensorDataset:
    """Two interleaved Archimedean spiral arms (1.5 turns each) reaching radius 3.5.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        noise: standard deviation of the Gaussian noise added to each coordinate.
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points; labels ``(N,)`` in {0, 1}: the arm.
    """
    return _build("spirals", split, num_samples, seed, num_classes=2, noise=noise)


def swiss_roll(split: str = "train", root: str | None = None, *, num_samples: int = 12000, noise: float = 0.1,
               seed: int = 0) -> TensorDataset:
    """The 2-D swiss roll ``t (cos t, sin t)``, ``t`` uniform in ``[1.5 pi, 4.5 pi]``, scaled to radius 3.5.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        noise: standard deviation of the Gaussian noise added to each coordinate.
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points, no labels.
    """
    return _build("swiss_roll", split, num_samples, seed, noise=noise)


def face(split: str = "train", root: str | None = None, *, num_samples: int = 12000, noise: float = 0.1,
         eye_std: float = 0.3, seed: int = 0) -> TensorDataset:
    """A smiling face: two Gaussian eyes at ``(-1.2, 1.2)`` and ``(1.2, 1.2)`` (a quarter of the mass each)
    and a mouth, the lower half of the circle of radius 2 around the origin (half of the mass).

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        noise: standard deviation of the Gaussian noise added to the mouth.
        eye_std: standard deviation of each (isotropic) eye.
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points; labels ``(N,)``: 0 left eye, 1 right eye, 2 mouth.
    """
    return _build("face", split, num_samples, seed, num_classes=3, noise=noise, eye_std=eye_std)


def gaussians2d(split: str = "train", root: str | None = None, *, num_samples: int = 12000,
                covariance: Literal["full", "diagonal"] = "full", seed: int = 0) -> TensorDataset:
    """One 2-D Gaussian, with correlated (``"full"``) or independent (``"diagonal"``) coordinates.

    ``"full"``: mean ``(0.5, 0.5)``, standard deviations 1.2 and 0.3 along the two diagonals (covariance
    ``[[0.765, 0.675], [0.675, 0.765]]``). ``"diagonal"``: mean ``(-0.5, 0.5)``, covariance
    ``diag(0.09, 1.44)``. A VAE with a factorised Gaussian decoder can model the diagonal case with its
    decoder alone (the latent collapses), but needs the latent for the full case: the exercise of the Berkeley
    CS294-158 homework 3. ``true_log_prob`` is the Gaussian log density in nats.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        covariance: ``"full"`` or ``"diagonal"``.
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points, no labels.
    """
    require(covariance in _GAUSSIANS,
            f"gaussians2d: covariance must be 'full' or 'diagonal', got {covariance!r}")
    mean, cov = _GAUSSIANS[covariance]
    log_prob = functools.partial(_gaussian_log_prob, mean=mean, cov=cov)
    return _build("gaussians2d", split, num_samples, seed, true_log_prob=log_prob, covariance=covariance)


def mode_centres(name: str, radius: float = 2.0) -> torch.Tensor:
    """The component centres of ``ring8`` (``(8, 2)``, at ``radius``) or ``grid25`` (``(25, 2)``), float64."""
    require(name in ("ring8", "grid25"), f"mode_centres: name must be 'ring8' or 'grid25', got {name!r}")
    return torch.from_numpy(_mode_centres(name, radius).copy())


def ring8(split: str = "train", root: str | None = None, *, num_samples: int = 12000, std: float = 0.05,
          radius: float = 2.0, seed: int = 0) -> TensorDataset:
    """The mode-collapse ring: an equal mixture of 8 Gaussians of std 0.05 centred on a circle of radius 2 at
    angles ``k pi / 4`` (the 2D-ring of VEEGAN, Srivastava et al. 2017, arXiv:1705.07761; PacGAN, Lin et al.
    2018, arXiv:1712.04086). ``eight_gaussians`` is the wider density-estimation variant (std 0.3, radius 2.5).
    ``true_log_prob`` is the mixture density in nats.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        std: standard deviation of each component (> 0).
        radius: radius of the ring (> 0).
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points; labels ``(N,)`` in {0..7}: the component.
    """
    require(std > 0 and radius > 0, f"ring8: std and radius must be > 0, got {std} and {radius}")
    centres = tuple(map(tuple, _mode_centres("ring8", radius).tolist()))
    log_prob = functools.partial(_mixture_log_prob, centres=centres, std=float(std))
    return _build("ring8", split, num_samples, seed, num_classes=8, true_log_prob=log_prob, std=std, radius=radius)


def grid25(split: str = "train", root: str | None = None, *, num_samples: int = 12000, std: float = 0.05,
           seed: int = 0) -> TensorDataset:
    """The mode-collapse grid: an equal mixture of 25 Gaussians of std 0.05 centred at ``{-4, -2, 0, 2, 4}^2``
    (the 2D-grid of VEEGAN, Srivastava et al. 2017, and PacGAN, Lin et al. 2018). ``true_log_prob`` is the
    mixture density in nats.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        num_samples: train + test examples.
        std: standard deviation of each component (> 0).
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` float32 points; labels ``(N,)`` in {0..24}: the component, row-major over the grid.
    """
    require(std > 0, f"grid25: std must be > 0, got {std}")
    centres = tuple(map(tuple, _grid_centres().tolist()))
    log_prob = functools.partial(_mixture_log_prob, centres=centres, std=float(std))
    return _build("grid25", split, num_samples, seed, num_classes=25, true_log_prob=log_prob, std=std)
