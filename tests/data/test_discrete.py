"""The discrete toys: the true pmf is normalised, samples follow it (chi-square), true_log_prob matches it."""

import numpy as np
import pytest
import torch
from scipy import stats

from dulab.data import discrete, load_dataset


def _chi_square_pvalue(counts: np.ndarray, pmf: np.ndarray) -> float:
    """Pearson's test of counts against pmf, pooling the cells that expect fewer than 5 observations."""
    expected = pmf * counts.sum()
    big = expected >= 5
    obs, exp = counts[big], expected[big]
    if not big.all():
        obs, exp = np.append(obs, counts[~big].sum()), np.append(exp, expected[~big].sum())
    return stats.chisquare(obs, exp).pvalue


@pytest.mark.parametrize(("name", "bins"), [("discrete1d", 20), ("discrete1d", 100), ("discrete2d", 25),
                                            ("discrete2d", 10)])
def test_true_pmf_is_normalised_positive_and_of_the_right_shape(name, bins):
    ds = load_dataset(name, bins=bins)
    pmf = ds.info["true_pmf"]
    dims = 1 if name == "discrete1d" else 2
    assert pmf.shape == (bins,) * dims and pmf.dtype == torch.float64
    assert float(pmf.sum()) == pytest.approx(1.0, abs=1e-12)
    assert (pmf > 0).all()  # the 1% floor
    assert ds.spec.num_levels == bins and ds.spec.shape == (dims,)


@pytest.mark.parametrize("name", ["discrete1d", "discrete2d"])
def test_sample_frequencies_match_the_true_pmf(name):
    train, test = load_dataset(name), load_dataset(name, split="test")
    x = torch.cat([train.x, test.x])
    pmf = train.info["true_pmf"].numpy()
    flat = x[:, 0] * pmf.shape[0] + x[:, 1] if x.shape[1] == 2 else x[:, 0]
    counts = np.bincount(flat.numpy(), minlength=pmf.size)
    assert _chi_square_pvalue(counts, pmf.reshape(-1)) > 1e-4


def test_chi_square_check_detects_a_wrong_pmf():
    # The same check against a shifted pmf must fail, or the test above proves nothing.
    ds = load_dataset("discrete1d")
    counts = np.bincount(ds.x[:, 0].numpy(), minlength=20)
    assert _chi_square_pvalue(counts, np.roll(ds.info["true_pmf"].numpy(), 1)) < 1e-6


@pytest.mark.parametrize("name", ["discrete1d", "discrete2d"])
def test_true_log_prob_is_the_log_of_the_pmf(name):
    ds = load_dataset(name, bins=6)
    pmf = ds.info["true_pmf"]
    if name == "discrete1d":
        points = torch.arange(6)[:, None]  # (6, 1)
        expected = pmf.log()
    else:
        points = torch.cartesian_prod(torch.arange(6), torch.arange(6))  # (36, 2), row-major
        expected = pmf.log().reshape(-1)
    lp = ds.true_log_prob(points)
    assert lp.shape == (len(points),)
    assert torch.allclose(lp.double(), expected, atol=1e-6)
    assert float(torch.logsumexp(lp.double(), 0)) == pytest.approx(0.0, abs=1e-6)  # enumeration sums to one


def test_true_log_prob_outside_the_grid_is_minus_infinity():
    ds = load_dataset("discrete2d", bins=5)
    lp = ds.true_log_prob(torch.tensor([[0, 5], [-1, 0], [4, 4]]))
    assert torch.isneginf(lp[:2]).all() and torch.isfinite(lp[2])


def test_pmf_shape_scales_with_bins():
    # The two modes sit at 25% and 70% of the range whatever the number of bins.
    for bins in (20, 200):
        pmf = discrete.pmf1d(bins)
        low, high = pmf[: bins // 2], pmf[bins // 2 :]
        assert int(np.argmax(low)) == pytest.approx(0.25 * bins, abs=1)
        assert bins // 2 + int(np.argmax(high)) == pytest.approx(0.7 * bins, abs=1)


def test_smiley_has_more_mass_on_the_eyes_than_between_them():
    pmf = discrete.pmf2d(25)
    eye = pmf[8, 8]  # (0.35, 0.35) * 25 - 0.5 ~ (8.25, 8.25)
    between = pmf[8, 12]
    centre = pmf[12, 12]
    assert eye > 5 * between and eye > 5 * centre


def test_splits_sizes_determinism_and_seed():
    a, b = load_dataset("discrete1d", num_samples=600), load_dataset("discrete1d", num_samples=600)
    assert len(a) == 500 and len(load_dataset("discrete1d", split="test", num_samples=600)) == 100
    assert torch.equal(a.x, b.x)
    assert not torch.equal(a.x, load_dataset("discrete1d", num_samples=600, seed=1).x)


@pytest.mark.parametrize(("builder", "options"), [
    (discrete.discrete1d, {"bins": 1}),
    (discrete.discrete2d, {"bins": 0}),
    (discrete.discrete1d, {"num_samples": 5}),
    (discrete.discrete2d, {"seed": -3}),
])
def test_invalid_options_raise_value_error(builder, options):
    with pytest.raises(ValueError):
        builder(**options)
