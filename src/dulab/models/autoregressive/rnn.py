"""RNN: an LSTM or GRU reading the event one dimension at a time in generation order.

The input at step t is the embedding of the value generated at step t - 1 (a learned start vector at t = 0) and,
with ``use_position``, the normalised (row, col, channel) coordinates of the dimension about to be predicted, which
tells the recurrent state where in the image it is; the output is a softmax over the K levels. Sampling carries
the hidden state, one cell step per dimension. On the ``text`` dataset it is a character-level language model.

References:
    Hochreiter, Schmidhuber. "Long Short-Term Memory", Neural Computation, 1997.
    Cho, van Merrienboer, Gulcehre et al. "Learning Phrase Representations using RNN Encoder-Decoder for
    Statistical Machine Translation" (GRU), 2014, arXiv:1406.1078.
    Graves. "Generating Sequences With Recurrent Neural Networks", 2013, arXiv:1308.0850.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dulab.config import check_choices, require_at_least, require_fraction
from dulab.models.autoregressive.base import SequenceModel

__all__ = ["RNN", "RNNConfig"]


@dataclass
class RNNConfig:
    """Hyperparameters of ``RNN``.

    Attributes:
        cell: ``"lstm"`` or ``"gru"``.
        hidden_size: width of the recurrent state.
        num_layers: stacked recurrent layers.
        embed_dim: size of the embedding of each level.
        use_position: append the (row, col, channel) of the next dimension to every input.
        dropout: dropout between recurrent layers (training only; needs num_layers > 1).
    """

    cell: Literal["lstm", "gru"] = "lstm"
    hidden_size: int = 256
    num_layers: int = 1
    embed_dim: int = 32
    use_position: bool = True
    dropout: float = 0.0

    def __post_init__(self):
        check_choices(self)
        require_at_least(self, 1, "hidden_size", "num_layers", "embed_dim")
        require_fraction(self, "dropout")


class RNN(SequenceModel):
    """LSTM/GRU over the flattened event with a start token; ``sample`` carries the hidden state."""

    Config = RNNConfig
    train_defaults = {"epochs": 15, "lr": 3e-3, "batch_size": 64, "grad_clip": 1.0}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c, K = self.config, spec.num_levels
        self.init_sequence_inputs(c.embed_dim)
        in_size = c.embed_dim + (3 if c.use_position else 0)
        rnn_cls = nn.LSTM if c.cell == "lstm" else nn.GRU
        self.rnn = rnn_cls(in_size, c.hidden_size, num_layers=c.num_layers, batch_first=True,
                           dropout=c.dropout if c.num_layers > 1 else 0.0)
        self.head = nn.Linear(c.hidden_size, K)

    def _with_position(self, h: torch.Tensor, t: slice | int) -> torch.Tensor:
        return self.append_position(h, t) if self.config.use_position else h

    def logits_from_embedded(self, e, context=None):
        # shift right by one step: (B, D, E) values -> (B, D, E) inputs [start, e_0, ..., e_{D-2}]
        h = torch.cat([self.start.expand(e.shape[0], 1, -1), e[:, :-1]], 1)
        out, _ = self.rnn(self._with_position(h, slice(None)))
        return self.head(out)  # (B, D, K)

    # ------------------------------------------------------------------ cached sampling: carry the hidden state
    def init_state(self, num_samples, context):
        return num_samples, None  # (batch, recurrent state); nn.LSTM/nn.GRU start from zeros as in the full pass

    def step(self, state, t, prev, context):
        batch, hidden = state
        h = self.start.expand(batch, -1) if prev is None else self.value_embedding(prev)  # (B, E)
        out, hidden = self.rnn(self._with_position(h, t)[:, None, :], hidden)  # (B, 1, in) -> (B, 1, hidden)
        return self.head(out[:, 0]), (batch, hidden)
