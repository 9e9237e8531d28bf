"""Representation probes: how much label information frozen features carry.

``linear_probe`` fits a multinomial logistic regression on standardised features (scikit-learn's
``LogisticRegression``, L2, lbfgs: deterministic). ``knn_accuracy`` is the weighted k-nearest-neighbour classifier of
"Unsupervised Feature Learning via Non-Parametric Instance Discrimination", Wu, Xiong, Yu, Lin, 2018,
arXiv:1805.01978: cosine similarity, the top k neighbours vote with weight ``exp(sim / temperature)``.
``probe_suite`` runs both for an encoder and beside it for baselines (raw pixels, a randomly initialised encoder).

Training examples labelled -1 (the data layer's "unlabelled" marker, e.g. from ``labels_per_class=N``) are left out
of the fit; test examples labelled -1 are left out of the accuracy.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from dulab.errors import UserError

__all__ = ["linear_probe", "knn_accuracy", "probe_suite"]


def _labelled(name: str, features, y, *, need_classes: bool) -> tuple[torch.Tensor, torch.Tensor]:
    features, y = torch.as_tensor(features), torch.as_tensor(y)
    if features.dim() != 2:
        raise UserError(f"{name} features must be (N, F), got shape {tuple(features.shape)}")
    if y.dim() != 1 or len(y) != len(features):
        raise UserError(f"{name} labels must be (N,) with N = {len(features)}, got shape {tuple(y.shape)}")
    keep = y != -1
    features, y = features[keep].double(), y[keep].long()
    if (y < 0).any():
        raise UserError(f"{name} labels must be class indices >= 0 (or -1 for unlabelled)")
    if need_classes and y.unique().numel() < 2:
        raise UserError(f"{name} has {y.unique().numel()} labelled class(es) after dropping -1 labels; "
                        "a probe needs at least 2")
    if not need_classes and len(y) == 0:
        raise UserError(f"{name} has no labelled examples (all labels are -1)")
    return features, y


def _check_widths(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise UserError(f"train and test features differ in width: {a.shape[1]} vs {b.shape[1]}")


def linear_probe(train_features, train_y, test_features, test_y, *, C: float = 1.0, max_iter: int = 1000) -> float:
    """Test accuracy of a multinomial logistic regression fitted on frozen features.

    Features are standardised with the training mean and std (constant features are left centred, not scaled).

    Args:
        train_features: ``(N, F)``; train_y: ``(N,)`` class indices, -1 for unlabelled (ignored).
        test_features: ``(M, F)``; test_y: ``(M,)``.
        C: inverse L2 regularisation strength (scikit-learn's convention).
        max_iter: lbfgs iterations.
    Returns:
        Accuracy in [0, 1] on the labelled test examples.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    xtr, ytr = _labelled("train", train_features, train_y, need_classes=True)
    xte, yte = _labelled("test", test_features, test_y, need_classes=False)
    _check_widths(xtr, xte)
    mean, std = xtr.mean(0), xtr.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    xtr, xte = ((xtr - mean) / std).numpy(), ((xte - mean) / std).numpy()
    clf = LogisticRegression(C=C, max_iter=max_iter)  # lbfgs: multinomial for >2 classes, deterministic
    with warnings.catch_warnings():
        # Not converging within max_iter still gives a usable probe; the caller chose max_iter.
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(xtr, ytr.numpy())
    return float(np.mean(clf.predict(xte) == yte.numpy()))


def knn_accuracy(train_features, train_y, test_features, test_y, *, k: int = 20, temperature: float = 0.07,
                 batch_size: int = 1024) -> float:
    """Test accuracy of the temperature-weighted cosine k-NN classifier (Wu et al. 2018, Sec. 3.4).

    For a test point with cosine similarities ``s_i`` to its k most similar training points, class ``c`` scores
    ``sum_i exp(s_i / temperature) [y_i = c]``; the prediction is the top class (ties: the smaller index).

    Args:
        train_features: ``(N, F)``; train_y: ``(N,)`` class indices, -1 for unlabelled (ignored).
        test_features: ``(M, F)``; test_y: ``(M,)``.
        k: neighbours; clipped to the number of labelled training examples.
        temperature: the softness of the vote (0.07 in the paper).
        batch_size: test rows per similarity block.
    Returns:
        Accuracy in [0, 1] on the labelled test examples.
    """
    if k < 1 or temperature <= 0:
        raise UserError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    xtr, ytr = _labelled("train", train_features, train_y, need_classes=True)
    xte, yte = _labelled("test", test_features, test_y, need_classes=False)
    _check_widths(xtr, xte)
    k = min(k, len(ytr))
    xtr = torch.nn.functional.normalize(xtr, dim=1)
    xte = torch.nn.functional.normalize(xte, dim=1)
    num_classes = int(max(ytr.max(), yte.max())) + 1
    correct = 0
    for start in range(0, len(xte), batch_size):
        sim = xte[start:start + batch_size] @ xtr.T  # (b, N)
        top_sim, top_idx = sim.topk(k, dim=1)  # (b, k)
        votes = torch.zeros(len(sim), num_classes, dtype=torch.float64)
        # Shifting by the row's top similarity rescales a row's weights alike (same vote) and keeps exp finite
        # at small temperatures (exp(1 / 0.001) overflows float64).
        weights = ((top_sim - top_sim[:, :1]) / temperature).exp()
        votes.scatter_add_(1, ytr[top_idx], weights)
        correct += int((votes.argmax(1) == yte[start:start + batch_size]).sum())
    return correct / len(yte)


@torch.inference_mode()
def _encode(fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    out = [torch.as_tensor(fn(x[start:start + batch_size])).flatten(1).double().cpu()
           for start in range(0, len(x), batch_size)]
    return torch.cat(out)


def probe_suite(encode_fn, train_ds, test_ds, *, baseline_encoders: dict | None = None, batch_size: int = 500,
                k: int = 20) -> dict:
    """Linear-probe and k-NN accuracy of an encoder, with raw pixels and any extra encoders as baselines.

    Args:
        encode_fn: ``x -> (B, F)`` features, called on batches of ``train_ds.x`` / ``test_ds.x`` under inference mode.
        train_ds, test_ds: labelled dulab datasets (``.x``, ``.y``); training labels of -1 are ignored.
        baseline_encoders: extra ``name -> encode_fn`` (e.g. ``"random_init"``: an untrained copy of the model).
        batch_size: examples per encoder call.
        k: neighbours for the k-NN probe.
    Returns:
        A flat dict: ``linear_probe`` and ``knn_accuracy`` for the encoder, and ``"<name>/linear_probe"``,
        ``"<name>/knn_accuracy"`` for ``raw_pixels`` (flattened ``x`` as float) and each baseline encoder.
    """
    for name, ds in (("train", train_ds), ("test", test_ds)):
        if getattr(ds, "y", None) is None:
            raise UserError(f"probe_suite needs a labelled {name} dataset; {getattr(ds, 'name', ds)!r} has no labels")
    encoders = {"": encode_fn, "raw_pixels/": lambda x: x.flatten(1).float()}
    for name, fn in (baseline_encoders or {}).items():
        if name == "raw_pixels":
            raise UserError("baseline name 'raw_pixels' is reserved for the raw-pixel baseline")
        encoders[f"{name}/"] = fn
    result = {}
    for prefix, fn in encoders.items():
        ftr, fte = _encode(fn, train_ds.x, batch_size), _encode(fn, test_ds.x, batch_size)
        result[prefix + "linear_probe"] = linear_probe(ftr, train_ds.y, fte, test_ds.y)
        result[prefix + "knn_accuracy"] = knn_accuracy(ftr, train_ds.y, fte, test_ds.y, k=k)
    return result
