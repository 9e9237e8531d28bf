"""Building blocks of exact cached (incremental) samplers for convolutional autoregressive image models.

A cached sampler computes each layer's output only at the position about to be sampled, reading the inputs it
needs from a cache of that layer's earlier inputs, instead of running the whole network once per sub-pixel
(Fast PixelCNN++). ``MaskedConvCache`` does this for a PixelCNN masked convolution (``dulab.nn.masked``), whose
filter reaches only the rows above and the pixels to the left.

References:
    Ramachandran, Paine, Khorrami, Babaeizadeh, Chang, Zhang, Hasegawa-Johnson, Campbell, Huang.
    "Fast Generation for Convolutional Autoregressive Models", 2017, arXiv:1704.06001.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["MaskedConvCache", "pointwise"]


def pointwise(conv, h: torch.Tensor) -> torch.Tensor:
    """A 1x1 (masked) convolution applied to feature vectors ``(B, in) -> (B, out)``."""
    weight = conv.weight * conv.mask if hasattr(conv, "mask") else conv.weight
    return F.linear(h, weight.reshape(weight.shape[0], -1), conv.bias)


class MaskedConvCache:
    """The zero-padded input of one ``MaskedConv2d`` during raster sampling, and its output at one position.

    Args:
        conv: the masked convolution (its masked weight is flattened once here).
        batch, height, width: B, H, W of the image being sampled.
        dtype, device: of the cache.
    """

    def __init__(self, conv, batch: int, height: int, width: int, *, dtype, device):
        kh, kw = conv.kernel_size
        self.ph, self.pw, self.kw = kh // 2, kw // 2, kw
        masked = conv.weight * conv.mask  # (out, in, kh // 2 + 1, kw): the top half of the filter
        self.weight, self.bias = masked.reshape(masked.shape[0], -1), conv.bias
        self.cache = torch.zeros(batch, conv.weight.shape[1], height + self.ph, width + 2 * self.pw,
                                 dtype=dtype, device=device)

    def write(self, i: int, j: int, value: torch.Tensor) -> None:
        """Store the layer's input ``(B, in)`` at pixel (i, j)."""
        self.cache[:, :, i + self.ph, j + self.pw] = value

    def at(self, i: int, j: int) -> torch.Tensor:
        """The convolution's output at pixel (i, j): ``(B, out)`` from rows i - kh//2 .. i of the cache."""
        patch = self.cache[:, :, i:i + self.ph + 1, j:j + self.kw]  # (B, in, kh // 2 + 1, kw)
        return F.linear(patch.reshape(patch.shape[0], -1), self.weight, self.bias)


# ============================================================================================ scheduled programs
# A convolutional autoregressive network written as a list of ops over activation maps. Every map position gets a
# *ready time*: the first raster step (sub-pixel loop index t = i * W + j) before whose draw all input pixels it
# depends on are known (input pixel p is known from step p + 1). Ready times follow the ops (a convolution's
# output is ready when its window is; a sum when all terms are). At step t each op computes its output on the
# bounding box of the positions whose ready time is t; positions in the box that are not ready yet get
# provisional values and are computed again, from final inputs, at their own ready time, before any consumer
# (which is ready no earlier) reads them. Every position is thus computed from final inputs, exactly once more
# at most, and the network's output at pixel p is final before p is drawn.

__all__ += ["ActivationMap", "ConvOp", "ShiftAddOp", "DeconvOp", "run_schedule_step", "build_schedule"]


class ActivationMap:
    """A ``(B, F, H, W)`` map stored with a zero margin of one row above and one column on each side."""

    def __init__(self, batch: int, channels: int, height: int, width: int, *, dtype, device):
        self.H, self.W, self.channels = height, width, channels
        self.data = torch.zeros(batch, channels, height + 1, width + 2, dtype=dtype, device=device)
        self.ready: torch.Tensor | None = None  # (H, W) ready times, set by the op that writes the map

    def rows(self, r0: int, r1: int, c0: int, c1: int) -> torch.Tensor:
        """Rows r0..r1 and columns c0..c1 (inclusive; -1 and W reach into the zero margin)."""
        return self.data[:, :, r0 + 1:r1 + 2, c0 + 1:c1 + 2]

    def padded_ready(self, left: int, right: int, top: int) -> torch.Tensor:
        return F.pad(self.ready[None], (left, right, top, 0), value=-1.0)[0]


class ConvOp:
    """``dst = conv(pre(src)) [+ aux(concat_elu(cat(aux_srcs)))]``, optionally gated as ``res + a * sigmoid(b)``.

    ``conv`` is a ``DownShiftedConv2d``/``DownRightShiftedConv2d`` (its zero padding is the maps' margin);
    ``use_celu`` applies ``concat_elu`` to the window first (``concat_elu(0) = 0``, so padding commutes with it);
    ``gate_residual`` is the map added in a ``GatedResNet`` (then the conv has twice the output channels).
    """

    def __init__(self, conv, src: ActivationMap, dst_factory, *, pad, use_celu=False, aux=None, aux_srcs=(),
                 gate_residual: ActivationMap | None = None):
        self.conv, self.src, self.pad, self.use_celu = conv, src, pad, use_celu
        self.aux, self.aux_srcs, self.gate_residual = aux, list(aux_srcs), gate_residual
        (kh, kw), (s, _) = conv.kernel_size, conv.stride
        pl, pr, pt = pad
        assert max(pl, pr, pt) <= 1, "the maps keep a margin of one"
        H, W = (src.H + pt - kh) // s + 1, (src.W + pl + pr - kw) // s + 1
        out = conv.out_channels // 2 if gate_residual is not None else conv.out_channels
        self.dst = dst_factory(out, H, W)
        ready = F.max_pool2d(src.padded_ready(pl, pr, pt)[None, None], (kh, kw), stride=s)[0, 0]
        for other in self.aux_srcs + ([gate_residual] if gate_residual is not None else []):
            ready = torch.maximum(ready, other.ready)
        self.dst.ready = ready
        # one output position (the common case while sampling) is a matrix product with the flattened filter
        self.flat = conv.weight.reshape(conv.weight.shape[0], -1)  # (out, in * kh * kw)
        self.aux_flat = aux.weight.reshape(aux.weight.shape[0], -1) if aux is not None else None

    def compute(self, r0, r1, c0, c1):
        (kh, kw), (s, _) = self.conv.kernel_size, self.conv.stride
        pl, _, pt = self.pad
        window = self.src.rows(r0 * s - pt, r1 * s - pt + kh - 1, c0 * s - pl, c1 * s - pl + kw - 1)
        if self.use_celu:
            window = F.elu(torch.cat([window, -window], 1))
        single = r0 == r1 and c0 == c1
        if single:  # (B, in, kh, kw) -> (B, out) -> (B, out, 1, 1)
            y = F.linear(window.reshape(window.shape[0], -1), self.flat, self.conv.bias)[:, :, None, None]
        else:
            y = F.conv2d(window, self.conv.weight, self.conv.bias, stride=s)
        if self.aux is not None:
            a = torch.cat([m.rows(r0, r1, c0, c1) for m in self.aux_srcs], 1)
            a = F.elu(torch.cat([a, -a], 1))
            if single:
                y = y + F.linear(a[:, :, 0, 0], self.aux_flat, self.aux.bias)[:, :, None, None]
            else:
                y = y + self.aux(a)
        if self.gate_residual is not None:
            a, b = y.chunk(2, dim=1)
            y = self.gate_residual.rows(r0, r1, c0, c1) + a * torch.sigmoid(b)
        self.dst.rows(r0, r1, c0, c1)[:] = y


class ShiftAddOp:
    """``dst(i, j) = sum_k src_k(i - dr_k, j - dc_k)`` (``down_shift``/``right_shift`` and their sum), shifts <= 1."""

    def __init__(self, terms, dst_factory):
        self.terms = terms  # [(map, dr, dc)]
        m0 = terms[0][0]
        self.dst = dst_factory(m0.channels, m0.H, m0.W)
        ready = None
        for m, dr, dc in terms:
            r = m.padded_ready(dc, 0, dr)[:m.H, :m.W]
            ready = r if ready is None else torch.maximum(ready, r)
        self.dst.ready = ready

    def compute(self, r0, r1, c0, c1):
        y = 0
        for m, dr, dc in self.terms:
            y = y + m.rows(r0 - dr, r1 - dr, c0 - dc, c1 - dc)
        self.dst.rows(r0, r1, c0, c1)[:] = y


class DeconvOp:
    """A stride-2 transposed convolution cropped to ``size`` at column offset ``offset`` (the shifted deconvs)."""

    def __init__(self, deconv, src: ActivationMap, size, offset: int, dst_factory):
        self.deconv, self.src, self.offset = deconv, src, offset
        kh, kw = deconv.kernel_size
        H, W = size
        self.dst = dst_factory(deconv.out_channels, H, W)
        h, w = src.H, src.W
        full = torch.full((2 * (h - 1) + kh, 2 * (w - 1) + kw), -1.0)
        for a in range(kh):
            for b in range(kw):
                view = full[a:a + 2 * h - 1:2, b:b + 2 * w - 1:2]
                view.copy_(torch.maximum(view, src.ready))
        self.dst.ready = full[:H, offset:offset + W]

    def compute(self, r0, r1, c0, c1):
        kh, kw = self.deconv.kernel_size
        o = self.offset
        ra, rb = max(0, (r0 - kh + 2) // 2), min(self.src.H - 1, r1 // 2)
        ca, cb = max(0, -((kw - 1 - c0 - o) // 2)), min(self.src.W - 1, (c1 + o) // 2)
        y = F.conv_transpose2d(self.src.rows(ra, rb, ca, cb), self.deconv.weight, self.deconv.bias, stride=2)
        self.dst.rows(r0, r1, c0, c1)[:] = y[:, :, r0 - 2 * ra:r1 - 2 * ra + 1, c0 + o - 2 * ca:c1 + o - 2 * ca + 1]


def build_schedule(ops, num_steps: int) -> list[list[tuple]]:
    """``steps[t]``: the ``(op, r0, r1, c0, c1)`` boxes to compute at step t, in program order."""
    import numpy as np

    steps: list[list[tuple]] = [[] for _ in range(num_steps)]
    for op in ops:
        ready = op.dst.ready.clamp(min=0).long().numpy()  # positions that depend on padding only: step 0
        rows, cols = np.indices(ready.shape)
        times, inverse = np.unique(ready.ravel(), return_inverse=True)
        lo_r, hi_r = np.full(len(times), 1 << 30), np.full(len(times), -1)
        lo_c, hi_c = lo_r.copy(), hi_r.copy()
        np.minimum.at(lo_r, inverse, rows.ravel())
        np.maximum.at(hi_r, inverse, rows.ravel())
        np.minimum.at(lo_c, inverse, cols.ravel())
        np.maximum.at(hi_c, inverse, cols.ravel())
        for n, t in enumerate(times.tolist()):
            if t < num_steps:  # (a time of num_steps needs the last pixel: no conditional reads it)
                steps[t].append((op, int(lo_r[n]), int(hi_r[n]), int(lo_c[n]), int(hi_c[n])))
    return steps


def run_schedule_step(step) -> None:
    for op, r0, r1, c0, c1 in step:
        op.compute(r0, r1, c0, c1)
