"""MADE: a masked MLP whose output for dimension d sees only the one-hot inputs of dimensions before d.

Binary masks on the weights (built from integer "degrees" of the units) make one forward pass give every
conditional ``p(x_d | x_<d)`` of a chosen ordering, a softmax over the K levels here. The ordering is natural
(the generation order of the data: raster, R -> G -> B within a pixel) or a seeded random permutation. With
``num_masks > 1`` training draws one of several masks (orderings and/or hidden connectivities) per step
(connectivity-agnostic training), and evaluation averages the probabilities of all masks: a uniform mixture of
normalised autoregressive models, itself normalised; sampling draws a mask per sample, then samples its order.

References:
    Germain, Gregor, Murray, Larochelle. "MADE: Masked Autoencoder for Distribution Estimation", ICML 2015,
    arXiv:1502.03509.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from dulab.config import check_choices
from dulab.errors import UserError
from dulab.models.autoregressive.base import AutoregressiveModel
from dulab.nn.masked import MADENetwork, made_masks

__all__ = ["MADE", "MADEConfig"]


@dataclass
class MADEConfig:
    """Hyperparameters of ``MADE``.

    Attributes:
        hidden_sizes: widths of the masked hidden layers.
        ordering: ``"natural"`` (the data's generation order) or ``"random"`` (seeded permutations).
        num_masks: number of masks; > 1 trains connectivity-agnostically (a random mask per step, random
            hidden degrees, and with ``ordering=random`` a different ordering per mask) and ensembles all masks
            at evaluation (probabilities averaged).
        mask_seed: seed of the random orderings and hidden degrees.
    """

    hidden_sizes: tuple[int, ...] = (512, 512)
    ordering: Literal["natural", "random"] = "natural"
    num_masks: int = 1
    mask_seed: int = 0

    def __post_init__(self):
        check_choices(self)
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            raise UserError(f"hidden_sizes must be one or more positive widths, got {self.hidden_sizes}")
        if self.num_masks < 1:
            raise UserError(f"num_masks must be >= 1, got {self.num_masks}")


class MADE(AutoregressiveModel):
    """Masked MLP over one-hot inputs; ``log_prob`` ensembles the masks when ``num_masks > 1``."""

    Config = MADEConfig
    train_defaults = {"epochs": 15, "lr": 3e-3, "batch_size": 32}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c, K, D = self.config, spec.num_levels, spec.num_dims
        self.net = MADENetwork(D, c.hidden_sizes, K, in_per_dim=K)
        natural = torch.empty(D, dtype=torch.long)
        natural[super().generation_order()] = torch.arange(D)  # position of each flat dim in the data's order
        g = torch.Generator().manual_seed(c.mask_seed)
        orders, banks = [], [[] for _ in self.net.layers]
        for _ in range(c.num_masks):
            order = torch.randperm(D, generator=g) if c.ordering == "random" else natural
            masks = made_masks(order, c.hidden_sizes, K, K, generator=g if c.num_masks > 1 else None)
            orders.append(order)
            for bank, m in zip(banks, masks):
                bank.append(m)
        # all masks, rebuilt from the config (so not saved): orders (M, D), masks per layer (M, out, in)
        self.register_buffer("mask_orders", torch.stack(orders), persistent=False)
        for i, bank in enumerate(banks):
            self.register_buffer(f"mask_bank_{i}", torch.stack(bank), persistent=False)
        self.mask_index = -1
        self.use_mask(0)
        # a checkpoint stores the layers' masks of whichever mask was current: restore the current one
        self.register_load_state_dict_post_hook(self._refresh_mask)

    # ------------------------------------------------------------------ masks
    def use_mask(self, index: int) -> None:
        """Make mask ``index`` (0..num_masks-1) the one ``conditionals`` and ``generation_order`` use."""
        if index == self.mask_index:
            return
        for i, layer in enumerate(self.net.layers):
            layer.set_mask(getattr(self, f"mask_bank_{i}")[index])
        self.net.order.copy_(self.mask_orders[index])
        self.mask_index = index

    def generation_order(self) -> torch.Tensor:
        """Flat event indices in the order of the current mask."""
        return torch.argsort(self.mask_orders[self.mask_index]).cpu()

    def _refresh_mask(self, *_) -> None:
        index, self.mask_index = self.mask_index, -1
        self.use_mask(index)

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        self._refresh_mask()  # re-copy the current mask into the layers after a dtype/device move
        return out

    # ------------------------------------------------------------------ likelihood
    def conditionals_from_onehot(self, x_onehot, context=None):
        return self.net(x_onehot.reshape(x_onehot.shape[0], -1))  # (B, *event, K) -> (B, D * K) -> (B, D, K)

    def conditionals(self, x, context=None):
        K = self.spec.num_levels
        logits = self.conditionals_from_onehot(F.one_hot(x, K).to(self._param_dtype()))  # (B, D, K)
        return logits.transpose(1, 2).reshape(x.shape[0], K, *self.spec.shape)  # (B, K, *event)

    def log_prob(self, x, context=None):
        """``log (1/M) sum_m p_m(x)``: the mixture of all ``M = num_masks`` masks (one mask when M = 1)."""
        self.check_input(x)
        M = self.config.num_masks
        if M == 1:
            return self.log_prob_from(self.conditionals(x), x)
        current, parts = self.mask_index, []
        for m in range(M):
            self.use_mask(m)
            parts.append(self.log_prob_from(self.conditionals(x), x))
        self.use_mask(current)
        return torch.logsumexp(torch.stack(parts), 0) - math.log(M)

    def loss(self, x, context=None):
        """NLL per dimension; in training mode with ``num_masks > 1``, of one mask drawn from the global RNG."""
        if self.training and self.config.num_masks > 1:
            self.check_input(x)
            self.use_mask(int(torch.randint(self.config.num_masks, ())))
            nll = -self.log_prob_from(self.conditionals(x), x).mean()
            return {"loss": nll / self.spec.num_dims, "nll": nll}
        return super().loss(x, context)

    # ------------------------------------------------------------------ sampling from the mixture of masks
    def _mixture_sample(self, sampler, num_samples, generator, given, given_mask, temperature):
        M = self.config.num_masks
        if M == 1:
            return sampler(num_samples, generator=generator, given=given, given_mask=given_mask,
                           temperature=temperature)
        # the mixture component of each sample
        which = torch.randint(M, (num_samples,), generator=generator,
                              device=generator.device if generator is not None else None)
        device = self._param_device()
        out = torch.zeros(num_samples, *self.spec.shape, dtype=torch.long, device=device)
        current = self.mask_index
        for m in range(M):
            idx = (which == m).nonzero()[:, 0]
            if len(idx) == 0:
                continue
            self.use_mask(m)
            g_rows = None if given is None else torch.as_tensor(given).expand(num_samples, *self.spec.shape)[idx]
            m_rows = None if given_mask is None else \
                torch.as_tensor(given_mask).expand(num_samples, *self.spec.shape)[idx]
            out[idx.to(device)] = sampler(len(idx), generator=generator, given=g_rows, given_mask=m_rows,
                                          temperature=temperature)
        self.use_mask(current)
        return out

    @torch.no_grad()
    def naive_sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None,
                     temperature=1.0):
        """The base sampler (one pass per dimension), per mixture component when ``num_masks > 1``."""
        return self._mixture_sample(super().naive_sample, num_samples, generator, given, given_mask, temperature)

    def sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None, temperature=1.0):
        return self.naive_sample(num_samples, generator=generator, given=given, given_mask=given_mask,
                                 temperature=temperature)
