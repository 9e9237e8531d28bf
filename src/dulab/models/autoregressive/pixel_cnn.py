"""PixelCNN: an autoregressive image model built from masked convolutions with a softmax over levels.

The first layer is a k x k masked convolution of type A (a pixel does not see itself), followed by residual blocks
whose 3x3 masked convolutions are of type B (a pixel's features see its own earlier features). Colour channels
are generated R -> G -> B within a pixel: feature maps are split into colour groups and the masks at the centre
tap let group g see groups < g (A) or <= g (B). With ``use_independent_channels`` the channels of a pixel are
instead independent given the earlier pixels (one group, type A excludes the whole centre pixel).

Blind spot: stacked masked convolutions never see part of the region above and to the *right*. With a type-A
first layer of size k (reach p = k // 2) and L type-B 3x3 layers, each 3x3 layer moves the receptive field at most
one column right and only while climbing one row (in the current row it only moves left), so the conditional of
pixel (i, j) can depend on pixel (i - a, j + b) with a >= 1, b > 0 only if ``b <= p + min(L, a - 1)``. Pixel
(1, 0), for instance, never sees pixels (0, j) with ``j > p``, however deep the network. The tests measure this
with autograd; Gated PixelCNN (``gated_pixel_cnn``) removes the blind spot with vertical and horizontal stacks.

Sampling: ``naive_sample`` runs the whole network once per sub-pixel. ``sample`` is exact and much faster, in the
spirit of Fast PixelCNN++: every masked convolution keeps its input in a cache and computes its output only at
the next pixel (one position per layer instead of a pass over the image). ``ImageAutoregressiveModel``
also offers ``cropped_sample`` for any convolutional model: it runs the network on the crop of rows and columns
that can influence the next pixel (``receptive_field``), exact because a masked network never looks below the
current row and the zero padding at the true image border is kept.

References:
    van den Oord, Kalchbrenner, Kavukcuoglu. "Pixel Recurrent Neural Networks", 2016, arXiv:1601.06759.
    Ramachandran, Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell, Huang.
    "Fast Generation for Convolutional Autoregressive Models", 2017, arXiv:1704.06001.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dulab.config import require_at_least, require_fraction, require_odd
from dulab.distributions import categorical_sample
from dulab.errors import UserError
from dulab.models.autoregressive.base import AutoregressiveModel
from dulab.nn.masked import MaskedConv2d

__all__ = ["PixelCNN", "PixelCNNConfig", "ImageAutoregressiveModel", "CategoricalHead", "MaskedResidualBlock"]


class ImageAutoregressiveModel(AutoregressiveModel):
    """Base of the convolutional image models: input scaling, the dependency hook and windowed sampling.

    Subclass obligations:
        * ``network(v, context) -> (B, P, C, H, W)``: the parameters of every conditional (logits over levels
          by default) from ``v``, the image scaled to [-1, 1] as floats ``(B, C, H, W)``. It must work on any
          spatial size (``sample`` runs it on crops) and must never look below the current row.
        * ``receptive_field() -> (up, left, right)``: an upper bound, in pixels, on how far above / left / right
          of a pixel the inputs that influence its conditional lie (``None`` when unbounded, e.g. attention:
          ``sample`` then falls back to ``naive_sample``).
        * ``window_alignment``: crops start at multiples of this (2^s for networks that downsample s times).
    """

    window_alignment: int = 1

    @classmethod
    def check_spec(cls, spec, config):
        super().check_spec(spec, config)
        if len(spec.shape) != 3:
            raise UserError(f"{cls.__name__} models images (C, H, W); got data of shape {spec.shape}. "
                            "For vectors use made, rnn or transformer.")
        if spec.num_levels < 2:
            raise UserError(f"{cls.__name__} needs at least 2 levels, got {spec.num_levels}")

    def network(self, v: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def receptive_field(self) -> tuple[int, int, int] | None:
        return None

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """int levels ``{0..K-1}`` -> floats in [-1, 1] (the network input), in the parameters' dtype."""
        return x.to(self._param_dtype()) * (2.0 / (self.spec.num_levels - 1)) - 1.0

    def conditionals(self, x, context=None):
        """``(B, C, H, W)`` int64 -> ``(B, P, C, H, W)`` parameters of every conditional."""
        return self.network(self.scale(x), context)

    def conditionals_from_onehot(self, x_onehot: torch.Tensor, context=None) -> torch.Tensor:
        """Dependency-test hook: ``(B, C, H, W, K)`` float relaxation -> ``(B, D, P)`` (D in flat (C, H, W) order)."""
        K = self.spec.num_levels
        levels = torch.linspace(-1.0, 1.0, K, dtype=x_onehot.dtype, device=x_onehot.device)
        v = x_onehot @ levels  # (B, C, H, W, K) -> (B, C, H, W)
        params = self.network(v, context)  # (B, P, C, H, W)
        return params.flatten(2).transpose(1, 2)  # (B, P, D) -> (B, D, P)

    def sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None, temperature=1.0):
        """Cached sampling; here ``cropped_sample`` (subclasses with per-layer caches override it)."""
        return self.cropped_sample(num_samples, generator=generator, context=context, given=given,
                                   given_mask=given_mask, temperature=temperature)

    @torch.no_grad()
    def cropped_sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None,
                       temperature=1.0):
        """Exact cached sampling: each sub-pixel's conditional from a crop of its receptive field only.

        Draws the same samples as ``naive_sample`` for the same generator (same order and number of draws).
        Arguments and result as ``naive_sample``.
        """
        field = self.receptive_field()
        if field is None:
            return self.naive_sample(num_samples, generator=generator, context=context, given=given,
                                     given_mask=given_mask, temperature=temperature)
        up, left, right = field
        a = self.window_alignment
        x, mask, context = self._prepare_sampling(num_samples, context, given, given_mask)
        C, H, W = self.spec.shape
        for i in range(H):
            r0 = max(0, i - up) // a * a
            for j in range(W):
                c0, c1 = max(0, j - left) // a * a, min(W, j + right + 1)
                h, w = i + 1 - r0, c1 - c0
                for ch in range(C):
                    keep = mask[:, ch, i, j]
                    if bool(keep.all()):
                        continue
                    params = self.conditionals(x[:, :, r0:i + 1, c0:c1], context)  # (B, P, C, h, w)
                    value = self.sample_from(params, (ch * h + i - r0) * w + j - c0, generator, temperature)
                    x[:, ch, i, j] = torch.where(keep, x[:, ch, i, j], value)
        return x


class CategoricalHead(nn.Module):
    """ELU -> 1x1 masked -> ELU -> 1x1 masked: features ``(B, F, H, W)`` -> logits ``(B, K, C, H, W)``.

    ELU rather than the paper's ReLU: every conditional passes through this bottleneck, and an ELU never zeroes a
    whole colour group's gradient (which would make an allowed dependency vanish at some inputs).

    Args:
        in_channels: F.
        hidden: width of the hidden 1x1 layer.
        num_channels, num_levels: C and K.
        num_groups: colour groups of the features (C, or 1 for independent channels).
    """

    def __init__(self, in_channels: int, hidden: int, num_channels: int, num_levels: int, num_groups: int):
        super().__init__()
        self.num_channels, self.num_levels = num_channels, num_levels
        self.hidden = MaskedConv2d(in_channels, hidden, 1, "B", num_groups=num_groups)
        self.out = MaskedConv2d(hidden, num_channels * num_levels, 1, "B", num_groups=num_groups)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.out(F.elu(self.hidden(F.elu(h))))  # (B, C * K, H, W), laid out (C, K)
        B, _, H, W = out.shape
        return out.view(B, self.num_channels, self.num_levels, H, W).transpose(1, 2)  # -> (B, K, C, H, W)


@dataclass
class PixelCNNConfig:
    """Hyperparameters of ``PixelCNN``.

    Attributes:
        num_filters: feature maps of the residual stream (h; the blocks' bottleneck has h / 2).
        num_layers: residual blocks, each with one masked 3x3 convolution of type B.
        first_kernel_size: odd size of the first (type A) convolution.
        kernel_size: odd size of the type-B convolutions in the blocks.
        num_head_filters: width of the hidden 1x1 layer of the output head.
        dropout: dropout probability inside each residual block (regularises small data sets).
        use_independent_channels: the channels of a pixel are independent given the earlier pixels (instead of
            R -> G -> B within the pixel).
    """

    num_filters: int = 64
    num_layers: int = 4
    first_kernel_size: int = 5
    kernel_size: int = 3
    num_head_filters: int = 64
    dropout: float = 0.1
    use_independent_channels: bool = False

    def __post_init__(self):
        require_at_least(self, 1, "num_filters", "num_layers", "num_head_filters")
        require_odd(self, 1, "first_kernel_size", "kernel_size")
        require_fraction(self, "dropout")


class MaskedResidualBlock(nn.Module):
    """h -> ReLU -> 1x1 (h/2) -> ReLU -> kxk type B -> ReLU -> 1x1 (h) -> + h (Figure 5 of the paper)."""

    def __init__(self, channels: int, kernel_size: int, num_groups: int, dropout: float):
        super().__init__()
        mid = max(num_groups, channels // 2)
        self.reduce = MaskedConv2d(channels, mid, 1, "B", num_groups=num_groups)
        self.conv = MaskedConv2d(mid, mid, kernel_size, "B", num_groups=num_groups)
        self.expand = MaskedConv2d(mid, channels, 1, "B", num_groups=num_groups)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h):
        y = self.conv(F.relu(self.reduce(F.relu(h))))
        return h + self.expand(self.dropout(F.relu(y)))


class PixelCNN(ImageAutoregressiveModel):
    """PixelCNN with masked convolutions A/B and a softmax over levels for every sub-pixel."""

    Config = PixelCNNConfig
    train_defaults = {"epochs": 40, "lr": 3e-3, "batch_size": 64, "weight_decay": 1e-4, "ema_decay": 0.995,
                      "warmup_steps": 50}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        cfg = self.config
        C, K = spec.shape[0], spec.num_levels
        G = 1 if cfg.use_independent_channels else C
        h = max(cfg.num_filters, G)
        self.first = MaskedConv2d(C, h, cfg.first_kernel_size, "A", num_groups=G)
        self.blocks = nn.ModuleList(
            MaskedResidualBlock(h, cfg.kernel_size, G, cfg.dropout) for _ in range(cfg.num_layers))
        self.head = CategoricalHead(h, max(cfg.num_head_filters, G), C, K, G)

    def network(self, v, context=None):
        h = self.first(v)
        for block in self.blocks:
            h = block(h)
        return self.head(h)

    def receptive_field(self):
        reach = self.config.first_kernel_size // 2 + self.config.num_layers * (self.config.kernel_size // 2)
        return reach, reach, reach

    @torch.no_grad()
    def sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None, temperature=1.0):
        """Exact cached sampling with per-layer activation caches (Fast PixelCNN++, Ramachandran et al. 2017).

        Every masked convolution's input is kept in a zero-padded cache; for the next pixel each layer computes
        its output at that single position from the cached patch above and to the left, so a pixel costs one
        position per layer instead of a pass over the image. Features at a pixel never depend on its last
        channel, so the cache written while sampling that channel is final. Draws exactly what ``naive_sample``
        draws for the same generator (up to floating-point summation order; identical in float64 tests).
        Arguments and result as ``naive_sample``; in training mode (dropout active) it runs ``naive_sample``.
        """
        if self.training:
            return self.naive_sample(num_samples, generator=generator, context=context, given=given,
                                     given_mask=given_mask, temperature=temperature)
        x, mask, _ = self._prepare_sampling(num_samples, context, given, given_mask)
        C, H, W = self.spec.shape
        B, K = num_samples, self.spec.num_levels

        dtype = self._param_dtype()

        def masked(conv):  # the masked weight flattened over (in, kh // 2 + 1, kw): computed once per call
            return (conv.weight * conv.mask).reshape(conv.weight.shape[0], -1), conv.bias

        def cache_for(conv):  # the conv's zero-padded input: rows above, columns left and right
            kh, kw = conv.kernel_size
            return x.new_zeros(B, conv.weight.shape[1], H + kh // 2, W + 2 * (kw // 2), dtype=dtype)

        def conv_at(conv, weight, cache, i, j):  # output at (i, j) from the cached patch: (B, out)
            kh, kw = conv.kernel_size
            patch = cache[:, :, i:i + kh // 2 + 1, j:j + kw]  # rows i - kh//2 .. i, cols j - kw//2 .. j + kw//2
            return F.linear(patch.reshape(B, -1), *weight)

        first, blocks, head = self.first, list(self.blocks), self.head
        w_first = masked(first)
        w_blocks = [(masked(b.reduce), masked(b.conv), masked(b.expand)) for b in blocks]
        w_hidden, w_out = masked(head.hidden), masked(head.out)
        v_cache = cache_for(first)
        caches = [cache_for(b.conv) for b in blocks]
        fi, fj = first.kernel_size[0] // 2, first.kernel_size[1] // 2
        scale = 2.0 / (K - 1)
        for i in range(H):
            for j in range(W):
                for ch in range(C):
                    v_cache[:, :, i + fi, j + fj] = x[:, :, i, j].to(dtype) * scale - 1
                    h = conv_at(first, w_first, v_cache, i, j)
                    for block, (w_reduce, w_conv, w_expand), cache in zip(blocks, w_blocks, caches):
                        kh, kw = block.conv.kernel_size
                        cache[:, :, i + kh // 2, j + kw // 2] = F.relu(F.linear(F.relu(h), *w_reduce))
                        h = h + F.linear(F.relu(conv_at(block.conv, w_conv, cache, i, j)), *w_expand)
                    logits = F.linear(F.elu(F.linear(F.elu(h), *w_hidden)), *w_out)  # (B, C * K), laid out (C, K)
                    keep = mask[:, ch, i, j]
                    if bool(keep.all()):
                        continue
                    value = categorical_sample(logits.view(B, C, K)[:, ch], generator, temperature)
                    x[:, ch, i, j] = torch.where(keep, x[:, ch, i, j], value)
                v_cache[:, :, i + fi, j + fj] = x[:, :, i, j].to(dtype) * scale - 1
        return x
