"""PixelCNN++: a discretized logistic mixture likelihood on a two-stream, multi-resolution PixelCNN.

Each sub-pixel's conditional is a mixture of M discretized logistics over the K levels (the edge levels take the
tails), so nearby levels share probability mass and 17- or 256-level data need no K-way softmax. Within a pixel
the mean of G depends linearly on the value of R, and the mean of B on R and G (eq. 3 of the paper; any number of
channels: channel c's means get ``tanh(coeff) * value`` of every earlier channel). The network has a down-shifted
stream (rows above) and a down-right-shifted stream (rows above and pixels to the left), gated ResNet blocks with
concatenated ELUs and dropout, strided down-sampling and transposed up-sampling with shortcut connections between
the two passes (a U-Net of ``num_scales`` resolutions).

Deviation from the paper: the mixture weights are per sub-pixel (each channel has its own mixture indicator)
instead of shared by the three channels of a pixel, so every channel's conditional is itself a mixture and
the model fits the shared raster sampler and dependency checks one sub-pixel at a time.

Sampling: ``sample`` is exact and cached (Fast PixelCNN++, Ramachandran et al. 2017): the network is replayed as
a schedule over per-layer activation caches (``dulab.models.autoregressive.cached``) in which every layer
computes each position once its inputs are final, at every resolution of the U-Net; the features at a pixel never
depend on that pixel, so they are computed once per pixel and only eq. 3's linear channel mixing is redone for
each channel. ``naive_sample`` (one full pass per sub-pixel) is the reference; ``cropped_sample`` remains.

References:
    Ramachandran, Paine, Khorrami et al. "Fast Generation for Convolutional Autoregressive Models", 2017,
    arXiv:1704.06001.
    Salimans, Karpathy, Chen, Kingma. "PixelCNN++: Improving the PixelCNN with Discretized Logistic Mixture
    Likelihood and Other Modifications", 2017, arXiv:1701.05517.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dulab.config import require_at_least, require_fraction
from dulab.distributions import discretized_logistic_mixture_log_prob, discretized_logistic_mixture_sample
from dulab.models.autoregressive.cached import (
    ActivationMap,
    ConvOp,
    DeconvOp,
    ShiftAddOp,
    build_schedule,
    run_schedule_step,
)
from dulab.models.autoregressive.pixel_cnn import ImageAutoregressiveModel
from dulab.nn.resnet import (
    DownRightShiftedConv2d,
    DownRightShiftedDeconv2d,
    DownShiftedConv2d,
    DownShiftedDeconv2d,
    GatedResNet,
    down_shift,
    right_shift,
)

__all__ = ["PixelCNNpp", "PixelCNNppConfig"]


@dataclass
class PixelCNNppConfig:
    """Hyperparameters of ``PixelCNNpp``.

    Attributes:
        num_filters: feature maps of both streams.
        num_blocks: gated ResNet blocks per resolution in the up pass (the down pass has one more below the top).
        num_scales: resolutions (each further one halves height and width).
        num_components: logistic mixture components per sub-pixel (M).
        dropout: dropout inside the gated ResNet blocks.
    """

    num_filters: int = 32
    num_blocks: int = 1
    num_scales: int = 2
    num_components: int = 5
    dropout: float = 0.3

    def __post_init__(self):
        require_at_least(self, 1, "num_filters", "num_blocks", "num_scales", "num_components")
        require_fraction(self, "dropout")


class PixelCNNpp(ImageAutoregressiveModel):
    """PixelCNN++ over discrete images with any number of levels and channels."""

    Config = PixelCNNppConfig
    train_defaults = {"epochs": 40, "lr": 2e-3, "batch_size": 64, "weight_decay": 1e-4, "ema_decay": 0.995,
                      "warmup_steps": 50}

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        cfg = self.config
        C, F_, N, S, M = spec.shape[0], cfg.num_filters, cfg.num_blocks, cfg.num_scales, cfg.num_components
        self.window_alignment = 2 ** (S - 1)
        self.u_init = DownShiftedConv2d(C, F_, (2, 3))
        self.ul_init_up = DownShiftedConv2d(C, F_, (1, 3))
        self.ul_init_left = DownRightShiftedConv2d(C, F_, (2, 1))

        def blocks(n, u_aux, ul_aux):
            return (nn.ModuleList(GatedResNet(F_, DownShiftedConv2d, u_aux, cfg.dropout) for _ in range(n)),
                    nn.ModuleList(GatedResNet(F_, DownRightShiftedConv2d, ul_aux, cfg.dropout) for _ in range(n)))

        up = [blocks(N, 0, F_) for _ in range(S)]
        self.up_u, self.up_ul = nn.ModuleList(u for u, _ in up), nn.ModuleList(ul for _, ul in up)
        down = [blocks(N if s == S - 1 else N + 1, F_, 2 * F_) for s in range(S)]
        self.down_u, self.down_ul = nn.ModuleList(u for u, _ in down), nn.ModuleList(ul for _, ul in down)
        self.downsample_u = nn.ModuleList(DownShiftedConv2d(F_, F_, (2, 3), stride=2) for _ in range(S - 1))
        self.downsample_ul = nn.ModuleList(DownRightShiftedConv2d(F_, F_, (2, 2), stride=2) for _ in range(S - 1))
        self.upsample_u = nn.ModuleList(DownShiftedDeconv2d(F_, F_) for _ in range(S - 1))
        self.upsample_ul = nn.ModuleList(DownRightShiftedDeconv2d(F_, F_) for _ in range(S - 1))
        self.num_coeffs = C * (C - 1) // 2
        self.out = nn.Conv2d(F_, C * 3 * M + self.num_coeffs * M, 1)

    def network(self, v, context=None):
        cfg = self.config
        S = cfg.num_scales
        u = down_shift(self.u_init(v))  # sees rows above
        ul = down_shift(self.ul_init_up(v)) + right_shift(self.ul_init_left(v))  # rows above + pixels to the left
        us, uls = [u], [ul]
        for s in range(S):
            for block_u, block_ul in zip(self.up_u[s], self.up_ul[s]):
                u = block_u(u)
                ul = block_ul(ul, u)
                us.append(u)
                uls.append(ul)
            if s < S - 1:
                u, ul = self.downsample_u[s](u), self.downsample_ul[s](ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for s in reversed(range(S)):
            for block_u, block_ul in zip(self.down_u[s], self.down_ul[s]):
                u = block_u(u, us.pop())
                ul = block_ul(ul, torch.cat([u, uls.pop()], dim=1))
            if s > 0:
                size = us[-1].shape[-2:]
                u, ul = self.upsample_u[s - 1](u, size), self.upsample_ul[s - 1](ul, size)
        assert not us and not uls, "every shortcut must be used once"
        return self._params_from_features(self.out(F.elu(ul)), v)  # out: (B, C * 3M + coeffs * M, H, W)

    def _params_from_features(self, out: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Head output ``(B, C * 3M + coeffs * M, H, W)`` and input ``v`` ``(B, C, H, W)`` -> ``(B, 3M, C, H, W)``."""
        B, C, H, W = v.shape
        M = self.config.num_components
        params = out[:, :C * 3 * M].reshape(B, C, 3, M, H, W)
        logits, means, log_scales = params.unbind(2)  # (B, C, M, H, W) each
        if self.num_coeffs:
            # eq. 3: mean of channel c moves linearly with the values of channels j < c of the same pixel
            coeffs = torch.tanh(out[:, C * 3 * M:].reshape(B, self.num_coeffs, M, H, W))
            shifts, k = [torch.zeros_like(means[:, 0])], 0
            for c in range(1, C):
                shift = 0
                for j in range(c):
                    shift = shift + coeffs[:, k] * v[:, j, None]
                    k += 1
                shifts.append(shift)
            means = means + torch.stack(shifts, dim=1)
        log_scales = log_scales.clamp(min=-7.0)
        params = torch.cat([logits, means, log_scales], dim=2)  # (B, C, 3M, H, W)
        return params.transpose(1, 2)  # -> (B, 3M, C, H, W)

    @torch.no_grad()
    def sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None, temperature=1.0):
        """Exact cached sampling over a schedule of per-layer caches (module docstring).

        Draws exactly what ``naive_sample`` draws for the same generator: the same conditionals up to the
        floating-point summation order of convolutions computed on windows instead of whole maps (tested within
        1e-9 in float64, with identical draws). Arguments and result as ``naive_sample``; in training mode
        (dropout active) it runs ``naive_sample``.
        """
        if self.training:
            return self.naive_sample(num_samples, generator=generator, context=context, given=given,
                                     given_mask=given_mask, temperature=temperature)
        x, mask, _ = self._prepare_sampling(num_samples, context, given, given_mask)
        C, H, W = self.spec.shape
        B, K, dtype = num_samples, self.spec.num_levels, self._param_dtype()
        v_map, ops, ul = self._schedule_program(B, dtype, x.device)
        D = H * W
        steps = build_schedule(ops, D)
        last = ul.ready.clamp(min=0).flatten()
        assert bool((last <= torch.arange(D)).all()), "a pixel's features must be final before it is drawn"
        scale = 2.0 / (K - 1)
        weight = self.out.weight[:, :, 0, 0]
        for t in range(D):
            i, j = divmod(t, W)
            run_schedule_step(steps[t])
            out = F.linear(F.elu(ul.rows(i, i, j, j)[:, :, 0, 0]), weight, self.out.bias)  # (B, P)
            for ch in range(C):
                v = v_map.rows(i, i, j, j)  # (B, C, 1, 1): the pixel's channels drawn so far (0 later)
                params = self._params_from_features(out[:, :, None, None], v)  # (B, 3M, C, 1, 1)
                keep = mask[:, ch, i, j]
                if not bool(keep.all()):
                    value = self.sample_from(params, ch, generator, temperature)
                    x[:, ch, i, j] = torch.where(keep, x[:, ch, i, j], value)
                v_map.rows(i, i, j, j)[:, :, 0, 0] = x[:, :, i, j].to(dtype) * scale - 1
        return x

    def _schedule_program(self, B, dtype, device):
        """The network of ``network`` as ops over activation maps: ``(input map, ops, final ul map)``."""
        from dulab.nn.resnet import DownShiftedConv2d as Down

        cfg = self.config
        C, H, W = self.spec.shape
        S = cfg.num_scales

        def new(channels, h, w):
            return ActivationMap(B, channels, h, w, dtype=dtype, device=device)

        v = new(C, H, W)
        v.ready = torch.arange(1, H * W + 1, dtype=torch.float32).view(H, W)  # pixel p is known from step p + 1
        ops = []

        def conv(module, src, **kw):
            kh, kwid = module.kernel_size
            pad = (kwid // 2, kwid // 2, kh - 1) if isinstance(module, Down) else (kwid - 1, 0, kh - 1)
            ops.append(ConvOp(module, src, new, pad=pad, **kw))
            return ops[-1].dst

        def shift_add(*terms):
            ops.append(ShiftAddOp(list(terms), new))
            return ops[-1].dst

        def gated(block, x, aux_srcs=()):
            c = conv(block.conv1, x, use_celu=True, aux=block.aux, aux_srcs=aux_srcs)
            return conv(block.conv2, c, use_celu=True, gate_residual=x)

        u = shift_add((conv(self.u_init, v), 1, 0))
        ul = shift_add((conv(self.ul_init_up, v), 1, 0), (conv(self.ul_init_left, v), 0, 1))
        us, uls = [u], [ul]
        for s in range(S):
            for block_u, block_ul in zip(self.up_u[s], self.up_ul[s]):
                u = gated(block_u, u)
                ul = gated(block_ul, ul, [u])
                us.append(u)
                uls.append(ul)
            if s < S - 1:
                u, ul = conv(self.downsample_u[s], u), conv(self.downsample_ul[s], ul)
                us.append(u)
                uls.append(ul)
        u, ul = us.pop(), uls.pop()
        for s in reversed(range(S)):
            for block_u, block_ul in zip(self.down_u[s], self.down_ul[s]):
                u = gated(block_u, u, [us.pop()])
                ul = gated(block_ul, ul, [u, uls.pop()])
            if s > 0:
                size = (us[-1].H, us[-1].W)
                ops.append(DeconvOp(self.upsample_u[s - 1], u, size, 1, new))
                u = ops[-1].dst
                ops.append(DeconvOp(self.upsample_ul[s - 1], ul, size, 0, new))
                ul = ops[-1].dst
        return v, ops, ul

    def log_prob_from(self, params, x):
        M = self.config.num_components
        p = params.movedim(1, -1)  # (B, 3M, C, H, W) -> (B, C, H, W, 3M)
        lp = discretized_logistic_mixture_log_prob(x, p[..., :M], p[..., M:2 * M], p[..., 2 * M:],
                                                   self.spec.num_levels)
        return lp.reshape(x.shape[0], -1).sum(1)

    def sample_from(self, params, index, generator, temperature=1.0):
        M = self.config.num_components
        p = params.reshape(params.shape[0], 3 * M, -1)[:, :, index]  # (B, 3M, D) -> (B, 3M)
        log_scales = p[:, 2 * M:] + math.log(temperature)
        return discretized_logistic_mixture_sample(p[:, :M] / temperature, p[:, M:2 * M], log_scales,
                                                   self.spec.num_levels, generator)

    def receptive_field(self):
        # Each shifted convolution at resolution factor f = 2^s reaches f pixels up, left and right, and so do the
        # errors a crop's zero border injects; resampling reaches 2f. A safe (loose) bound:
        cfg = self.config
        N, S = cfg.num_blocks, cfg.num_scales
        reach = 2 + sum(2**s * (2 * N + 2 * (N + 1)) for s in range(S)) + sum(4 * 2**s for s in range(S - 1))
        reach += self.window_alignment
        return reach, reach, reach
