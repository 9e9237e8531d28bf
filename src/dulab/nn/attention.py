"""Causal multi-head self-attention and the pre-LayerNorm transformer block, with a key/value cache.

``CausalSelfAttention`` lets position ``t`` attend to positions ``<= t``. For generation one token at a time a
``KVCache`` keeps the keys and values of every earlier position, so each step costs one query against the cache
instead of a pass over the whole prefix; both paths run the same projections, so they agree to rounding.

References:
    Vaswani, Shazeer, Parmar et al. "Attention Is All You Need", 2017, arXiv:1706.03762.
    Radford, Wu, Child et al. "Language Models are Unsupervised Multitask Learners" (GPT-2, pre-LN blocks), 2019.
    Zhang, Goodfellow, Metaxas, Odena. "Self-Attention Generative Adversarial Networks", 2019, arXiv:1805.08318
    (``SelfAttention2d``: every position of a feature map attends to every other one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["KVCache", "CausalSelfAttention", "TransformerBlock", "SelfAttention2d"]


class KVCache:
    """Keys and values of the positions seen so far, for one attention layer.

    Args:
        batch: B.
        num_heads: H.
        max_len: T, the longest sequence the cache will hold.
        head_dim: features per head.
        device, dtype: of the stored tensors.
    """

    def __init__(self, batch: int, num_heads: int, max_len: int, head_dim: int, *, device=None, dtype=None):
        self.k = torch.zeros(batch, num_heads, max_len, head_dim, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.k)
        self.length = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``(B, H, t, hd)`` new keys/values; return all keys/values so far ``(B, H, length, hd)``."""
        t = k.shape[2]
        if self.length + t > self.k.shape[2]:
            raise RuntimeError(f"KVCache holds {self.k.shape[2]} positions; cannot append {t} more")
        self.k[:, :, self.length:self.length + t] = k
        self.v[:, :, self.length:self.length + t] = v
        self.length += t
        return self.k[:, :, :self.length], self.v[:, :, :self.length]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position ``t`` sees positions ``0..t``.

    Args:
        embed_dim: E, model width (divisible by ``num_heads``).
        num_heads: H.
        dropout: dropout on the attention weights and the output (training only).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.num_heads, self.head_dim, self.dropout = num_heads, embed_dim // num_heads, dropout
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.out_dropout = nn.Dropout(dropout)

    def new_cache(self, batch: int, max_len: int, *, device=None, dtype=None) -> KVCache:
        return KVCache(batch, self.num_heads, max_len, self.head_dim, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """``(B, T, E) -> (B, T, E)``.

        Without a cache the T positions are attended causally. With a cache, ``x`` holds the next T positions
        (usually T = 1) after the ``cache.length`` already stored; they attend to the cache and causally to each
        other.
        """
        B, T, E = x.shape
        q, k, v = self.qkv(x).split(E, dim=2)
        # (B, T, E) -> (B, H, T, hd)
        q, k, v = (t.view(B, T, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        p = self.dropout if self.training else 0.0
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            past = cache.length
            k, v = cache.append(k, v)
            if T == 1:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)
            else:  # query i (absolute position past + i) sees keys 0..past + i
                allowed = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(past)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)
        y = y.transpose(1, 2).reshape(B, T, E)  # (B, H, T, hd) -> (B, T, E)
        return self.out_dropout(self.proj(y))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: ``x + attn(LN(x))``, then ``x + MLP(LN(x))`` with a GELU MLP.

    Args:
        embed_dim: E.
        num_heads: H.
        mlp_ratio: hidden width of the MLP as a multiple of E.
        dropout: dropout in attention and MLP.
    """

    def __init__(self, embed_dim: int, num_heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(embed_dim)
        self.attn = CausalSelfAttention(embed_dim, num_heads, dropout)
        self.ln2 = nn.LayerNorm(embed_dim)
        self.mlp = nn.Sequential(nn.Linear(embed_dim, mlp_ratio * embed_dim), nn.GELU(),
                                 nn.Linear(mlp_ratio * embed_dim, embed_dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """``(B, T, E) -> (B, T, E)``; see ``CausalSelfAttention`` for ``cache``."""
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class SelfAttention2d(nn.Module):
    """SAGAN's self-attention over the positions of a feature map (Zhang et al. 2019, Sec. 3, Eqs. 1-3).

    With ``N = H W`` positions, ``f = W_f x`` (keys), ``g = W_g x`` (queries), ``h = W_h x`` (values) are 1x1
    convolutions to ``C / reduction`` channels; ``beta[i, j] = softmax_j(g_i . f_j)`` (position ``i`` attends to
    ``j``), ``o_i = W_v sum_j beta[i, j] h_j`` and the output is ``gamma o + x`` with a learned scalar ``gamma``
    initialised to 0, so the block starts as the identity and the network learns to lean on it.

    Args:
        channels: C.
        reduction: channel reduction of keys, queries and values (8 in the paper; at least one channel is kept).
    """

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        inner = max(1, channels // reduction)
        self.f = nn.Conv2d(channels, inner, 1, bias=False)
        self.g = nn.Conv2d(channels, inner, 1, bias=False)
        self.h = nn.Conv2d(channels, inner, 1, bias=False)
        self.v = nn.Conv2d(inner, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """``beta``: ``(B, C, H, W) -> (B, N, N)``, rows (queries) summing to 1."""
        keys, queries = self.f(x).flatten(2), self.g(x).flatten(2)  # (B, C', H, W) -> (B, C', N)
        return torch.softmax(queries.transpose(1, 2) @ keys, dim=-1)  # (B, N, C') @ (B, C', N) -> (B, N, N)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        B, C, H, W = x.shape
        values = self.h(x).flatten(2)  # (B, C', N)
        o = values @ self.attention(x).transpose(1, 2)  # o[:, :, i] = sum_j beta[i, j] h_j: (B, C', N)
        return x + self.gamma * self.v(o.reshape(B, -1, H, W))
