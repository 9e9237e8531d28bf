"""Scores of a set of samples against a dataset, for models without a likelihood (score-based and energy-based).

* images with a shipped feature extractor: ``dulab.metrics.sample_quality`` (FID, KID, IS, precision, recall);
* other data (2-D toys, vectors): FID and KID of the raw flattened coordinates, and the energy distance
  (``energy_distance``, Szekely & Rizzo 2013), which unlike FID sees more than the first two moments;
* data with a closed-form density (``true_log_prob``: ``eight_gaussians``, ``checkerboard``, ``gaussians2d``): the
  NLL of the samples under the true density, ``sample_nll = -E_q[log p_true(x)]`` (a cross-entropy; it is not
  bounded below by the true entropy, since samples piled on the modes score better than the data, so read it next
  to ``true_entropy = -E_p[log p_true(x)]`` of the test data and the FID/KID), and ``sample_outside``, the fraction
  of samples where ``p_true = 0`` (the white squares of the checkerboard), which the NLL leaves out.

References:
    Heusel et al. 2017, arXiv:1706.08500 (FID); Binkowski et al. 2018, arXiv:1801.01401 (KID).
    Szekely, Rizzo. "Energy statistics: A class of statistics based on distances", J. Stat. Planning and
    Inference 2013 (the energy distance).
"""

from __future__ import annotations

import math

import torch

__all__ = ["sample_metrics", "energy_distance"]


@torch.no_grad()
def energy_distance(a: torch.Tensor, b: torch.Tensor, *, chunk: int = 2048) -> float:
    """The (squared) energy distance ``2 E||X - Y|| - E||X - X'|| - E||Y - Y'||`` of two sample sets (float64).

    The V-statistic over all pairs (the diagonal included), i.e. the energy distance between the two empirical
    distributions: 0 for identical sets, > 0 for any two different empirical distributions (it is a metric on
    distributions with finite first moment, Szekely & Rizzo 2013), in the data's units.

    Args:
        a: ``(N, *event)`` samples; b: ``(M, *event)``; flattened to vectors.
        chunk: rows per block of the pairwise distances (memory).
    """
    a = a.reshape(len(a), -1).double()
    b = b.reshape(len(b), -1).double()

    def mean_dist(u, v):
        return sum(float(torch.cdist(u[i:i + chunk], v).sum()) for i in range(0, len(u), chunk)) / (len(u) * len(v))

    return max(0.0, 2 * mean_dist(a, b) - mean_dist(a, a) - mean_dist(b, b))


@torch.no_grad()
def sample_metrics(samples: torch.Tensor, dataset, *, seed: int = 0) -> dict:
    """Sample-quality numbers of ``samples`` against as many examples of ``dataset`` (seeded choice).

    Args:
        samples: ``(N, *spec.shape)`` in the dataset's representation (int64 levels for discrete data), N >= 4.
        dataset: a dulab ``TensorDataset`` (its ``name`` selects a shipped extractor for images).
        seed: seeds the choice of reference examples and the KID subsets.
    Returns:
        ``fid``, ``kid``, ``kid_std`` (plus ``inception_score``, ``precision``, ``recall`` with an extractor), and
        ``sample_nll``, ``sample_outside``, ``true_entropy`` in nats where the dataset has ``true_log_prob``.
        ``energy_distance`` too where there is no extractor. Non-finite samples give infinite FID/KID (and NLL).
    """
    from dulab.evaluation import has_extractor
    from dulab.metrics.sample_quality import fid, kid, sample_quality

    samples = samples.detach().cpu()
    n = min(len(samples), len(dataset))
    samples = samples[:n]
    out: dict = {}
    if samples.is_floating_point() and not torch.isfinite(samples).all():
        out.update({"fid": math.inf, "kid": math.inf, "kid_std": 0.0, "energy_distance": math.inf})
        if dataset.true_log_prob is not None:
            out.update({"sample_nll": math.inf, "sample_outside": 1.0})
        return out
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n]
    reference = dataset.subset(idx)
    g = torch.Generator().manual_seed(seed)
    if n >= 10 and has_extractor(getattr(dataset, "name", None), dataset.spec):  # IS needs 10 splits
        q = sample_quality(samples, reference, generator=g, kid_subset_size=max(2, n // 2))
        out.update({k: float(q[k]) for k in ("fid", "kid", "kid_std", "inception_score", "precision", "recall")})
    else:
        a, b = reference.x.reshape(n, -1).double(), samples.reshape(n, -1).double()
        kid_mean, kid_std = kid(a, b, subset_size=max(2, n // 2), generator=g)
        out.update({"fid": fid(a, b), "kid": kid_mean, "kid_std": kid_std, "energy_distance": energy_distance(a, b)})
    if dataset.true_log_prob is not None:
        lp = dataset.true_log_prob(samples.double())
        inside = torch.isfinite(lp)
        out["sample_outside"] = float(1.0 - inside.double().mean())
        out["sample_nll"] = float(-lp[inside].mean()) if inside.any() else math.inf
        out["true_entropy"] = float(-dataset.true_log_prob(dataset.x.double()).mean())
    return out
