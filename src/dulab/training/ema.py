"""Exponential moving average of model weights (Polyak averaging), used for evaluation and sampling.

A fixed decay d averages over about 1/(1-d) steps, so after n << 1/(1-d) updates the average still holds mostly
the initial weights (a 0.999 average of a 460-step run is ~63% initialisation). The decay therefore warms up:
after n updates it is ``min(d, (1 + n) / (10 + n))``, the schedule of TensorFlow's ``ExponentialMovingAverage``
with ``num_updates``, so that early on the average follows the weights closely.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """``shadow = decay_n * shadow + (1 - decay_n) * param`` after each optimiser step; buffers are copied.

    Args:
        model: the (unwrapped) module whose floating-point parameters are averaged.
        decay: the averaging decay in [0, 1) reached after the warm-up.
        warmup: use the warm-up decay ``min(decay, (1 + n) / (10 + n))`` (False: the fixed ``decay``).
    """

    def __init__(self, model: nn.Module, decay: float, *, warmup: bool = True):
        self.model, self.decay, self.warmup = model, decay, warmup
        self.num_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def current_decay(self) -> float:
        """The decay the next update uses."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        weight = 1.0 - self.current_decay()
        for k, v in self.model.state_dict().items():
            if v.is_floating_point():
                self.shadow[k].lerp_(v.detach(), weight)
            else:
                self.shadow[k].copy_(v)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return dict(self.shadow)

    def load_state_dict(self, state: dict, num_updates: int | None = None) -> None:
        for k, v in state.items():
            self.shadow[k].copy_(v)
        if num_updates is not None:
            self.num_updates = int(num_updates)

    @contextlib.contextmanager
    def swapped_in(self):
        """Temporarily load the averaged weights into the model."""
        backup = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(self.shadow)
        try:
            yield self.model
        finally:
            self.model.load_state_dict(backup)
