"""Shifted convolutions and gated residual blocks of PixelCNN++.

A *down-shifted* convolution lets output row i see input rows <= i (a filter of kh rows above and including i,
centred horizontally); a *down-right-shifted* one lets output (i, j) see inputs in rows <= i and columns <= j.
Followed by ``down_shift``/``right_shift`` (move the map one row down / one column right), they give the two
causal streams of PixelCNN++: ``u`` sees the rows above a pixel and ``ul`` additionally the pixels to its left.
The strided versions downsample by 2 and the transposed versions upsample by 2 while keeping these properties.
``GatedResNet`` is the residual block ``x + a * sigmoid(b)`` with concatenated ELUs (section 2.4 of the paper).

References:
    Salimans, Karpathy, Chen, Kingma. "PixelCNN++: Improving the PixelCNN with Discretized Logistic Mixture
    Likelihood and Other Modifications", 2017, arXiv:1701.05517.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["concat_elu", "down_shift", "right_shift", "DownShiftedConv2d", "DownRightShiftedConv2d",
           "DownShiftedDeconv2d", "DownRightShiftedDeconv2d", "GatedResNet"]


def concat_elu(x: torch.Tensor) -> torch.Tensor:
    """``elu([x, -x])`` along channels: ``(B, F, H, W) -> (B, 2F, H, W)``."""
    return F.elu(torch.cat([x, -x], dim=1))


def down_shift(x: torch.Tensor) -> torch.Tensor:
    """Move the map one row down (zeros enter at the top): row i then holds what row i - 1 held."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]


def right_shift(x: torch.Tensor) -> torch.Tensor:
    """Move the map one column right (zeros enter on the left)."""
    return F.pad(x, (1, 0))[:, :, :, :-1]


class DownShiftedConv2d(nn.Conv2d):
    """Output (i, j) sees input rows i - kh + 1 .. i and columns j - kw // 2 .. j + kw // 2 (stride 1 or 2)."""

    def __init__(self, in_channels, out_channels, kernel_size=(2, 3), stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x):
        kh, kw = self.kernel_size
        return super().forward(F.pad(x, (kw // 2, kw // 2, kh - 1, 0)))


class DownRightShiftedConv2d(nn.Conv2d):
    """Output (i, j) sees input rows i - kh + 1 .. i and columns j - kw + 1 .. j (stride 1 or 2)."""

    def __init__(self, in_channels, out_channels, kernel_size=(2, 2), stride: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride)

    def forward(self, x):
        kh, kw = self.kernel_size
        return super().forward(F.pad(x, (kw - 1, 0, kh - 1, 0)))


class DownShiftedDeconv2d(nn.ConvTranspose2d):
    """Upsample by 2: output (i, j) sees input row i // 2 and columns (j - 1) / 2 .. (j + 1) / 2.

    ``forward(x, size)`` crops to ``size = (H, W)`` (handles odd sizes).
    """

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, (2, 3), stride=2)

    def forward(self, x, size):
        y = super().forward(x)  # (B, F, 2h, 2w + 1): input (r, c) lands on rows 2r..2r+1, cols 2c..2c+2
        return y[:, :, :size[0], 1:1 + size[1]]


class DownRightShiftedDeconv2d(nn.ConvTranspose2d):
    """Upsample by 2: output (i, j) sees input (i // 2, j // 2). ``forward(x, size)`` crops to ``size``."""

    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, (2, 2), stride=2)

    def forward(self, x, size):
        return super().forward(x)[:, :, :size[0], :size[1]]


class GatedResNet(nn.Module):
    """``x + a * sigmoid(b)``, ``[a, b] = conv(dropout(concat_elu(conv(concat_elu(x)) + nin(concat_elu(aux)))))``.

    Args:
        channels: F (input and output).
        conv: ``DownShiftedConv2d`` or ``DownRightShiftedConv2d`` (keeps the stream's causality).
        aux_channels: channels of the auxiliary input (0: none), mixed in with a 1x1 convolution.
        dropout: dropout probability.
    """

    def __init__(self, channels: int, conv, aux_channels: int = 0, dropout: float = 0.0):
        super().__init__()
        self.conv1 = conv(2 * channels, channels)
        self.aux = nn.Conv2d(2 * aux_channels, channels, 1) if aux_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv(2 * channels, 2 * channels)

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        c = self.conv1(concat_elu(x))
        if self.aux is not None:
            c = c + self.aux(concat_elu(aux))
        a, b = self.conv2(self.dropout(concat_elu(c))).chunk(2, dim=1)
        return x + a * torch.sigmoid(b)
