"""Options of the coupling flows that the generic flow tests (default configs) do not reach: Glow's learned
conditional prior for factored-out channels and NICE's logistic base distribution."""

from __future__ import annotations

import torch

import dulab
from dulab.bijectors import Coupling
from dulab.data.base import DataSpec
from properties import (
    assert_bijector_inverse,
    assert_density_integrates,
    assert_entropy_consistent,
    assert_log_det_matches_jacobian,
    perturb_parameters,
)

IMG = DataSpec((1, 4, 4), "continuous")


class _Transform(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, context=None):
        return self.model.transform(x, context)

    def inverse(self, z, context=None):
        return self.model.inverse_and_log_det(z, context)


def _glow(learned_prior, perturb=0.05):
    torch.manual_seed(0)
    m = dulab.build_model("glow", IMG, num_steps=1, num_squeezes=2, hidden_channels=4, num_blocks=0,
                          learned_prior=learned_prior).double().eval()
    return perturb_parameters(m, perturb, seed=1) if perturb else m


def _x(n=3):
    return torch.randn(n, *IMG.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))


def test_glow_learned_prior_is_an_exact_invertible_density():
    m = _glow(True)
    assert_bijector_inverse(_Transform(m), _x())
    assert_log_det_matches_jacobian(m.transform, _x(2))
    assert_entropy_consistent(m, num_samples=64)


def test_glow_learned_prior_starts_at_the_standard_normal_and_then_matters():
    x = _x()
    with torch.no_grad():
        plain, prior0 = _glow(False, perturb=0), _glow(True, perturb=0)
        assert torch.allclose(plain.log_prob(x), prior0.log_prob(x), atol=1e-12)  # zero-initialised prior net
        assert sum(p.numel() for p in prior0.parameters()) > sum(p.numel() for p in plain.parameters())
        prior = _glow(True)
        # the prior is the one coupling that transforms the first half of the channels (the steps keep it)
        priors = [mod for mod in prior.modules() if isinstance(mod, Coupling) and mod.mask[0].sum() == 0]
        assert len(priors) == 1
        before = prior.log_prob(x)
        for p in priors[0].conditioner.parameters():
            p.add_(0.3)
        assert not torch.allclose(prior.log_prob(x), before)


def test_glow_learned_prior_trains_from_the_cli_defaults():
    ds = dulab.load_dataset("digits")
    m = dulab.build_model("glow", ds.spec, learned_prior=True, num_steps=2, hidden_channels=8)
    torch.manual_seed(0)
    out = m.loss(ds.x[:16])
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def _nice(base):
    torch.manual_seed(0)
    m = dulab.build_model("nice", DataSpec((2,), "continuous"), num_layers=2, hidden_sizes=(8,),
                          base=base).double().eval()
    return perturb_parameters(m, 0.1, seed=1)


def test_nice_logistic_base_integrates_to_one_and_matches_its_sampler():
    m = _nice("logistic")
    assert_density_integrates(m, half_width=1000.0, num_points=500)
    assert_entropy_consistent(m)


def test_nice_logistic_base_is_the_standard_logistic():
    m = _nice("logistic")
    z = m.base_sample((20000, 2), torch.Generator().manual_seed(0))
    # standard logistic: mean 0, variance pi^2 / 3; its CDF at 1 is sigmoid(1)
    assert abs(float(z.mean())) < 0.05
    assert abs(float(z.var()) - torch.pi ** 2 / 3) < 0.1
    assert abs(float((z < 1).double().mean()) - float(torch.sigmoid(torch.tensor(1.0)))) < 0.01
    zz = torch.tensor([[0.0, 2.0]], dtype=torch.float64)
    expected = torch.distributions.TransformedDistribution(
        torch.distributions.Uniform(0.0, 1.0), [torch.distributions.SigmoidTransform().inv]).log_prob(
        zz.float()).sum()
    assert abs(float(m.base_log_prob(zz)) - float(expected)) < 1e-5
    assert not torch.allclose(m.base_log_prob(zz), _nice("normal").base_log_prob(zz))
