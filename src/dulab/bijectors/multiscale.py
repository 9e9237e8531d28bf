"""Multi-scale factoring out: half of the channels leave the flow (they are latent variables already), the other
half continue through the next, coarser scale.

The output keeps the input's shape (the factored-out channels are put back in place), so a multi-scale flow's
latent has the data's shape and interpolation/temperature work on it directly.

References:
    Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP", 2016, arXiv:1605.08803 (section 3.6).
"""

from __future__ import annotations

import torch

from dulab.bijectors.base import Bijector

__all__ = ["FactorOut"]


class FactorOut(Bijector):
    """``(B, C, ...) -> (B, C, ...)``: channels ``[:C - C//2]`` pass unchanged, ``inner`` transforms the rest.

    Args:
        inner: the bijector for the remaining channels (the next scale).
    """

    def __init__(self, inner: Bijector):
        super().__init__()
        self.inner = inner

    def _split(self, x):
        keep = x.shape[1] - x.shape[1] // 2
        return x[:, :keep], x[:, keep:]

    def forward(self, x, context=None):
        z1, h = self._split(x)
        z2, log_det = self.inner(h, context)
        return torch.cat([z1, z2], 1), log_det

    def inverse(self, y, context=None):
        z1, z2 = self._split(y)
        h, log_det = self.inner.inverse(z2, context)
        return torch.cat([z1, h], 1), log_det
