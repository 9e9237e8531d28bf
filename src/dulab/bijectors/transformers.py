"""Element-wise monotone maps whose parameters come from a conditioner ("transformers" in the terminology of
Papamakarios et al., 2021, arXiv:1912.02762): additive (NICE), affine (Real NVP, MAF, Glow) and rational-quadratic
spline (Neural Spline Flows).

A transformer is a plain object (no learnable state): ``num_params`` numbers per element, laid out on the last
axis of ``params`` (``(*x.shape, num_params)``); ``forward(x, params)`` and ``inverse(y, params)`` return the value
and the *element-wise* log-derivative, which the calling bijector sums over the dimensions it transforms. All
three are the identity when ``params`` is zero, so zero-initialised conditioners start flows at the identity.

References:
    Durkan, Bekasov, Murray, Papamakarios. "Neural Spline Flows", 2019, arXiv:1906.04032 (section 3.1, eq. 4-8;
    the inverse is the root of the quadratic in appendix A.3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["AdditiveTransformer", "AffineTransformer", "SplineTransformer", "make_transformer",
           "rational_quadratic_spline"]


class AdditiveTransformer:
    """``y = x + t`` (one parameter, log-derivative 0): NICE's volume-preserving coupling."""

    num_params = 1

    def forward(self, x, params):
        return x + params[..., 0], torch.zeros_like(x)

    def inverse(self, y, params):
        return y - params[..., 0], torch.zeros_like(y)


class AffineTransformer:
    """``y = x exp(s) + t`` with ``s = c tanh(raw / c)`` a soft clamp of the raw log-scale to ``(-c, c)``.

    The clamp keeps early training stable (an unbounded ``exp`` is the usual cause of NaNs in affine flows).

    Args:
        scale_bound: ``c``, the largest log-scale per layer.
    """

    num_params = 2

    def __init__(self, scale_bound: float = 3.0):
        self.scale_bound = float(scale_bound)

    def _scale_shift(self, params):
        c = self.scale_bound
        return c * torch.tanh(params[..., 1] / c), params[..., 0]

    def forward(self, x, params):
        s, t = self._scale_shift(params)
        return x * s.exp() + t, s

    def inverse(self, y, params):
        s, t = self._scale_shift(params)
        return (y - t) * (-s).exp(), -s


# log(e - 1): softplus of it is 1, so zero raw derivatives give unit slopes (the identity spline).
_SOFTPLUS_ONE = math.log(math.e - 1)


def rational_quadratic_spline(x: torch.Tensor, raw_widths: torch.Tensor, raw_heights: torch.Tensor,
                              raw_derivatives: torch.Tensor, *, inverse: bool = False, bound: float = 5.0,
                              min_width: float = 1e-3, min_height: float = 1e-3,
                              min_derivative: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Monotone rational-quadratic spline on ``[-bound, bound]``, identity outside (linear tails, eq. 4-8).

    Args:
        x: inputs (or outputs when ``inverse``), any shape ``S``.
        raw_widths, raw_heights: ``(*S, K)`` unnormalised bin widths and heights (softmax over K).
        raw_derivatives: ``(*S, K - 1)`` unconstrained derivatives at the interior knots (the two boundary
            derivatives are 1 to match the identity tails).
        inverse: evaluate the inverse map.
        bound: B, half-width of the interval the spline covers.
    Returns:
        ``(y, log_derivative)``, both of shape ``S``; ``log_derivative = log|dy/dx|`` (or ``log|dx/dy|`` for the
        inverse).
    """
    K = raw_widths.shape[-1]
    inside = (x >= -bound) & (x <= bound)
    xc = x.clamp(-bound, bound)

    widths = min_width + (1 - min_width * K) * torch.softmax(raw_widths, -1)
    heights = min_height + (1 - min_height * K) * torch.softmax(raw_heights, -1)
    # Knots: cumulative sums scaled to [-B, B]; pin the ends so rounding cannot leave a gap. (*S, K + 1)
    pad = (1, 0)
    cw = F.pad(torch.cumsum(widths, -1), pad) * (2 * bound) - bound
    ch = F.pad(torch.cumsum(heights, -1), pad) * (2 * bound) - bound
    def pin(c):
        end = c.new_full(c.shape[:-1] + (1,), bound)
        return torch.cat([-end, c[..., 1:-1], end], -1)

    cw, ch = pin(cw), pin(ch)
    widths, heights = cw[..., 1:] - cw[..., :-1], ch[..., 1:] - ch[..., :-1]
    # d = min_d + softplus(raw + c), c chosen so raw = 0 gives d = 1 exactly; boundary derivatives are 1.
    inner = min_derivative + F.softplus(raw_derivatives + math.log(math.expm1(1 - min_derivative)))
    ones = inner.new_ones(inner.shape[:-1] + (1,))
    derivs = torch.cat([ones, inner, ones], -1)  # (*S, K + 1)

    knots = ch if inverse else cw
    # Bin index: number of interior knots at or below the point, in 0..K-1.
    idx = (xc[..., None] >= knots[..., 1:-1]).sum(-1, keepdim=True)  # (*S, 1)

    def pick(t):
        return t.gather(-1, idx)[..., 0]

    x_k, y_k, w_k, h_k = pick(cw), pick(ch), pick(widths), pick(heights)
    d_k, d_k1 = pick(derivs), pick(derivs[..., 1:])
    s_k = h_k / w_k
    delta = d_k1 + d_k - 2 * s_k
    if not inverse:
        xi = ((xc - x_k) / w_k).clamp(0, 1)
        t = xi * (1 - xi)
        denom = s_k + delta * t
        y = y_k + h_k * (s_k * xi * xi + d_k * t) / denom
        deriv_num = s_k * s_k * (d_k1 * xi * xi + 2 * s_k * t + d_k * (1 - xi) ** 2)
        log_d = torch.log(deriv_num) - 2 * torch.log(denom)
    else:
        dy = xc - y_k
        a = h_k * (s_k - d_k) + dy * delta
        b = h_k * d_k - dy * delta
        c = -s_k * dy
        disc = (b * b - 4 * a * c).clamp_min(0)
        xi = ((2 * c) / (-b - torch.sqrt(disc))).clamp(0, 1)
        y = x_k + xi * w_k
        t = xi * (1 - xi)
        denom = s_k + delta * t
        deriv_num = s_k * s_k * (d_k1 * xi * xi + 2 * s_k * t + d_k * (1 - xi) ** 2)
        log_d = -(torch.log(deriv_num) - 2 * torch.log(denom))
    y = torch.where(inside, y, x)
    log_d = torch.where(inside, log_d, torch.zeros_like(log_d))
    return y, log_d


class SplineTransformer:
    """Rational-quadratic spline with ``num_bins`` bins on ``[-bound, bound]`` and identity tails.

    Parameters per element: ``3 K - 1`` (K widths, K heights, K - 1 interior derivatives).
    """

    def __init__(self, num_bins: int = 8, bound: float = 5.0):
        self.num_bins, self.bound = int(num_bins), float(bound)
        self.num_params = 3 * self.num_bins - 1

    def _split(self, params):
        K = self.num_bins
        return params[..., :K], params[..., K:2 * K], params[..., 2 * K:]

    def forward(self, x, params):
        return rational_quadratic_spline(x, *self._split(params), bound=self.bound)

    def inverse(self, y, params):
        return rational_quadratic_spline(y, *self._split(params), inverse=True, bound=self.bound)


def make_transformer(name: str, *, num_bins: int = 8, bound: float = 5.0, scale_bound: float = 3.0):
    """``"additive"``, ``"affine"`` or ``"spline"`` to a transformer object."""
    if name == "additive":
        return AdditiveTransformer()
    if name == "affine":
        return AffineTransformer(scale_bound)
    if name == "spline":
        return SplineTransformer(num_bins, bound)
    raise ValueError(f"unknown transformer {name!r}: use 'additive', 'affine' or 'spline'")
