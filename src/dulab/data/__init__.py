"""Datasets: embedded (procedural toys, digits, shapes, sprites, photos, text) and from files (IDX, CIFAR-10, image
folders, npz)."""

from __future__ import annotations

from dulab.config import coerce
from dulab.data.base import DataSpec, TensorDataset, from_array, split_indices
from dulab.errors import UserError, closest

__all__ = ["DataSpec", "TensorDataset", "from_array", "split_indices", "load_dataset", "list_datasets",
           "dataset_option_values"]


def list_datasets() -> list[str]:
    """Names of the registered datasets."""
    from dulab.registry import DATASETS

    return list(DATASETS)


def load_dataset(name: str, split: str = "train", root: str | None = None, **options) -> TensorDataset:
    """Load a registered dataset.

    Args:
        name: a registry key (see ``list_datasets()``).
        split: ``"train"`` or ``"test"``; splits are deterministic.
        root: directory holding the files of file-backed datasets (MNIST, CIFAR-10, ...).
        **options: dataset options (e.g. ``bins=100`` for ``discrete1d``); strings are converted to the
            option's type, unknown options raise ``ValueError`` listing the valid ones.
    Returns:
        A ``TensorDataset`` with ``.spec``, ``.x``, ``.y``.
    """
    from dulab.registry import get_dataset_builder

    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test', got {split!r}")
    builder = get_dataset_builder(name)
    return builder(split=split, root=root, **dataset_option_values(name, options))


def dataset_option_values(name: str, options: dict) -> dict:
    """Check ``options`` against dataset ``name``'s options and convert them to their types (CLI strings too)."""
    from dulab.registry import dataset_options, get_dataset_builder

    valid = dataset_options(get_dataset_builder(name))
    typed = {}
    for k, v in options.items():
        if k not in valid:
            names = ", ".join(valid) or "(none)"
            hint = closest(k, valid) if valid else "it takes no options"
            raise UserError(f"dataset {name!r} has no option {k!r} ({hint}); valid options: {names}")
        typed[k] = coerce(v, valid[k][0], k)
    return typed
