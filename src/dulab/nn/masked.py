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


# ============================================================================================ masked convolutions
# The masked convolutions of PixelCNN (van den Oord, Kalchbrenner, Kavukcuoglu. "Pixel Recurrent Neural
# Networks", 2016, arXiv:1601.06759, section 3.4). A k x k filter centred on pixel (i, j) may see the rows above
# and the pixels to the left in row i; at the centre pixel itself, feature maps are split into colour groups
# (R, G, B) and an output of group g sees inputs of groups < g (mask "A", first layer) or <= g (mask "B", later
# layers). Rows below the centre are never used, so the filter is stored with only its top kh//2 + 1 rows.

__all__ += ["channel_groups", "pixel_cnn_mask", "MaskedConv2d"]


def channel_groups(num_channels: int, num_groups: int, repeats: int = 1) -> torch.Tensor:
    """Colour group of each feature map: ``repeats`` consecutive blocks, each split evenly into ``num_groups``.

    With ``num_channels = C * F`` laid out ``(C, F)`` this gives channel ``c`` group ``c`` (e.g. one-hot inputs or
    per-channel logits). ``repeats=2`` serves gated layers whose output is ``[tanh half, sigmoid half]``.
    Returns ``(num_channels,)`` int64 in ``[0, num_groups)``.
    """
    per = num_channels // repeats
    assert per * repeats == num_channels, "num_channels must be divisible by repeats"
    return (torch.arange(per) * num_groups // per).repeat(repeats)


def pixel_cnn_mask(out_groups: torch.Tensor, in_groups: torch.Tensor, kernel_size: tuple[int, int],
                   mask_type: str) -> torch.Tensor:
    """The ``(out, in, kh // 2 + 1, kw)`` 0/1 mask of a masked convolution (top half of the kernel only).

    Args:
        out_groups, in_groups: colour group of each output / input feature map.
        kernel_size: ``(kh, kw)``, both odd.
        mask_type: ``"A"`` (centre sees strictly earlier groups) or ``"B"`` (earlier or the same group).
    """
    kh, kw = kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"masked convolutions need odd kernel sizes, got {kernel_size}")
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(len(out_groups), len(in_groups), ch + 1, kw)
    mask[:, :, :ch, :] = 1.0  # every row above the centre
    mask[:, :, ch, :cw] = 1.0  # left of the centre in the centre row
    centre = out_groups[:, None] > in_groups[None, :] if mask_type == "A" else out_groups[:, None] >= in_groups[None, :]
    mask[:, :, ch, cw] = centre.float()
    return mask


class MaskedConv2d(nn.Module):
    """A convolution whose output at (i, j) sees only earlier pixels (and earlier colour groups at (i, j)).

    ``(B, in_channels, H, W) -> (B, out_channels, H, W)``; zero padding keeps the size. The mask multiplies the
    weight inside ``F.conv2d``; the weight is never edited.

    Args:
        in_channels, out_channels: feature maps.
        kernel_size: odd ``k`` or ``(kh, kw)``.
        mask_type: ``"A"`` or ``"B"``.
        num_groups: colour groups (1 when channels need not be ordered within a pixel).
        out_repeats: the output is ``out_repeats`` blocks, each grouped on its own (2 for gated layers).
        bias: add a learned bias.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, mask_type: str = "B", *,
                 num_groups: int = 1, out_repeats: int = 1, bias: bool = True):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        self.kernel_size, self.mask_type = (kh, kw), mask_type
        mask = pixel_cnn_mask(channel_groups(out_channels, num_groups, out_repeats),
                              channel_groups(in_channels, num_groups), (kh, kw), mask_type)
        self.register_buffer("mask", mask, persistent=False)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh // 2 + 1, kw))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # fan-in of the unmasked taps (at least 1), so activations keep their scale through deep stacks
        fan_in = max(1.0, float(mask.sum(dim=(1, 2, 3)).mean()))
        nn.init.uniform_(self.weight, -(3.0 / fan_in) ** 0.5, (3.0 / fan_in) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kh, kw = self.kernel_size
        x = F.pad(x, (kw // 2, kw // 2, kh // 2, 0))  # zeros above, left and right; nothing below is looked at
        return F.conv2d(x, self.weight * self.mask, self.bias)

    def extra_repr(self) -> str:
        out, inp = self.weight.shape[:2]
        return f"{inp}, {out}, kernel_size={self.kernel_size}, mask_type={self.mask_type}"
