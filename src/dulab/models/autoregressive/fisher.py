"""Fisher-score features: a representation of an example read off a trained likelihood model.

The Fisher score of ``x`` is the gradient of ``log p_theta(x)`` with respect to the parameters ``theta``; examples
the model "explains the same way" get similar scores. The raw score has one entry per parameter, so it is
projected to a fixed dimension with a seeded Gaussian random matrix (a Johnson-Lindenstrauss projection, which
keeps inner products on average). We do not whiten by the inverse Fisher information (the Fisher kernel proper):
``fisher_interpolate`` standardises each projected feature over a reference set instead, a diagonal stand-in.

References:
    Jaakkola, Haussler. "Exploiting Generative Models in Discriminative Classifiers", NeurIPS 1998.
    Abbeel, Chen, Ho, Srinivas et al. "CS294-158 Deep Unsupervised Learning", UC Berkeley, 2020 (Fisher scores of
    PixelCNN as features, lecture 3).
"""

from __future__ import annotations

import math

import torch

__all__ = ["fisher_score", "fisher_interpolate"]


def _per_example_grads(model, x, context, params):
    """``[(B, n_j) for each parameter j]``: ``d log p(x_b) / d theta_j`` flattened, one backward per example."""
    rows = []
    for b in range(x.shape[0]):
        ctx = None if context is None else context[b:b + 1]
        with torch.enable_grad():
            lp = model.log_prob(x[b:b + 1], context=ctx).sum()
            grads = torch.autograd.grad(lp, params, allow_unused=True)
        rows.append([torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1) for p, g in zip(params, grads)])
    return [torch.stack(col) for col in zip(*rows)]


def fisher_score(model, x: torch.Tensor, context: torch.Tensor | None = None, *, num_features: int = 256,
                 seed: int = 0, chunk: int = 64) -> torch.Tensor:
    """Projected Fisher scores ``R^T d log p(x) / d theta`` for each example.

    The model is evaluated in eval mode (no dropout; MADE ensembles its masks). ``R`` is ``(P, num_features)``
    with i.i.d. ``N(0, 1 / num_features)`` entries, generated per parameter tensor from ``seed`` (never stored),
    so the same model and seed always give the same feature space.

    Args:
        model: a density model with ``log_prob``.
        x: ``(B, *event)`` examples.
        context: class labels ``(B,)`` for conditional models.
        num_features: F, the projected dimension.
        seed: seed of the projection.
        chunk: examples whose gradients are held at once (memory ``chunk * P`` floats).
    Returns:
        ``(B, F)`` features, in the parameters' dtype.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, x.shape[0], chunk):
            xb = x[start:start + chunk]
            cb = None if context is None else torch.as_tensor(context)[start:start + chunk]
            grads = _per_example_grads(model, xb, cb, params)
            feats = torch.zeros(xb.shape[0], num_features, dtype=grads[0].dtype, device=grads[0].device)
            for j, g in enumerate(grads):
                gen = torch.Generator().manual_seed(seed * 1_000_003 + j)
                R = torch.randn(g.shape[1], num_features, generator=gen, dtype=torch.float64)
                feats += g @ R.to(g) / math.sqrt(num_features)
            out.append(feats)
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def fisher_interpolate(model, x0: torch.Tensor, x1: torch.Tensor, bank: torch.Tensor, steps: int = 8, *,
                       context: torch.Tensor | None = None, bank_context: torch.Tensor | None = None,
                       num_features: int = 256, seed: int = 0) -> dict:
    """Interpolate linearly between the Fisher features of two examples; name the nearest example of a bank.

    Likelihood models have no latent space to walk in; the Fisher score gives one. Features are standardised
    per coordinate with the bank's mean and standard deviation, then the point ``(1 - a) f(x0) + a f(x1)`` is
    matched to its Euclidean nearest neighbour in the bank for ``steps`` values of ``a`` in [0, 1].

    Args:
        model: a density model with ``log_prob``.
        x0, x1: ``(*event)`` the two end points.
        bank: ``(N, *event)`` candidates (e.g. training images).
        steps: number of interpolation points (>= 2).
        context: labels ``(2,)`` for ``x0, x1`` (conditional models); bank_context: ``(N,)``.
        num_features, seed: of the projection (see ``fisher_score``).
    Returns:
        ``{"alphas": (steps,), "features": (steps, F), "nearest": (steps,) int64 indices into bank,
        "distances": (steps,)}``.
    """
    ends = fisher_score(model, torch.stack([x0, x1]), context, num_features=num_features, seed=seed)
    feats = fisher_score(model, bank, bank_context, num_features=num_features, seed=seed)
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-12)
    ends, feats = (ends - mean) / std, (feats - mean) / std
    alphas = torch.linspace(0, 1, steps, dtype=feats.dtype, device=feats.device)
    path = (1 - alphas)[:, None] * ends[0] + alphas[:, None] * ends[1]  # (steps, F)
    dist = torch.cdist(path, feats)  # (steps, N)
    best = dist.min(1)
    return {"alphas": alphas, "features": path, "nearest": best.indices, "distances": best.values}
