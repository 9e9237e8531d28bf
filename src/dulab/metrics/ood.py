"""Separation of in- and out-of-distribution scores: the area under the ROC curve (AUROC).

``auroc(scores_in, scores_out)`` is the probability that a random out-of-distribution example gets a higher
anomaly score than a random in-distribution one, ties counting one half (the Mann-Whitney U statistic divided
by ``N_in * N_out``): 1 separates perfectly, 0.5 is chance, below 0.5 ranks the outliers as *more* normal
(the failure of raw likelihood on simple data, Nalisnick et al. 2019). Computed from average ranks in
``O(N log N)``.

References:
    Hanley, McNeil. "The meaning and use of the area under a receiver operating characteristic (ROC) curve",
    Radiology, 1982.
"""

from __future__ import annotations

import torch

from dulab.errors import UserError

__all__ = ["auroc"]


def auroc(scores_in, scores_out) -> float:
    """AUROC of anomaly scores (higher = more out-of-distribution).

    Args:
        scores_in: ``(N_in,)`` scores of in-distribution examples.
        scores_out: ``(N_out,)`` scores of out-of-distribution examples.
    Returns:
        ``P(s_out > s_in) + P(s_out == s_in) / 2`` over all pairs, in [0, 1].
    """
    a = torch.as_tensor(scores_in, dtype=torch.float64).reshape(-1)
    b = torch.as_tensor(scores_out, dtype=torch.float64).reshape(-1)
    if len(a) == 0 or len(b) == 0:
        raise UserError("auroc needs at least one in- and one out-of-distribution score")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise UserError("auroc needs finite scores")
    both = torch.cat([a, b])
    values, inverse, counts = torch.unique(both, return_inverse=True, return_counts=True)
    # average rank (1-based) of each distinct value: ranks first+1 .. first+count share their mean
    first = torch.cumsum(counts, 0) - counts
    mean_rank = first.double() + (counts.double() + 1) / 2
    ranks_out = mean_rank[inverse[len(a):]]
    u = ranks_out.sum() - len(b) * (len(b) + 1) / 2  # pairs (in, out) with out ranked above in, ties 1/2
    return float(u / (len(a) * len(b)))
