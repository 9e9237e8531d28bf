"""Square crops of the photographs that scikit-image ships inside its package: real natural images that need
no download, with a test split of held-out photographs.

Only the photographs bundled in the scikit-image wheel are used (never those it fetches with pooch). RGB
crops come from the colour photographs only; with ``grayscale=True`` the grey photographs join them and colour
ones are converted to luminance (``L = (299 R + 587 G + 114 B) / 1000``, ITU-R BT.601, as PIL's ``"L"`` mode).
Each photograph is reduced into a pyramid (factors 1, 2 and 4, box-filtered by PIL) and a crop is a
``size x size`` window of one level, so crops show detail at several scales. Photographs, levels and windows
are drawn uniformly with ``numpy.random.default_rng([seed, split])``.

Test photographs (never cropped for the train split): ``coffee`` and ``rocket`` (colour), plus ``coins`` and
``gravel`` (grey, with ``grayscale=True``). There are no class labels (``y`` is ``None``); the source
photograph of each crop is ``info["sources"]`` ``(N,)``, an index into ``info["photos"]``.

scikit-image is optional: ``pip install 'dulab[photos]'``. Photographs: van der Walt et al., "scikit-image:
image processing in Python", PeerJ 2014 (``skimage.data``; public-domain or freely licensed images).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from dulab.data import preprocess
from dulab.data._util import check_split, readonly, require, tensor
from dulab.data.base import DataSpec, TensorDataset
from dulab.errors import UserError

__all__ = ["photos", "TRAIN_PHOTOS", "TEST_PHOTOS", "GREY_TRAIN_PHOTOS", "GREY_TEST_PHOTOS", "PYRAMID"]

# skimage.data loaders of colour photographs bundled in the wheel (``cat`` is ``chelsea`` again: left out).
TRAIN_PHOTOS = ("astronaut", "chelsea", "hubble_deep_field", "immunohistochemistry", "motorcycle")
TEST_PHOTOS = ("coffee", "rocket")
# Grey photographs, used with grayscale=True only.
GREY_TRAIN_PHOTOS = ("camera", "moon", "brick", "grass", "cell", "clock")
GREY_TEST_PHOTOS = ("coins", "gravel")
PYRAMID = (1, 2, 4)


def _skimage_data():
    try:
        import skimage.data
    except ImportError:
        raise UserError("photos needs scikit-image: pip install 'dulab[photos]'") from None
    return skimage.data


@functools.lru_cache(maxsize=32)
def _photo(name: str, grayscale: bool) -> np.ndarray:
    """One photograph as ``(H, W, 3)`` or, grey, ``(H, W)`` uint8 (read-only, cached)."""
    data = _skimage_data()
    try:
        a = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    except (OSError, ModuleNotFoundError, ValueError) as e:  # a file missing from this scikit-image install
        raise UserError(f"photos: scikit-image could not load its photograph {name!r} offline ({e})") from None
    a = np.asarray(a, dtype=np.uint8)
    if grayscale and a.ndim == 3:
        from PIL import Image

        a = np.asarray(Image.fromarray(a[..., :3]).convert("L"))
    return readonly(a)[0]


@functools.lru_cache(maxsize=64)
def _level(name: str, grayscale: bool, factor: int) -> np.ndarray:
    """``name`` reduced by ``factor`` with PIL's box filter, ``(C, H, W)`` uint8 (read-only, cached)."""
    from PIL import Image

    a = _photo(name, grayscale)
    if factor > 1:
        im = Image.fromarray(a)
        a = np.asarray(im.reduce(factor))
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)  # (H, W) -> (1, H, W); (H, W, 3) -> (3, H, W)
    return readonly(np.ascontiguousarray(a))[0]


def _split_photos(split: str, grayscale: bool) -> tuple[str, ...]:
    if split == "train":
        return TRAIN_PHOTOS + (GREY_TRAIN_PHOTOS if grayscale else ())
    return TEST_PHOTOS + (GREY_TEST_PHOTOS if grayscale else ())


@functools.lru_cache(maxsize=4)
def _crops(split: str, size: int, grayscale: bool, num_crops: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Crops ``(num_crops, C, size, size)`` uint8 and their source indices ``(num_crops,)`` (read-only)."""
    names = _split_photos(split, grayscale)
    # Pyramid levels on which a size x size window fits.
    levels = [(i, f) for i, n in enumerate(names) for f in PYRAMID if min(_level(n, grayscale, f).shape[1:]) >= size]
    require(all(any(i == j for j, _ in levels) for i in range(len(names))),
            f"photos: size {size} is larger than a photograph; use size <= 150")
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    source = np.sort(rng.integers(0, len(names), num_crops))
    out = np.empty((num_crops, 1 if grayscale else 3, size, size), dtype=np.uint8)
    for i, name in enumerate(names):
        index = np.flatnonzero(source == i)
        factors = [f for j, f in levels if j == i]
        level = rng.integers(0, len(factors), len(index))
        for k, f in enumerate(factors):
            at = index[level == k]
            img = _level(name, grayscale, f)
            top = rng.integers(0, img.shape[1] - size + 1, len(at))
            left = rng.integers(0, img.shape[2] - size + 1, len(at))
            rows = top[:, None] + np.arange(size)  # (n, size)
            cols = left[:, None] + np.arange(size)
            out[at] = img[:, rows[:, :, None], cols[:, None, :]].transpose(1, 0, 2, 3)  # (C, n, S, S) -> (n, C, S, S)
    return readonly(out, source.astype(np.int64))


def photos(split: str = "train", root: str | None = None, *, size: int = 32, grayscale: bool = False,
           num_crops: int = 5000, seed: int = 0, bits: int = 8) -> TensorDataset:
    """Random square crops of scikit-image's bundled photographs; the test split uses other photographs.

    Args:
        split: ``"train"`` (crops of ``TRAIN_PHOTOS``, plus ``GREY_TRAIN_PHOTOS`` when grey) or ``"test"``
            (``TEST_PHOTOS``, plus ``GREY_TEST_PHOTOS``).
        root: unused (embedded data).
        size: crop height and width in pixels (4..150).
        grayscale: one luminance channel (and the grey photographs too) instead of RGB.
        num_crops: crops in the split.
        seed: seed of the draw.
        bits: keep ``2**bits`` levels per channel (1..8).
    Returns:
        ``(N, C, size, size)`` int64 in ``[0, 2**bits)`` with C = 3 (or 1); no labels; ``info["photos"]`` the
        split's photograph names and ``info["sources"]`` ``(N,)`` int64 the index of each crop's photograph.
    """
    check_split(split, "photos")
    require(4 <= size <= 150, f"photos: size must be in 4..150, got {size}")
    require(num_crops >= 1, f"photos: num_crops must be >= 1, got {num_crops}")
    require(seed >= 0, f"photos: seed must be >= 0, got {seed}")
    require(1 <= bits <= 8, f"photos: bits must be in 1..8, got {bits}")
    images, sources = _crops(split, size, bool(grayscale), num_crops, seed)
    x = preprocess.quantize(torch.from_numpy(images.copy()), 256, bits)
    spec = DataSpec(tuple(x.shape[1:]), "discrete", 2**bits, None)
    info = {"photos": _split_photos(split, bool(grayscale)), "sources": tensor(sources)}
    return TensorDataset(x, None, spec, name="photos", info=info)
