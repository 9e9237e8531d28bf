"""Glow's invertible 1x1 convolution with an LU-decomposed weight; on vectors it is an invertible linear map.

``W = P L (U + diag(sign(s) exp(log|s|)))`` with ``P`` a fixed permutation, ``L`` unit lower triangular and ``U``
strictly upper triangular, so ``log|det W| = sum(log|s|)`` costs O(C) instead of O(C^3).

References:
    Kingma, Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018, arXiv:1807.03039
    (section 3.2, eq. 10).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dulab.bijectors.base import Bijector

__all__ = ["InvertibleConv1x1"]


class InvertibleConv1x1(Bijector):
    """``y[:, i] = sum_j W[i, j] x[:, j]`` at every position: a 1x1 convolution for ``(B, C, H, W)`` inputs, a
    linear map for ``(B, C)`` ones. ``log_det = H W log|det W|`` (``H W = 1`` for vectors).

    Args:
        num_features: C.
        random_init: start from a random rotation (Glow's choice, drawn from the global RNG); ``False`` starts
            from the identity (``P = I`` and all parameters zero).
    """

    def __init__(self, num_features: int, random_init: bool = True):
        super().__init__()
        C = num_features
        if random_init:
            q, _ = torch.linalg.qr(torch.randn(C, C, dtype=torch.float64))
            p, lower, upper = torch.linalg.lu(q)
            s = torch.diagonal(upper)
        else:
            p, lower, upper = torch.eye(C, dtype=torch.float64), torch.eye(C, dtype=torch.float64), torch.zeros(C, C)
            s = torch.ones(C, dtype=torch.float64)
        dtype = torch.get_default_dtype()
        self.register_buffer("perm", p.to(dtype))
        self.register_buffer("sign_s", torch.sign(s).to(dtype))
        self.register_buffer("lower_mask", torch.tril(torch.ones(C, C), -1).to(dtype))
        self.lower = nn.Parameter(torch.tril(lower, -1).to(dtype))
        self.upper = nn.Parameter(torch.triu(upper.to(torch.float64), 1).to(dtype))
        self.log_s = nn.Parameter(torch.log(s.abs()).to(dtype))

    def weight(self) -> torch.Tensor:
        """``W``, ``(C, C)``."""
        eye = torch.eye(self.log_s.numel(), dtype=self.log_s.dtype, device=self.log_s.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.perm @ lower @ upper

    def _mix(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return F.linear(x, w)
        return F.conv2d(x, w[:, :, None, None])

    def forward(self, x, context=None):
        spatial = math.prod(x.shape[2:])
        return self._mix(x, self.weight()), (self.log_s.sum() * spatial).expand(x.shape[0])

    def inverse(self, y, context=None):
        spatial = math.prod(y.shape[2:])
        w_inv = torch.linalg.inv(self.weight())
        return self._mix(y, w_inv), (-self.log_s.sum() * spatial).expand(y.shape[0])
