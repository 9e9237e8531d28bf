"""Preprocessing of discrete data as pure tensor functions: fewer levels, binarisation, scaling to ``[0, 1]``
or ``[-1, 1]`` and back, and uniform dequantization.

Inputs are integer tensors of any shape with values in ``{0..K-1}`` (K = ``num_levels``); outputs keep the
shape. Uniform dequantization, ``(x + u) / K`` with ``u ~ U[0, 1)``, makes the log-likelihood of a continuous
density on ``[0, 1)^D`` a lower bound on that of the discrete data (Theis, van den Oord and Bethge, "A note on
the evaluation of generative models", 2016, arXiv:1511.01844).
"""

from __future__ import annotations

import torch

from dulab.errors import UserError

__all__ = ["quantize", "binarize", "to_unit_interval", "scale_to_signed", "from_signed", "uniform_dequantize"]


def _check_levels(num_levels: int, name: str = "num_levels") -> int:
    if isinstance(num_levels, bool) or int(num_levels) != num_levels or num_levels < 2:
        raise UserError(f"{name} must be an integer >= 2, got {num_levels!r}")
    return int(num_levels)


def quantize(x: torch.Tensor, from_levels: int, bits: int) -> torch.Tensor:
    """Reduce integer data from ``from_levels`` to ``2**bits`` levels by merging equal-width bins.

    Value ``v`` becomes ``floor(v * 2**bits / from_levels)``; for 256 levels and ``bits=5`` that is
    ``v // 8``.

    Args:
        x: integer tensor, any shape, values in ``{0..from_levels-1}`` (e.g. uint8 pixels,
            ``from_levels=256``).
        from_levels: number of levels of ``x``.
        bits: bits per value of the result; ``2**bits`` must not exceed ``from_levels``.
    Returns:
        int64 tensor of the same shape, values in ``{0..2**bits-1}``.
    """
    from_levels = _check_levels(from_levels, "from_levels")
    if isinstance(bits, bool) or int(bits) != bits or bits < 1:
        raise UserError(f"bits must be an integer >= 1, got {bits!r}")
    levels = 2 ** int(bits)
    if levels > from_levels:
        raise UserError(f"cannot quantize {from_levels} levels to 2**{bits} = {levels} levels (that is more)")
    x = x.long()
    if levels == from_levels:
        return x.clone()
    return torch.div(x * levels, from_levels, rounding_mode="floor")


def binarize(x: torch.Tensor, num_levels: int, threshold: float = 0.5) -> torch.Tensor:
    """1 where ``x / (num_levels - 1) >= threshold``, else 0.

    Args:
        x: integer tensor, any shape, values in ``{0..K-1}``.
        num_levels: K.
        threshold: in ``[0, 1]``, on the scale of ``to_unit_interval``.
    Returns:
        int64 tensor of the same shape in {0, 1}.
    """
    num_levels = _check_levels(num_levels)
    if not 0.0 <= threshold <= 1.0:
        raise UserError(f"threshold must be in [0, 1], got {threshold}")
    # Compare on the integer scale, v >= threshold * (K - 1): no division whose rounding crosses it.
    return (x.double() >= threshold * (num_levels - 1)).long()


def to_unit_interval(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Integers ``{0..K-1}`` to ``[0, 1]`` by ``x / (K - 1)``.

    Args:
        x: integer tensor, any shape.
        num_levels: K.
    Returns:
        float tensor (default dtype) of the same shape in ``[0, 1]``.
    """
    num_levels = _check_levels(num_levels)
    return x.to(torch.get_default_dtype()) / (num_levels - 1)


def scale_to_signed(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """Integers ``{0..K-1}`` to ``[-1, 1]`` by ``2 x / (K - 1) - 1`` (the input scale of DCGAN and DDPM).

    Args:
        x: integer tensor, any shape.
        num_levels: K.
    Returns:
        float tensor (default dtype) of the same shape in ``[-1, 1]``.
    """
    num_levels = _check_levels(num_levels)
    return 2.0 * x.to(torch.get_default_dtype()) / (num_levels - 1) - 1.0


def from_signed(x: torch.Tensor, num_levels: int) -> torch.Tensor:
    """The inverse of ``scale_to_signed``: ``[-1, 1]`` to the nearest integer in ``{0..K-1}`` (clamped).

    Args:
        x: float tensor, any shape (values outside ``[-1, 1]`` are clamped).
        num_levels: K.
    Returns:
        int64 tensor of the same shape in ``{0..K-1}``.
    """
    num_levels = _check_levels(num_levels)
    return torch.round((x + 1.0) * (0.5 * (num_levels - 1))).clamp(0, num_levels - 1).long()


def uniform_dequantize(x: torch.Tensor, num_levels: int,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """``(x + u) / K`` with ``u ~ U[0, 1)`` independent per value: discrete data to continuous in ``[0, 1)``.

    Args:
        x: integer tensor, any shape, values in ``{0..K-1}``.
        num_levels: K.
        generator: random generator for ``u``.
    Returns:
        float tensor (default dtype) of the same shape in ``[0, 1)``; the log density of a model on it, plus
        ``D log K``, lower-bounds the discrete log-likelihood in nats.
    """
    num_levels = _check_levels(num_levels)
    dtype = torch.get_default_dtype()
    u = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
    y = (x.to(dtype) + u) / num_levels
    # (K - 1 + u) / K can round up to exactly 1 in float32; keep the promised half-open range.
    return y.clamp_max(torch.nextafter(torch.tensor(1.0, dtype=dtype), torch.tensor(0.0, dtype=dtype)).item())
