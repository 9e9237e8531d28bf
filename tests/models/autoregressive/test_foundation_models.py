"""Histogram and discretized logistic mixture: the course's first likelihood models (DESIGN.md section 6)."""

import math

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.distributions import discretized_logistic_mixture_log_prob
from properties import (
    assert_checkpoint_roundtrip,
    assert_grads_finite,
    assert_normalised,
    assert_same_seed_same_samples,
    assert_sample_frequencies,
    enumerate_domain,
)

SPECS = {
    "1d20": DataSpec((1,), "discrete", 20),
    "vector4x3": DataSpec((4,), "discrete", 3),
    "binary3x3": DataSpec((1, 3, 3), "discrete", 2),
    "rgb2x2binary": DataSpec((3, 2, 2), "discrete", 2),
}
CASES = [("histogram", {"mode": "joint"}), ("histogram", {"mode": "independent"}), ("logistic_mixture", {})]


def _random_model(name, spec, hparams, seed=0):
    torch.manual_seed(seed)
    model = dulab.build_model(name, spec, **hparams).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)  # away from the uniform initialisation
    return model


@pytest.mark.parametrize("name,hparams", CASES)
@pytest.mark.parametrize("spec_name", list(SPECS))
def test_normalised_by_enumeration(name, hparams, spec_name):
    assert_normalised(_random_model(name, SPECS[spec_name], hparams))


@pytest.mark.parametrize("name,hparams", CASES)
def test_sample_frequencies_match_probabilities(name, hparams):
    assert_sample_frequencies(_random_model(name, SPECS["vector4x3"], hparams), num_samples=20000)


@pytest.mark.parametrize("name,hparams", CASES)
def test_gradients_checkpoint_and_seed(name, hparams, tmp_path):
    model = _random_model(name, SPECS["binary3x3"], hparams)
    x = enumerate_domain((1, 3, 3), 2)[:40]
    assert_grads_finite(model, x)
    assert_checkpoint_roundtrip(name, model, x, tmp_path)
    assert_same_seed_same_samples(model)


def test_joint_histogram_fits_the_empirical_joint():
    # The MLE of a joint histogram is the empirical frequency table; gradient descent must get there.
    spec = DataSpec((2,), "discrete", 3)
    x = torch.tensor([[0, 0]] * 6 + [[1, 2]] * 3 + [[2, 1]] * 1)
    model = dulab.build_model("histogram", spec, mode="joint")
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(500):
        opt.zero_grad()
        model.loss(x)["loss"].backward()
        opt.step()
    p = model.log_prob(torch.tensor([[0, 0], [1, 2], [2, 1]])).exp()
    assert torch.allclose(p, torch.tensor([0.6, 0.3, 0.1]), atol=0.02)


def test_independent_histogram_ignores_correlation():
    # Fitted to perfectly correlated data (3 x (0, 0), 1 x (1, 1)), the independent MLE is the product of the
    # marginals (3/4, 1/4) x (3/4, 1/4): p(0, 1) = 3/16 for a pair never seen (a joint histogram would give 0)
    # and p(0, 0) = 9/16, not the empirical 3/4. Checked after training, away from the uniform initialisation.
    spec = DataSpec((2,), "discrete", 2)
    model = dulab.build_model("histogram", spec, mode="independent")
    x = torch.tensor([[0, 0]] * 3 + [[1, 1]])
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(400):
        opt.zero_grad()
        model.loss(x)["loss"].backward()
        opt.step()
    with torch.no_grad():
        p = model.log_prob(torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]])).exp()
    assert torch.allclose(p, torch.tensor([9 / 16, 3 / 16, 3 / 16, 1 / 16]), atol=0.01)


def test_discretized_logistic_matches_closed_form():
    # One component, K = 5 levels: bin masses are differences of the logistic CDF at the bin edges (in [-1, 1]
    # units, centres 2x/(K-1) - 1, half-width 1/(K-1)), with the tails in the edge bins.
    K, mu, s = 5, 0.1, 0.3
    sig = lambda t: 1 / (1 + math.exp(-t))  # noqa: E731
    edges = [-math.inf] + [2 * (k + 0.5) / (K - 1) - 1 for k in range(K - 1)] + [math.inf]
    cdf = [0.0 if e == -math.inf else 1.0 if e == math.inf else sig((e - mu) / s) for e in edges]
    expected = torch.tensor([math.log(cdf[k + 1] - cdf[k]) for k in range(K)], dtype=torch.float64)
    x = torch.arange(K)
    got = discretized_logistic_mixture_log_prob(
        x, torch.zeros(K, 1, dtype=torch.float64), torch.full((K, 1), mu, dtype=torch.float64),
        torch.full((K, 1), math.log(s), dtype=torch.float64), K)
    assert torch.allclose(got, expected, atol=1e-12)


def test_discretized_logistic_is_stable_for_sharp_components():
    # A very sharp component far from a bin: log-probabilities stay finite and still normalise.
    K = 256
    x = torch.arange(K)
    lp = discretized_logistic_mixture_log_prob(
        x, torch.zeros(K, 2, dtype=torch.float64), torch.tensor([[0.3, -0.9]], dtype=torch.float64).expand(K, 2),
        torch.tensor([[-9.0, -6.0]], dtype=torch.float64).expand(K, 2), K)
    assert torch.isfinite(lp).all()
    assert abs(torch.logsumexp(lp, 0).item()) < 1e-6
