"""The continuous 2-D toys: true densities integrate to 1, samples follow them, splits and options behave."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from dulab.data import toy2d

NAMES = ["moons", "circles", "eight_gaussians", "checkerboard", "spirals", "swiss_roll", "face",
         "gaussians2d", "ring8", "grid25"]
WITH_DENSITY = [("eight_gaussians", {}), ("checkerboard", {}), ("gaussians2d", {"covariance": "full"}),
                ("gaussians2d", {"covariance": "diagonal"}), ("ring8", {"std": 0.1}), ("grid25", {"std": 0.1})]
H = 0.02  # grid step for the integrals


def _grid(lo=-6.0, hi=6.0, h=H):
    """Midpoints of an h x h grid over [lo, hi]^2, float64, as (G, G, 2)."""
    n = round((hi - lo) / h)
    c = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    return torch.stack(torch.meshgrid(c, c, indexing="ij"), dim=-1)


@pytest.mark.parametrize(("name", "options"), WITH_DENSITY)
def test_true_density_integrates_to_one(name, options):
    # Midpoint rule on [-6, 6]^2; the Gaussians' mass outside is < 1e-6, and the checkerboard's square edges
    # fall on grid-cell edges, so the rule is exact there up to float error.
    ds = getattr(toy2d, name)(**options)
    p = ds.true_log_prob(_grid()).exp()
    assert float(p.sum()) * H**2 == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("name", "options"), WITH_DENSITY)
def test_samples_follow_the_true_density(name, options):
    # Chi-square: counts of train + test samples on a 16x16 grid of cells over [-4, 4]^2 (plus the outside)
    # against the cell probabilities integrated from true_log_prob; cells expecting < 5 samples are pooled.
    train, test = getattr(toy2d, name)(**options), getattr(toy2d, name)("test", **options)
    x = torch.cat([train.x, test.x]).double()
    edges = torch.linspace(-4, 4, 17, dtype=torch.float64)
    fine = _grid(-4, 4, 0.02)  # 400 x 400 midpoints, 25 x 25 per coarse cell
    mass = train.true_log_prob(fine).exp() * 0.02**2  # (400, 400)
    cell_p = mass.reshape(16, 25, 16, 25).sum((1, 3)).reshape(-1)  # (256,), row-major over (x1 cell, x2 cell)
    probs = torch.cat([cell_p, (1 - cell_p.sum()).clamp_min(0).reshape(1)])
    inside = ((x >= -4) & (x < 4)).all(1)
    idx = torch.bucketize(x.clamp(-4, 4 - 1e-9), edges, right=True) - 1  # (N, 2) cell coordinates
    cells = torch.where(inside, idx[:, 0] * 16 + idx[:, 1], torch.full_like(idx[:, 0], 256))
    counts = torch.bincount(cells, minlength=257).double()
    expected = probs * len(x)
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().reshape(1)]).numpy()
    exp = torch.cat([expected[big], expected[~big].sum().reshape(1)]).numpy()
    keep = exp > 0
    obs, exp = obs[keep], exp[keep] * obs.sum() / exp[keep].sum()
    assert stats.chisquare(obs, exp).pvalue > 1e-4


@pytest.mark.parametrize(("name", "options"), WITH_DENSITY)
def test_true_log_prob_is_finite_on_samples_and_follows_the_input_dtype(name, options):
    ds = getattr(toy2d, name)(**options)
    lp = ds.true_log_prob(ds.x)
    assert lp.shape == (len(ds),) and lp.dtype == torch.float32
    assert torch.isfinite(lp).all()
    assert ds.true_log_prob(ds.x[:5].double()).dtype == torch.float64


def test_checkerboard_density_is_zero_on_white_squares_and_off_the_board():
    points = torch.tensor([[-3.0, -3.0], [-1.0, -3.0], [4.5, 0.0], [-3.0, -1.0], [-1.0, -1.0]])
    lp = toy2d.checkerboard().true_log_prob(points)
    assert lp[0] == pytest.approx(-math.log(32)) and lp[4] == pytest.approx(-math.log(32))
    assert torch.isinf(lp[1:4]).all() and (lp[1:4] < 0).all()


def test_gaussian_sample_moments_match_the_stated_parameters():
    # Mean (0.5, 0.5), covariance [[0.765, 0.675], [0.675, 0.765]] (docstring); 12000 samples: SE ~ 0.01.
    x = torch.cat([toy2d.gaussians2d().x, toy2d.gaussians2d("test").x]).double().numpy()
    assert np.allclose(x.mean(0), [0.5, 0.5], atol=0.05)
    assert np.allclose(np.cov(x.T), [[0.765, 0.675], [0.675, 0.765]], atol=0.05)
    x = toy2d.gaussians2d(covariance="diagonal").x.double().numpy()
    assert np.allclose(np.cov(x.T), [[0.09, 0.0], [0.0, 1.44]], atol=0.06)


@pytest.mark.parametrize("name", NAMES)
def test_train_and_test_are_disjoint_draws_within_range(name):
    train, test = getattr(toy2d, name)(), getattr(toy2d, name)("test")
    rows = {tuple(r) for r in train.x.tolist()}
    assert not any(tuple(r) in rows for r in test.x.tolist())
    x = torch.cat([train.x, test.x])
    bound = 4.25 if name == "grid25" else 4  # grid25's outer modes sit on the edge of [-4, 4]^2 (as in VEEGAN)
    assert float(((x.abs() <= bound).all(1)).double().mean()) > 0.999  # "roughly within [-4, 4]"


@pytest.mark.parametrize("name", NAMES)
def test_options_size_and_seed(name):
    builder = getattr(toy2d, name)
    small = builder(num_samples=120)
    assert len(small) == 100 and len(builder("test", num_samples=120)) == 20
    assert not torch.equal(small.x, builder(num_samples=120, seed=1).x)
    assert torch.equal(small.x, builder(num_samples=120, seed=0).x)


def test_noise_option_changes_the_spread():
    thin, thick = toy2d.circles(noise=0.0), toy2d.circles(noise=0.3)
    radius = thin.x.double().norm(dim=1)
    assert torch.allclose(radius, torch.where(thin.y == 0, 3.0, 1.5).double(), atol=1e-5)
    assert float(thick.x.double().norm(dim=1).sub(3.0).abs().max()) > 0.3


@pytest.mark.parametrize(("builder", "options"), [
    (toy2d.moons, {"noise": -0.1}),
    (toy2d.eight_gaussians, {"noise": 0.0}),
    (toy2d.checkerboard, {"num_samples": 3}),
    (toy2d.face, {"seed": -1}),
    (toy2d.gaussians2d, {"covariance": "spherical"}),
])
def test_invalid_options_raise_value_error(builder, options):
    with pytest.raises(ValueError):
        builder(**options)
