"""Masked autoregressive bijector: ``z_i = tau(x_i; theta_i(x_<i))`` with ``theta`` from one MADE pass.

The normalizing direction (data to latent, ``forward``) needs one network pass; the inverse needs D sequential
passes, one per dimension. MAF stacks these with ``forward`` as the density direction (fast density, slow
sampling); IAF uses the same layer through ``Inverse``, so that sampling is the fast direction and the density
of an arbitrary point costs D passes per layer.

References:
    Papamakarios, Pavlakou, Murray. "Masked Autoregressive Flow for Density Estimation", 2017, arXiv:1705.07057.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. "Improved Variational Inference with Inverse
    Autoregressive Flow", 2016, arXiv:1606.04934.
    Durkan, Bekasov, Murray, Papamakarios. "Neural Spline Flows", 2019, arXiv:1906.04032 (spline transformer).
"""

from __future__ import annotations

import torch

from dulab.bijectors.base import Bijector
from dulab.nn.coupling_nets import zero_last_layer
from dulab.nn.masked import MADENetwork

__all__ = ["MaskedAutoregressive"]


class MaskedAutoregressive(Bijector):
    """One MAF layer on vectors ``(B, D)``.

    Args:
        num_dims: D.
        hidden_sizes: MADE hidden widths.
        transformer: an object from ``dulab.bijectors.transformers`` (affine or spline).
        context_features: size of a conditioning vector fed to every MADE hidden layer (0: none).
        order: ``(D,)`` generation positions (natural order when ``None``).
        zero_init: zero MADE's output layer so the layer starts as the identity.
    """

    def __init__(self, num_dims: int, hidden_sizes, transformer, *, context_features: int = 0,
                 order: torch.Tensor | None = None, zero_init: bool = True):
        super().__init__()
        self.transformer = transformer
        self.made = MADENetwork(num_dims, hidden_sizes, transformer.num_params, context_features=context_features,
                                order=order)
        if zero_init:
            zero_last_layer(self.made.layers[-1])

    def _params(self, x, context):
        return self.made(x, context)  # (B, D, P)

    def forward(self, x, context=None):
        z, log_d = self.transformer.forward(x, self._params(x, context))
        return z, log_d.sum(1)

    def inverse(self, z, context=None):
        # Position p of the order is exact after p + 1 passes, because its parameters depend only on earlier ones.
        x = torch.zeros_like(z)
        for _ in range(z.shape[1]):
            x, log_d = self.transformer.inverse(z, self._params(x, context))
        return x, log_d.sum(1)
