"""Likelihood metrics: negative log-likelihood in nats and bits per dimension.

``bpd = nll / (D ln 2)`` with D the number of dimensions of one example. For discrete data with K levels, a
uniform model scores ``log2 K`` bits/dim; a model's test bpd below that is what it has learned.
"""

from __future__ import annotations

import math

import torch

__all__ = ["bits_per_dim", "dataset_nll"]


def bits_per_dim(nll_nats, num_dims: int):
    """Nats per example to bits per dimension: ``nll / (D ln 2)``."""
    return nll_nats / (num_dims * math.log(2))


@torch.inference_mode()
def dataset_nll(model, dataset, batch_size: int = 256) -> dict:
    """Mean ``-log_prob`` over a dataset: ``{"nll": nats per example, "bpd": bits per dimension}``."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(iter(model.parameters()), torch.empty(0)).device
    conditional = getattr(model, "is_conditional", False)
    for start in range(0, len(dataset), batch_size):
        x = dataset.x[start:start + batch_size].to(device)
        y = dataset.labels_or_default()[start:start + batch_size].to(device) if conditional else None
        total += float(-model.log_prob(x, context=y).double().sum())
        count += len(x)
    model.train(was_training)
    nll = total / count
    return {"nll": nll, "bpd": bits_per_dim(nll, dataset.spec.num_dims)}
