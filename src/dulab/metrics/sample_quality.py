"""Sample-quality metrics: Fréchet distance (FID), kernel distance (KID), Inception Score, precision/recall.

All four compare feature vectors of generated and real examples from a fixed network (``extractor_for`` ships one per
embedded dataset). References:

* FID: "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", Heusel, Ramsauer,
  Unterthiner, Nessler, Hochreiter, 2017, arXiv:1706.08500.
* KID: "Demystifying MMD GANs", Bińkowski, Sutherland, Arbel, Gretton, 2018, arXiv:1801.01401.
* IS: "Improved Techniques for Training GANs", Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen, 2016,
  arXiv:1606.03498.
* Precision/recall: "Improved Precision and Recall Metric for Assessing Generative Models", Kynkäänniemi, Karras,
  Laine, Lehtinen, Aila, 2019, arXiv:1904.06991.

Why not torchmetrics: its FID/KID/IS accept a custom ``feature=`` module and install without torchvision, and the
tests use it as a parity reference (a dev dependency). The runtime code is our own because (1) its FID takes
``eigvals`` of the non-symmetric product ``sigma1 @ sigma2``, whose eigenvalues come back complex or slightly
negative when a covariance is singular (more features than samples, common with small sample sets), whereas the
symmetric formulation below stays real and non-negative by construction; (2) its metrics are stateful ``Metric``
objects that draw KID subsets and IS shuffles from the global RNG, while dulab's functions are pure and take
``generator=``; (3) precision/recall is not in it. The code is short and each number is tested against a reference.
"""

from __future__ import annotations

import warnings

import torch

from dulab.errors import UserError

__all__ = ["frechet_distance", "fid", "kid", "inception_score", "precision_recall", "sample_quality",
           "upsampling_factor"]

_KID_SEED = 0  # default seed of the KID subsets, so that repeated calls agree
_CHUNK = 1024  # rows of a distance block in precision/recall: 1024 x 10k float64 = 80 MB


def _check_features(name: str, x: torch.Tensor, min_rows: int = 2) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.dim() != 2:
        raise UserError(f"{name} must be a 2-D (N, F) tensor of features, got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise UserError(f"{name} has {x.shape[0]} rows; this metric needs at least {min_rows}")
    if not torch.is_floating_point(x):
        x = x.double()
    return x


def _same_width(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise UserError(f"feature sets differ in width: {a.shape[1]} vs {b.shape[1]} features")


def _clip_eigenvalues(w: torch.Tensor) -> torch.Tensor:
    """Eigenvalues of a PSD matrix with those below round-off set to 0.

    eigh returns the zero eigenvalues of a singular matrix as +-(F eps ||S||); their square roots (~1e-8 each) would
    add up to a visible bias, so eigenvalues under that level (the rank tolerance of ``matrix_rank``) count as 0.
    """
    tol = w.abs().max() * w.shape[-1] * torch.finfo(w.dtype).eps
    return torch.where(w > tol, w, torch.zeros_like(w))


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix, eigenvalues clipped at 0."""
    w, v = torch.linalg.eigh(s)
    return (v * _clip_eigenvalues(w).sqrt()) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2))``.

    The last trace is computed as ``tr((S1^(1/2) S2 S1^(1/2))^(1/2))``: ``S1 S2`` and ``S1^(1/2) S2 S1^(1/2)`` have
    the same eigenvalues (``AB`` and ``BA`` share their spectrum, with ``A = S1^(1/2)``, ``B = S1^(1/2) S2``), but the
    second is symmetric PSD, so ``eigh`` gives real eigenvalues, and clipping its round-off negatives (and values
    below round-off) at 0 only removes noise. ``scipy.linalg.sqrtm(S1 @ S2)`` of a non-symmetric product instead
    returns complex parts and can fail or lose accuracy when a covariance is singular (more features than samples).

    Args:
        mu1, mu2: means, ``(F,)``.
        sigma1, sigma2: covariances, ``(F, F)``, symmetric positive semi-definite.
    Returns:
        The squared Fréchet distance (a Python float, >= 0 up to round-off).
    """
    mu1, mu2 = (torch.as_tensor(m, dtype=torch.float64) for m in (mu1, mu2))
    sigma1, sigma2 = (torch.as_tensor(s, dtype=torch.float64) for s in (sigma1, sigma2))
    if mu1.dim() != 1 or mu1.shape != mu2.shape:
        raise UserError(f"means must be (F,) vectors of one size, got {tuple(mu1.shape)} and {tuple(mu2.shape)}")
    f = mu1.shape[0]
    if sigma1.shape != (f, f) or sigma2.shape != (f, f):
        raise UserError(f"covariances must be ({f}, {f}), got {tuple(sigma1.shape)} and {tuple(sigma2.shape)}")
    # Symmetrise: a covariance computed in floating point is symmetric only up to round-off, and eigh reads one half.
    sigma1 = (sigma1 + sigma1.T) / 2
    sigma2 = (sigma2 + sigma2.T) / 2
    root1 = _psd_sqrt(sigma1)
    inner = root1 @ sigma2 @ root1
    inner = (inner + inner.T) / 2
    tr_covmean = _clip_eigenvalues(torch.linalg.eigvalsh(inner)).sqrt().sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * tr_covmean)


def _mean_cov(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (x.shape[0] - 1)  # unbiased covariance, as np.cov


def fid(features_a, features_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID when the features are Inception's).

    Args:
        features_a, features_b: ``(N_a, F)`` and ``(N_b, F)`` feature tensors (at least 2 rows each).
    Returns:
        The squared Fréchet distance between ``N(mean_a, cov_a)`` and ``N(mean_b, cov_b)`` (unbiased covariances).
    """
    a = _check_features("features_a", features_a)
    b = _check_features("features_b", features_b)
    _same_width(a, b)
    return frechet_distance(*_mean_cov(a), *_mean_cov(b))


def _poly_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # k(x, y) = (x.y / F + 1)^3, the kernel of Bińkowski et al. (2018), Sec. 5 ("KID"); summed in float64.
    return (x @ y.T / x.shape[1] + 1).double().pow(3)


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    m = x.shape[0]
    k_xx, k_yy, k_xy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    # Unbiased MMD^2 (Gretton et al. 2012, Lemma 6): within-set sums leave out the diagonal k(x_i, x_i).
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.mean()


def kid(features_a, features_b, *, num_subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """Kernel Inception Distance: the unbiased MMD^2 with a cubic polynomial kernel, averaged over random subsets.

    Each subset draws ``subset_size`` rows of each set without replacement. The kernel products run in the input's
    floating dtype (float32 features stay float32 for speed) and the sums in float64.

    Args:
        features_a, features_b: ``(N_a, F)`` and ``(N_b, F)`` feature tensors.
        num_subsets: number of subsets.
        subset_size: rows per subset; clipped (with a warning) to ``min(N_a, N_b)``.
        generator: source of the subsets; default a fixed seed, so the result is deterministic.
    Returns:
        ``(mean, std)`` of the per-subset estimates (std with ddof 0, as in Bińkowski et al.'s code). The mean is
        unbiased: its expectation is 0 when both sets come from one distribution, so it can be slightly negative.
    """
    a = _check_features("features_a", features_a)
    b = _check_features("features_b", features_b)
    _same_width(a, b)
    if num_subsets < 1:
        raise UserError(f"num_subsets must be >= 1, got {num_subsets}")
    if subset_size < 2:
        raise UserError(f"subset_size must be >= 2 (the unbiased estimator needs pairs), got {subset_size}")
    n = min(a.shape[0], b.shape[0])
    if subset_size > n:
        warnings.warn(f"kid: subset_size {subset_size} is larger than the smaller feature set ({n} rows); "
                      f"using subset_size={n}", stacklevel=2)
        subset_size = n
    if a.dtype != b.dtype:
        a, b = a.double(), b.double()
    g = generator if generator is not None else torch.Generator().manual_seed(_KID_SEED)
    values = torch.empty(num_subsets, dtype=torch.float64)
    for i in range(num_subsets):
        ia = torch.randperm(a.shape[0], generator=g)[:subset_size]
        ib = torch.randperm(b.shape[0], generator=g)[:subset_size]
        values[i] = _mmd2_unbiased(a[ia], b[ib])
    return float(values.mean()), float(values.std(correction=0))


def inception_score(probs, *, splits: int = 10) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))``, computed on ``splits`` consecutive parts.

    As in Salimans et al. (2016), ``p(y)`` is the mean of ``p(y|x)`` within each part; the score is the mean over
    parts and its spread the std over parts (ddof 0). It ranges from 1 (every prediction the same) to K (confident
    and balanced over K classes).

    Args:
        probs: ``(N, K)`` class probabilities (rows summing to 1: pass ``softmax(logits)``).
        splits: number of parts; each needs at least one row.
    Returns:
        ``(mean, std)`` over the parts.
    """
    p = _check_features("probs", probs, min_rows=1).double()
    if splits < 1:
        raise UserError(f"splits must be >= 1, got {splits}")
    if p.shape[0] < splits:
        raise UserError(f"inception_score needs at least {splits} rows (one per split), got {p.shape[0]}")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(p.shape[0], dtype=p.dtype), atol=1e-4):
        raise UserError("probs must be class probabilities (non-negative rows summing to 1); pass softmax(logits)")
    scores = []
    for part in torch.tensor_split(p, splits):
        marginal = part.mean(0, keepdim=True)
        # xlogy: 0 log 0 = 0, so classes a sample gives no mass to contribute nothing.
        kl = (torch.xlogy(part, part) - torch.xlogy(part, marginal)).sum(1)
        scores.append(kl.mean().exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(correction=0))


def _sq_dists(x: torch.Tensor, y: torch.Tensor, y_sq: torch.Tensor) -> torch.Tensor:
    # ||x - y||^2 = ||x||^2 + ||y||^2 - 2 x.y, clamped at 0 against round-off.
    return ((x * x).sum(1, keepdim=True) + y_sq - 2 * x @ y.T).clamp_min(0)


def _knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Squared distance from each row to its k-th nearest other row (row itself excluded: the (k+1)-th value)."""
    x_sq = (x * x).sum(1)
    out = torch.empty(x.shape[0], dtype=x.dtype)
    for start in range(0, x.shape[0], _CHUNK):
        d = _sq_dists(x[start:start + _CHUNK], x, x_sq)
        out[start:start + _CHUNK] = d.kthvalue(k + 1, dim=1).values
    return out


def precision_recall(features_real, features_fake, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019): coverage by k-nearest-neighbour balls.

    Each real point gets a ball whose radius is the distance to its k-th nearest real neighbour; precision is the
    fraction of fake points inside at least one real ball. Recall swaps the roles: the fraction of real points
    inside at least one fake ball. Distances are computed in blocks of rows, so 10k x 10k fits in ~100 MB.

    Args:
        features_real: ``(N_r, F)``, features_fake: ``(N_f, F)``; each needs more than ``k`` rows.
        k: the neighbour that sets the radius (3 in the paper).
    Returns:
        ``(precision, recall)``, each in [0, 1].
    """
    if k < 1:
        raise UserError(f"k must be >= 1, got {k}")
    real = _check_features("features_real", features_real, min_rows=k + 1)
    fake = _check_features("features_fake", features_fake, min_rows=k + 1)
    _same_width(real, fake)
    if real.dtype != fake.dtype:
        real, fake = real.double(), fake.double()
    r_real, r_fake = _knn_radii(real, k), _knn_radii(fake, k)
    fake_sq = (fake * fake).sum(1)
    fake_covered = torch.zeros(fake.shape[0], dtype=torch.bool)
    real_covered = torch.empty(real.shape[0], dtype=torch.bool)
    # One pass over the real-fake distance matrix answers both questions, one block of real rows at a time.
    for start in range(0, real.shape[0], _CHUNK):
        d = _sq_dists(real[start:start + _CHUNK], fake, fake_sq)  # (chunk, N_f)
        fake_covered |= (d <= r_real[start:start + _CHUNK, None]).any(0)
        real_covered[start:start + _CHUNK] = (d <= r_fake[None, :]).any(1)
    return float(fake_covered.double().mean()), float(real_covered.double().mean())


@torch.inference_mode()
def upsampling_factor(shape, input_shape, num_levels: int | None = None,
                      extractor_levels: int | None = None) -> int | None:
    """The integer factor by which images of ``shape`` ``(C, H, W)`` are enlarged (nearest neighbour) to fit an
    extractor built for ``input_shape``: 1 when they already fit, ``None`` when no factor does (other channels, a
    non-integer ratio, different level counts, a smaller input).

    A smaller rendering of a dataset (``sprites`` with ``size=32``) is so scored by the extractor trained at its
    full size: every pixel becomes an ``f x f`` block, in samples and reference alike, so the two sets are compared
    on equal terms (the numbers are on that scale, not on the full-size one: measure the floor the same way).
    """
    shape, input_shape = tuple(shape), tuple(input_shape)
    if shape == input_shape:
        return 1
    if (len(shape) != 3 or len(input_shape) != 3 or shape[0] != input_shape[0]
            or (num_levels is not None and extractor_levels is not None and num_levels != extractor_levels)):
        return None
    (_, h, w), (_, H, W) = shape, input_shape
    if h <= 0 or w <= 0 or H % h or W % w or H // h != W // w or H // h < 2:
        return None
    return H // h


def _fit(extractor, x: torch.Tensor) -> torch.Tensor:
    """``x`` enlarged to the extractor's ``input_shape`` where an integer factor fits (see ``upsampling_factor``)."""
    input_shape = getattr(extractor, "input_shape", None)
    if input_shape is None or tuple(x.shape[1:]) == tuple(input_shape):
        return x
    f = upsampling_factor(x.shape[1:], input_shape)
    if f is None:
        raise UserError(f"the extractor takes images of shape {tuple(input_shape)}, these are {tuple(x.shape[1:])} "
                        f"(no integer enlargement fits): pass an extractor for this shape")
    return x.repeat_interleave(f, dim=-2).repeat_interleave(f, dim=-1)


def _extract(extractor, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(iter(extractor.parameters()), torch.empty(0)).device
    feats, logits = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = _fit(extractor, x[start:start + batch_size].to(device))
        if hasattr(extractor, "features_and_logits"):  # one network pass for both (shipped extractors)
            f, lg = extractor.features_and_logits(xb)
        else:
            f, lg = extractor.features(xb), extractor(xb)
        feats.append(f.float().cpu())
        logits.append(lg.float().cpu())
    return torch.cat(feats), torch.cat(logits)


def sample_quality(samples, reference, *, extractor=None, split: str = "test", generator: torch.Generator | None = None,
                   batch_size: int = 500, kid_subsets: int = 100, kid_subset_size: int = 1000,
                   is_splits: int = 10, k: int = 3) -> dict:
    """Every sample-quality metric of ``samples`` against a reference dataset, in one extractor pass per set.

    Args:
        samples: ``(N, *spec.shape)`` in the reference data's own representation (int64 levels for discrete images).
        reference: a dataset name (its ``split`` is loaded) or a dulab ``TensorDataset``.
        extractor: a module with ``forward(x) -> logits (B, K)`` and ``features(x) -> (B, F)``; default
            ``extractor_for(reference name)``. An extractor with an ``input_shape`` an integer multiple of the
            images' height and width gets both sets enlarged by that factor (nearest neighbour,
            ``upsampling_factor``), e.g. ``sprites`` at ``size=32`` scored by the 64x64 sprites extractor.
        split: which split of a named reference to load.
        generator: source of the KID subsets (default a fixed seed).
        batch_size: examples per extractor call.
        kid_subsets, kid_subset_size, is_splits, k: passed to ``kid``, ``inception_score`` and
            ``precision_recall``; here ``kid_subset_size`` is clipped to half the smaller set without a warning
            (subsets as large as a whole set would all be that set, and ``kid_std`` would read 0).
    Returns:
        ``{"fid", "kid", "kid_std", "inception_score", "inception_score_std", "precision", "recall",
        "num_samples", "num_reference", "upsampling"}``; precision and recall treat the reference as real;
        ``upsampling`` is the enlargement factor applied before the extractor (1: none).
    """
    from dulab.data.base import TensorDataset

    if isinstance(reference, str):
        import dulab

        ref = dulab.load_dataset(reference, split)
    elif isinstance(reference, TensorDataset):
        ref = reference
    else:
        raise UserError(f"reference must be a dataset name or a dulab TensorDataset, got {type(reference).__name__}")
    samples = torch.as_tensor(samples)
    if tuple(samples.shape[1:]) != tuple(ref.spec.shape):
        raise UserError(f"samples have shape {tuple(samples.shape[1:])} per example, "
                        f"the reference {ref.name!r} holds {tuple(ref.spec.shape)}")
    if ref.spec.kind == "discrete":
        if torch.is_floating_point(samples):
            raise UserError(f"{ref.name!r} is discrete: pass samples as integer levels in [0, {ref.spec.num_levels})")
        samples = samples.long()
    need = max(is_splits, k + 1, 2)
    for what, n in (("samples", samples.shape[0]), ("reference examples", len(ref))):
        if n < need:
            raise UserError(f"sample_quality needs at least {need} {what}, got {n}")
    if extractor is None:
        from dulab.metrics.extractors import extractor_for

        extractor = extractor_for(ref.name, shape=ref.spec.shape)
    was_training = extractor.training
    extractor.eval()
    try:
        f_fake, logits = _extract(extractor, samples, batch_size)
        f_real, _ = _extract(extractor, ref.x, batch_size)
    finally:
        extractor.train(was_training)
    kid_mean, kid_std = kid(f_real, f_fake, num_subsets=kid_subsets,
                            subset_size=max(2, min(kid_subset_size, len(f_real) // 2, len(f_fake) // 2)),
                            generator=generator)
    is_mean, is_std = inception_score(logits.double().softmax(1), splits=is_splits)
    precision, recall = precision_recall(f_real, f_fake, k=k)
    result = {"fid": fid(f_real, f_fake), "kid": kid_mean, "kid_std": kid_std, "inception_score": is_mean,
              "inception_score_std": is_std, "precision": precision, "recall": recall,
              "num_samples": int(samples.shape[0]), "num_reference": len(ref)}
    input_shape = getattr(extractor, "input_shape", None)
    result["upsampling"] = 1 if input_shape is None else upsampling_factor(samples.shape[1:], input_shape)
    return result
