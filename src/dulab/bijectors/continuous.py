"""Continuous normalizing flows: the map is the solution of an ODE ``dz/dt = f(z, t)`` from ``t = 0`` (data) to
``t = T`` (latent), and the log-determinant is the integral of the trace of the Jacobian of ``f`` along the path,
``log|det dz(T)/dz(0)| = int_0^T tr(df/dz(t)) dt`` (the instantaneous change of variables, Chen et al. 2018).

The trace is exact (``D`` vector-Jacobian products, used for evaluation and for low-dimensional data) or the
Hutchinson estimate ``e^T (df/dz) e`` with one noise vector ``e`` per example held fixed over a solve (FFJORD,
Grathwohl et al. 2019): unbiased, one vector-Jacobian product per function evaluation. The ODE is solved by
torchdiffeq (adaptive Dormand-Prince by default), gradients by back-propagating through the solver's operations.

The map needs autograd for the trace even under ``torch.no_grad``/``torch.inference_mode`` (evaluation, sampling
with densities): the solve runs with gradients enabled on a copy of the input and the result is detached when the
caller had gradients off.

References:
    Chen, Rubanova, Bettencourt, Duvenaud. "Neural Ordinary Differential Equations", 2018, arXiv:1806.07366.
    Grathwohl, Chen, Bettencourt, Sutskever, Duvenaud. "FFJORD: Free-form Continuous Dynamics for Scalable
    Reversible Generative Models", 2019, arXiv:1810.01367.
    Hutchinson. "A stochastic estimator of the trace of the influence matrix for Laplacian smoothing splines",
    1990.
"""

from __future__ import annotations

import torch
from torch import nn

from dulab.bijectors.base import Bijector

__all__ = ["ConcatSquashLinear", "ODEDynamics", "ContinuousFlow"]


class ConcatSquashLinear(nn.Module):
    """``(W x + b) * sigmoid(a t + c) + d t``: a linear layer whose output is gated and shifted by the time."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.gate = nn.Linear(1, out_features)
        self.shift = nn.Linear(1, out_features, bias=False)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tt = t.reshape(1, 1).to(x.dtype)
        return self.linear(x) * torch.sigmoid(self.gate(tt)) + self.shift(tt)


class ODEDynamics(nn.Module):
    """The vector field ``f(z, t)``: concat-squash layers with a smooth activation (the trace estimators need
    second derivatives to train, so no ReLU). The last layer starts at zero: the flow starts as the identity.

    Args:
        dim: D.
        hidden_sizes: hidden widths.
        activation: ``"softplus"`` or ``"tanh"``.
        context_features: width of a conditioning vector appended to ``z`` (0 for none).
    """

    def __init__(self, dim: int, hidden_sizes: tuple[int, ...], activation: str = "softplus",
                 context_features: int = 0):
        super().__init__()
        sizes = [dim + context_features, *hidden_sizes, dim]
        self.layers = nn.ModuleList(ConcatSquashLinear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        nn.init.zeros_(self.layers[-1].linear.weight)
        nn.init.zeros_(self.layers[-1].linear.bias)
        nn.init.zeros_(self.layers[-1].shift.weight)
        self.act = nn.Softplus() if activation == "softplus" else nn.Tanh()
        self.context = None  # set by ContinuousFlow for the duration of one solve

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        h = z if self.context is None else torch.cat([z, self.context], 1)
        for i, layer in enumerate(self.layers):
            h = layer(t, h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


class _Augmented(nn.Module):
    """The ODE of the state ``(z, l)`` with ``dl/dt = tr(df/dz)`` (exact or Hutchinson)."""

    def __init__(self, dynamics: ODEDynamics, trace: str, noise: torch.Tensor | None, create_graph: bool):
        super().__init__()
        self.dynamics, self.trace, self.noise, self.create_graph = dynamics, trace, noise, create_graph
        self.nfe = 0

    def forward(self, t, state):
        z = state[0]
        if not z.requires_grad:
            z = z.detach().requires_grad_(True)
        self.nfe += 1
        f = self.dynamics(t, z)
        if self.trace == "exact":
            div = z.new_zeros(z.shape[0])
            for i in range(z.shape[1]):
                div = div + torch.autograd.grad(f[:, i].sum(), z, create_graph=self.create_graph,
                                                retain_graph=True)[0][:, i]
        else:
            vjp = torch.autograd.grad(f, z, self.noise, create_graph=self.create_graph)[0]
            div = (vjp * self.noise).sum(1)
        return f, div


class ContinuousFlow(Bijector):
    """A continuous normalizing flow on vectors ``(B, D)``: forward solves ``t = 0 -> T``, inverse ``T -> 0``.

    Args:
        dim: D.
        hidden_sizes: widths of the dynamics network.
        activation: ``"softplus"`` or ``"tanh"``.
        time_length: T.
        train_trace: ``"hutchinson"`` (FFJORD) or ``"exact"``, used while the module is in training mode; the exact
            trace is always used in evaluation mode.
        noise: Hutchinson noise, ``"rademacher"`` or ``"gaussian"`` (from the global torch RNG).
        solver: a torchdiffeq method (``"dopri5"``, ``"rk4"``, ``"euler"``, ...).
        rtol, atol: tolerances of adaptive solvers.
        step_size: step of fixed-grid solvers (ignored by adaptive ones).
        context_features: conditioning width (0 for none).
    """

    def __init__(self, dim: int, hidden_sizes: tuple[int, ...] = (64, 64, 64), activation: str = "softplus",
                 time_length: float = 1.0, train_trace: str = "hutchinson", noise: str = "rademacher",
                 solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, step_size: float = 0.05,
                 context_features: int = 0):
        super().__init__()
        self.dim = dim
        self.dynamics = ODEDynamics(dim, hidden_sizes, activation, context_features)
        self.time_length, self.train_trace, self.noise_kind = float(time_length), train_trace, noise
        self.solver, self.rtol, self.atol, self.step_size = solver, rtol, atol, step_size
        self.last_nfe = 0  # function evaluations of the most recent solve (a cost diagnostic)

    def _noise(self, z: torch.Tensor) -> torch.Tensor:
        if self.noise_kind == "gaussian":
            return torch.randn(z.shape, dtype=z.dtype, device=z.device)
        return torch.randint(0, 2, z.shape, device=z.device).to(z.dtype) * 2 - 1

    def _solve(self, x: torch.Tensor, context, t0: float, t1: float, with_log_det: bool):
        from torchdiffeq import odeint  # imported here: the ODE library is only needed by continuous flows

        if x.shape[0] == 0:  # an adaptive solver cannot pick a step for an empty state
            return x.clone(), x.new_zeros(0)
        grad_wanted = torch.is_grad_enabled()
        trace = self.train_trace if self.training else "exact"
        with torch.inference_mode(False), torch.enable_grad():
            z = x.clone()  # a normal tensor even when x was created under inference mode
            self.dynamics.context = None if context is None else context.clone()
            options = {"step_size": self.step_size} if self.solver in ("euler", "rk4", "midpoint") else None
            times = torch.tensor([t0, t1], dtype=z.dtype, device=z.device)
            try:
                if with_log_det:
                    noise = self._noise(z) if trace == "hutchinson" else None
                    func = _Augmented(self.dynamics, trace, noise, create_graph=grad_wanted)
                    state = (z, z.new_zeros(z.shape[0]))
                    zs, ls = odeint(func, state, times, method=self.solver, rtol=self.rtol, atol=self.atol,
                                    options=options)
                    out, log_det = zs[-1], ls[-1]
                    self.last_nfe = func.nfe
                else:
                    with torch.set_grad_enabled(grad_wanted):
                        out = odeint(self.dynamics, z, times, method=self.solver, rtol=self.rtol,
                                     atol=self.atol, options=options)[-1]
                    log_det = out.new_zeros(out.shape[0])
            finally:
                self.dynamics.context = None
            if not grad_wanted:
                out, log_det = out.detach(), log_det.detach()
        return out, log_det

    def forward(self, x, context=None):
        return self._solve(x, context, 0.0, self.time_length, with_log_det=True)

    def inverse(self, y, context=None):
        return self._solve(y, context, self.time_length, 0.0, with_log_det=True)

    def inverse_no_log_det(self, y, context=None) -> torch.Tensor:
        """The inverse map alone (no trace integration: cheaper, used by ``sample``)."""
        return self._solve(y, context, self.time_length, 0.0, with_log_det=False)[0]

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, T={self.time_length}, solver={self.solver}, train_trace={self.train_trace}, "
                f"rtol={self.rtol}, atol={self.atol}")

