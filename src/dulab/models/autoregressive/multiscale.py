"""Multiscale PixelCNN: parallel multiscale sampling, pixel groups generated in O(log N) network calls.

The pixels are split into groups by a coarse-to-fine schedule (Reed et al. 2017): first the pixels of a coarse
subsample (every ``s``-th row and column, ``s`` the largest power of two below the image size), one group per
pixel, in raster order; then each doubling of resolution, from stride ``2h`` to ``h``, in three groups: the
pixels midway along the rows of the known grid (rows ``= 0 mod 2h``, columns ``= h mod 2h``), then midway down
the columns (rows ``= h``, columns ``= 0 mod 2h``), then the centres (rows and columns ``= h mod 2h``). Colour
channels split every group further into R, G, B in turn. ``p(x) = prod_g prod_{i in g} p(x_i | x_{groups < g})``:
pixels of one group are conditionally independent given the earlier groups, so the likelihood is exact and
normalised and sampling draws a whole group from one network call: ``4 + 3 log2(s)`` calls (times C) instead
of one per sub-pixel (16 instead of 784 at 28x28).

The network is one unmasked convolutional ResNet (dilations 1, 2, 4, ... so that coarse groups see their
distant known neighbours) shared by all groups: its input is the image multiplied by the known-pixel mask of
the groups before ``g``, the known mask itself and the mask of the group being predicted, so the conditionals
of group ``g`` cannot see group ``g`` or any later one (the masks, not the weights, enforce the order; tested
with the dependency Jacobian). A softmax over levels is the output. ``log_prob`` runs the network once per
group (batched). This keeps Reed et al.'s group schedule and conditional independence, not their
per-scale upsampling networks.

References:
    Reed, van den Oord, Kalchbrenner, Gomez Colmenarejo, Wang, Belov, de Freitas. "Parallel Multiscale
    Autoregressive Density Estimation", ICML 2017, arXiv:1703.03664.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dulab.config import require_at_least, require_fraction
from dulab.models.autoregressive.pixel_cnn import ImageAutoregressiveModel

__all__ = ["MultiscalePixelCNN", "MultiscalePixelCNNConfig", "multiscale_groups"]


def multiscale_groups(shape: tuple[int, int, int]) -> list[torch.Tensor]:
    """The group schedule of a ``(C, H, W)`` image: a list of flat ``(C, H, W)`` index tensors, in order.

    Every sub-pixel lies in exactly one group (tested); see the module docstring for the order.
    """
    C, H, W = shape
    s = 1
    while 2 * s < max(H, W):
        s *= 2
    rows, cols = torch.arange(H)[:, None].expand(H, W), torch.arange(W)[None, :].expand(H, W)
    spatial = [((rows == i) & (cols == j)) for i in range(0, H, s) for j in range(0, W, s)]  # base, one by one
    h = s // 2
    while h >= 1:
        r, c = rows % (2 * h), cols % (2 * h)
        spatial += [(r == 0) & (c == h), (r == h) & (c == 0), (r == h) & (c == h)]
        h //= 2
    groups = []
    for m in spatial:
        if not m.any():
            continue  # a doubling with no pixels in this image (e.g. a 1-row image has no second row)
        pix = m.flatten().nonzero()[:, 0]  # flat (H, W) indices
        groups += [ch * H * W + pix for ch in range(C)]
    return groups


@dataclass
class MultiscalePixelCNNConfig:
    """Hyperparameters of ``MultiscalePixelCNN``.

    Attributes:
        num_filters: feature maps of the residual stream.
        num_layers: residual blocks (3x3 convolutions with dilations 1, 2, 4, ..., cycling up to the image size).
        dropout: dropout inside each residual block.
    """

    num_filters: int = 32
    num_layers: int = 5
    dropout: float = 0.1

    def __post_init__(self):
        require_at_least(self, 1, "num_filters", "num_layers")
        require_fraction(self, "dropout")


class _Block(nn.Module):
    def __init__(self, channels: int, dilation: int, dropout: float):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h):
        return h + self.conv2(self.dropout(F.elu(self.conv1(F.elu(h)))))


class MultiscalePixelCNN(ImageAutoregressiveModel):
    """Group-wise (coarse-to-fine) autoregressive image model; ``sample`` takes one network call per group."""

    Config = MultiscalePixelCNNConfig
    train_defaults = {"epochs": 40, "lr": 3e-3, "batch_size": 64, "weight_decay": 1e-4, "ema_decay": 0.995,
                      "warmup_steps": 50}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        cfg = self.config
        C, H, W = spec.shape
        groups = multiscale_groups(spec.shape)
        self.num_groups = len(groups)
        D = C * H * W
        group_of = torch.empty(D, dtype=torch.long)
        for g, idx in enumerate(groups):
            group_of[idx] = g
        self.register_buffer("group_of", group_of, persistent=False)  # (D,) group of each flat index
        self.register_buffer("order", torch.cat(groups), persistent=False)
        F_ = cfg.num_filters
        dilations, d = [], 1
        for _ in range(cfg.num_layers):
            dilations.append(d)
            d = d * 2 if d * 2 < max(H, W) else 1
        self.inp = nn.Conv2d(3 * C, F_, 3, padding=1)
        self.blocks = nn.ModuleList(_Block(F_, d, cfg.dropout) for d in dilations)
        self.out = nn.Conv2d(F_, C * spec.num_levels, 1)

    def generation_order(self):
        return self.order.cpu()

    def group_masks(self, groups, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(G, C, H, W)`` known masks (groups before each of ``groups``) and target masks (the group itself)."""
        g = torch.as_tensor(groups, device=self.group_of.device).view(-1, 1)
        known = (self.group_of[None, :] < g).to(dtype).view(-1, *self.spec.shape)
        target = (self.group_of[None, :] == g).to(dtype).view(-1, *self.spec.shape)
        return known, target

    def group_network(self, v: torch.Tensor, groups) -> torch.Tensor:
        """Logits of the conditionals of ``groups`` from ``v`` (the image in [-1, 1], ``(B, C, H, W)``).

        Returns ``(G, B, K, C, H, W)``: entry ``g`` holds valid conditionals at the positions of ``groups[g]``
        (computed from the pixels of earlier groups only; other positions are not meaningful).
        """
        B, C, H, W = v.shape
        known, target = self.group_masks(groups, v.dtype)  # (G, C, H, W)
        G = known.shape[0]
        inp = torch.cat([v[None] * known[:, None], known[:, None].expand(G, B, C, H, W),
                         target[:, None].expand(G, B, C, H, W)], 2)  # (G, B, 3C, H, W)
        h = self.inp(inp.reshape(G * B, 3 * C, H, W))
        for block in self.blocks:
            h = block(h)
        out = self.out(F.elu(h))  # (G * B, C * K, H, W), laid out (C, K)
        return out.view(G, B, C, self.spec.num_levels, H, W).transpose(2, 3)  # -> (G, B, K, C, H, W)

    def network(self, v, context=None):
        B = v.shape[0]
        logits = self.group_network(v, range(self.num_groups))  # (G, B, K, C, H, W)
        pick = self.group_of.view(1, 1, 1, *self.spec.shape).expand(1, B, logits.shape[2], *self.spec.shape)
        return logits.gather(0, pick)[0]  # each sub-pixel's logits from its own group's pass: (B, K, C, H, W)

    @torch.no_grad()
    def sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None, temperature=1.0):
        """Grouped sampling: one network call per group, then the group's sub-pixels drawn in generation order.

        Draws exactly what ``naive_sample`` draws for the same generator (the same conditionals, drawn in the same
        order, one ``categorical_sample`` per sub-pixel) with ``num_groups`` network calls instead of one per
        sub-pixel. Arguments and result as ``naive_sample``.
        """
        x, mask, _ = self._prepare_sampling(num_samples, context, given, given_mask)
        flat, flat_mask = x.view(num_samples, -1), mask.view(num_samples, -1)
        order = self.generation_order().tolist()
        group_of = self.group_of.cpu().tolist()
        t = 0
        for g in range(self.num_groups):
            params = None
            while t < len(order) and group_of[order[t]] == g:
                index = order[t]
                t += 1
                if bool(flat_mask[:, index].all()):
                    continue
                if params is None:  # one call for the whole group (pixels of a group do not see each other)
                    params = self.group_network(self.scale(x), [g])[0]  # (B, K, C, H, W)
                value = self.sample_from(params, index, generator, temperature)
                flat[:, index] = torch.where(flat_mask[:, index], flat[:, index], value)
        return x
