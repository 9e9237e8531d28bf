"""Transformer: a decoder-only causal self-attention model over pixels or tokens (iGPT-style).

The event is flattened in generation order (raster over pixels, R -> G -> B within a pixel) into a sequence of D
tokens; the input at step t is the embedding of the value at step t - 1 (a learned start token at t = 0) plus a
learned position embedding, and a stack of pre-LayerNorm causal attention blocks predicts a softmax over the K
levels. Sampling keeps a key/value cache per layer, so each step is one query instead of a pass over the prefix.
With ``use_context`` a learned class embedding is added at every position (class-conditional generation). Any
discrete ``DataSpec`` works, including ``(H, W)`` grids of VQ-VAE codes, so it doubles as a learned prior.

Orderings (``ordering``): ``raster`` (the default above); ``zigzag``, the JPEG scan of pixels along the
anti-diagonals ``i + j = d`` with alternating direction (channels R -> G -> B within a pixel; images and grids
only); ``random``, a seeded uniform permutation of all D dimensions (``ordering_seed``). The position embedding
is indexed by generation step, so any ordering is the same network on a permuted sequence, still exactly
normalised and KV-cached.

References:
    Chen, Radford, Child, Wu, Jun, Luan, Sutskever. "Generative Pretraining from Pixels" (iGPT), ICML 2020.
    Vaswani, Shazeer, Parmar et al. "Attention Is All You Need", 2017, arXiv:1706.03762.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dulab.config import check_choices, require_at_least, require_fraction
from dulab.errors import UserError
from dulab.models.autoregressive.base import SequenceModel
from dulab.nn.attention import TransformerBlock

__all__ = ["Transformer", "TransformerConfig"]


@dataclass
class TransformerConfig:
    """Hyperparameters of ``Transformer``.

    Attributes:
        embed_dim: model width E (divisible by ``num_heads``).
        num_layers: transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of E.
        dropout: dropout in attention and MLP (training only).
        use_context: condition on class labels (``context=``); needs labelled data (``spec.num_classes``).
        ordering: generation order: ``raster``, ``zigzag`` (anti-diagonals, images/grids) or ``random``.
        ordering_seed: seed of the ``random`` permutation.
    """

    embed_dim: int = 64
    num_layers: int = 4
    num_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    use_context: bool = False
    ordering: Literal["raster", "zigzag", "random"] = "raster"
    ordering_seed: int = 0

    def __post_init__(self):
        check_choices(self)
        require_at_least(self, 1, "embed_dim", "num_layers", "num_heads", "mlp_ratio")
        if self.embed_dim % self.num_heads:
            raise UserError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        require_fraction(self, "dropout")


class Transformer(SequenceModel):
    """Causal self-attention over the flattened event; ``sample`` uses a KV cache (``naive_sample`` does not)."""

    Config = TransformerConfig
    train_defaults = {"epochs": 15, "lr": 3e-3, "batch_size": 64, "warmup_steps": 100, "grad_clip": 1.0}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c, K, D = self.config, spec.num_levels, spec.num_dims
        self.is_conditional = c.use_context
        self.init_sequence_inputs(c.embed_dim)
        self.position_embedding = nn.Parameter(torch.randn(D, c.embed_dim) * 0.02)
        self.class_embedding = nn.Embedding(spec.num_classes, c.embed_dim) if c.use_context else None
        self.blocks = nn.ModuleList(TransformerBlock(c.embed_dim, c.num_heads, c.mlp_ratio, c.dropout)
                                    for _ in range(c.num_layers))
        self.ln_f = nn.LayerNorm(c.embed_dim)
        self.head = nn.Linear(c.embed_dim, K)
        nn.init.normal_(self.value_embedding.weight, std=0.02)

    @classmethod
    def check_spec(cls, spec, config):
        super().check_spec(spec, config)
        if config.use_context and not spec.num_classes:
            raise UserError("use_context=true needs labelled data (spec.num_classes); this dataset has no labels")
        if config.ordering == "zigzag" and len(spec.shape) not in (2, 3):
            raise UserError(f"ordering=zigzag scans pixels of images (C, H, W) or grids (H, W); got data of shape "
                            f"{spec.shape}: use raster or random")

    def generation_order(self) -> torch.Tensor:
        """Flat event indices in generation order for the configured ``ordering`` (see the module docstring)."""
        raster = super().generation_order()
        c = self.config
        if c.ordering == "random":
            return torch.randperm(self.spec.num_dims, generator=torch.Generator().manual_seed(c.ordering_seed))
        if c.ordering == "zigzag":
            shape = self.spec.shape
            C, H, W = shape if len(shape) == 3 else (1, *shape)
            pixels = sorted(((i, j) for i in range(H) for j in range(W)),
                            key=lambda p: (p[0] + p[1], p[0] if (p[0] + p[1]) % 2 else -p[0]))
            return torch.tensor([ch * H * W + i * W + j for i, j in pixels for ch in range(C)])
        return raster

    def _inputs(self, e: torch.Tensor, context) -> torch.Tensor:
        # shift right by one step: (B, D, E) values -> (B, D, E) inputs [start, e_0, ..., e_{D-2}]
        start = self.start.expand(e.shape[0], 1, -1)
        h = torch.cat([start, e[:, :-1]], 1) + self.position_embedding
        if self.class_embedding is not None:
            h = h + self.class_embedding(context)[:, None, :]
        return h

    def logits_from_embedded(self, e, context=None):
        h = self._inputs(e, context)
        for block in self.blocks:
            h = block(h)
        return self.head(self.ln_f(h))  # (B, D, K)

    # ------------------------------------------------------------------ KV-cached sampling
    def init_state(self, num_samples, context):
        device, dtype = self._param_device(), self._param_dtype()
        return [b.attn.new_cache(num_samples, self.spec.num_dims, device=device, dtype=dtype) for b in self.blocks]

    def step(self, state, t, prev, context):
        if prev is None:
            h = self.start.expand(len(state[0].k), -1)
        else:
            h = self.value_embedding(prev)
        h = (h + self.position_embedding[t])[:, None, :]  # (B, 1, E)
        if self.class_embedding is not None:
            h = h + self.class_embedding(context)[:, None, :]
        for block, cache in zip(self.blocks, state):
            h = block(h, cache)
        return self.head(self.ln_f(h[:, 0])), state  # (B, K)
