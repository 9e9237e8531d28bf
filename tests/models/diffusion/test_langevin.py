"""Langevin samplers (``dulab.models.diffusion.langevin``) against the exact score of a Gaussian, and the noise ladder.

For the score of ``N(mu, s^2)`` every step is linear, so the chain's mean and variance follow closed-form
recursions: the unadjusted algorithm's stationary variance is ``s^2 / (1 - h / (2 s^2))`` (not ``s^2``), and the
annealed sampler's moments after every level can be computed exactly. The empirical moments of many chains must
match those recursions tightly, and the recursions must land near the target for sensible steps.
"""

from __future__ import annotations

import math

import pytest
import torch

from dulab.errors import UserError
from dulab.models.diffusion.langevin import AnnealedLangevinSampler, LangevinSampler, geometric_sigmas

MU = torch.tensor([1.5, -0.5], dtype=torch.float64)
S = torch.tensor([0.7, 1.3], dtype=torch.float64)  # per-coordinate standard deviations


def gaussian_score(x):
    return -(x - MU) / S**2


def test_geometric_ladder_is_geometric_decreasing_and_hits_both_ends():
    s = geometric_sigmas(10.0, 0.01, 7)
    assert s.dtype == torch.float64 and s.shape == (7,)
    assert (s[1:] < s[:-1]).all()
    ratios = s[:-1] / s[1:]
    assert torch.allclose(ratios, ratios[0].expand(6), rtol=1e-12)
    assert math.isclose(float(ratios[0]), 1000 ** (1 / 6), rel_tol=1e-12)
    assert math.isclose(float(s[0]), 10.0, rel_tol=1e-12) and math.isclose(float(s[-1]), 0.01, rel_tol=1e-12)
    assert geometric_sigmas(3.0, 0.5, 1).tolist() == [0.5]
    for bad in [(0.01, 10.0, 5), (1.0, 1.0, 3), (1.0, 0.0, 3), (1.0, 0.1, 0)]:
        with pytest.raises(UserError):
            geometric_sigmas(*bad)


@pytest.mark.parametrize("h", [0.01, 0.2])
def test_langevin_with_exact_gaussian_score_matches_its_stationary_moments(h):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(20000, 2, generator=g, dtype=torch.float64) * 3.0
    steps = int(8 * S.max() ** 2 / h) + 50  # many relaxation times of the slowest coordinate
    x = LangevinSampler(step_size=h, num_steps=steps)(gaussian_score, x0, generator=g)
    var_theory = S**2 / (1 - h / (2 * S**2))
    se_mean = (var_theory / len(x)).sqrt()
    assert ((x.mean(0) - MU).abs() < 5 * se_mean).all()
    rel = x.var(0) / var_theory - 1
    assert (rel.abs() < 5 * math.sqrt(2 / len(x))).all(), rel  # 5 standard errors of a sample variance
    if h == 0.01:  # a small step: the target itself, within 1%
        assert ((x.var(0) / S**2 - 1).abs() < 0.01 + 5 * math.sqrt(2 / len(x))).all()
    else:  # a large step visibly inflates the variance (the bias of the unadjusted algorithm is real)
        assert (x.var(0) / S**2 > 1.03).all()


def test_langevin_without_noise_is_gradient_ascent_to_the_mode():
    x0 = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = LangevinSampler(step_size=0.1, num_steps=400, noise_scale=0.0)(gaussian_score, x0)
    assert torch.allclose(x, MU.expand_as(x), atol=1e-8)


def test_langevin_clipping_clamping_callback_and_generator():
    x0 = torch.full((4, 2), 100.0, dtype=torch.float64)
    one = LangevinSampler(step_size=0.5, num_steps=1, noise_scale=0.0, grad_clip=0.3)
    assert torch.allclose(one(gaussian_score, x0), x0 - 0.15)  # each element moves by step * clip at most
    boxed = LangevinSampler(step_size=0.5, num_steps=3, clamp=(-1.0, 2.0))
    seen = []
    out = boxed(gaussian_score, x0, callback=lambda k, x: seen.append((k, float(x.max()))))
    assert [k for k, _ in seen] == [0, 1, 2, 3] and seen[0][1] == 100.0
    assert out.min() >= -1.0 and out.max() <= 2.0
    a = boxed(gaussian_score, x0 * 0, generator=torch.Generator().manual_seed(5))
    b = boxed(gaussian_score, x0 * 0, generator=torch.Generator().manual_seed(5))
    c = boxed(gaussian_score, x0 * 0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(UserError):
        LangevinSampler(step_size=0.0, num_steps=1)


def _annealed_moments(sigmas, eps, T, m0, v0, s2, denoise):
    """Exact mean / variance recursions of the annealed sampler on data N(MU, s2) (per coordinate)."""
    m, v = m0.clone(), v0.clone()
    for sig in sigmas.tolist():
        alpha = eps * sig**2 / float(sigmas[-1]) ** 2
        V = s2 + sig**2
        a = 1 - alpha / (2 * V)
        for _ in range(T):
            m = MU + a * (m - MU)
            v = a**2 * v + alpha
    if denoise:
        c = s2 / (s2 + float(sigmas[-1]) ** 2)
        m, v = MU + c * (m - MU), c**2 * v
    return m, v


@pytest.mark.parametrize("denoise", [True, False])
def test_annealed_langevin_with_exact_perturbed_scores_samples_the_gaussian(denoise):
    sigmas = geometric_sigmas(3.0, 0.05, 8)
    sampler = AnnealedLangevinSampler(sigmas, eps=2e-3, steps_per_level=200, denoise=denoise)
    alpha = sampler.step_sizes
    assert torch.allclose(alpha / sigmas**2, (alpha / sigmas**2)[0].expand(8), rtol=1e-12)  # same ratio per level
    assert math.isclose(float(alpha[-1]), 2e-3, rel_tol=1e-12)

    def score(x, i):  # the score of N(MU, S^2 + sigma_i^2)
        return -(x - MU) / (S**2 + float(sigmas[i]) ** 2)

    g = torch.Generator().manual_seed(0)
    n = 20000
    x0 = float(sigmas[0]) * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = sampler(score, x0, generator=g)
    m, v = _annealed_moments(sigmas, 2e-3, 200, torch.zeros(2, dtype=torch.float64),
                             torch.full((2,), float(sigmas[0]) ** 2, dtype=torch.float64), S**2, denoise)
    # the chains follow the exact recursions ...
    assert ((x.mean(0) - m).abs() < 5 * (v / n).sqrt()).all()
    assert ((x.var(0) / v - 1).abs() < 5 * math.sqrt(2 / n)).all()
    # ... and those land on the data's moments (to within the last level's noise and the step bias; with 60
    # steps per level the slow coordinate has not relaxed from the large early steps: +3%)
    assert (m - MU).abs().max() < 0.02
    assert ((v / S**2 - 1).abs() < 0.03).all(), v / S**2
    assert ((x.var(0) / S**2 - 1).abs() < 0.03 + 5 * math.sqrt(2 / n)).all()


def test_annealed_sampler_rejects_bad_ladders():
    for bad in ([1.0, 1.0], [0.5, 1.0], [1.0, -0.1], []):
        with pytest.raises(UserError):
            AnnealedLangevinSampler(bad, eps=1e-3, steps_per_level=1)
    with pytest.raises(UserError):
        AnnealedLangevinSampler([1.0, 0.1], eps=0.0, steps_per_level=1)
