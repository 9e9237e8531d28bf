"""Procedural dSprites-style binary images with their generating factors, for disentanglement.

Every image is one white shape on a black canvas, fully determined by five factors: shape (square, ellipse,
heart), scale (6 values), rotation (40 values over ``[0, 2 pi)``) and position x and y (32 values each), the
factor grid of the dSprites data set (Matthey, Higgins, Hassabis and Lerchner, "dSprites: Disentanglement
testing Sprites dataset", 2017) introduced with beta-VAE (Higgins et al., "beta-VAE: Learning Basic Visual
Concepts with a Constrained Variational Framework", ICLR 2017). The images are drawn here, not copied: a pixel
is on when its centre lies inside the rotated, scaled and shifted shape, so ``render(ds.factors, size)``
reproduces ``ds.x`` exactly.

Geometry (in pixels, ``S`` the canvas size): the shape is defined inside the unit disk and drawn with radius
``r = scale * 0.2 * S`` where ``scale`` is one of ``linspace(0.5, 1, 6)``; its centre is
``0.2 * S + pos * 0.6 * S`` with ``pos`` one of ``linspace(0, 1, 32)`` (x to the right, y downwards), so every
shape fits the canvas at every rotation. Rotation ``k`` turns the shape by ``2 pi k / 40`` counter-clockwise as
displayed. Shapes in unit coordinates ``(u, v)`` (v up): square ``|u|, |v| <= 0.7``; ellipse
``u^2 + (v / 0.5)^2 <= 1``; heart ``(x^2 + y^2 - 1)^3 - x^2 y^3 <= 0`` with ``x = 1.34 u``,
``y = 1.34 v + 0.118`` (the classic implicit heart curve, centred and shrunk into the unit disk).

Splits: the 737,280 factor combinations are shuffled once (seed 0); the first sixth can only appear in the
test split and the rest only in the train split, so the two splits never share a combination. ``num_samples``
combinations (train + test, the test split the last sixth of them) are drawn without replacement by ``seed``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from dulab.data._util import check_split, keep_labels_per_class, readonly, require, tensor
from dulab.data.base import DataSpec, TensorDataset

__all__ = ["sprites", "render", "SHAPE_NAMES", "FACTOR_NAMES", "FACTOR_SIZES", "SCALES", "POSITIONS",
           "TEST_FRACTION"]

SHAPE_NAMES = ("square", "ellipse", "heart")
FACTOR_NAMES = ("shape", "scale", "rotation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SCALES = np.linspace(0.5, 1.0, 6)
POSITIONS = np.linspace(0.0, 1.0, 32)
TEST_FRACTION = 1 / 6
_SPLIT_SEED = 0
_RADIUS = 0.2  # largest shape radius, as a fraction of the canvas; also the margin kept at each border
_CHUNK = 512  # images rendered at once (bounds the temporary float arrays to a few MB)


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether unit-disk coordinates ``(u, v)`` lie inside ``shape`` (broadcast arrays; shape per image)."""
    square = (np.abs(u) <= 0.7) & (np.abs(v) <= 0.7)
    ellipse = u**2 + (v / 0.5) ** 2 <= 1.0
    x, y = 1.34 * u, 1.34 * v + 0.118
    heart = (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))


def render(factors, size: int = 64) -> np.ndarray:
    """Draw the images of the given factor indices.

    Args:
        factors: ``(N, 5)`` integer indices (shape, scale, rotation, pos_x, pos_y) within ``FACTOR_SIZES``
            (numpy array or tensor).
        size: canvas height and width in pixels (32 or 64).
    Returns:
        ``(N, 1, size, size)`` uint8 in {0, 1}.
    """
    f = np.asarray(factors, dtype=np.int64).reshape(-1, 5)
    require(size in (32, 64), f"sprites: size must be 32 or 64, got {size}")
    require(bool(((f >= 0) & (f < np.array(FACTOR_SIZES))).all()),
            f"sprites: factor indices must lie in [0, {FACTOR_SIZES}) per column")
    out = np.zeros((len(f), 1, size, size), dtype=np.uint8)
    # Every shape lies within radius _RADIUS * size of its centre, so only a window of side w around the centre
    # is tested (about a fifth of the canvas); pixels outside it are off.
    w = min(size, math.ceil(2 * _RADIUS * size) + 2)
    offsets = np.arange(w)
    for start in range(0, len(f), _CHUNK):
        c = f[start:start + _CHUNK]
        shape = c[:, 0, None, None]  # (n, 1, 1)
        radius = (SCALES[c[:, 1]] * _RADIUS * size)[:, None, None]
        theta = (2 * math.pi / FACTOR_SIZES[2]) * c[:, 2][:, None, None]
        cx = (_RADIUS + POSITIONS[c[:, 3]] * (1 - 2 * _RADIUS)) * size  # (n,)
        cy = (_RADIUS + POSITIONS[c[:, 4]] * (1 - 2 * _RADIUS)) * size
        ox = np.clip(np.floor(cx - w / 2).astype(np.int64), 0, size - w)  # (n,) window origin
        oy = np.clip(np.floor(cy - w / 2).astype(np.int64), 0, size - w)
        cols, rows = ox[:, None] + offsets, oy[:, None] + offsets  # (n, w) pixel indices of the window
        px, py = (cols + 0.5)[:, None, :], (rows + 0.5)[:, :, None]  # (n, 1, w) and (n, w, 1): pixel centres
        dx, dy = px - cx[:, None, None], cy[:, None, None] - py  # dy points up: positive angles turn CCW
        cos, sin = np.cos(theta), np.sin(theta)
        u = (cos * dx + sin * dy) / radius  # rotate the pixel by -theta into the shape's frame
        v = (-sin * dx + cos * dy) / radius
        index = np.arange(start, start + len(c))[:, None, None]
        out[index, 0, rows[:, :, None], cols[:, None, :]] = _inside(shape, u, v)
    return out


@functools.lru_cache(maxsize=1)
def _pools() -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of the factor grid allowed in (train, test): a fixed shuffle, test = the first sixth."""
    total = math.prod(FACTOR_SIZES)
    perm = np.random.default_rng(_SPLIT_SEED).permutation(total)
    n_test = int(round(total * TEST_FRACTION))
    return readonly(perm[n_test:], perm[:n_test])


@functools.lru_cache(maxsize=4)
def _generate(split: str, size: int, num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(n, 1, size, size)`` uint8 and factors ``(n, 5)`` int64 of one split (read-only, cached)."""
    n_test = int(round(num_samples * TEST_FRACTION))
    n = num_samples - n_test if split == "train" else n_test
    pool = _pools()[0 if split == "train" else 1]
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    flat = np.sort(rng.choice(len(pool), size=n, replace=False))
    factors = np.stack(np.unravel_index(pool[flat], FACTOR_SIZES), axis=1).astype(np.int64)  # (n, 5)
    return readonly(render(factors, size), factors)


def sprites(split: str = "train", root: str | None = None, *, size: int = 64, num_samples: int = 6000,
            seed: int = 0, labels_per_class: int | None = None, label_seed: int = 0) -> TensorDataset:
    """dSprites-style binary images (square, ellipse, heart) with their five generating factors.

    Args:
        split: ``"train"`` or ``"test"`` (the last sixth of ``num_samples``, from factor combinations the train
            split never uses).
        root: unused (embedded data).
        size: canvas height and width, 64 (as dSprites) or 32.
        num_samples: train + test images, drawn without replacement from the 737,280 combinations.
        seed: seed of the draw.
        labels_per_class: keep this many labels per shape in the train split, the others -1 (semi-supervised).
        label_seed: seed of the choice of kept labels.
    Returns:
        ``(N, 1, size, size)`` int64 in {0, 1}; labels ``(N,)`` the shape (0 square, 1 ellipse, 2 heart);
        ``ds.factors`` ``(N, 5)`` int64 indices (shape, scale, rotation, pos_x, pos_y), also in
        ``info["factors"]``, with ``info["factor_names"]`` and ``info["factor_sizes"]``.
    """
    check_split(split, "sprites")
    require(size in (32, 64), f"sprites: size must be 32 or 64, got {size}")
    limit = math.prod(FACTOR_SIZES)
    require(12 <= num_samples <= limit, f"sprites: num_samples must be in 12..{limit}, got {num_samples}")
    require(seed >= 0, f"sprites: seed must be >= 0, got {seed}")
    images, factors = _generate(split, size, num_samples, seed)
    f = tensor(factors)
    spec = DataSpec((1, size, size), "discrete", 2, len(SHAPE_NAMES))
    info = {"class_names": SHAPE_NAMES, "factor_names": FACTOR_NAMES, "factor_sizes": FACTOR_SIZES}
    ds = TensorDataset(tensor(images), f[:, 0].clone(), spec, name="sprites", info=info, factors=f)
    return keep_labels_per_class(ds, labels_per_class, split, label_seed)
