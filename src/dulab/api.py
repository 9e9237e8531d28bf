"""Building models by name: ``list_models`` and ``build_model``."""

from __future__ import annotations

import dataclasses

from dulab.config import make_config
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.registry import MODELS, get_model_class

__all__ = ["list_models", "build_model", "model_name_of", "model_hparams"]


def list_models() -> list[str]:
    """Registry keys of every model, snake_case (``"histogram"``, ``"pixel_cnn"``, ...)."""
    return list(MODELS)


def build_model(name: str, spec: DataSpec, **hparams):
    """Build registered model ``name`` for data described by ``spec``.

    Args:
        name: a registry key (see ``list_models()``).
        spec: the dataset's ``DataSpec`` (``ds.spec``).
        **hparams: fields of the model's config dataclass; strings are converted to the field's type.
    Returns:
        The model (an ``nn.Module``).
    Raises:
        ValueError: unknown model, unknown or badly typed hyperparameter, or data the model cannot handle.
    """
    cls = get_model_class(name)
    if not isinstance(spec, DataSpec):
        raise UserError(f"spec must be a DataSpec (use ds.spec), got {type(spec).__name__}")
    config = make_config(cls.Config, hparams, f"hyperparameter of {name}")
    return cls(spec, config)


def model_name_of(model) -> str:
    """The registry key of a model instance's class."""
    target = f"{type(model).__module__}:{type(model).__qualname__}"
    for name, entry in MODELS.items():
        if entry.target == target:
            return name
    raise UserError(f"{type(model).__name__} is not a registered model; register it in dulab.registry.MODELS")


def model_hparams(model) -> dict:
    """The config of a model as a plain dict (JSON-ready)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(model.config).items()}
