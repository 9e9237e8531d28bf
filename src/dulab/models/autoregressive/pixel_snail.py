"""PixelSNAIL: masked residual convolutions interleaved with causal self-attention over all earlier pixels.

Convolutions model local structure; attention blocks give every pixel direct access to any earlier pixel, which
removes the blind spot and the limited receptive field of a convolutional stack. Each block is a few PixelCNN
residual blocks (masked 3x3 type B) followed by multi-head causal attention in raster order whose output is
added back to the features. The attention reads only the features of the first colour group, which depend on
strictly earlier pixels, so attending to positions ``<= t`` (``dulab.nn.attention.CausalSelfAttention``) never
leaks the current pixel; fixed (row, column) coordinates are added to its input as position information.

Sampling: ``sample`` is exact and cached. Each masked convolution keeps its input in a cache and is evaluated only
at the pixel being sampled (as PixelCNN's sampler, Ramachandran et al. 2017), and each attention block keeps a
key/value cache of the positions generated so far (as the transformer), so a sub-pixel costs one position per
layer and one query per attention block instead of a pass over the image. The attention reads only features
of strictly earlier pixels, so its output at a pixel is computed once, at the pixel's first channel, and reused
for the others. ``naive_sample`` (one full pass per sub-pixel) is the reference it is tested against.

References:
    Chen, Mishra, Rohaninejad, Abbeel. "PixelSNAIL: An Improved Autoregressive Generative Model", 2018,
    arXiv:1712.09763.
    Ramachandran, Paine, Khorrami et al. "Fast Generation for Convolutional Autoregressive Models", 2017,
    arXiv:1704.06001.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dulab.config import require_at_least, require_fraction, require_odd
from dulab.distributions import categorical_sample
from dulab.errors import UserError
from dulab.models.autoregressive.cached import MaskedConvCache, pointwise
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

    @staticmethod
    def positions(H: int, W: int, *, dtype, device) -> torch.Tensor:
        """``(2, H, W)``: the (row, column) coordinates in [-1, 1] appended to the attention input."""
        rows = torch.linspace(-1, 1, H, dtype=dtype, device=device)[:, None].expand(H, W)
        cols = torch.linspace(-1, 1, W, dtype=dtype, device=device)[None, :].expand(H, W)
        return torch.stack([rows, cols])

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, _, H, W = h.shape
        pos = self.positions(H, W, dtype=h.dtype, device=h.device).expand(B, 2, H, W)
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

    @torch.no_grad()
    def sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None, temperature=1.0):
        """Exact cached sampling: per-layer convolution caches and per-block key/value caches (module docstring).

        Draws exactly what ``naive_sample`` draws for the same generator: the same conditionals up to the
        floating-point summation order of the convolutions and of attention over a growing cache (tested within
        1e-9 in float64, with identical draws). Arguments and result as ``naive_sample``; in training mode
        (dropout active) it runs ``naive_sample``.
        """
        if self.training:
            return self.naive_sample(num_samples, generator=generator, context=context, given=given,
                                     given_mask=given_mask, temperature=temperature)
        x, mask, _ = self._prepare_sampling(num_samples, context, given, given_mask)
        C, H, W = self.spec.shape
        B, K, dtype, device = num_samples, self.spec.num_levels, self._param_dtype(), x.device
        opts = {"dtype": dtype, "device": device}
        first = MaskedConvCache(self.first, B, H, W, **opts)
        convs = [[(block, MaskedConvCache(block.conv, B, H, W, **opts)) for block in blocks] for blocks in self.convs]
        kv = [a.attention.new_cache(B, H * W, **opts) for a in self.attentions]
        pos = _AttentionBlock.positions(H, W, **opts).flatten(1).T  # (2, H, W) -> (H * W, 2), raster order
        scale = 2.0 / (K - 1)
        for i in range(H):
            for j in range(W):
                t, attended = i * W + j, []
                for ch in range(C):
                    first.write(i, j, x[:, :, i, j].to(dtype) * scale - 1)
                    h = first.at(i, j)  # (B, F)
                    for n, (blocks, attention) in enumerate(zip(convs, self.attentions)):
                        for block, cache in blocks:
                            cache.write(i, j, F.relu(pointwise(block.reduce, F.relu(h))))
                            h = h + pointwise(block.expand, F.relu(cache.at(i, j)))
                        if ch == 0:  # reads group 0 only (earlier pixels): the same for every channel
                            z = torch.cat([h[:, :attention.causal_channels], pos[t].expand(B, 2)], 1)
                            z = attention.attention(attention.norm(attention.inp(z))[:, None], kv[n])  # (B, 1, d)
                            attended.append(attention.out(z[:, 0]))
                        h = h + attended[n]
                    logits = pointwise(self.head.out, F.elu(pointwise(self.head.hidden, F.elu(h))))  # (B, C * K)
                    keep = mask[:, ch, i, j]
                    if bool(keep.all()):
                        continue
                    value = categorical_sample(logits.view(B, C, K)[:, ch], generator, temperature)
                    x[:, ch, i, j] = torch.where(keep, x[:, ch, i, j], value)
                first.write(i, j, x[:, :, i, j].to(dtype) * scale - 1)
        return x
