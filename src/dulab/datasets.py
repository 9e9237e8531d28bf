"""``dulab.datasets``: the public entry points for data (re-exported from ``dulab.data``)."""

from dulab.data import DataSpec, TensorDataset, from_array, list_datasets, load_dataset

__all__ = ["DataSpec", "TensorDataset", "from_array", "list_datasets", "load_dataset"]
