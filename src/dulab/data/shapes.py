"""Procedural binary images of four shapes (square, circle, triangle, line): a small labelled image dataset
for autoregressive image models, VAEs and representation probes that needs no download.

Squares, circles and triangles are filled; lines are about 1.5 pixels thick. Sizes, positions and (for
triangles and lines) orientations are random; every shape lies fully inside the image. Images are drawn once
per option set (cached, vectorised with numpy) and the last sixth is the test split.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dulab.data._util import keep_labels_per_class, positional_range, readonly, require, tensor
from dulab.data.base import DataSpec, TensorDataset

__all__ = ["shapes", "CLASS_NAMES", "TEST_FRACTION"]

CLASS_NAMES = ("square", "circle", "triangle", "line")
TEST_FRACTION = 1 / 6
_LINE_HALF_WIDTH = 0.75  # pixels whose centre lies this close to the segment are on


def _uniform(rng, lo, hi):
    """``lo + (hi - lo) * U[0, 1)`` elementwise; ``lo`` and ``hi`` are arrays of the same shape."""
    return lo + (hi - lo) * rng.uniform(0.0, 1.0, np.shape(lo))


def _squares(rng, n, size, px, py):
    side = size * rng.uniform(0.3, 0.7, n)
    half = side / 2
    cx, cy = _uniform(rng, half, size - half), _uniform(rng, half, size - half)
    cx, cy, half = cx[:, None, None], cy[:, None, None], half[:, None, None]  # (n, 1, 1)
    return (np.abs(px - cx) <= half) & (np.abs(py - cy) <= half)


def _circles(rng, n, size, px, py):
    radius = size * rng.uniform(0.15, 0.35, n)
    cx, cy = _uniform(rng, radius, size - radius), _uniform(rng, radius, size - radius)
    return (px - cx[:, None, None]) ** 2 + (py - cy[:, None, None]) ** 2 <= radius[:, None, None] ** 2


def _triangles(rng, n, size, px, py):
    # Equilateral triangles: circumradius R, rotation phi; the centre keeps the circumcircle inside the image.
    radius = size * rng.uniform(0.25, 0.45, n)
    phi = rng.uniform(0.0, 2 * math.pi, n)
    cx, cy = _uniform(rng, radius, size - radius), _uniform(rng, radius, size - radius)
    angles = phi[:, None] + (2 * math.pi / 3) * np.arange(3)  # (n, 3)
    vx = cx[:, None] + radius[:, None] * np.cos(angles)  # (n, 3)
    vy = cy[:, None] + radius[:, None] * np.sin(angles)
    signs = []
    for k in range(3):  # which side of each edge v_k -> v_{k+1} the pixel centre is on (2-D cross product)
        ax, ay = vx[:, k, None, None], vy[:, k, None, None]
        bx, by = vx[:, (k + 1) % 3, None, None], vy[:, (k + 1) % 3, None, None]
        signs.append((bx - ax) * (py - ay) - (by - ay) * (px - ax))
    signs = np.stack(signs)  # (3, n, H, W)
    return (signs >= 0).all(0) | (signs <= 0).all(0)


def _lines(rng, n, size, px, py):
    length = np.minimum(size * rng.uniform(0.5, 0.9, n), size - 1.5)
    theta = rng.uniform(0.0, math.pi, n)
    dx, dy = length * np.cos(theta), length * np.sin(theta)
    hx, hy = np.abs(dx) / 2 + 0.5, np.abs(dy) / 2 + 0.5  # keep both end points half a pixel inside
    cx, cy = _uniform(rng, hx, size - hx), _uniform(rng, hy, size - hy)
    ax, ay = (cx - dx / 2)[:, None, None], (cy - dy / 2)[:, None, None]
    dx, dy = dx[:, None, None], dy[:, None, None]
    # Distance from each pixel centre to the segment a + t d, t in [0, 1].
    t = np.clip(((px - ax) * dx + (py - ay) * dy) / (dx**2 + dy**2), 0.0, 1.0)
    return (px - ax - t * dx) ** 2 + (py - ay - t * dy) ** 2 <= _LINE_HALF_WIDTH**2


_DRAW = (_squares, _circles, _triangles, _lines)


@functools.lru_cache(maxsize=8)
def _generate(size: int, num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """All images ``(N, 1, size, size)`` uint8 in {0, 1} and labels ``(N,)`` int64 (cached)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASS_NAMES), num_samples)
    centres = np.arange(size) + 0.5
    px, py = centres[None, None, :], centres[None, :, None]  # (1, 1, W) and (1, H, 1): pixel centres
    images = np.zeros((num_samples, size, size), dtype=np.uint8)
    for c, draw in enumerate(_DRAW):
        index = np.flatnonzero(labels == c)
        images[index] = draw(rng, len(index), size, px, py)
    assert images.reshape(num_samples, -1).any(1).all(), "every image shows a shape"
    return readonly(images[:, None], labels.astype(np.int64))  # (N, 1, H, W)


def shapes(split: str = "train", root: str | None = None, *, size: int = 20, num_samples: int = 6000,
           seed: int = 0, labels_per_class: int | None = None, label_seed: int = 0) -> TensorDataset:
    """Binary images of a filled square, a filled circle, a filled triangle or a thin line.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of the images).
        root: unused (embedded data).
        size: image height and width in pixels (8..256).
        num_samples: train + test images.
        seed: seed of the draw.
        labels_per_class: keep this many labels per class in the train split, the others -1 (semi-supervised;
            the test split keeps every label).
        label_seed: seed of the choice of kept labels.
    Returns:
        ``(N, 1, size, size)`` int64 in {0, 1}; labels ``(N,)``: 0 square, 1 circle, 2 triangle, 3 line
        (``CLASS_NAMES``).
    """
    require(8 <= size <= 256, f"shapes: size must be in 8..256, got {size}")
    require(num_samples >= 12, f"shapes: num_samples must be >= 12, got {num_samples}")
    require(seed >= 0, f"shapes: seed must be >= 0, got {seed}")
    images, labels = _generate(size, num_samples, seed)
    part = positional_range(num_samples, split, TEST_FRACTION, "shapes")
    spec = DataSpec((1, size, size), "discrete", 2, len(CLASS_NAMES))
    ds = TensorDataset(tensor(images, part), tensor(labels, part), spec, name="shapes",
                       info={"class_names": CLASS_NAMES})
    return keep_labels_per_class(ds, labels_per_class, split, label_seed)
