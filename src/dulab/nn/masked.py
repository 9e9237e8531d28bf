"""Masked layers for autoregressive networks.

``MADENetwork`` is the masked MLP of MADE: output ``i`` depends only on inputs that come before ``i`` in a
chosen order. It serves the ``made`` density model and the conditioners of MAF/IAF.

References:
    Germain, Gregor, Murray, Larochelle. "MADE: Masked Autoencoder for Distribution Estimation", 2015,
    arXiv:1502.03509.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MaskedLinear", "MADENetwork", "made_masks"]


class MaskedLinear(nn.Linear):
    """``y = x (W * M)^T + b`` with a fixed 0/1 mask ``M`` (a buffer; the weights themselves are never edited)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__(in_features, out_features, bias)
        self.register_buffer("mask", torch.ones(out_features, in_features))

    def set_mask(self, mask: torch.Tensor) -> None:
        self.mask.copy_(mask.to(self.mask))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


def made_masks(order: torch.Tensor, hidden_sizes, in_per_dim: int, out_per_dim: int,
               generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """The connectivity masks of MADE (eq. 12-13 of the paper).

    Args:
        order: ``(D,)`` a permutation: ``order[d]`` is the position (0-based) at which dimension ``d`` is generated.
        hidden_sizes: widths of the hidden layers.
        in_per_dim, out_per_dim: features per dimension at the input (e.g. one-hot size) and output.
        generator: when given, hidden degrees are drawn at random (connectivity-agnostic training);
            otherwise they are spread evenly so every degree is present.
    Returns:
        One ``(out_features, in_features)`` mask per layer (hidden layers, then the output layer).
    """
    D = order.numel()
    deg_in = (order + 1).repeat_interleave(in_per_dim)  # input degree 1..D, (D * in_per_dim,)
    degrees = [deg_in]
    lo = 1
    for h in hidden_sizes:
        if D == 1:
            m = torch.zeros(h, dtype=torch.long)  # nothing may be seen: the output is a constant
        elif generator is None:
            m = torch.arange(h) % (D - 1) + 1  # degrees 1..D-1
        else:
            m = torch.randint(lo, D, (h,), generator=generator)
        lo = int(m.min()) if D > 1 else 0
        degrees.append(m)
    masks = [(degrees[i + 1][:, None] >= degrees[i][None, :]).float() for i in range(len(hidden_sizes))]
    deg_out = (order + 1).repeat_interleave(out_per_dim)
    masks.append((deg_out[:, None] > degrees[-1][None, :]).float())
    return masks


class MADENetwork(nn.Module):
    """A masked MLP: ``(B, D * in_per_dim) -> (B, D, out_per_dim)`` where output ``i`` sees only earlier inputs.

    Args:
        num_dims: D.
        hidden_sizes: hidden layer widths.
        out_per_dim: outputs per dimension (e.g. K logits, or 2 for shift and log-scale).
        in_per_dim: input features per dimension (1 for real values, K for one-hot); inputs are laid out
            dimension-major, ``(B, D, in_per_dim)`` flattened.
        context_features: size of an unmasked conditioning vector added to every hidden layer.
        order: ``(D,)`` generation positions (a permutation); natural order when ``None``.
        activation: module class for the hidden layers.
    """

    def __init__(self, num_dims: int, hidden_sizes, out_per_dim: int, *, in_per_dim: int = 1,
                 context_features: int = 0, order: torch.Tensor | None = None, activation=nn.ReLU):
        super().__init__()
        self.num_dims, self.in_per_dim, self.out_per_dim = num_dims, in_per_dim, out_per_dim
        sizes = [num_dims * in_per_dim, *hidden_sizes, num_dims * out_per_dim]
        self.layers = nn.ModuleList(MaskedLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.context_layers = nn.ModuleList(
            nn.Linear(context_features, h, bias=False) for h in hidden_sizes) if context_features else None
        self.activation = activation()
        self.hidden_sizes = list(hidden_sizes)
        self.register_buffer("order", torch.arange(num_dims) if order is None else torch.as_tensor(order).long())
        self.set_order(self.order)

    def set_order(self, order: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Rebuild the masks for a new order (and random hidden degrees when ``generator`` is given)."""
        self.order.copy_(torch.as_tensor(order, device=self.order.device))
        masks = made_masks(self.order.cpu(), self.hidden_sizes, self.in_per_dim, self.out_per_dim, generator)
        for layer, m in zip(self.layers, masks):
            layer.set_mask(m)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h)
            if i < len(self.layers) - 1:
                if self.context_layers is not None and context is not None:
                    h = h + self.context_layers[i](context)
                h = self.activation(h)
        return h.view(x.shape[0], self.num_dims, self.out_per_dim)  # (B, D * P) -> (B, D, P)
