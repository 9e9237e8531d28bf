"""The bijector contract: an invertible map that also returns the log-determinant of its Jacobian.

A bijector is an ``nn.Module`` whose ``forward(x, context=None)`` returns ``(y, log_det)`` with
``log_det = log|det dy/dx|`` per example, shape ``(B,)``, and whose ``inverse(y, context=None)`` returns
``(x, log_det)`` with ``log_det = log|det dx/dy|`` (so forward and inverse log-dets cancel). In dulab's flows the
forward direction is the *normalizing* one, data to latent, so ``log_prob`` needs forward passes only.

``Chain``, ``Inverse`` and ``Identity`` compose bijectors. The design follows distrax and zuko: one method per
direction returning the value and its log-det together, everything else derived.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["Bijector", "Chain", "Inverse", "Identity"]


class Bijector(nn.Module):
    """Base class of invertible maps with log-determinants.

    Subclass obligations:

    * ``forward(x, context=None) -> (y, log_det)``: the map and ``log|det dy/dx|`` summed over the event, ``(B,)``.
      Required.
    * ``inverse(y, context=None) -> (x, log_det)``: the inverse map and ``log|det dx/dy|`` (``(B,)``), which must
      equal minus the forward log-det at ``x``. Required for sampling; the default raises ``NotImplementedError``.
    * Shapes: ``x`` is ``(B, *event)``; the event shape of ``y`` may differ (``Squeeze``, ``Reshape``) but the
      number of elements may not.
    * ``context``: an optional ``(B, F)`` float tensor of conditioning features; bijectors without a conditioner
      ignore it.
    * Learnable bijectors should be the identity (log-det 0) when their last conditioner layer is zero, and
      initialise that way by default (the ``zero_init`` argument of conditioners).

    Derived: ``forward_log_det``, ``inverse_log_det``, ``inv`` (the inverse as a bijector).
    """

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def inverse(self, y: torch.Tensor, context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no inverse")

    def forward_log_det(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``log|det dy/dx|`` only, ``(B,)``."""
        return self(x, context)[1]

    def inverse_log_det(self, y: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``log|det dx/dy|`` only, ``(B,)``."""
        return self.inverse(y, context)[1]

    @property
    def inv(self) -> Inverse:
        """This bijector with its directions swapped (shares parameters)."""
        return Inverse(self)


def zeros_log_det(x: torch.Tensor) -> torch.Tensor:
    """A ``(B,)`` zero log-det matching ``x``'s batch, dtype and device."""
    return x.new_zeros(x.shape[0])


class Identity(Bijector):
    """``y = x`` with log-det 0."""

    def forward(self, x, context=None):
        return x, zeros_log_det(x)

    def inverse(self, y, context=None):
        return y, zeros_log_det(y)


class Inverse(Bijector):
    """The inverse of ``bijector``: its ``forward`` is the wrapped ``inverse`` and vice versa.

    Used for IAF (the inverse of an autoregressive bijector) and to undo ``Squeeze`` at the end of a scale.
    """

    def __init__(self, bijector: Bijector):
        super().__init__()
        self.bijector = bijector

    def forward(self, x, context=None):
        return self.bijector.inverse(x, context)

    def inverse(self, y, context=None):
        return self.bijector(y, context)


class Chain(Bijector):
    """Composition: ``forward`` applies ``bijectors`` in order, ``inverse`` in reverse; log-dets add up."""

    def __init__(self, bijectors: Iterable[Bijector]):
        super().__init__()
        self.bijectors = nn.ModuleList(bijectors)

    def forward(self, x, context=None):
        log_det = zeros_log_det(x)
        for b in self.bijectors:
            x, ld = b(x, context)
            log_det = log_det + ld
        return x, log_det

    def inverse(self, y, context=None):
        log_det = zeros_log_det(y)
        for b in reversed(self.bijectors):
            y, ld = b.inverse(y, context)
            log_det = log_det + ld
        return y, log_det

    def __len__(self) -> int:
        return len(self.bijectors)

    def __getitem__(self, i):
        return self.bijectors[i]
