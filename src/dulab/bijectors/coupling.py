"""Coupling bijectors: the elements where ``mask == 1`` pass through unchanged and parametrise an element-wise
map of the others, so the Jacobian is triangular and the inverse is as cheap as the forward map.

With an additive transformer this is NICE's additive coupling, with an affine one Real NVP's and Glow's affine
coupling, with a rational-quadratic spline the coupling layer of Neural Spline Flows. Masks: alternating or
half-split features for vectors, checkerboard and channel masks for images.

References:
    Dinh, Krueger, Bengio. "NICE: Non-linear Independent Components Estimation", 2014, arXiv:1410.8516.
    Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP", 2016, arXiv:1605.08803 (section 3.4-3.5).
    Durkan, Bekasov, Murray, Papamakarios. "Neural Spline Flows", 2019, arXiv:1906.04032.
"""

from __future__ import annotations

import torch
from torch import nn

from dulab.bijectors.base import Bijector

__all__ = ["Coupling", "alternating_mask", "half_mask", "checkerboard_mask", "channel_mask"]


def alternating_mask(num_features: int, parity: int = 0) -> torch.Tensor:
    """``(D,)`` mask with ones at even (``parity=0``) or odd indices."""
    return ((torch.arange(num_features) + parity) % 2 == 0).float()


def half_mask(num_features: int, first: bool = True) -> torch.Tensor:
    """``(D,)`` mask with ones on the first ``ceil(D/2)`` features (or the last ``floor(D/2)`` when not ``first``)."""
    m = (torch.arange(num_features) < (num_features + 1) // 2).float()
    return m if first else 1 - m


def checkerboard_mask(channels: int, height: int, width: int, parity: int = 0) -> torch.Tensor:
    """``(C, H, W)`` checkerboard: ones where ``(h + w + parity)`` is even, the same for every channel."""
    h = torch.arange(height)[:, None]
    w = torch.arange(width)[None, :]
    return ((h + w + parity) % 2 == 0).float().expand(channels, height, width).clone()


def channel_mask(channels: int, height: int, width: int, first: bool = True) -> torch.Tensor:
    """``(C, H, W)`` with ones on the first half of the channels (or the second half)."""
    m = half_mask(channels, first)
    return m[:, None, None].expand(channels, height, width).clone()


class Coupling(Bijector):
    """``y = mask * x + (1 - mask) * tau(x; theta(mask * x, context))``.

    Args:
        mask: ``(*event)`` 0/1 tensor; ones are kept (and condition the map), zeros are transformed. An all-zero
            mask gives an element-wise map conditioned on ``context`` only.
        conditioner: a module ``(B, *event) [, context] -> (B, C_out, ...)`` whose output reshapes to
            ``(B, *event, P)`` after moving the parameter axis last (see ``_params``); for vectors
            ``(B, D * P)``, for images ``(B, C * P, H, W)`` (channel-major: channel ``c``'s parameters are
            ``c * P .. c * P + P - 1``).
        transformer: an object from ``dulab.bijectors.transformers`` with ``num_params == P``.
    """

    def __init__(self, mask: torch.Tensor, conditioner: nn.Module, transformer):
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.conditioner = conditioner
        self.transformer = transformer

    def _params(self, x_kept: torch.Tensor, context) -> torch.Tensor:
        B, P = x_kept.shape[0], self.transformer.num_params
        out = self.conditioner(x_kept, context)
        if x_kept.dim() == 2:
            return out.view(B, x_kept.shape[1], P)  # (B, D * P) -> (B, D, P)
        C, H, W = x_kept.shape[1:]
        return out.view(B, C, P, H, W).permute(0, 1, 3, 4, 2)  # (B, C * P, H, W) -> (B, C, H, W, P)

    def _couple(self, x, context, inverse: bool):
        mask = self.mask.to(x.dtype)
        x_kept = x * mask
        params = self._params(x_kept, context)
        fn = self.transformer.inverse if inverse else self.transformer.forward
        y, log_d = fn(x, params)
        y = x_kept + (1 - mask) * y
        return y, (log_d * (1 - mask)).flatten(1).sum(1)

    def forward(self, x, context=None):
        return self._couple(x, context, inverse=False)

    def inverse(self, y, context=None):
        return self._couple(y, context, inverse=True)
