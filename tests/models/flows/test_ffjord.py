"""FFJORD specifics: the Hutchinson estimator is an unbiased estimate of the exact trace integral, training mode
uses it and evaluation mode the exact trace, and the fixed-grid solvers converge to the adaptive solution.
(The generic flow properties, inverse, log-det vs autograd Jacobian, integration to 1 on a grid, run for ffjord in
test_flows.py.)"""

from __future__ import annotations

import torch

import dulab
from dulab.data.base import DataSpec
from properties import perturb_parameters

SPEC = DataSpec((2,), "continuous")


def _model(**hp):
    torch.manual_seed(0)
    m = dulab.build_model("ffjord", SPEC, hidden_sizes=(8, 8), rtol=1e-9, atol=1e-9, **hp).double()
    perturb_parameters(m, 0.5, seed=3)  # strongly non-linear dynamics, so the trace varies along the path
    return m


def test_hutchinson_log_det_is_unbiased_and_exact_in_eval_mode():
    m = _model(noise="rademacher")
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    m.eval()
    with torch.no_grad():
        _, exact = m.transform(x)
        _, exact_again = m.transform(x)
    assert torch.equal(exact, exact_again), "evaluation mode must be deterministic (exact trace)"
    m.train()
    torch.manual_seed(5)
    with torch.no_grad():
        draws = torch.stack([m.transform(x.repeat(200, 1))[1].view(200, 3) for _ in range(5)]).view(-1, 3)
    assert draws.std(0).min() > 1e-4, "the Hutchinson estimate must actually be stochastic in training mode"
    se = draws.std(0) / draws.shape[0] ** 0.5
    assert ((draws.mean(0) - exact).abs() < 5 * se).all(), (draws.mean(0), exact, se)


def test_fixed_grid_solvers_converge_to_the_adaptive_solution():
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    ref = _model().eval()
    with torch.no_grad():
        z_ref, ld_ref = ref.transform(x)
        errors = []
        for step in (0.25, 0.05):
            m = _model(solver="rk4", step_size=step).eval()
            z, ld = m.transform(x)
            errors.append(float((z - z_ref).abs().max() + (ld - ld_ref).abs().max()))
    assert errors[1] < errors[0] / 10 and errors[1] < 1e-6, errors  # RK4 converges (to the reference's tolerance)


def test_training_reduces_the_exact_test_nll():
    torch.manual_seed(0)
    train = dulab.load_dataset("eight_gaussians", num_samples=512)
    m = dulab.build_model("ffjord", train.spec, hidden_sizes=(16, 16), rtol=1e-4, atol=1e-4)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    m.eval()
    with torch.no_grad():
        before = -m.log_prob(train.x[:256]).mean()
    m.train()
    for _ in range(40):
        loss = m.loss(train.x[torch.randint(0, len(train), (64,))])["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        after = -m.log_prob(train.x[:256]).mean()
    assert after < before - 0.3, (before, after)
