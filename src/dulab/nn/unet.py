"""Denoising networks of diffusion models: a U-Net for images and a residual MLP for vectors, both taking (x, t).

* ``timestep_embedding``: the sinusoidal embedding of the Transformer applied to the (float) timestep
  (Vaswani et al. 2017, section 3.5; used this way by Ho et al. 2020, appendix B).
* ``UNet``: the PixelCNN++-style U-Net of Ho et al. 2020: residual blocks (group norm, SiLU, 3x3 conv, the time
  embedding as a scale and shift of the second group norm, dropout before the second conv),
  self-attention at low resolutions and in the middle, skip connections from every down block to the matching
  up block. The number of resolutions is chosen from the image size: halve while both sides are even and the
  halves stay >= 4 (8x8 -> 8, 4; 20x20 -> 20, 10, 5; 32x32 -> 32, 16, 8, 4),
  so the same class serves 8x8 digits, 20x20 shapes and 32/64 sprites.
* ``MLPDenoiser``: ``(x (B, D), t) -> (B, D)``, residual SiLU blocks, each adding a projection of the time
  embedding.

Both take optional class labels (``num_classes``; index ``num_classes`` is the "no label" token used for
classifier-free guidance, Ho & Salimans 2022); the label embedding is added to the time embedding.

References:
    Ho, Jain, Abbeel. "Denoising Diffusion Probabilistic Models", NeurIPS 2020, arXiv:2006.11239.
    Ronneberger, Fischer, Brox. "U-Net: Convolutional Networks for Biomedical Image Segmentation", MICCAI 2015,
    arXiv:1505.04597.
    Nichol, Dhariwal. "Improved Denoising Diffusion Probabilistic Models", ICML 2021, arXiv:2102.09672.
    Wu, He. "Group Normalization", ECCV 2018, arXiv:1803.08494.
    Ho, Salimans. "Classifier-Free Diffusion Guidance", 2022, arXiv:2207.12598.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["timestep_embedding", "resolutions_for", "ResBlock", "AttentionBlock", "UNet", "MLPDenoiser"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps: ``(B,) -> (B, dim)``, ``[cos(t w_k), sin(t w_k)]``,
    ``w_k = max_period^(-k / (dim/2))`` (Vaswani et al. 2017, section 3.5)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def resolutions_for(height: int, width: int) -> list[tuple[int, int]]:
    """The U-Net's resolutions: halve while both sides are even and the halves are >= 4."""
    out = [(height, width)]
    while height % 2 == 0 and width % 2 == 0 and height // 2 >= 4 and width // 2 >= 4:
        height, width = height // 2, width // 2
        out.append((height, width))
    return out


def _groups(channels: int, max_groups: int = 32) -> int:
    """The largest group count <= ``max_groups`` dividing ``channels`` (group norm)."""
    return max(g for g in range(1, min(max_groups, channels) + 1) if channels % g == 0)


def _zero(module: nn.Module) -> nn.Module:
    """Zero-initialise a layer's parameters, so a residual branch starts as 0 (Ho et al.'s code does this)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """``GN-SiLU-conv, GN with the embedding's scale and shift, SiLU-dropout-conv``, (1x1 when widths differ) skip."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_channels), in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(_groups(out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, H, W), (B, E) -> (B, C_out, H, W)``."""
        h = self.conv1(F.silu(self.norm1(x)))
        # scale-shift after the norm (Nichol & Dhariwal 2021): an added bias before a group norm with one channel
        # per group would be normalised away
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over the ``H W`` positions, pre-norm, residual (output projection zeroed)."""

    def __init__(self, channels: int, num_heads: int = 1):
        super().__init__()
        self.num_heads = max(1, min(num_heads, channels))
        while channels % self.num_heads:
            self.num_heads -= 1
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.num_heads, C // self.num_heads, H * W).unbind(1)
        # (B, heads, C/heads, N) -> (B, heads, N, C/heads) for attention over positions
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        out = out.transpose(-1, -2).reshape(B, C, H, W)
        return x + self.proj(out)


class _Embedding(nn.Module):
    """Time (sinusoidal + MLP) plus optional class-label embedding: ``(t (B,), y (B,) | None) -> (B, E)``."""

    def __init__(self, base_dim: int, emb_dim: int, num_classes: int | None, time_scale: float):
        super().__init__()
        self.base_dim, self.time_scale = base_dim, time_scale
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

    def forward(self, t: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        emb = self.mlp(timestep_embedding(t * self.time_scale, self.base_dim).to(self.mlp[0].weight.dtype))
        if self.label is not None:
            if y is None:  # no label: the null token
                y = torch.full((t.shape[0],), self.label.num_embeddings - 1, dtype=torch.long, device=t.device)
            emb = emb + self.label(y)
        return emb


class UNet(nn.Module):
    """U-Net ``(x (B, C, H, W), t (B,), y (B,) | None) -> (B, C_out, H, W)``.

    Args:
        in_channels, out_channels: C and C_out.
        image_size: ``(H, W)``; sets the resolutions (``resolutions_for``).
        hidden_channels: width at full resolution.
        channel_mult: width multiplier per resolution (default ``(1, 2, 2, 2, ...)``; shorter tuples repeat
            their last entry).
        num_res_blocks: residual blocks per resolution on the way down (one more on the way up).
        attention_max_size: self-attention in the blocks of resolutions whose larger side is <= this (and
            always in the middle).
        num_heads: attention heads.
        dropout: dropout in every residual block.
        num_classes: class labels (None: unconditional).
        time_scale: timesteps are multiplied by this before the sinusoidal embedding.
    """

    def __init__(self, in_channels: int, out_channels: int, image_size: tuple[int, int], *,
                 hidden_channels: int = 32, channel_mult: tuple[int, ...] = (), num_res_blocks: int = 1,
                 attention_max_size: int = 8, num_heads: int = 1, dropout: float = 0.0,
                 num_classes: int | None = None, time_scale: float = 1.0):
        super().__init__()
        res = resolutions_for(*image_size)
        mult = tuple(channel_mult) or (1,) + (2,) * (len(res) - 1)
        mult = (mult + (mult[-1],) * len(res))[: len(res)]
        widths = [hidden_channels * m for m in mult]
        emb_dim = 4 * hidden_channels
        self.embed = _Embedding(hidden_channels, emb_dim, num_classes, time_scale)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1)
        self.down = nn.ModuleList()
        skips = [widths[0]]
        ch = widths[0]
        for level, (size, width) in enumerate(zip(res, widths)):
            use_attn = max(size) <= attention_max_size
            for _ in range(num_res_blocks):
                self.down.append(nn.ModuleList([ResBlock(ch, width, emb_dim, dropout),
                                                AttentionBlock(width, num_heads) if use_attn else nn.Identity()]))
                ch = width
                skips.append(ch)
            if level + 1 < len(res):
                self.down.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # halve (even sides)
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, dropout), AttentionBlock(ch, num_heads),
                                  ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level in reversed(range(len(res))):
            use_attn = max(res[level]) <= attention_max_size
            for _ in range(num_res_blocks + 1):
                self.up.append(nn.ModuleList([ResBlock(ch + skips.pop(), widths[level], emb_dim, dropout),
                                              AttentionBlock(widths[level], num_heads) if use_attn
                                              else nn.Identity()]))
                ch = widths[level]
            if level > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(ch, ch, 3, padding=1)))
        self.out_norm = nn.GroupNorm(_groups(ch), ch)
        self.out = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))
        self.resolutions = res

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, y)
        h = self.stem(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](h, emb))
            else:
                h = layer(h)
            hs.append(h)
        h = self.mid[2](self.mid[1](self.mid[0](h, emb)), emb)
        for layer in self.up:
            if isinstance(layer, nn.ModuleList):
                h = layer[1](layer[0](torch.cat([h, hs.pop()], dim=1), emb))
            else:
                h = layer(h)
        return self.out(F.silu(self.out_norm(h)))


class MLPDenoiser(nn.Module):
    """``(x (B, D), t (B,), y (B,) | None) -> (B, D_out)``: residual SiLU blocks with the time embedding added.

    Args:
        dim, out_dim: D and D_out.
        hidden_sizes: widths of the blocks (a projection joins blocks of different widths).
        dropout: dropout in each block.
        num_classes: class labels (None: unconditional).
        time_scale: timesteps are multiplied by this before the sinusoidal embedding.
        emb_dim: width of the embedding.
    """

    def __init__(self, dim: int, out_dim: int, hidden_sizes: tuple[int, ...] = (256, 256, 256), *,
                 dropout: float = 0.0, num_classes: int | None = None, time_scale: float = 1.0, emb_dim: int = 64):
        super().__init__()
        self.embed = _Embedding(emb_dim, emb_dim, num_classes, time_scale)
        self.inp = nn.Linear(dim, hidden_sizes[0])
        self.blocks = nn.ModuleList()
        self.emb_proj = nn.ModuleList()
        self.joins = nn.ModuleList()
        prev = hidden_sizes[0]
        for width in hidden_sizes:
            self.joins.append(nn.Linear(prev, width) if width != prev else nn.Identity())
            self.emb_proj.append(nn.Linear(emb_dim, width))
            self.blocks.append(nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Dropout(dropout),
                                             nn.Linear(width, width)))
            prev = width
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(prev, out_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.embed(t, y)
        h = self.inp(x)
        for join, proj, block in zip(self.joins, self.emb_proj, self.blocks):
            h = join(h)
            h = h + block(h + proj(emb))
        return self.out(h)
