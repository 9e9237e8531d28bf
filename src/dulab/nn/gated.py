"""Gated activations and the gated layer of Gated PixelCNN (vertical + horizontal stacks).

``gate(x) = tanh(a) * sigmoid(b)`` with ``[a, b]`` the two halves of the channels (eq. 2 of the paper). A
``GatedPixelCNNLayer`` carries two feature maps: the vertical stack ``v`` whose row i sees input rows <= i (all
columns; it is shifted down one row before the horizontal stack reads it, so a pixel sees only rows above), and
the horizontal stack ``h`` whose pixel (i, j) sees the pixels to its left in row i (and earlier colour groups of
pixel (i, j)). Together they cover every earlier pixel: no blind spot.

References:
    van den Oord, Kalchbrenner, Vinyals, Espeholt, Graves, Kavukcuoglu. "Conditional Image Generation with
    PixelCNN Decoders", 2016, arXiv:1606.05328.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dulab.nn.masked import MaskedConv2d

__all__ = ["gate", "GatedPixelCNNLayer"]


def gate(x: torch.Tensor) -> torch.Tensor:
    """``tanh(a) * sigmoid(b)`` for ``[a, b] = x`` split in halves along dim 1: ``(B, 2F, ...) -> (B, F, ...)``."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedPixelCNNLayer(nn.Module):
    """One gated layer with a vertical and a horizontal stack (Figure 2 of the paper).

    Args:
        in_channels: feature maps coming in (the image's channels for the first layer).
        channels: feature maps going out (F).
        kernel_size: odd k: the vertical stack uses a (k // 2 + 1) x k filter, the horizontal a 1 x k mask.
        mask_type: ``"A"`` for the first layer (the pixel does not see itself), ``"B"`` afterwards.
        num_groups: colour groups within a pixel (R -> G -> B ordering of the horizontal stack).
        context_features: size of a conditioning vector added to both stacks' pre-activations (0: none).
        dropout: dropout on the horizontal stack's gated output.
    Inputs/outputs: ``v, h`` of shape ``(B, in_channels, H, W)`` -> ``(B, channels, H, W)`` each; the horizontal
    stack is residual when ``in_channels == channels``.
    """

    def __init__(self, in_channels: int, channels: int, kernel_size: int, mask_type: str = "B", *,
                 num_groups: int = 1, context_features: int = 0, dropout: float = 0.0):
        super().__init__()
        self.k = kernel_size
        self.v_conv = nn.Conv2d(in_channels, 2 * channels, (kernel_size // 2 + 1, kernel_size))
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_conv = MaskedConv2d(in_channels, 2 * channels, (1, kernel_size), mask_type, num_groups=num_groups,
                                   out_repeats=2)
        self.h_out = MaskedConv2d(channels, channels, 1, "B", num_groups=num_groups)
        self.context = nn.Linear(context_features, 4 * channels, bias=False) if context_features else None
        self.dropout = nn.Dropout(dropout)
        self.residual = in_channels == channels

    def forward(self, v: torch.Tensor, h: torch.Tensor, context: torch.Tensor | None = None):
        k = self.k
        v_pre = self.v_conv(F.pad(v, (k // 2, k // 2, k // 2, 0)))  # row i sees rows i - k//2 .. i
        v_down = F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1]  # shift down one row: row i sees rows < i only
        h_pre = self.h_conv(h) + self.v_to_h(v_down)
        if self.context is not None and context is not None:
            cv, ch = self.context(context)[:, :, None, None].chunk(2, dim=1)  # (B, 2F, 1, 1) each
            v_pre, h_pre = v_pre + cv, h_pre + ch
        h_new = self.h_out(self.dropout(gate(h_pre)))
        return gate(v_pre), (h + h_new if self.residual else h_new)
