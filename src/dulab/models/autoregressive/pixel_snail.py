"""PixelSNAIL: masked residual convolutions interleaved with causal self-attention over all earlier pixels.

Convolutions model local structure; attention blocks give every pixel direct access to any earlier pixel, which
removes the blind spot and the limited receptive field of a convolutional stack. Each block is a few PixelCNN
residual blocks (masked 3x3 type B) followed by multi-head causal attention in raster order whose output is
added back to the features. The attention reads only the features of the first colour group, which depend on
strictly earlier pixels, so attending to positions ``<= t`` (``dulab.nn.attention.CausalSelfAttention``) never
leaks the current pixel; fixed (row, column) coordinates are added to its input as position information.
Sampling uses the shared raster sampler (attention has no bounded receptive field to crop to).

References:
    Chen, Mishra, Rohaninejad, Abbeel. "PixelSNAIL: An Improved Autoregressive Generative Model", 2018,
    arXiv:1712.09763.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dulab.config import require_at_least, require_fraction, require_odd
from dulab.errors import UserError
from dulab.models.autoregressive.pixel_cnn import CategoricalHead, ImageAutoregressiveModel, MaskedResidualBlock
from dulab.nn.attention import CausalSelfAttention
from dulab.nn.masked import MaskedConv2d

__all__ = ["PixelSNAIL", "PixelSNAILConfig"]


@dataclass
class PixelSNAILConfig:
    """Hyperparameters of ``PixelSNAIL``.

    Attributes:
        num_filters: feature maps of the residual stream.
        num_blocks: blocks of (residual convolutions + attention).
        num_res_layers: masked residual blocks per block.
        first_kernel_size: odd size of the first (type A) convolution.
        attention_dim: width of the attention layers (divisible by ``num_heads``).
        num_heads: attention heads.
        num_head_filters: width of the hidden 1x1 layer of the output head.
        dropout: dropout in the residual blocks and attention.
    """

    num_filters: int = 64
    num_blocks: int = 2
    num_res_layers: int = 2
    first_kernel_size: int = 5
    attention_dim: int = 32
    num_heads: int = 2
    num_head_filters: int = 64
    dropout: float = 0.1

    def __post_init__(self):
        require_at_least(self, 1, "num_filters", "num_blocks", "num_res_layers", "attention_dim", "num_heads",
                         "num_head_filters")
        require_odd(self, 1, "first_kernel_size")
        if self.attention_dim % self.num_heads:
            raise UserError(f"attention_dim ({self.attention_dim}) must be divisible by num_heads ({self.num_heads})")
        require_fraction(self, "dropout")


class _AttentionBlock(nn.Module):
    """Causal attention over raster positions, reading the strictly-causal first colour group of ``h``."""

    def __init__(self, channels: int, causal_channels: int, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.causal_channels = causal_channels
        self.inp = nn.Linear(causal_channels + 2, dim)
        self.norm = nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, num_heads, dropout)
        self.out = nn.Linear(dim, channels)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, _, H, W = h.shape
        rows = torch.linspace(-1, 1, H, dtype=h.dtype, device=h.device)[:, None].expand(H, W)
        cols = torch.linspace(-1, 1, W, dtype=h.dtype, device=h.device)[None, :].expand(H, W)
        pos = torch.stack([rows, cols]).expand(B, 2, H, W)
        z = torch.cat([h[:, :self.causal_channels], pos], dim=1)  # (B, Fc + 2, H, W)
        z = z.flatten(2).transpose(1, 2)  # (B, Fc + 2, H * W) -> (B, T, Fc + 2), raster order
        z = self.out(self.attention(self.norm(self.inp(z))))  # (B, T, channels)
        return h + z.transpose(1, 2).reshape(B, -1, H, W)  # (B, T, F) -> (B, F, H, W)


class PixelSNAIL(ImageAutoregressiveModel):
    """PixelSNAIL (small): masked convolutions + causal attention, softmax over levels."""

    Config = PixelSNAILConfig
    train_defaults = {"epochs": 40, "lr": 2e-3, "batch_size": 64, "weight_decay": 1e-4, "ema_decay": 0.995,
                      "warmup_steps": 50}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        cfg = self.config
        C, K = spec.shape[0], spec.num_levels
        G = C
        h = max(cfg.num_filters, G)
        causal = h // G  # channel_groups puts the first h // G feature maps in group 0
        self.first = MaskedConv2d(C, h, cfg.first_kernel_size, "A", num_groups=G)
        self.convs = nn.ModuleList(
            nn.ModuleList(MaskedResidualBlock(h, 3, G, cfg.dropout) for _ in range(cfg.num_res_layers))
            for _ in range(cfg.num_blocks))
        self.attentions = nn.ModuleList(
            _AttentionBlock(h, causal, cfg.attention_dim, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_blocks))
        self.head = CategoricalHead(h, max(cfg.num_head_filters, G), C, K, G)

    def network(self, v, context=None):
        h = self.first(v)
        for convs, attention in zip(self.convs, self.attentions):
            for block in convs:
                h = block(h)
            h = attention(h)
        return self.head(h)
