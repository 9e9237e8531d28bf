"""Datasets held in memory: a ``DataSpec`` describing the event, and ``TensorDataset`` holding all examples.

Discrete data are int64 tensors with values in ``[0, num_levels)``; continuous data are float tensors.
Images are ``(C, H, W)``, vectors ``(D,)``. ``ds[i]`` returns ``(x, y)`` with ``y = -1`` when there are no labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from dulab.errors import UserError

__all__ = ["DataSpec", "TensorDataset", "from_array", "split_indices"]


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about the data.

    Attributes:
        shape: event shape, ``(C, H, W)`` for images, ``(D,)`` for vectors, ``(T,)`` for sequences.
        kind: ``"discrete"`` (int64 in ``[0, num_levels)``) or ``"continuous"`` (float).
        num_levels: number of values per dimension for discrete data, else ``None``.
        num_classes: number of labels when the data are labelled, else ``None``.
    """

    shape: tuple
    kind: str
    num_levels: int | None = None
    num_classes: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.kind not in ("discrete", "continuous"):
            raise UserError(f"DataSpec.kind must be 'discrete' or 'continuous', got {self.kind!r}")
        if self.kind == "discrete" and (self.num_levels is None or self.num_levels < 2):
            raise UserError("discrete data need num_levels >= 2")

    @property
    def num_dims(self) -> int:
        """D, the number of scalar dimensions of one event (used for bits/dim)."""
        return int(math.prod(self.shape))

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    @property
    def is_discrete(self) -> bool:
        return self.kind == "discrete"

    def describe(self) -> str:
        shape = "x".join(str(s) for s in self.shape)
        levels = f", {self.num_levels} levels" if self.num_levels else ""
        classes = f", {self.num_classes} classes" if self.num_classes else ""
        return f"{shape} {self.kind}{levels}{classes}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        return cls(shape=tuple(d["shape"]), kind=d["kind"], num_levels=d.get("num_levels"),
                   num_classes=d.get("num_classes"))


class TensorDataset(torch.utils.data.Dataset):
    """All examples of one split in memory, batched by indexing (no per-item collation).

    Args:
        x: examples, ``(N, *spec.shape)``; int64 for discrete data, float32 for continuous data.
        y: labels ``(N,)`` int64, or ``None``.
        spec: the ``DataSpec``.
        name: dataset name, for messages and run configs.
        true_log_prob: optional closed-form log density (nats) of the generating distribution, ``x -> Tensor[B]``.
        info: free-form extras (e.g. ``vocab`` for text, ``true_pmf`` for discrete toys).
        factors: optional generating factors ``(N, F)`` int64 (e.g. ``sprites``); kept as ``ds.factors`` and
            ``ds.info["factors"]``, and carried by ``subset``.
        extras: named per-example tensors ``{name: (N, ...)}`` that reach training tasks as ``batch[name]``
            (a paired target image, a domain label, ...); carried by ``subset``.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None, spec: DataSpec, *, name: str = "array",
                 true_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None, info: dict | None = None,
                 factors: torch.Tensor | None = None, extras: dict | None = None):
        if tuple(x.shape[1:]) != spec.shape:
            raise UserError(f"{name}: examples have shape {tuple(x.shape[1:])}, spec says {spec.shape}")
        if spec.kind == "discrete":
            x = x.long()
        else:
            x = x.float()
        if y is not None:
            y = y.long()
            if len(y) != len(x):
                raise UserError(f"{name}: {len(x)} examples but {len(y)} labels")
        self.x, self.y, self.spec, self.name = x, y, spec, name
        self.true_log_prob = true_log_prob
        self.info = dict(info or {})
        if factors is not None:
            factors = factors.long()
            if len(factors) != len(x):
                raise UserError(f"{name}: {len(x)} examples but {len(factors)} rows of factors")
            self.info["factors"] = factors
        self.factors = factors
        self.extras = {}
        for k, v in (extras or {}).items():
            v = torch.as_tensor(v)
            if len(v) != len(x):
                raise UserError(f"{name}: {len(x)} examples but {len(v)} rows of {k!r}")
            self.extras[k] = v

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i):
        y = self.y[i] if self.y is not None else torch.tensor(-1)
        return self.x[i], y

    def labels_or_default(self) -> torch.Tensor:
        """Labels, or a tensor of -1 when the dataset has none."""
        return self.y if self.y is not None else torch.full((len(self),), -1, dtype=torch.long)

    def subset(self, index) -> TensorDataset:
        index = torch.as_tensor(index, dtype=torch.long)
        return TensorDataset(self.x[index], None if self.y is None else self.y[index], self.spec, name=self.name,
                             true_log_prob=self.true_log_prob, info=self.info,
                             factors=None if self.factors is None else self.factors[index],
                             extras={k: v[index] for k, v in self.extras.items()})

    def __repr__(self) -> str:
        return f"TensorDataset({self.name!r}, n={len(self)}, {self.spec.describe()})"


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic shuffle of ``range(n)`` cut into (train, test) index tensors."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_test = int(round(n * test_fraction))
    return perm[n_test:], perm[:n_test]


def from_array(array, y=None, num_levels: int | None = None, *, name: str = "array") -> TensorDataset:
    """Wrap users' numpy (or torch) data as a dataset.

    Args:
        array: ``(N, *event)``; a 1-D array ``(N,)`` becomes ``(N, 1)``. Integer arrays are discrete
            (``num_levels`` defaults to ``max + 1``), float arrays continuous unless ``num_levels`` is given.
        y: optional labels ``(N,)`` (integers).
        num_levels: number of levels for discrete data; values must lie in ``[0, num_levels)``.
    Returns:
        A ``TensorDataset``.
    """
    x = torch.as_tensor(np.asarray(array))
    if x.ndim == 0 or x.shape[0] == 0:
        raise UserError("from_array needs a non-empty array of shape (N, *event)")
    if x.ndim == 1:
        x = x[:, None]  # (N,) -> (N, 1)
    is_int = not torch.is_floating_point(x) and x.dtype != torch.bool
    if x.dtype == torch.bool:
        x, is_int = x.long(), True
        num_levels = num_levels or 2
    if num_levels is not None or is_int:
        if torch.is_floating_point(x):
            if not torch.equal(x, x.round()):
                raise UserError("num_levels was given but the array holds non-integer values")
        x = x.long()
        lo, hi = int(x.min()), int(x.max())
        num_levels = int(num_levels) if num_levels is not None else max(2, hi + 1)
        if lo < 0 or hi >= num_levels:
            raise UserError(f"discrete values must lie in [0, {num_levels}), found [{lo}, {hi}]")
        spec_kind = "discrete"
    else:
        x = x.float()
        if not torch.isfinite(x).all():
            raise UserError("the array holds NaN or infinite values")
        spec_kind = "continuous"
    num_classes = None
    if y is not None:
        y = torch.as_tensor(np.asarray(y)).long().reshape(-1)
        if len(y) != len(x):
            raise UserError(f"{len(x)} examples but {len(y)} labels")
        if y.min() < 0:
            raise UserError("labels must be non-negative integers")
        num_classes = int(y.max()) + 1
    spec = DataSpec(tuple(x.shape[1:]), spec_kind, num_levels if spec_kind == "discrete" else None, num_classes)
    return TensorDataset(x, y, spec, name=name)
