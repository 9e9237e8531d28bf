"""WaveNet: a stack of dilated causal 1-D convolutions over the event flattened in generation order.

Each layer applies a kernel-2 causal convolution with dilation 1, 2, 4, ... (the cycle repeats), a gated unit
``tanh(W_f * h) * sigmoid(W_g * h)``, a residual connection and a skip connection; the summed skips go through
two ReLU + 1x1 layers to a softmax over the K levels. The input at step t is the embedding of the value at step
t - 1 (a learned start vector at t = 0), optionally with the (row, col, channel) of the dimension being
predicted, so the convolution may include the current step and stays strictly autoregressive. Sampling keeps
every layer's past inputs (fast-WaveNet style), so a step costs one kernel application per layer.

References:
    van den Oord, Dieleman, Zen et al. "WaveNet: A Generative Model for Raw Audio", 2016, arXiv:1609.03499.
    Paine, Khorrami, Chang et al. "Fast Wavenet Generation Algorithm", 2016, arXiv:1611.09482.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dulab.config import require_at_least
from dulab.models.autoregressive.base import SequenceModel

__all__ = ["WaveNet", "WaveNetConfig"]


@dataclass
class WaveNetConfig:
    """Hyperparameters of ``WaveNet``.

    Attributes:
        residual_channels: width of the residual stream.
        skip_channels: width of the skip connections and output layers.
        num_layers: gated dilated layers.
        dilation_cycle: dilations are ``2 ** (l % dilation_cycle)`` for layer ``l`` (1, 2, ..., then again).
        embed_dim: size of the embedding of each level.
        use_position: append the (row, col, channel) of the dimension being predicted to every input.
    """

    residual_channels: int = 64
    skip_channels: int = 128
    num_layers: int = 12
    dilation_cycle: int = 6
    embed_dim: int = 32
    use_position: bool = True

    def __post_init__(self):
        require_at_least(self, 1, "residual_channels", "skip_channels", "num_layers", "dilation_cycle", "embed_dim")

    @property
    def dilations(self) -> list[int]:
        return [2 ** (layer % self.dilation_cycle) for layer in range(self.num_layers)]

    @property
    def receptive_field(self) -> int:
        """Steps (including the current input) that one output sees."""
        return 1 + sum(self.dilations)


class GatedResidualLayer(nn.Module):
    """``z = causal_conv_d(h)``; ``g = tanh(z_f) * sigmoid(z_g)``; returns ``(h + W_r g, W_s g)``.

    The last layer feeds only the skip sum, so it has no residual projection (``residual=False``).
    """

    def __init__(self, channels: int, skip_channels: int, dilation: int, residual: bool = True):
        super().__init__()
        self.dilation = dilation
        self.conv = nn.Conv1d(channels, 2 * channels, kernel_size=2, dilation=dilation)
        self.residual = nn.Conv1d(channels, channels, 1) if residual else None
        self.skip = nn.Conv1d(channels, skip_channels, 1)

    def _gate(self, z: torch.Tensor) -> torch.Tensor:
        f, g = z.chunk(2, dim=1)
        return torch.tanh(f) * torch.sigmoid(g)  # eq. (2) of the WaveNet paper

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, C, T) -> (B, C, T), (B, S, T)``; output t sees inputs t - d and t (zero left padding)."""
        g = self._gate(self.conv(F.pad(h, (self.dilation, 0))))
        return (h if self.residual is None else h + self.residual(g)), self.skip(g)

    def step(self, h_t: torch.Tensor, h_past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One time step: ``h_t`` and ``h_{t-d}`` ``(B, C)`` (zeros before the start) -> ``(B, C), (B, S)``."""
        w = self.conv.weight  # (2C, C, 2): tap 0 multiplies h_{t-d}, tap 1 multiplies h_t
        z = F.linear(h_past, w[:, :, 0]) + F.linear(h_t, w[:, :, 1], self.conv.bias)
        g = self._gate(z[:, :, None])[:, :, 0]
        skip = F.linear(g, self.skip.weight[:, :, 0], self.skip.bias)
        if self.residual is None:
            return h_t, skip
        return h_t + F.linear(g, self.residual.weight[:, :, 0], self.residual.bias), skip


class WaveNet(SequenceModel):
    """Gated dilated causal convolutions over the flattened event; ``sample`` keeps per-layer input queues."""

    Config = WaveNetConfig
    train_defaults = {"epochs": 15, "lr": 3e-3, "batch_size": 64, "grad_clip": 1.0}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c, K = self.config, spec.num_levels
        self.init_sequence_inputs(c.embed_dim)
        self.input = nn.Conv1d(c.embed_dim + (3 if c.use_position else 0), c.residual_channels, 1)
        last = c.num_layers - 1
        self.layers = nn.ModuleList(GatedResidualLayer(c.residual_channels, c.skip_channels, d, residual=i < last)
                                    for i, d in enumerate(c.dilations))
        self.out1 = nn.Conv1d(c.skip_channels, c.skip_channels, 1)
        self.out2 = nn.Conv1d(c.skip_channels, K, 1)

    def _with_position(self, h: torch.Tensor, t: slice | int) -> torch.Tensor:
        return self.append_position(h, t) if self.config.use_position else h

    def _head(self, skip: torch.Tensor) -> torch.Tensor:
        return self.out2(F.relu(self.out1(F.relu(skip))))

    def logits_from_embedded(self, e, context=None):
        # shift right by one step: (B, D, E) values -> (B, D, E) inputs [start, e_0, ..., e_{D-2}]
        h = torch.cat([self.start.expand(e.shape[0], 1, -1), e[:, :-1]], 1)
        h = self.input(self._with_position(h, slice(None)).transpose(1, 2))  # (B, D, E') -> (B, C, D)
        skip = 0
        for layer in self.layers:
            h, s = layer(h)
            skip = skip + s
        return self._head(skip).transpose(1, 2)  # (B, K, D) -> (B, D, K)

    # ------------------------------------------------------------------ cached sampling: per-layer input history
    def init_state(self, num_samples, context):
        C, D = self.config.residual_channels, self.spec.num_dims
        device, dtype = self._param_device(), self._param_dtype()
        # history[l][:, :, t] is the input of layer l at step t (a queue of depth d would do; D steps are cheap)
        return num_samples, [torch.zeros(num_samples, C, D, device=device, dtype=dtype) for _ in self.layers]

    def step(self, state, t, prev, context):
        batch, history = state
        e = self.start.expand(batch, -1) if prev is None else self.value_embedding(prev)  # (B, E)
        w = self.input.weight[:, :, 0]
        h = F.linear(self._with_position(e, t), w, self.input.bias)  # (B, C)
        skip = 0
        for layer, hist in zip(self.layers, history):
            hist[:, :, t] = h
            past = hist[:, :, t - layer.dilation] if t >= layer.dilation else torch.zeros_like(h)
            h, s = layer.step(h, past)
            skip = skip + s
        return self._head(skip[:, :, None])[:, :, 0], state  # (B, K)
