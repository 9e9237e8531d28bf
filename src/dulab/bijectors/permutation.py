"""Volume-preserving rearrangements (log-det 0): permutations of features or channels, reversal, the
space-to-channel squeeze of multi-scale flows, and reshaping.

References:
    Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP", 2016, arXiv:1605.08803 (squeeze,
    section 3.6).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dulab.bijectors.base import Bijector, zeros_log_det

__all__ = ["Permutation", "Reverse", "Squeeze", "Reshape"]


class Permutation(Bijector):
    """``y[:, i] = x[:, perm[i]]`` along axis 1 (features of vectors, channels of images).

    Args:
        perm: ``(N,)`` a permutation of ``range(N)``; kept as a buffer so checkpoints carry it.
    """

    def __init__(self, perm: torch.Tensor):
        super().__init__()
        perm = torch.as_tensor(perm).long()
        if not torch.equal(perm.sort().values, torch.arange(perm.numel())):
            raise ValueError("perm must be a permutation of range(N)")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    @classmethod
    def random(cls, num_features: int, generator: torch.Generator | None = None) -> Permutation:
        """A uniformly random permutation (from ``generator``, else the global RNG)."""
        return cls(torch.randperm(num_features, generator=generator))

    def forward(self, x, context=None):
        return x[:, self.perm], zeros_log_det(x)

    def inverse(self, y, context=None):
        return y[:, self.inverse_perm], zeros_log_det(y)


class Reverse(Permutation):
    """Reverse the order along axis 1, the permutation MAF and NICE use between layers."""

    def __init__(self, num_features: int):
        super().__init__(torch.arange(num_features - 1, -1, -1))


class Squeeze(Bijector):
    """``(B, C, H, W) -> (B, 4C, H/2, W/2)``: each 2x2 spatial block becomes 4 channels (Real NVP, section 3.6)."""

    def forward(self, x, context=None):
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"Squeeze needs even height and width, got {tuple(x.shape[-2:])}")
        return F.pixel_unshuffle(x, 2), zeros_log_det(x)

    def inverse(self, y, context=None):
        return F.pixel_shuffle(y, 2), zeros_log_det(y)


class Reshape(Bijector):
    """``(B, *in_shape) -> (B, *out_shape)`` (same number of elements), e.g. flattening images for MADE."""

    def __init__(self, in_shape, out_shape):
        super().__init__()
        self.in_shape, self.out_shape = tuple(in_shape), tuple(out_shape)
        if torch.Size(self.in_shape).numel() != torch.Size(self.out_shape).numel():
            raise ValueError(f"cannot reshape {self.in_shape} to {self.out_shape}")

    def forward(self, x, context=None):
        return x.reshape(x.shape[0], *self.out_shape), zeros_log_det(x)

    def inverse(self, y, context=None):
        return y.reshape(y.shape[0], *self.in_shape), zeros_log_det(y)
