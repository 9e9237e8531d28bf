"""Normalization layers as bijectors: Glow's activation normalization and Real NVP's batch normalization.

Both act per feature (vectors ``(B, D)``) or per channel (images ``(B, C, H, W)``, the log-det then counting
every spatial position).

References:
    Kingma, Dhariwal. "Glow: Generative Flow with Invertible 1x1 Convolutions", 2018, arXiv:1807.03039
    (actnorm, section 3.1).
    Dinh, Sohl-Dickstein, Bengio. "Density estimation using Real NVP", 2016, arXiv:1605.08803 (batch
    normalization as a bijector, section 3.7, eq. 12).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dulab.bijectors.base import Bijector

__all__ = ["ActNorm", "BatchNorm"]


def _view_shape(x: torch.Tensor) -> tuple:
    """Broadcast shape of a per-feature parameter: ``(1, C)`` or ``(1, C, 1, 1)``."""
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def _spatial(x: torch.Tensor) -> int:
    return math.prod(x.shape[2:])


def _reduce_dims(x: torch.Tensor) -> list[int]:
    return [0] + list(range(2, x.dim()))


class ActNorm(Bijector):
    """``y = (x + bias) * exp(log_scale)`` per feature/channel, with data-dependent initialisation.

    On the first ``forward`` in training mode (outside inference mode) the bias and log-scale are set so that
    the batch has zero mean and unit variance per channel, then the ``initialized`` buffer is set to 1 — so the
    initialisation happens without any hook in the training engine, and a checkpoint (which holds the buffer)
    does not re-initialise. Under ``torch.distributed`` the batch statistics are averaged over processes so
    every replica starts from the same parameters. Zero parameters give the identity.

    Args:
        num_features: C.
        eps: added to the standard deviation.
    """

    def __init__(self, num_features: int, eps: float = 1e-6):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.log_scale = nn.Parameter(torch.zeros(num_features))
        self.eps = eps
        self.register_buffer("initialized", torch.zeros((), dtype=torch.uint8))

    @torch.no_grad()
    def _initialise(self, x: torch.Tensor) -> None:
        dims = _reduce_dims(x)
        mean = x.mean(dims)
        sq = (x * x).mean(dims)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            stats = torch.stack([mean, sq])
            torch.distributed.all_reduce(stats)
            mean, sq = stats / torch.distributed.get_world_size()
        std = (sq - mean * mean).clamp_min(0).sqrt()
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(1)

    def forward(self, x, context=None):
        if self.training and not self.initialized and not torch.is_inference_mode_enabled() and x.shape[0] > 1:
            self._initialise(x.detach())
        shape = _view_shape(x)
        y = (x + self.bias.view(shape)) * self.log_scale.exp().view(shape)
        return y, (self.log_scale.sum() * _spatial(x)).expand(x.shape[0])

    def inverse(self, y, context=None):
        shape = _view_shape(y)
        x = y * (-self.log_scale).exp().view(shape) - self.bias.view(shape)
        return x, (-self.log_scale.sum() * _spatial(y)).expand(y.shape[0])


class BatchNorm(Bijector):
    """Batch normalization as a bijector (Real NVP, eq. 12): ``y = (x - mu) / sqrt(var + eps) * exp(log_gamma) + beta``.

    In training mode ``mu``/``var`` are the batch statistics (so an example's log-density depends on its batch)
    and running averages are updated; in eval mode, and always for ``inverse``, the running averages are used.
    Evaluate and sample in eval mode. Zero parameters with the initial running statistics (mean 0, variance 1)
    give the identity up to ``eps``.

    Args:
        num_features: C.
        momentum: weight of the newest batch in the running averages.
        eps: added to the variance.
    """

    def __init__(self, num_features: int, momentum: float = 0.05, eps: float = 1e-5):
        super().__init__()
        self.log_gamma = nn.Parameter(torch.zeros(num_features))
        self.beta = nn.Parameter(torch.zeros(num_features))
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x, context=None):
        if self.training and not torch.is_inference_mode_enabled() and x.shape[0] > 1:
            dims = _reduce_dims(x)
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        shape = _view_shape(x)
        log_scale = self.log_gamma - 0.5 * torch.log(var + self.eps)
        y = (x - mean.view(shape)) * log_scale.exp().view(shape) + self.beta.view(shape)
        return y, (log_scale.sum() * _spatial(x)).expand(x.shape[0])

    def inverse(self, y, context=None):
        shape = _view_shape(y)
        log_scale = self.log_gamma - 0.5 * torch.log(self.running_var + self.eps)
        x = (y - self.beta.view(shape)) * (-log_scale).exp().view(shape) + self.running_mean.view(shape)
        return x, (-log_scale.sum() * _spatial(y)).expand(y.shape[0])
