"""Out-of-distribution sets for models of ``digits`` (1x8x8, 17 levels), all embedded.

Four kinds of input a ``digits`` model never saw, from simplest to most complex (Nalisnick et al. 2019 show that
likelihood models can score the simple ones *higher* than their own test data):

* ``blank``: every pixel 0 (the digits' background level);
* ``constant``: every pixel one level, the levels 0..16 in turn;
* ``shapes``: the ``shapes`` images (20x20 binary squares, circles, triangles, lines) reduced to 8x8 by
  averaging (box filter) and rounded to the 17 levels, so edges get intermediate grey levels like the digits';
* ``noise``: every pixel an independent uniform level.

References:
    Nalisnick, Matsukawa, Teh, Gorur, Lakshminarayanan. "Do Deep Generative Models Know What They Don't Know?",
    ICLR 2019, arXiv:1810.09136.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from dulab.data._util import check_split, require
from dulab.data.base import DataSpec, TensorDataset

__all__ = ["digits_ood", "box_resize"]

_LEVELS = 17


def box_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Average-pool ``(N, H, W)`` images in [0, 1] to ``(N, size, size)`` (exact box filter, any ratio).

    Each output pixel averages the input area it covers, input pixels cut by a boundary counting by the covered
    fraction (the area-weighted resampling of an image to a coarser grid).
    """
    N, H, W = images.shape

    def weights(n):  # (size, n): overlap of output cell i with input pixel j, rows summing to 1
        edges = np.arange(size + 1) * (n / size)
        lo, hi = edges[:-1, None], edges[1:, None]
        j = np.arange(n)[None, :]
        return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None) / (n / size)

    return np.einsum("ih,nhw,jw->nij", weights(H), images.astype(np.float64), weights(W))


def digits_ood(split: str = "train", root: str | None = None, *,
               kind: Literal["blank", "constant", "shapes", "noise"] = "blank", num_samples: int = 360,
               seed: int = 0) -> TensorDataset:
    """Out-of-distribution images for ``digits`` models, in the digits' format (1x8x8, levels 0..16).

    Args:
        split: ``"train"`` or ``"test"`` (different draws of noise and shapes).
        root: unused (embedded data).
        kind: ``blank``, ``constant``, ``shapes`` or ``noise`` (see the module docstring).
        num_samples: images (default 360, the size of the digits test split).
        seed: seed of the noise draw.
    Returns:
        ``(N, 1, 8, 8)`` int64 in 0..16, no labels.
    """
    check_split(split, "digits_ood")
    require(num_samples >= 1, f"digits_ood: num_samples must be >= 1, got {num_samples}")
    require(kind in ("blank", "constant", "shapes", "noise"),
            f"digits_ood: kind must be blank, constant, shapes or noise, got {kind!r}")
    n = num_samples
    if kind == "blank":
        x = np.zeros((n, 8, 8), dtype=np.int64)
    elif kind == "constant":
        x = np.broadcast_to((np.arange(n) % _LEVELS)[:, None, None], (n, 8, 8)).copy()
    elif kind == "noise":
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        x = rng.integers(0, _LEVELS, (n, 8, 8))
    else:
        from dulab.data.shapes import shapes

        src = shapes(split).x
        require(n <= len(src), f"digits_ood: kind=shapes has {len(src)} {split} images, asked for {n}")
        x = np.rint(box_resize(src[:n, 0].numpy(), 8) * (_LEVELS - 1)).astype(np.int64)
    spec = DataSpec((1, 8, 8), "discrete", _LEVELS, None)
    return TensorDataset(torch.from_numpy(x[:, None]), None, spec, name="digits_ood", info={"kind": kind})
