"""Evaluation metrics: likelihood (nll, bits/dim)."""

from dulab.metrics.likelihood import bits_per_dim, dataset_nll

__all__ = ["bits_per_dim", "dataset_nll"]
