"""Discrete toy distributions with a known probability mass function, for histograms, MADE and small
autoregressive models: a 1-D mixture on ``{0..bins-1}`` and a smiley-face joint on ``{0..bins-1}^2``.

Both follow the warm-up exercises of the Berkeley CS294-158 Deep Unsupervised Learning course (homework 1),
with distributions of our own. Each dataset carries ``info["true_pmf"]`` (float64, sums to 1) and
``true_log_prob``, so a model's NLL can be compared with the entropy of the data. ``num_samples`` examples are
drawn once (cached) and the last sixth is the test split.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dulab.data._util import positional_range, readonly, require, tensor
from dulab.data.base import DataSpec, TensorDataset

__all__ = ["discrete1d", "discrete2d", "pmf1d", "pmf2d", "TEST_FRACTION"]

TEST_FRACTION = 1 / 6
# Share of the uniform distribution mixed into each pmf, so that every value has mass (finite log-probs).
_FLOOR = 0.01


def _normalise_with_floor(weights: np.ndarray) -> np.ndarray:
    p = weights / weights.sum()
    p = (1.0 - _FLOOR) * p + _FLOOR / p.size
    return p / p.sum()


@functools.lru_cache(maxsize=16)
def pmf1d(bins: int) -> np.ndarray:
    """The pmf of ``discrete1d``: a mixture of two Gaussians on ``0..bins-1``, plus a 1% uniform floor.

    The components (weights 0.4 and 0.6) are centred at ``0.25 * bins`` and ``0.7 * bins`` with standard
    deviations ``0.06 * bins`` and ``0.1 * bins``, so the shape scales with ``bins``.

    Returns:
        ``(bins,)`` float64, sums to 1 (read-only).
    """
    k = np.arange(bins, dtype=np.float64)

    def bump(mean, std):
        return np.exp(-0.5 * ((k - mean) / std) ** 2) / std

    weights = 0.4 * bump(0.25 * bins, 0.06 * bins) + 0.6 * bump(0.7 * bins, 0.1 * bins)
    return readonly(_normalise_with_floor(weights))[0]


@functools.lru_cache(maxsize=16)
def pmf2d(bins: int) -> np.ndarray:
    """The pmf of ``discrete2d``: a smiley face on a ``bins x bins`` grid, plus a 1% uniform floor.

    ``pmf[x1, x2]`` with ``x1`` the row (top to bottom) and ``x2`` the column, so ``plt.imshow(pmf)`` shows
    the face. In coordinates ``(a, b) = ((x1 + 0.5) / bins, (x2 + 0.5) / bins)`` in ``[0, 1]^2``: the outline
    is a ring of radius 0.42 around the centre, the eyes are Gaussian blobs at ``(0.35, 0.35)`` and
    ``(0.35, 0.65)``, the mouth is the lower part of a ring of radius 0.22; all features scale with ``bins``.

    Returns:
        ``(bins, bins)`` float64, sums to 1 (read-only).
    """
    c = (np.arange(bins, dtype=np.float64) + 0.5) / bins
    a, b = np.meshgrid(c, c, indexing="ij")  # (bins, bins): row and column coordinates
    r = np.hypot(a - 0.5, b - 0.5)
    width = 0.035
    outline = np.exp(-0.5 * ((r - 0.42) / width) ** 2)
    eyes = sum(np.exp(-0.5 * (np.hypot(a - 0.35, b - bx) / 0.05) ** 2) for bx in (0.35, 0.65))
    lower = 1.0 / (1.0 + np.exp(-(a - 0.58) / 0.02))  # a smooth step keeping the lower half of the inner ring
    mouth = np.exp(-0.5 * ((r - 0.22) / width) ** 2) * lower
    return readonly(_normalise_with_floor(outline + 1.5 * eyes + 1.5 * mouth))[0]


@functools.lru_cache(maxsize=32)
def _draw(name: str, bins: int, num_samples: int, seed: int) -> np.ndarray:
    """``num_samples`` i.i.d. draws, ``(N, D)`` int64 (cached: both splits come from one draw)."""
    pmf = pmf1d(bins) if name == "discrete1d" else pmf2d(bins)
    rng = np.random.default_rng(seed)
    flat = rng.choice(pmf.size, size=num_samples, p=pmf.reshape(-1))
    x = np.stack(np.unravel_index(flat, pmf.shape), axis=1).astype(np.int64)  # (N, pmf.ndim)
    return readonly(x)[0]


def _pmf_log_prob(x: torch.Tensor, *, log_pmf: torch.Tensor) -> torch.Tensor:
    """log pmf of integer points ``x (..., D) -> (...)``, nats (default dtype); ``-inf`` off the grid."""
    bins = log_pmf.shape[0]
    x = x.long()
    inside = ((x >= 0) & (x < bins)).all(-1)
    flat = torch.zeros(x.shape[:-1], dtype=torch.long, device=x.device)
    for d in range(x.shape[-1]):  # row-major flat index into the pmf
        flat = flat * bins + x[..., d].clamp(0, bins - 1)
    values = log_pmf.reshape(-1).to(device=x.device, dtype=torch.get_default_dtype())[flat]
    return values.masked_fill(~inside, float("-inf"))


def _build(name: str, split: str, bins: int, num_samples: int, seed: int, pmf: np.ndarray) -> TensorDataset:
    require(num_samples >= 12, f"{name}: num_samples must be >= 12, got {num_samples}")
    require(seed >= 0, f"{name}: seed must be >= 0, got {seed}")
    x = _draw(name, bins, num_samples, seed)
    part = positional_range(num_samples, split, TEST_FRACTION, name)
    true_pmf = torch.tensor(pmf)
    log_prob = functools.partial(_pmf_log_prob, log_pmf=torch.log(true_pmf))
    spec = DataSpec((pmf.ndim,), "discrete", bins, None)
    return TensorDataset(tensor(x, part), None, spec, name=name, true_log_prob=log_prob,
                         info={"true_pmf": true_pmf})


def discrete1d(split: str = "train", root: str | None = None, *, bins: int = 20, num_samples: int = 10000,
               seed: int = 0) -> TensorDataset:
    """Samples of a bimodal pmf on ``{0..bins-1}`` (see ``pmf1d``).

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        bins: number of values, K >= 2.
        num_samples: train + test examples.
        seed: seed of the draw.
    Returns:
        ``(N, 1)`` int64 in ``[0, bins)``; ``info["true_pmf"]`` ``(bins,)`` float64; ``true_log_prob``
        ``(B, 1) -> (B,)`` nats.
    """
    require(bins >= 2, f"discrete1d: bins must be >= 2, got {bins}")
    require(bins <= 1_000_000, f"discrete1d: bins must be <= 1000000, got {bins}")
    return _build("discrete1d", split, bins, num_samples, seed, pmf1d(bins))


def discrete2d(split: str = "train", root: str | None = None, *, bins: int = 25, num_samples: int = 10000,
               seed: int = 0) -> TensorDataset:
    """Pairs ``(x1, x2)`` in ``{0..bins-1}^2`` drawn from a smiley-face pmf (see ``pmf2d``).

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the draws).
        root: unused (embedded data).
        bins: values per coordinate, d >= 2.
        num_samples: train + test examples.
        seed: seed of the draw.
    Returns:
        ``(N, 2)`` int64 in ``[0, bins)``; ``info["true_pmf"]`` ``(bins, bins)`` float64 indexed ``[x1, x2]``;
        ``true_log_prob`` ``(B, 2) -> (B,)`` nats.
    """
    require(bins >= 2, f"discrete2d: bins must be >= 2, got {bins}")
    require(bins <= 2048, f"discrete2d: bins must be <= 2048 (the pmf has bins^2 cells), got {bins}")
    return _build("discrete2d", split, bins, num_samples, seed, pmf2d(bins))

