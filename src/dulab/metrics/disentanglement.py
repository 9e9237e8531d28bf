"""Disentanglement scores from known generating factors.

The mutual information gap (MIG) measures, for each ground-truth factor ``v_k``, how much more one latent
dimension knows about it than any other: ``MIG = mean_k (I(z_(1); v_k) - I(z_(2); v_k)) / H(v_k)`` with
``z_(1)``, ``z_(2)`` the two code dimensions of highest mutual information with ``v_k``. It is 1 when each factor is
copied by exactly one code dimension and no other dimension carries information about it, 0 when the code is
independent of the factors, or when two dimensions share a factor equally. Mutual information is estimated from
a histogram of each code dimension (equal-width bins over its range, as the discretised estimator of Chen et al.
and of ``disentanglement_lib``), in nats.

References:
    Chen, Li, Grosse, Duvenaud. "Isolating Sources of Disentanglement in Variational Autoencoders",
    NeurIPS 2018, arXiv:1802.04942 (section 5, eq. 8).
"""

from __future__ import annotations

import torch

__all__ = ["discretize", "discrete_mutual_information", "mutual_information_matrix", "mig"]


def discretize(codes: torch.Tensor, num_bins: int = 20) -> torch.Tensor:
    """Equal-width histogram bins of each column: ``(N, J)`` float -> ``(N, J)`` int64 in ``[0, num_bins)``."""
    codes = codes.double()
    lo, hi = codes.min(0).values, codes.max(0).values
    width = (hi - lo).clamp(min=1e-12) / num_bins
    return ((codes - lo) / width).floor().clamp(0, num_bins - 1).long()


def discrete_mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    """``I(a; b)`` in nats from the empirical joint of two ``(N,)`` int64 label vectors (plug-in estimate)."""
    _, a = torch.unique(a, return_inverse=True)
    _, b = torch.unique(b, return_inverse=True)
    joint = torch.zeros(int(a.max()) + 1, int(b.max()) + 1, dtype=torch.float64)
    joint.index_put_((a, b), torch.ones(len(a), dtype=torch.float64), accumulate=True)
    joint /= len(a)
    pa, pb = joint.sum(1, keepdim=True), joint.sum(0, keepdim=True)
    nz = joint > 0
    return float((joint[nz] * (joint[nz] / (pa * pb).expand_as(joint)[nz]).log()).sum())


def mutual_information_matrix(codes: torch.Tensor, factors: torch.Tensor, num_bins: int = 20) -> torch.Tensor:
    """``I(z_j; v_k)`` for every code dimension j and factor k: ``(J, K)`` float64 nats.

    Args:
        codes: ``(N, J)`` float codes (e.g. posterior means).
        factors: ``(N, K)`` int64 factor values.
        num_bins: histogram bins per code dimension.
    """
    binned = discretize(codes, num_bins)
    factors = torch.as_tensor(factors).long()
    return torch.tensor([[discrete_mutual_information(binned[:, j], factors[:, k]) for k in range(factors.shape[1])]
                         for j in range(binned.shape[1])], dtype=torch.float64)


def mig(codes: torch.Tensor, factors: torch.Tensor, *, num_bins: int = 20, per_factor: bool = False):
    """The mutual information gap (Chen et al. 2018, eq. 8).

    Args:
        codes: ``(N, J)`` float, J >= 2.
        factors: ``(N, K)`` int64; factors with a single value (zero entropy) are left out.
        num_bins: histogram bins per code dimension.
        per_factor: also return the normalised gap of each kept factor.
    Returns:
        MIG in [0, 1] (a float), or ``(mig, {factor index: gap})`` with ``per_factor``.
    """
    codes, factors = torch.as_tensor(codes), torch.as_tensor(factors).long()
    if codes.ndim != 2 or codes.shape[1] < 2:
        raise ValueError(f"mig needs codes of shape (N, J) with J >= 2, got {tuple(codes.shape)}")
    if factors.ndim != 2 or len(factors) != len(codes):
        raise ValueError(f"factors must be (N, K) with N = {len(codes)}, got {tuple(factors.shape)}")
    mi = mutual_information_matrix(codes, factors, num_bins)  # (J, K)
    gaps = {}
    for k in range(factors.shape[1]):
        entropy = discrete_mutual_information(factors[:, k], factors[:, k])  # I(v; v) = H(v)
        if entropy <= 0:
            continue
        top = mi[:, k].sort(descending=True).values
        gaps[k] = float((top[0] - top[1]) / entropy)
    if not gaps:
        raise ValueError("every factor is constant: MIG is undefined")
    score = sum(gaps.values()) / len(gaps)
    return (score, gaps) if per_factor else score
