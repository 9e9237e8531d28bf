"""Element-wise bijectors: a fixed affine change of scale, the logit preprocessing of image flows, and NICE's
learnable diagonal scaling.

References:
    Dinh, Krueger, Bengio. "NICE: Non-linear Independent Components Estimation", 2014, arXiv:1410.8516
    (the diagonal scaling layer, section 3.3).
    Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP", 2016, arXiv:1605.08803 (the logit
    preprocessing, section 4.1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dulab.bijectors.base import Bijector

__all__ = ["AffineScalar", "Logit", "Sigmoid", "ElementwiseScale"]


def _num_event(x: torch.Tensor) -> int:
    return math.prod(x.shape[1:])


class AffineScalar(Bijector):
    """``y = scale * x + shift`` with fixed scalars; ``log_det = D log|scale|``.

    Dequantized flows use ``scale = 1/K`` to map levels ``[0, K)`` to ``[0, 1)``, which accounts for the
    ``-D log K`` change of scale in the reported likelihood.
    """

    def __init__(self, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        if scale == 0:
            raise ValueError("AffineScalar needs a non-zero scale")
        self.scale, self.shift = float(scale), float(shift)

    def forward(self, x, context=None):
        ld = math.log(abs(self.scale)) * _num_event(x)
        return x * self.scale + self.shift, x.new_full((x.shape[0],), ld)

    def inverse(self, y, context=None):
        ld = -math.log(abs(self.scale)) * _num_event(y)
        return (y - self.shift) / self.scale, y.new_full((y.shape[0],), ld)


class Logit(Bijector):
    """``y = logit(alpha + (1 - 2 alpha) x)`` from ``(0, 1)`` to the real line (Real NVP, section 4.1).

    ``alpha`` keeps pixel values away from 0 and 1, where the logit is unbounded.

    Args:
        alpha: in ``[0, 0.5)``.
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0.0 <= alpha < 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = float(alpha)

    def forward(self, x, context=None):
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        # dy/dx = (1 - 2 alpha) / (s (1 - s)); written with softplus for stability: log s(1-s) = -sp(-y) - sp(y).
        ld = math.log(1 - 2 * self.alpha) + F.softplus(-y) + F.softplus(y)
        return y, ld.flatten(1).sum(1)

    def inverse(self, y, context=None):
        s = torch.sigmoid(y)
        x = (s - self.alpha) / (1 - 2 * self.alpha)
        ld = -math.log(1 - 2 * self.alpha) - F.softplus(-y) - F.softplus(y)
        return x, ld.flatten(1).sum(1)


class Sigmoid(Bijector):
    """``y = sigmoid(x)``, the inverse of ``Logit(alpha=0)``."""

    def __init__(self):
        super().__init__()
        self._logit = Logit(0.0)

    def forward(self, x, context=None):
        return self._logit.inverse(x)

    def inverse(self, y, context=None):
        return self._logit(y)


class ElementwiseScale(Bijector):
    """``y = x * exp(log_scale)`` with a learnable log-scale per event element (NICE's scaling layer, which lets
    the additive couplings' volume-preserving map change volume). Zero parameters give the identity.

    Args:
        event_shape: the shape of one example.
    """

    def __init__(self, event_shape):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(tuple(event_shape)))

    def forward(self, x, context=None):
        return x * self.log_scale.exp(), self.log_scale.sum().expand(x.shape[0])

    def inverse(self, y, context=None):
        return y * (-self.log_scale).exp(), (-self.log_scale.sum()).expand(y.shape[0])
