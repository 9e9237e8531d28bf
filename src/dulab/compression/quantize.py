"""Deterministic fixed-point probabilities for entropy coding.

An entropy coder needs encoder and decoder to use *exactly* the same integer probability table for every symbol;
a difference of one unit in one table makes the decoder diverge. ``quantize`` maps float64 log-probabilities to
integer frequencies that sum to ``2**precision`` with a minimum of 1 for every symbol (so any symbol, however
improbable under the model, can still be coded), by a fixed sequence of elementary float64 operations:
``p = exp(lp - max)``, ``p /= sum(p)``, ``q = floor(p * (2**precision - K)) + 1``, and the rounding deficit
(``< K`` units) added to the most probable symbol (the first one on ties).

The same float64 inputs give the same table on any machine; what can differ across machines is the model's
float32/float64 output itself (see ``dulab.compression`` on portability), which is why every compressed file
also carries a checksum of the decoded data.

References:
    Duda. "Asymmetric numeral systems: entropy coding combining speed of Huffman coding with compression rate of
    arithmetic coding", 2013, arXiv:1311.2540 (fixed-point frequency tables).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PRECISION", "quantize", "quantized_bits"]

#: Fixed-point precision of the tables: constriction's default range coder (32-bit words) codes with 24 bits.
PRECISION = 24


def quantize(log_probs: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Integer frequencies from log-probabilities.

    Args:
        log_probs: ``(B, K)`` float64 log-probabilities (nats; need not be normalised, ``-inf`` allowed).
        precision: the tables sum to ``2**precision``.
    Returns:
        ``(B, K)`` int64, every entry >= 1, every row summing to ``2**precision``.
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    B, K = lp.shape
    total = 1 << precision
    if K >= total:
        raise ValueError(f"{K} symbols do not fit a {precision}-bit table")
    p = np.exp(lp - lp.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    q = np.floor(p * float(total - K)).astype(np.int64) + 1
    deficit = total - q.sum(axis=1)  # in [0, K): floor() drops less than one unit per symbol
    q[np.arange(B), np.argmax(p, axis=1)] += deficit
    return q


def quantized_bits(q: np.ndarray, symbols: np.ndarray, precision: int = PRECISION) -> float:
    """Ideal code length in bits of ``symbols`` ``(B,)`` under tables ``q`` ``(B, K)``: ``sum -log2(q / 2^P)``."""
    picked = np.asarray(q)[np.arange(len(symbols)), np.asarray(symbols)]
    return float(precision * len(symbols) - np.log2(picked.astype(np.float64)).sum())
