"""Mixtures (ensembles) of trained density models: ``p(x) = sum_i w_i p_i(x)``.

A convex combination of normalised densities over the same data is itself normalised, so an ensemble of
likelihood models is a valid likelihood model whose log-probability is ``logsumexp_i(log w_i + log p_i(x))``; by
Jensen's inequality its test NLL is at most the weighted mean of the members' NLLs, and usually below the best
member's when the members err differently (different seeds, architectures or orderings). The weights can be fitted
by EM on held-out data (never the test split): with the members fixed, the E-step gives each example's
responsibilities and the M-step sets ``w_i`` to their mean, which never decreases the held-out likelihood
(Dempster, Laird, Rubin 1977).

For members whose ``log_prob`` is a bound (dequantized flows, VAEs by importance sampling), the mixture's value is
a bound of the same kind.
"""

from __future__ import annotations

import torch
from torch import nn

from dulab.errors import UserError
from dulab.models.base import DensityModel

__all__ = ["Mixture", "from_runs"]


class Mixture(DensityModel):
    """A fixed mixture of trained density models built for the same data.

    Args:
        members: density models (each with ``log_prob``; ``sample`` for sampling), all for ``members[0].spec``.
        weights: mixture weights (non-negative, normalised here); uniform when ``None``.
    """

    family = "mixture"

    def __init__(self, members, weights=None):
        members = list(members)
        if not members:
            raise UserError("a mixture needs at least one member")
        spec = members[0].spec
        for m in members[1:]:
            if m.spec.shape != spec.shape or m.spec.kind != spec.kind or m.spec.num_levels != spec.num_levels:
                raise UserError(f"mixture members must model the same data: {m.spec} differs from {spec}")
        super().__init__(spec)
        self.members = nn.ModuleList(members)
        w = torch.ones(len(members), dtype=torch.float64) if weights is None else torch.as_tensor(
            weights, dtype=torch.float64)
        if w.shape != (len(members),) or (w < 0).any() or w.sum() <= 0:
            raise UserError(f"weights must be {len(members)} non-negative numbers with a positive sum, got {weights}")
        self.register_buffer("log_weights", (w / w.sum()).log())

    @property
    def weights(self) -> torch.Tensor:
        return self.log_weights.exp()

    def member_log_probs(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """``(B, M)``: each member's ``log_prob`` of ``x`` (float64)."""
        return torch.stack([m.log_prob(x, context=context) if m.is_conditional else m.log_prob(x)
                            for m in self.members], 1).double()

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        lp = self.member_log_probs(x, context)
        return torch.logsumexp(lp + self.log_weights.to(lp), 1)

    @torch.no_grad()
    def fit_weights(self, x: torch.Tensor, *, num_iterations: int = 100, batch_size: int = 256,
                    tol: float = 1e-9) -> list[float]:
        """EM for the weights on held-out examples ``x`` (members fixed). Returns the mean log-likelihood after
        each iteration (non-decreasing)."""
        was = self.training
        self.eval()
        lp = torch.cat([self.member_log_probs(c) for c in x.split(batch_size)])  # (N, M), computed once
        history = []
        log_w = self.log_weights.clone()
        for _ in range(num_iterations):
            joint = lp + log_w
            total = torch.logsumexp(joint, 1)
            history.append(float(total.mean()))
            resp = (joint - total[:, None]).exp()
            log_w = resp.mean(0).clamp_min(1e-300).log()
            if len(history) > 1 and history[-1] - history[-2] < tol:
                break
        self.log_weights.copy_(log_w)
        self.train(was)
        return history

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None) -> torch.Tensor:
        """Ancestral sampling: a member per sample from the weights, then that member's sample."""
        which = torch.multinomial(self.weights.float(), num_samples, replacement=True, generator=generator)
        out = None
        for i, m in enumerate(self.members):
            idx = (which == i).nonzero().flatten()
            if len(idx) == 0:
                continue
            s = m.sample(len(idx), generator=generator)
            if out is None:
                out = s.new_empty((num_samples, *s.shape[1:]))
            out[idx] = s
        return out


def from_runs(run_dirs, weights=None, *, which: str = "auto", device: str = "cpu") -> Mixture:
    """A mixture of the models of several run directories (``dulab.load`` each)."""
    from dulab.training.run import load

    models = [load(d, which=which, device=device) for d in run_dirs]
    return Mixture(models, weights).to(device).eval()

