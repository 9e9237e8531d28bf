"""Bijectors: invertible maps that return ``(value, log_det)``, composed into normalizing flows.

See ``dulab.bijectors.base.Bijector`` for the contract (forward = data to latent, ``log_det = log|det J|`` per
example).
"""

from dulab.bijectors.autoregressive import MaskedAutoregressive
from dulab.bijectors.base import Bijector, Chain, Identity, Inverse
from dulab.bijectors.cdf import MixtureCDF
from dulab.bijectors.coupling import Coupling, alternating_mask, channel_mask, checkerboard_mask, half_mask
from dulab.bijectors.elementwise import AffineScalar, ElementwiseScale, Logit, Sigmoid
from dulab.bijectors.linear import InvertibleConv1x1
from dulab.bijectors.multiscale import FactorOut
from dulab.bijectors.normalization import ActNorm, BatchNorm
from dulab.bijectors.permutation import Permutation, Reshape, Reverse, Squeeze
from dulab.bijectors.transformers import (
    AdditiveTransformer,
    AffineTransformer,
    SplineTransformer,
    make_transformer,
    rational_quadratic_spline,
)

__all__ = ["Bijector", "Chain", "Identity", "Inverse", "MaskedAutoregressive", "MixtureCDF", "Coupling",
           "alternating_mask", "half_mask", "checkerboard_mask", "channel_mask", "AffineScalar", "ElementwiseScale",
           "Logit", "Sigmoid", "InvertibleConv1x1", "FactorOut", "ActNorm", "BatchNorm", "Permutation", "Reshape",
           "Reverse", "Squeeze", "AdditiveTransformer", "AffineTransformer", "SplineTransformer", "make_transformer",
           "rational_quadratic_spline"]
