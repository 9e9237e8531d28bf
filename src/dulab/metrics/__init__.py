"""Evaluation metrics: likelihood (nll, bits/dim), sample quality (FID, KID, IS, precision/recall), probes."""

from dulab.metrics.likelihood import bits_per_dim, dataset_nll
from dulab.metrics.ood import auroc
from dulab.metrics.probe import knn_accuracy, linear_probe, probe_suite
from dulab.metrics.sample_quality import fid, frechet_distance, inception_score, kid, precision_recall, sample_quality

__all__ = ["bits_per_dim", "dataset_nll", "frechet_distance", "fid", "kid", "inception_score", "precision_recall",
           "sample_quality", "linear_probe", "knn_accuracy", "probe_suite", "extractor_for", "auroc"]


def __getattr__(name):
    # Imported on first use: the extractors load weights and are not needed by `import dulab`.
    if name == "extractor_for":
        from dulab.metrics.extractors import extractor_for

        return extractor_for
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
