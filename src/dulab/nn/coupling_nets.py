"""Conditioner networks for coupling layers: an MLP for vectors and a small convolutional net for images.

Both take ``(x, context)`` and concatenate the conditioning features to the input (for images, broadcast over
space), and both can zero their last layer (``zero_init=True``, the default), which makes a coupling layer start
as the identity, the initialisation Glow recommends (section 3.3 of Kingma & Dhariwal, 2018, arXiv:1807.03039).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "ConvNet", "zero_last_layer"]


def zero_last_layer(layer: nn.Module) -> None:
    """Set a linear/conv layer's weight and bias to zero (at construction; never in ``forward``)."""
    nn.init.zeros_(layer.weight)
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)


class MLP(nn.Module):
    """``(B, in_features) [+ (B, context_features)] -> (B, out_features)`` with ReLU hidden layers.

    Args:
        in_features, out_features: sizes of input and output.
        hidden_sizes: widths of the hidden layers.
        context_features: size of the conditioning vector concatenated to the input (0: none).
        zero_init: zero the last layer.
    """

    def __init__(self, in_features: int, out_features: int, hidden_sizes=(64, 64), *, context_features: int = 0,
                 zero_init: bool = True):
        super().__init__()
        sizes = [in_features + context_features, *hidden_sizes]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(sizes[-1], out_features)
        self.context_features = context_features
        if zero_init:
            zero_last_layer(self.out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.context_features:
            if context is None:
                raise ValueError("this conditioner was built with context_features > 0: pass context")
            x = torch.cat([x, context.to(x.dtype)], 1)
        return self.out(self.hidden(x))


class ConvNet(nn.Module):
    """``(B, C_in, H, W) [+ context] -> (B, C_out, H, W)``: 3x3 conv, ReLU, ``num_blocks`` residual blocks
    (3x3 then 1x1 conv), ReLU, and a final 3x3 conv (zeroed when ``zero_init``).

    Args:
        in_channels, out_channels: channels of input and output.
        hidden_channels: width of the hidden layers.
        num_blocks: residual blocks between the first and the last convolution.
        context_channels: conditioning input, either ``(B, F)`` features broadcast over space or ``(B, F, H, W)``
            maps, concatenated to the input (0: none).
        zero_init: zero the last layer.
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 32, num_blocks: int = 1, *,
                 context_channels: int = 0, zero_init: bool = True):
        super().__init__()
        self.context_channels = context_channels
        self.inp = nn.Conv2d(in_channels + context_channels, hidden_channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Conv2d(hidden_channels, hidden_channels, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(hidden_channels, hidden_channels, 1))
            for _ in range(num_blocks))
        self.act = nn.ReLU()
        self.out = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        if zero_init:
            zero_last_layer(self.out)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if self.context_channels:
            if context is None:
                raise ValueError("this conditioner was built with context_channels > 0: pass context")
            context = context.to(x.dtype)
            if context.dim() == 2:  # (B, F) -> (B, F, H, W)
                context = context[:, :, None, None].expand(-1, -1, *x.shape[2:])
            x = torch.cat([x, context], 1)
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(self.act(h))
