"""Models used only by the engine tests: they exercise RNG use, dropout and non-finite losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dulab.models.autoregressive.histogram import Histogram, HistogramConfig
from dulab.models.base import DensityModel


@dataclass
class NoisyConfig:
    hidden: int = 8
    nan_after: int = 0  # > 0: the loss becomes NaN after this many training calls


class NoisyIndependent(DensityModel):
    """Per-dimension categorical whose logits come from a tiny MLP with dropout on a random input.

    Training draws random numbers every step (dropout and input noise), so bitwise resume tests check that the
    RNG state is saved and restored.
    """

    Config = NoisyConfig
    family = "test"

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        D, K = spec.num_dims, spec.num_levels
        self.net = nn.Sequential(nn.Linear(4, self.config.hidden), nn.Dropout(0.3), nn.Tanh(),
                                 nn.Linear(self.config.hidden, D * K))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def log_prob(self, x, context=None):
        z = torch.randn(1, 4, dtype=self.net[0].weight.dtype) if self.training else torch.zeros(1, 4)
        logits = self.net(z.to(self.net[0].weight)).view(1, self.spec.num_dims, self.spec.num_levels)
        logp = torch.log_softmax(logits, -1).expand(x.shape[0], -1, -1)
        out = logp.gather(2, x.reshape(x.shape[0], -1, 1)).squeeze(2).sum(1)
        if self.training:
            self.calls += 1
            if self.config.nan_after and int(self.calls) > self.config.nan_after:
                out = out * float("nan")
        return out

    @torch.no_grad()
    def sample(self, num_samples, *, generator=None, context=None):
        logits = self.net(torch.zeros(1, 4).to(self.net[0].weight)).view(self.spec.num_dims, self.spec.num_levels)
        probs = torch.softmax(logits, -1).expand(num_samples, -1, -1).reshape(-1, self.spec.num_levels)
        return torch.multinomial(probs, 1, generator=generator).view(num_samples, *self.spec.shape)


class ConditionalHistogram(Histogram):
    """A histogram that demands class labels (checks that the engine passes context to conditional models)."""

    Config = HistogramConfig
    is_conditional = True

    def log_prob(self, x, context=None):
        context = self._check_context(context, x.shape[0])
        return super().log_prob(x)
