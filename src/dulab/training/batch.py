"""One batch structure for every task: ``x``, ``y`` and named extras.

A dataset may carry per-example tensors besides ``x`` and ``y`` (``TensorDataset.extras``): a paired target image
(pix2pix), an image of the other domain (CycleGAN), a domain label (domain-adversarial training), generating
factors. The engine indexes every one of them with the same batch index, so paired, unpaired, labelled/unlabelled
and two-domain data reach the tasks without a special case in the loop:

* labelled + unlabelled: ``y == -1`` marks an unlabelled example (``batch.labelled`` is the mask);
* two domains or pairs: ``batch["target"]``, ``batch["domain"]``, ... (whatever names the dataset uses).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Batch"]


@dataclass
class Batch:
    """A batch of examples.

    Attributes:
        x: inputs ``(B, *event)`` (int64 levels for discrete data, float otherwise).
        y: labels ``(B,)`` int64, ``-1`` where an example has no label.
        extras: named per-example tensors ``(B, ...)`` from the dataset's ``extras``.
    """

    x: torch.Tensor
    y: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, name: str) -> torch.Tensor:
        """An extra by name (``batch["target"]``); ``"x"`` and ``"y"`` work too."""
        if name in ("x", "y"):
            return getattr(self, name)
        if name not in self.extras:
            raise KeyError(f"the batch has no {name!r}; it carries x, y" + "".join(f", {k}" for k in self.extras))
        return self.extras[name]

    def __contains__(self, name: str) -> bool:
        return name in ("x", "y") or name in self.extras

    @property
    def labelled(self) -> torch.Tensor:
        """Boolean mask ``(B,)`` of the examples that carry a label."""
        return self.y >= 0

    def index(self, idx) -> Batch:
        """The sub-batch at ``idx`` (a mask or an index tensor), extras included."""
        return Batch(self.x[idx], self.y[idx], {k: v[idx] for k, v in self.extras.items()})

    def to(self, device) -> Batch:
        return Batch(self.x.to(device), self.y.to(device), {k: v.to(device) for k, v in self.extras.items()})

    @classmethod
    def of(cls, dataset, idx=None) -> Batch:
        """The examples of a ``TensorDataset`` at ``idx`` (all when ``None``) as a batch."""
        y = dataset.labels_or_default()
        extras = getattr(dataset, "extras", {}) or {}
        if idx is None:
            return cls(dataset.x, y, dict(extras))
        return cls(dataset.x[idx], y[idx], {k: v[idx] for k, v in extras.items()})
