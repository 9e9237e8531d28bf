"""Bound arithmetic of ``dulab.losses.elbo`` against closed forms and ``torch.distributions`` (DESIGN.md 6.5)."""

import math

import pytest
import torch
from torch import distributions as td

from dulab.losses import elbo


def _gaussians(seed=0, shape=(5, 3)):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=g, dtype=torch.float64)
    log_var = torch.randn(shape, generator=g, dtype=torch.float64)
    return mean, log_var


def check_kl_standard_against_torch():
    """Raises ``AssertionError`` when ``elbo.gaussian_kl_standard`` disagrees with ``td.kl_divergence``."""
    for seed in range(3):
        mean, log_var = _gaussians(seed)
        q = td.Normal(mean, torch.exp(0.5 * log_var))
        p = td.Normal(torch.zeros_like(mean), torch.ones_like(mean))
        torch.testing.assert_close(elbo.gaussian_kl_standard(mean, log_var), td.kl_divergence(q, p),
                                   rtol=1e-12, atol=1e-12)


def test_kl_to_standard_normal_matches_torch_distributions():
    check_kl_standard_against_torch()


def test_kl_between_diagonal_gaussians_matches_torch_distributions():
    mean, log_var = _gaussians(0)
    prior_mean, prior_log_var = _gaussians(1)
    q = td.Normal(mean, torch.exp(0.5 * log_var))
    p = td.Normal(prior_mean, torch.exp(0.5 * prior_log_var))
    torch.testing.assert_close(elbo.gaussian_kl(mean, log_var, prior_mean, prior_log_var), td.kl_divergence(q, p),
                               rtol=1e-12, atol=1e-12)
    # against a standard-normal prior it is the special case
    zeros = torch.zeros_like(mean)
    torch.testing.assert_close(elbo.gaussian_kl(mean, log_var, zeros, zeros), elbo.gaussian_kl_standard(mean, log_var))


def test_kl_worked_example():
    # KL(N(1, 1) || N(0, 1)) = 1/2 (mean shift only); KL(N(0, e) || N(0, 1)) = (e - 1 - 1) / 2
    out = elbo.gaussian_kl_standard(torch.tensor([1.0, 0.0], dtype=torch.float64),
                                    torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([0.5, (math.e - 2) / 2], dtype=torch.float64))


def test_wrong_variance_term_is_caught(monkeypatch):
    """Mutation: a KL that uses the standard deviation where the variance belongs fails the check above."""
    def wrong(mean, log_var):
        return 0.5 * (mean.square() + torch.exp(0.5 * log_var) - 1.0 - log_var)

    monkeypatch.setattr(elbo, "gaussian_kl_standard", wrong)
    with pytest.raises(AssertionError):
        check_kl_standard_against_torch()


def test_reconstruction_log_likelihoods_match_torch_distributions():
    g = torch.Generator().manual_seed(0)
    B, C, H, W, K = 3, 2, 2, 2, 5
    logits = torch.randn(B, C, H, W, generator=g, dtype=torch.float64)
    x = torch.randint(0, 2, (B, C, H, W), generator=g)
    ref = td.Bernoulli(logits=logits).log_prob(x.double()).flatten(1).sum(1)
    torch.testing.assert_close(elbo.bernoulli_log_likelihood(x, logits), ref)

    cat_logits = torch.randn(B, K, C, H, W, generator=g, dtype=torch.float64)
    x = torch.randint(0, K, (B, C, H, W), generator=g)
    ref = td.Categorical(logits=cat_logits.movedim(1, -1)).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(elbo.categorical_log_likelihood(x, cat_logits), ref)

    mean = torch.randn(B, 4, generator=g, dtype=torch.float64)
    log_std = torch.randn(B, 4, generator=g, dtype=torch.float64)
    y = torch.randn(B, 4, generator=g, dtype=torch.float64)
    ref = td.Normal(mean, log_std.exp()).log_prob(y).sum(1)
    torch.testing.assert_close(elbo.gaussian_log_likelihood(y, mean, log_std), ref)


def test_discretized_logistic_likelihood_normalises_over_the_levels():
    # one dimension: sum over every level of exp(log P(x)) is 1 (enumeration), for several means and scales
    K = 7
    levels = torch.arange(K).reshape(K, 1)
    for mean, log_scale in [(0.0, -1.0), (0.9, -3.0), (-1.5, 0.5)]:
        m = torch.full((K, 1), mean, dtype=torch.float64)
        s = torch.full((K, 1), log_scale, dtype=torch.float64)
        total = torch.logsumexp(elbo.discretized_logistic_log_likelihood(levels, m, s, K), 0)
        assert abs(float(total)) < 1e-10


def test_iwae_bound_worked_example_and_k1_is_the_elbo_sample():
    # log((1 + 3) / 2) = log 2
    log_w = torch.log(torch.tensor([[1.0], [3.0]], dtype=torch.float64))
    torch.testing.assert_close(elbo.iwae_bound(log_w), torch.tensor([math.log(2.0)], dtype=torch.float64))
    # K = 1: the bound is the single log-weight, i.e. the one-sample ELBO estimate
    one = torch.randn(1, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(elbo.iwae_bound(one), one[0])
    # equal weights: the bound is that weight for every K (log of a mean of identical numbers)
    same = torch.full((10, 2), -3.5, dtype=torch.float64)
    torch.testing.assert_close(elbo.iwae_bound(same), torch.full((2,), -3.5, dtype=torch.float64))
    # huge log-weights stay finite (logsumexp)
    torch.testing.assert_close(elbo.iwae_bound(torch.tensor([[1000.0], [1000.0]])), torch.tensor([1000.0]))


def test_free_bits_worked_example():
    kl = torch.tensor([[0.1, 2.0], [0.3, 1.0]], dtype=torch.float64)  # batch means 0.2 and 1.5
    assert float(elbo.free_bits_kl(kl, 0.5)) == pytest.approx(0.5 + 1.5)
    assert float(elbo.free_bits_kl(kl, 0.0)) == pytest.approx(0.2 + 1.5)
    # below the floor the dimension gets no gradient: nothing to gain by collapsing it further
    kl = kl.clone().requires_grad_(True)
    elbo.free_bits_kl(kl, 0.5).backward()
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 0.5], [0.0, 0.5]], dtype=torch.float64))
    with pytest.raises(ValueError):
        elbo.free_bits_kl(kl, -1.0)
