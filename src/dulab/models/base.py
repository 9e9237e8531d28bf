"""Base classes shared by every model family: the contract of DESIGN.md section 2.

A model is an ``nn.Module`` built from a ``DataSpec`` and a config dataclass (``cls.Config``). It never touches
optimisers, devices or files. Families add methods:

* ``DensityModel``: ``log_prob(x, context=None) -> Tensor[B]`` (nats, summed over the event),
  ``sample(num_samples, *, generator=None, context=None)``, and ``loss(x, context=None) -> dict`` with
  ``"loss"`` (scalar, nats per dimension) and ``"nll"`` (nats per example, batch mean).

Subclass obligations: set ``Config`` (a dataclass whose fields are the hyperparameters, with defaults and type
annotations), ``family`` (e.g. ``"autoregressive"``), optionally ``task`` (the training recipe, default
``"likelihood"``) and ``train_defaults`` (TrainConfig overrides that suit the model); override ``check_spec`` to
reject data the model cannot handle with a ``UserError`` that says what it needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dulab.data.base import DataSpec
from dulab.errors import UserError

__all__ = ["Model", "DensityModel", "EmptyConfig"]


@dataclass
class EmptyConfig:
    """A model without hyperparameters."""


class Model(nn.Module):
    """Root of all dulab models.

    Args:
        spec: the data the model is built for.
        config: an instance of ``cls.Config`` (defaults when ``None``).
    """

    Config: type = EmptyConfig
    family: str = "model"
    task: str = "likelihood"
    train_defaults: dict = {}
    #: True when the model's ``loss``/``log_prob``/``sample`` use ``context=`` (class labels).
    is_conditional: bool = False

    def __init__(self, spec: DataSpec, config=None):
        super().__init__()
        if not isinstance(spec, DataSpec):
            raise TypeError(f"spec must be a DataSpec, got {type(spec).__name__}")
        config = self.Config() if config is None else config
        if not isinstance(config, self.Config):
            raise TypeError(f"config must be a {self.Config.__name__}, got {type(config).__name__}")
        self.check_spec(spec, config)
        self.spec = spec
        self.config = config

    @classmethod
    def check_spec(cls, spec: DataSpec, config) -> None:
        """Raise ``UserError`` if the model cannot be built for data described by ``spec``."""

    def loss(self, x: torch.Tensor, context: torch.Tensor | None = None) -> dict:
        raise NotImplementedError

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_context(self, context, batch: int | None = None):
        """Validate class labels for a conditional model (``None`` allowed for unconditional ones)."""
        if not self.is_conditional:
            return None
        if context is None:
            raise UserError(f"{type(self).__name__} is class-conditional: pass context= labels")
        context = torch.as_tensor(context, device=self._param_device()).long().reshape(-1)
        if batch is not None and context.numel() == 1 and batch > 1:
            context = context.expand(batch)
        num_classes = self.spec.num_classes or getattr(self.config, "num_classes", None)
        if num_classes is not None and (context.min() < 0 or context.max() >= num_classes):
            raise UserError(f"context labels must lie in [0, {num_classes})")
        return context

    def _param_device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    def _param_dtype(self) -> torch.dtype:
        for t in self.parameters():
            if t.is_floating_point():
                return t.dtype
        return torch.get_default_dtype()


class DensityModel(Model):
    """A model with an exact (or bounded) likelihood. ``loss`` is the NLL in nats per dimension."""

    has_likelihood = True

    def log_prob(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """log p(x) in nats, summed over the event: ``(B, *event) -> (B,)``."""
        raise NotImplementedError

    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """Draw ``(num_samples, *event)`` samples (int64 levels for discrete data)."""
        raise NotImplementedError

    def loss(self, x: torch.Tensor, context: torch.Tensor | None = None) -> dict:
        nll = -self.log_prob(x, context=context).mean()
        return {"loss": nll / self.spec.num_dims, "nll": nll}

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``UserError`` when ``x`` does not match the spec (shape, dtype, range)."""
        if tuple(x.shape[1:]) != self.spec.shape:
            shape = ", ".join(map(str, self.spec.shape))
            raise UserError(f"{type(self).__name__} expects inputs of shape (B, {shape}),"
                            f" got {tuple(x.shape)}")
        if self.spec.is_discrete:
            if x.is_floating_point():
                raise UserError(f"{type(self).__name__} models discrete data: pass int64 levels, got {x.dtype}")

    @staticmethod
    def bits_per_dim(nll: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
        """``nll / (D ln 2)``: nats per example to bits per dimension."""
        return nll / (num_dims * math.log(2))
