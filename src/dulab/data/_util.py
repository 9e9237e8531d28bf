"""Helpers shared by the dataset builders: option checks and deterministic train/test cuts.

Private to ``dulab.data``; builders import from here so that no helper is written twice.
"""

from __future__ import annotations

import numpy as np
import torch

from dulab.data.base import TensorDataset, split_indices
from dulab.errors import UserError

__all__ = ["check_split", "require", "positional_range", "shuffled_split", "readonly", "tensor",
           "keep_labels_per_class"]


def check_split(split: str, name: str) -> None:
    """Raise ``UserError`` unless ``split`` is ``"train"`` or ``"test"``."""
    if split not in ("train", "test"):
        raise UserError(f"{name}: split must be 'train' or 'test', got {split!r}")


def require(condition: bool, message: str) -> None:
    """Raise ``UserError(message)`` unless ``condition`` holds (validates user options; never ``assert``)."""
    if not condition:
        raise UserError(message)


def positional_range(n: int, split: str, test_fraction: float, name: str) -> slice:
    """The slice of ``range(n)`` holding ``split`` when the last ``test_fraction`` of ``range(n)`` is the test
    set.

    Used for i.i.d. generated data (any cut is a random cut) and for text (cut by position on purpose).
    Both splits are non-empty.
    """
    check_split(split, name)
    require(n >= 2, f"{name}: need at least 2 examples to make a train and a test split, got {n}")
    n_test = min(max(int(round(n * test_fraction)), 1), n - 1)
    n_train = n - n_test
    return slice(0, n_train) if split == "train" else slice(n_train, n)


def shuffled_split(ds: TensorDataset, split: str, test_fraction: float, seed: int) -> TensorDataset:
    """``split`` of ``ds`` after a deterministic shuffle (``split_indices``); each split keeps an example."""
    check_split(split, ds.name)
    n = len(ds)
    require(0.0 < test_fraction < 1.0, f"{ds.name}: test_fraction must be in (0, 1), got {test_fraction}")
    require(n >= 2, f"{ds.name}: need at least 2 examples to make a train and a test split, got {n}")
    # round(n * f) can be 0 or n for tiny sets; nudge the fraction so both splits keep one example.
    fraction = min(max(test_fraction, 1.0 / n), (n - 1) / n)
    train_idx, test_idx = split_indices(n, fraction, seed)
    return ds.subset(train_idx if split == "train" else test_idx)


def readonly(*arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Mark cached numpy arrays read-only, so a caller cannot change what later loads return."""
    for a in arrays:
        if a is not None:
            a.setflags(write=False)
    return arrays


def tensor(array: np.ndarray, index=slice(None), dtype: torch.dtype | None = None) -> torch.Tensor:
    """A fresh tensor copied from ``array[index]`` (never a view of a cached array)."""
    return torch.tensor(np.ascontiguousarray(array[index]), dtype=dtype)


def keep_labels_per_class(ds: TensorDataset, labels_per_class: int | None, split: str,
                          seed: int = 0) -> TensorDataset:
    """``ds`` with only ``labels_per_class`` labels per class kept in the train split, the others set to -1.

    For semi-supervised learning. The kept examples are drawn per class with a ``torch.Generator`` seeded by
    ``seed`` (the same choice on every platform); the test split and ``labels_per_class=None`` return ``ds``
    unchanged. ``spec.num_classes`` stays; ``info["labels_per_class"]`` records ``N``.

    Args:
        ds: a labelled dataset, labels ``(N,)`` in ``{0..K-1}``.
        labels_per_class: labels to keep per class, ``1 <= N <= `` the smallest class count, or ``None``.
        split: ``"train"`` or ``"test"``.
        seed: seed of the choice of labelled examples.
    Returns:
        A ``TensorDataset`` sharing ``ds.x``, with labels ``(N,)`` in ``{-1, 0..K-1}``.
    """
    if labels_per_class is None or split != "train":
        return ds
    require(ds.y is not None, f"{ds.name}: labels_per_class needs labels, and this data set has none")
    require(labels_per_class >= 1, f"{ds.name}: labels_per_class must be >= 1, got {labels_per_class}")
    y = ds.y
    classes, counts = torch.unique(y[y >= 0], return_counts=True)
    smallest = int(counts.argmin())
    require(labels_per_class <= int(counts[smallest]),
            f"{ds.name}: labels_per_class={labels_per_class} exceeds the smallest class count of the train split "
            f"(class {int(classes[smallest])} has {int(counts[smallest])} examples)")
    g = torch.Generator().manual_seed(seed)
    kept = torch.full_like(y, -1)
    for c in classes.tolist():
        members = torch.nonzero(y == c).flatten()
        chosen = members[torch.randperm(len(members), generator=g)[:labels_per_class]]
        kept[chosen] = c
    info = dict(ds.info, labels_per_class=labels_per_class)
    return TensorDataset(ds.x, kept, ds.spec, name=ds.name, true_log_prob=ds.true_log_prob, info=info,
                         factors=ds.factors)
