"""FFJORD: a continuous normalizing flow trained with the Hutchinson trace estimator.

``z = x + int_0^T f(z(t), t) dt`` with a free-form network ``f`` (no coupling or autoregressive structure), and
``log p(x) = log N(z; 0, I) + int_0^T tr(df/dz) dt``. Training uses the unbiased Hutchinson estimate of the trace
(one vector-Jacobian product per function evaluation, Rademacher noise fixed over a solve); evaluation
(``model.eval()``: the engine's test pass, ``dulab eval``) uses the exact trace, so test numbers are exact log
densities up to the ODE solver's tolerance. The solver is torchdiffeq's adaptive Dormand-Prince (``dopri5``) with
``rtol = atol = 1e-5`` by default; images are flattened (the exact trace costs ``D`` backward passes per function
evaluation, so this model is meant for low-dimensional data).

References:
    Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud. "FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models", 2019, arXiv:1810.01367.
    Chen, Rubanova, Bettencourt, Duvenaud. "Neural Ordinary Differential Equations", 2018, arXiv:1806.07366.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from dulab.bijectors import Chain, Reshape
from dulab.bijectors.continuous import ContinuousFlow
from dulab.errors import UserError
from dulab.models.flows.base import FlowConfig, FlowModel

__all__ = ["FFJORD", "FFJORDConfig"]


@dataclass
class FFJORDConfig(FlowConfig):
    """Hyperparameters of ``FFJORD``.

    Attributes:
        hidden_sizes: widths of the dynamics network (concat-squash layers).
        activation: ``"softplus"`` or ``"tanh"`` (smooth: training differentiates the trace).
        time_length: integration time T.
        train_trace: ``"hutchinson"`` (the FFJORD estimator) or ``"exact"`` during training.
        noise: Hutchinson noise, ``"rademacher"`` or ``"gaussian"``.
        solver: torchdiffeq method: ``"dopri5"`` (adaptive) or fixed-grid ``"rk4"``, ``"midpoint"``, ``"euler"``.
        rtol, atol: tolerances of the adaptive solver.
        step_size: step of the fixed-grid solvers.
    """

    hidden_sizes: tuple[int, ...] = (64, 64, 64)
    activation: Literal["softplus", "tanh"] = "tanh"
    time_length: float = 1.0
    train_trace: Literal["hutchinson", "exact"] = "hutchinson"
    noise: Literal["rademacher", "gaussian"] = "rademacher"
    solver: Literal["dopri5", "rk4", "midpoint", "euler"] = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    step_size: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        self._check_positive("hidden_sizes")
        for name in ("time_length", "rtol", "atol", "step_size"):
            if getattr(self, name) <= 0:
                raise UserError(f"{name} must be > 0, got {getattr(self, name)}")


class FFJORD(FlowModel):
    """Continuous normalizing flow with free-form dynamics (Hutchinson trace to train, exact trace to evaluate)."""

    Config = FFJORDConfig
    default_data = "moons"
    train_defaults = {"epochs": 30, "batch_size": 256, "lr": 5e-3, "grad_clip": 5.0}

    @classmethod
    def check_spec(cls, spec, config):
        super().check_spec(spec, config)
        if spec.num_dims > 4096:
            raise UserError(f"ffjord flattens its input and is meant for low-dimensional data; {spec.shape} has "
                            f"{spec.num_dims} dimensions (at most 4096)")

    def build_flow(self):
        c, shape, D = self.config, self.spec.shape, self.spec.num_dims
        cnf = ContinuousFlow(D, c.hidden_sizes, c.activation, c.time_length, c.train_trace, c.noise,
                             c.solver, c.rtol, c.atol, c.step_size, context_features=self.context_features)
        return Chain([Reshape(shape, (D,)), cnf, Reshape((D,), shape)])

    @property
    def cnf(self) -> ContinuousFlow:
        """The continuous flow inside the chain (reshapes around it)."""
        return self.flow.bijectors[1]

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               context: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """``(num_samples, *event)`` samples by solving the ODE backwards from base draws (no trace needed)."""
        if temperature <= 0:
            raise UserError(f"temperature must be > 0, got {temperature}")
        ctx = self._context_features(context, num_samples)
        z = self.base_sample((num_samples, self.spec.num_dims), generator, temperature)
        y = self.cnf.inverse_no_log_det(z, ctx).reshape(num_samples, *self.spec.shape)
        x, _ = self.preprocess.inverse(y)
        if self.spec.is_discrete:
            return x.floor().clamp(0, self.spec.num_levels - 1).long()
        return x
