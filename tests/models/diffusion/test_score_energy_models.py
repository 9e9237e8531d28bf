"""NCSN and EBM (``dulab.models.diffusion.ncsn`` / ``ebm``): the denoising score-matching loss is minimised by the
exact score of the perturbed data, the Fourier features are fixed and unsaved, the EBM score is -grad E, the
contrastive-divergence loss pushes data energies down and sample energies up, the replay buffer's ring and
re-initialisation behaviour, finite gradients for every parameter."""

from __future__ import annotations

import math

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.diffusion.ebm import ReplayBuffer
from dulab.models.diffusion.ncsn import dsm_loss
from dulab.models.diffusion.score_networks import FourierFeatures

VEC, IMG = DataSpec((2,), "continuous"), DataSpec((1, 8, 8), "discrete", 17)


def test_dsm_loss_is_minimised_by_the_exact_perturbed_score():
    """Data N(0, s^2 I): E[dsm] = D s^2 / (2 (s^2 + sigma^2)) at the exact score, and larger at a wrong one."""
    s2, D, n = 0.5, 2, 200000
    sigmas = torch.tensor([1.0, 0.3], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = math.sqrt(s2) * torch.randn(n, D, generator=g, dtype=torch.float64)
    idx = torch.randint(0, 2, (n,), generator=g)
    z = torch.randn(n, D, generator=g, dtype=torch.float64)
    sig2 = sigmas[idx].pow(2).view(-1, 1)
    exact = dsm_loss(lambda xt, i: -xt / (s2 + sigmas[i].pow(2).view(-1, 1)), x, sigmas, idx, z)
    theory = (D * s2 / (2 * (s2 + sig2))).mean()
    assert abs(float(exact.mean() - theory)) < 4 * float(exact.std()) / math.sqrt(n)
    wrong = dsm_loss(lambda xt, i: -xt / (2 * s2 + sigmas[i].pow(2).view(-1, 1)), x, sigmas, idx, z)
    assert float(wrong.mean()) > float(exact.mean()) + 0.01


def test_fourier_features_are_fixed_unsaved_and_keep_the_coordinates():
    a, b = FourierFeatures(2, 5, 2.0), FourierFeatures(2, 5, 2.0)
    assert torch.equal(a.weight, b.weight) and "weight" not in a.state_dict()
    x = torch.randn(4, 2)
    out = a(x)
    assert out.shape == (4, 12) and torch.equal(out[:, :2], x)
    assert torch.allclose(out[:, 2:7] ** 2 + out[:, 7:] ** 2, torch.ones(4, 5))


@pytest.mark.parametrize("name,spec", [("ncsn", VEC), ("ncsn", IMG), ("ebm", VEC), ("ebm", IMG)])
def test_every_parameter_gets_a_finite_gradient(name, spec):
    torch.manual_seed(0)
    hp = {"hidden_sizes": (16, 16), "hidden_channels": 8}
    if name == "ncsn":
        hp["num_blocks"] = 1
    m = dulab.build_model(name, spec, **hp)
    x = (torch.randint(0, 17, (6, *spec.shape)) if spec.is_discrete else torch.randn(6, 2))
    kw = {} if name == "ncsn" else {"negatives": m.initial_noise(6)}
    m.loss(x, **kw)["loss"].backward()
    for p_name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), p_name


def test_ebm_score_is_minus_the_energy_gradient_and_cd_has_the_right_signs():
    torch.manual_seed(0)
    m = dulab.build_model("ebm", VEC, hidden_sizes=(16,)).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    eps = 1e-6
    num = torch.stack([(m.energy(x + eps * e) - m.energy(x - eps * e)) / (2 * eps)
                       for e in torch.eye(2, dtype=torch.float64)], 1)
    assert torch.allclose(m.score(x), -num, atol=1e-6)
    # d loss / d E(x+) = +1/B and d loss / d E(x-) = -1/B at reg_weight 0: a gradient step lowers data energies
    m0 = dulab.build_model("ebm", VEC, hidden_sizes=(16,), reg_weight=0.0).double()
    neg = 3.0 + torch.randn(5, 2, dtype=torch.float64)
    before = (m0.energy(x).mean().item(), m0.energy(neg).mean().item())
    opt = torch.optim.SGD(m0.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        m0.loss(x, negatives=neg)["loss"].backward()
        opt.step()
    assert m0.energy(x).mean().item() < before[0] and m0.energy(neg).mean().item() > before[1]


def test_replay_buffer_ring_and_reinitialisation():
    buf = ReplayBuffer(4, (2,), reinit_prob=0.0)
    fresh = lambda n, generator=None: torch.full((n, 2), -1.0)  # noqa: E731
    x, used = buf.sample_init(3, fresh)
    assert not used.any() and (x == -1).all()  # empty: every chain is fresh
    buf.push(torch.arange(12.0).view(6, 2))  # 6 rows into capacity 4: the last 4 stay
    assert len(buf) == 4 and set(buf.data[:, 0].tolist()) == {4.0, 6.0, 8.0, 10.0}
    x, used = buf.sample_init(50, fresh, generator=torch.Generator().manual_seed(0))
    assert used.all() and set(x[:, 0].tolist()) <= {4.0, 6.0, 8.0, 10.0}
    always = ReplayBuffer(4, (2,), reinit_prob=1.0)
    always.push(torch.ones(4, 2))
    assert not always.sample_init(20, fresh)[1].any()
    state = buf.state_dict()
    other = ReplayBuffer(4, (2,), reinit_prob=0.0)
    other.load_state_dict(state)
    assert torch.equal(other.data, buf.data) and other.position == buf.position
    with pytest.raises(UserError):
        ReplayBuffer(2, (2,), reinit_prob=0.0).load_state_dict(state)
