"""The 8x8 handwritten digits shipped with scikit-learn (1797 images, the UCI "Optical Recognition of
Handwritten Digits" test set; Alpaydin and Kaynak, 1998), in three variants: grey levels 0..16, binarised,
and coloured.

All three share one deterministic split: 1437 train and 360 test images (``split_indices`` with seed 0).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

from dulab.data._util import check_split, keep_labels_per_class, readonly, require
from dulab.data.base import DataSpec, TensorDataset, split_indices
from dulab.data.preprocess import binarize
from dulab.errors import UserError

__all__ = ["digits", "digits_binary", "digits_color", "NUM_TEST", "SPLIT_SEED"]

NUM_TEST = 360
SPLIT_SEED = 0
_NUM_LEVELS = 17  # pixel values 0..16
_COLOR_LEVELS = 4


def _read_packaged_csv() -> np.ndarray | None:
    """scikit-learn's ``digits.csv.gz`` read directly (1797 rows of 64 pixels and a label), or ``None``.

    Reading the file that ``load_digits`` reads avoids importing scikit-learn, which takes about a second.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    except (OSError, ValueError):
        return None
    return table if table.shape == (1797, 65) else None


@functools.lru_cache(maxsize=1)
def _load() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 images ``(N, 8, 8)`` int64 in ``0..16`` and labels ``(N,)`` int64 (read-only, cached)."""
    table = _read_packaged_csv()
    if table is not None:
        pixels, target = table[:, :64], table[:, 64]
    else:
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise UserError("the digits datasets need scikit-learn: pip install scikit-learn") from None
        bunch = load_digits()
        pixels, target = bunch.data, bunch.target
    images = np.rint(pixels).reshape(-1, 8, 8).astype(np.int64)  # integers stored as floats
    return readonly(images, np.rint(target).astype(np.int64))


def _split_index(split: str, name: str, n: int) -> torch.Tensor:
    check_split(split, name)
    train, test = split_indices(n, NUM_TEST / n, SPLIT_SEED)
    return train if split == "train" else test


def _labels(split: str, name: str) -> torch.Tensor:
    _, labels = _load()
    return torch.from_numpy(labels.copy())[_split_index(split, name, len(labels))]


def digits(split: str = "train", root: str | None = None, *, labels_per_class: int | None = None,
           label_seed: int = 0) -> TensorDataset:
    """scikit-learn's 8x8 digits with their 17 grey levels.

    Args:
        split: ``"train"`` (1437 images) or ``"test"`` (360 images).
        root: unused (embedded data).
        labels_per_class: keep this many labels per class in the train split, the others -1 (semi-supervised;
            the test split keeps every label).
        label_seed: seed of the choice of kept labels.
    Returns:
        ``(N, 1, 8, 8)`` int64 in ``[0, 17)``; labels ``(N,)`` in {0..9}.
    """
    images, _ = _load()
    index = _split_index(split, "digits", len(images))
    x = torch.from_numpy(images.copy())[index].unsqueeze(1)  # (N, 8, 8) -> (N, 1, 8, 8)
    spec = DataSpec((1, 8, 8), "discrete", _NUM_LEVELS, 10)
    ds = TensorDataset(x, _labels(split, "digits"), spec, name="digits")
    return keep_labels_per_class(ds, labels_per_class, split, label_seed)


def digits_binary(split: str = "train", root: str | None = None, *, labels_per_class: int | None = None,
                  label_seed: int = 0) -> TensorDataset:
    """The 8x8 digits binarised: a pixel is 1 where its grey level is >= 8 (of 16), else 0.

    Args:
        split: ``"train"`` (1437 images) or ``"test"`` (360 images).
        root: unused (embedded data).
        labels_per_class: keep this many labels per class in the train split, the others -1 (semi-supervised;
            the test split keeps every label).
        label_seed: seed of the choice of kept labels.
    Returns:
        ``(N, 1, 8, 8)`` int64 in {0, 1}; labels ``(N,)`` in {0..9}.
    """
    grey = digits(split)
    x = binarize(grey.x, _NUM_LEVELS, threshold=0.5)  # v / 16 >= 0.5  <=>  v >= 8
    spec = DataSpec((1, 8, 8), "discrete", 2, 10)
    ds = TensorDataset(x, grey.y, spec, name="digits_binary")
    return keep_labels_per_class(ds, labels_per_class, split, label_seed)


@functools.lru_cache(maxsize=8)
def _colour(seed: int) -> np.ndarray:
    """All 1797 coloured images ``(N, 3, 8, 8)`` int64 in ``0..3`` (read-only, cached per seed)."""
    images, _ = _load()
    n = len(images)
    rng = np.random.default_rng(seed)
    # One foreground and one background colour per image from {0..3}^3, different from each other: draw the
    # background, then the foreground among the other 63 colours by shifting the colour index past it.
    num_colours = _COLOR_LEVELS**3
    bg_index = rng.integers(0, num_colours, n)
    fg_index = rng.integers(0, num_colours - 1, n)
    fg_index = fg_index + (fg_index >= bg_index)
    powers = _COLOR_LEVELS ** np.arange(3)[::-1]  # index -> (r, g, b) digits in base 4
    bg = (bg_index[:, None] // powers) % _COLOR_LEVELS  # (N, 3)
    fg = (fg_index[:, None] // powers) % _COLOR_LEVELS
    t = images[:, None, :, :] / (_NUM_LEVELS - 1)  # (N, 1, 8, 8) in [0, 1]
    value = bg[:, :, None, None] + t * (fg - bg)[:, :, None, None]  # (N, 3, 8, 8)
    return readonly(np.floor(value + 0.5).astype(np.int64))[0]  # round half up, the same on every platform


def digits_color(split: str = "train", root: str | None = None, *, seed: int = 0,
                 labels_per_class: int | None = None, label_seed: int = 0) -> TensorDataset:
    """The 8x8 digits in colour: each image gets a random foreground and background colour from ``{0..3}^3``
    (different from each other), and pixel = ``round(bg + t * (fg - bg))`` per channel with
    ``t = value / 16``.

    Args:
        split: ``"train"`` (1437 images) or ``"test"`` (360 images), the same images as ``digits``.
        root: unused (embedded data).
        seed: seed of the colour draw.
        labels_per_class: keep this many labels per class in the train split, the others -1 (semi-supervised;
            the test split keeps every label).
        label_seed: seed of the choice of kept labels.
    Returns:
        ``(N, 3, 8, 8)`` int64 in ``[0, 4)``; labels ``(N,)`` in {0..9}.
    """
    require(seed >= 0, f"digits_color: seed must be >= 0, got {seed}")
    images = _colour(seed)
    x = torch.from_numpy(images.copy())[_split_index(split, "digits_color", len(images))]
    spec = DataSpec((3, 8, 8), "discrete", _COLOR_LEVELS, 10)
    ds = TensorDataset(x, _labels(split, "digits_color"), spec, name="digits_color")
    return keep_labels_per_class(ds, labels_per_class, split, label_seed)
