"""GAN losses against their closed forms at known logits, gradient penalties of critics with known input
gradients, and the signs that make each player's loss point the right way (DESIGN.md 6.5)."""

from __future__ import annotations

import math

import pytest
import torch

from dulab.errors import UserError
from dulab.losses.gan import LOSS_KINDS, discriminator_loss, generator_loss, gradient_penalty, r1_penalty

REAL = [-2.0, -0.3, 0.0, 0.7, 3.0]
FAKE = [-1.5, 0.0, 0.4, 1.2, -0.1]


def _sigmoid(t: float) -> float:
    return 1.0 / (1.0 + math.exp(-t))


def _mean(values) -> float:
    return sum(values) / len(values)


# Closed forms written elementwise in plain Python floats (the paper's formulas, no softplus rewriting).
D_REFERENCE = {
    "minimax": lambda r, f: _mean([-math.log(_sigmoid(t)) for t in r]) + _mean([-math.log(1 - _sigmoid(t)) for t in f]),
    "non_saturating": lambda r, f: (_mean([-math.log(_sigmoid(t)) for t in r])
                                    + _mean([-math.log(1 - _sigmoid(t)) for t in f])),
    "wasserstein": lambda r, f: _mean(f) - _mean(r),
    "hinge": lambda r, f: _mean([max(0.0, 1 - t) for t in r]) + _mean([max(0.0, 1 + t) for t in f]),
    "least_squares": lambda r, f: 0.5 * (_mean([(t - 1) ** 2 for t in r]) + _mean([t ** 2 for t in f])),
}
G_REFERENCE = {
    "minimax": lambda f: _mean([math.log(1 - _sigmoid(t)) for t in f]),
    "non_saturating": lambda f: _mean([-math.log(_sigmoid(t)) for t in f]),
    "wasserstein": lambda f: -_mean(f),
    "hinge": lambda f: -_mean(f),
    "least_squares": lambda f: 0.5 * _mean([(t - 1) ** 2 for t in f]),
}


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_discriminator_loss_closed_form(kind):
    got = discriminator_loss(_t(REAL), _t(FAKE[:4]), kind)  # unequal batch sizes: two separate means
    assert got.dim() == 0
    assert float(got.detach()) == pytest.approx(D_REFERENCE[kind](REAL, FAKE[:4]), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_generator_loss_closed_form(kind):
    got = generator_loss(_t(FAKE), kind)
    assert got.dim() == 0
    assert float(got.detach()) == pytest.approx(G_REFERENCE[kind](FAKE), rel=1e-12, abs=1e-12)


def test_known_values():
    zeros = torch.zeros(3, dtype=torch.float64)
    # Goodfellow et al. 2014: at D = 1/2 everywhere (logits 0) the discriminator's loss is 2 log 2.
    for kind in ("minimax", "non_saturating"):
        assert float(discriminator_loss(zeros, zeros, kind)) == pytest.approx(2 * math.log(2), rel=1e-12)
    # Hinge: real logits at +1 and fake at -1 sit exactly on the margins.
    assert float(discriminator_loss(torch.ones(3), -torch.ones(3), "hinge")) == 0.0
    # Least squares at the targets (real 1, fake 0) is 0; minimax G loss at logits 0 is log(1/2).
    assert float(discriminator_loss(torch.ones(3), torch.zeros(3), "least_squares")) == 0.0
    assert float(generator_loss(zeros, "minimax")) == pytest.approx(-math.log(2), rel=1e-12)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_generator_loss_decreases_as_fake_logits_rise(kind):
    # least_squares pulls the fake logits towards its target 1, so it decreases only below 1.
    f = torch.linspace(-3, 0.9, 40, dtype=torch.float64).requires_grad_(True)
    per_example = torch.stack([generator_loss(f[i:i + 1], kind) for i in range(len(f))])
    (grad,) = torch.autograd.grad(per_example.sum(), f)
    assert (grad < 0).all(), f"{kind}: d loss_G / d fake logit must be negative, got max {float(grad.max())}"


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_discriminator_loss_signs(kind):
    # Points inside every loss's active region: hinge margins (-1, 1), least-squares targets (0 for fake, 1 real).
    r = torch.linspace(-0.9, 0.9, 7, dtype=torch.float64).requires_grad_(True)
    f = torch.linspace(0.05, 0.9, 7, dtype=torch.float64).requires_grad_(True)
    gr, gf = torch.autograd.grad(discriminator_loss(r, f, kind), (r, f))
    assert (gr < 0).all() and (gf > 0).all(), kind


def test_unknown_kind_is_a_user_error():
    with pytest.raises(UserError, match="hinge"):
        generator_loss(torch.zeros(2), "hinges")
    with pytest.raises(UserError):
        discriminator_loss(torch.zeros(2), torch.zeros(2), "bce")


@pytest.mark.parametrize("w", [[3.0, -4.0], [0.1, 0.2], [0.6, 0.8]])
def test_gradient_penalty_linear_critic(w):
    # f(x) = w.x has input gradient w at every interpolate: the penalty is (||w|| - 1)^2 exactly.
    w = _t(w)

    def critic(x):
        return x.reshape(x.shape[0], -1) @ w

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(16, 2, dtype=torch.float64, generator=g), torch.randn(16, 2, dtype=torch.float64)
    got = gradient_penalty(critic, real, fake, generator=g)
    assert float(got.detach()) == pytest.approx((float(w.norm()) - 1) ** 2, rel=1e-12, abs=1e-15)


def test_gradient_penalty_uses_per_example_interpolates():
    # f(x) = ||x||^2 / 2 has gradient x: the penalty is mean_i (||x_hat_i|| - 1)^2 with one eps per example,
    # x_hat_i = eps_i real_i + (1 - eps_i) fake_i; eps drawn as the function draws it (same seed, shape (B, 1, 1)).
    def critic(x):
        return 0.5 * x.pow(2).flatten(1).sum(1)

    real = torch.randn(8, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fake = torch.randn(8, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(3))
    eps = torch.rand(8, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x_hat = eps * real + (1 - eps) * fake
    expected = (x_hat.flatten(1).norm(dim=1) - 1).pow(2).mean()
    assert float(got.detach()) == pytest.approx(float(expected), rel=1e-12)
    assert eps.flatten().unique().numel() == 8  # really one eps per example


def test_gradient_penalty_reaches_critic_parameters():
    lin = torch.nn.Linear(3, 1).double()
    gp = gradient_penalty(lin, torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64))
    gp.backward()
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||; the bias has no influence on input gradients.
    w = lin.weight.detach()
    assert torch.allclose(lin.weight.grad, 2 * (w.norm() - 1) * w / w.norm(), rtol=1e-12)
    assert lin.bias.grad is None or float(lin.bias.grad.abs().max()) == 0.0


def test_r1_penalty_closed_forms():
    w = _t([1.0, 2.0, -2.0])
    x = torch.randn(5, 3, dtype=torch.float64)
    assert float(r1_penalty(lambda v: v @ w, x).detach()) == pytest.approx(9.0, rel=1e-12)  # ||w||^2
    got = r1_penalty(lambda v: 0.5 * v.pow(2).sum(1), x)  # gradient x: mean ||x||^2
    assert float(got.detach()) == pytest.approx(float(x.pow(2).sum(1).mean()), rel=1e-12)


def test_gradient_penalty_shape_mismatch():
    with pytest.raises(UserError, match="one shape"):
        gradient_penalty(lambda v: v.sum(1), torch.zeros(3, 2), torch.zeros(4, 2))


def test_r1_penalty_of_a_cross_example_critic_is_the_batch_input_gradient():
    """With batch-coupled outputs (batch norm, packing) R1 is ||grad_X sum_i D(X)_i||^2 / B."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    net = net.double().train()
    x = torch.randn(6, 3, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xr).sum(), xr)
    got = float(r1_penalty(lambda v: net(v).reshape(-1), x).detach())
    assert got == pytest.approx(float(grad.pow(2).sum()) / 6, rel=1e-12)
    # a packed critic (pairs concatenated): one logit per pair, the same identity
    packed = torch.nn.Linear(6, 1).double()
    (grad,) = torch.autograd.grad(packed(xr.reshape(3, 6)).sum(), xr)
    got = float(r1_penalty(lambda v: packed(v.reshape(3, 6)).reshape(-1), x).detach())
    assert got == pytest.approx(float(grad.pow(2).sum()) / 6, rel=1e-12)
