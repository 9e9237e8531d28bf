"""Image grids with Pillow: ``(N, C, H, W)`` levels or floats to one PNG."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

__all__ = ["image_grid", "to_uint8"]


def to_uint8(x: torch.Tensor, num_levels: int | None = None) -> np.ndarray:
    """``(N, C, H, W)`` int levels in ``[0, num_levels)`` or floats in [-1, 1] / [0, 1] -> uint8 ``(N, H, W, C)``."""
    x = x.detach().cpu()
    if num_levels is not None and not x.is_floating_point():
        x = x.double() * 255.0 / (num_levels - 1)
    else:
        x = x.double()
        if x.min() < 0:  # [-1, 1]
            x = (x + 1) / 2
        x = x.clamp(0, 1) * 255.0
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_grid(x: torch.Tensor, num_levels: int | None = None, nrow: int | None = None, pad: int = 1,
               min_size: int = 256) -> Image.Image:
    """Tile images into a grid, upscaled (nearest) so small images stay visible.

    Args:
        x: ``(N, C, H, W)`` with C in {1, 3}.
        num_levels: levels of discrete images (``None`` for floats).
        nrow: images per row (default ``ceil(sqrt(N))``).
        pad: pixels between tiles (mid grey).
        min_size: the grid's shorter side is scaled up to at least this many pixels.
    """
    imgs = to_uint8(x, num_levels)  # (N, H, W, C)
    N, H, W, C = imgs.shape
    nrow = nrow or math.ceil(math.sqrt(N))
    ncol = math.ceil(N / nrow)
    canvas = np.full((ncol * (H + pad) + pad, nrow * (W + pad) + pad, C), 128, dtype=np.uint8)
    for i in range(N):
        r, c = divmod(i, nrow)
        canvas[pad + r * (H + pad): pad + r * (H + pad) + H, pad + c * (W + pad): pad + c * (W + pad) + W] = imgs[i]
    img = Image.fromarray(canvas[..., 0] if C == 1 else canvas)
    scale = max(1, math.ceil(min_size / min(img.size)))
    if scale > 1:
        img = img.resize((img.size[0] * scale, img.size[1] * scale), Image.NEAREST)
    return img
