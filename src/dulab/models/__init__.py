"""Model families. Build them by name with ``dulab.build_model``; the registry lives in ``dulab.registry``."""

from dulab.models.base import DensityModel, Model

__all__ = ["Model", "DensityModel"]
