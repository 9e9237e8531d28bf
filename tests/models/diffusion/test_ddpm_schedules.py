"""Noise schedules, eps/x0/v conversions and the samplers of dulab.models.diffusion (float64, closed forms)."""

from __future__ import annotations

import math

import pytest
import torch

from dulab.models.diffusion.samplers import DDIMSampler, DDPMSampler
from dulab.models.diffusion.schedules import PREDICTIONS, SCHEDULES, NoiseSchedule, convert, target_of


@pytest.mark.parametrize("kind", SCHEDULES)
@pytest.mark.parametrize("T", [1, 10, 1000])
def test_alpha_bar_strictly_decreasing_in_unit_interval(kind, T):
    s = NoiseSchedule(kind, T)
    bars = s.alpha_bar64
    assert bars[0] == 1.0 and bars.shape == (T + 1,)
    assert (bars[1:] > 0).all() and (bars <= 1).all()
    assert (bars[1:] < bars[:-1]).all(), "alpha_bar must be strictly decreasing"
    assert s.alpha_bar.dtype == torch.float32 and torch.equal(s.alpha_bar, bars.float())


def test_linear_schedule_matches_ho_et_al_and_rescales():
    s = NoiseSchedule("linear", 1000)
    assert math.isclose(float(s.beta64[1]), 1e-4, rel_tol=1e-9) and math.isclose(float(s.beta64[-1]), 0.02,
                                                                                    rel_tol=1e-9)
    # Ho et al.: alpha_bar_T ~ 4e-5 for T = 1000; rescaling keeps the total noise similar for T = 100
    assert 1e-5 < float(s.alpha_bar64[-1]) < 1e-4
    assert float(NoiseSchedule("linear", 100).alpha_bar64[-1]) < 1e-3


def test_continuous_cosine_is_cos_of_half_pi_t():
    s = NoiseSchedule("continuous_cosine", 8)
    t = torch.arange(1, 8, dtype=torch.float64) / 8
    assert torch.allclose(s.alpha_bar64[1:8].sqrt(), torch.cos(math.pi * t / 2), atol=1e-15)
    assert torch.allclose((1 - s.alpha_bar64[1:8]).sqrt(), torch.sin(math.pi * t / 2), atol=1e-15)


@pytest.mark.parametrize("source", PREDICTIONS)
@pytest.mark.parametrize("dest", PREDICTIONS)
def test_conversions_are_mutual_inverses(source, dest):
    g = torch.Generator().manual_seed(0)
    s = NoiseSchedule("cosine", 100)
    x0, eps = torch.randn(64, 3, generator=g, dtype=torch.float64), torch.randn(64, 3, generator=g, dtype=torch.float64)
    t = torch.randint(1, 100, (64,), generator=g)
    a, sig = s.coefficients(t, x0)
    x_t = a * x0 + sig * eps
    value = target_of(source, x0, eps, a, sig)
    there = convert(value, source, dest, x_t, a, sig)
    assert torch.allclose(there, target_of(dest, x0, eps, a, sig), atol=1e-10)
    assert torch.allclose(convert(there, dest, source, x_t, a, sig), value, atol=1e-10)


def _point_mass_denoiser(c, schedule, prediction):
    def denoiser(x, t):
        a, s = schedule.coefficients(t, x)
        eps = (x - a * c) / s  # exact: x_t = a c + s eps
        return target_of(prediction, c.expand_as(x), eps, a, s)
    return denoiser


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("num_steps", [1, 3, 50])
def test_point_mass_is_recovered_by_ddpm_and_ddim(prediction, num_steps):
    sched = NoiseSchedule("linear", 50)
    c = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    den = _point_mass_denoiser(c, sched, prediction)
    for sampler in (DDPMSampler(sched, prediction=prediction), DDPMSampler(sched, prediction=prediction,
                                                                           variance="large"),
                    DDIMSampler(sched, prediction=prediction), DDIMSampler(sched, prediction=prediction, eta=1.0)):
        out = sampler.sample(den, (16, 3), num_steps=num_steps, generator=torch.Generator().manual_seed(1),
                             dtype=torch.float64)
        assert torch.allclose(out, c.expand(16, 3), atol=1e-8), type(sampler).__name__


def _gaussian_denoiser(m, v0, schedule):
    """The exact eps-prediction for data N(m, v0 I): E[x0 | x_t] = m + a v0 / (a^2 v0 + s^2) (x_t - a m)."""
    def denoiser(x, t):
        a, s = schedule.coefficients(t, x)
        x0 = m + a * v0 / (a * a * v0 + s * s) * (x - a * m)
        return (x - a * x0) / s
    return denoiser


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
    sched = NoiseSchedule("cosine", 40)
    den = _gaussian_denoiser(torch.tensor(0.5, dtype=torch.float64), 0.3, sched)
    x_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ddim = DDIMSampler(sched)
    a = ddim.sample(den, (32, 2), num_steps=10, generator=torch.Generator().manual_seed(1), x_T=x_T.clone())
    b = ddim.sample(den, (32, 2), num_steps=10, generator=torch.Generator().manual_seed(2), x_T=x_T.clone())
    assert torch.equal(a, b)
    c = torch.Generator().manual_seed(5)
    assert torch.equal(ddim.sample(den, (8, 2), generator=c.manual_seed(5), dtype=torch.float64),
                       ddim.sample(den, (8, 2), generator=torch.Generator().manual_seed(5), dtype=torch.float64))
    stoch = DDIMSampler(sched, eta=1.0)
    d = stoch.sample(den, (32, 2), num_steps=10, generator=torch.Generator().manual_seed(1), x_T=x_T.clone())
    e = stoch.sample(den, (32, 2), num_steps=10, generator=torch.Generator().manual_seed(2), x_T=x_T.clone())
    assert not torch.allclose(d, e)


def test_ddim_eta1_equals_ddpm_small_variance():
    # Song et al. 2021, eq. 16: eta = 1 gives the DDPM posterior variance; the means coincide too
    sched = NoiseSchedule("linear", 30)
    den = _gaussian_denoiser(torch.tensor(-0.2, dtype=torch.float64), 0.5, sched)
    for n in (30, 7):
        kw = dict(num_steps=n, dtype=torch.float64)
        a = DDIMSampler(sched, eta=1.0).sample(den, (64, 2), generator=torch.Generator().manual_seed(3), **kw)
        b = DDPMSampler(sched).sample(den, (64, 2), generator=torch.Generator().manual_seed(3), **kw)
        assert torch.allclose(a, b, atol=1e-10)


def test_ddpm_samples_match_a_gaussian_with_the_exact_denoiser():
    sched = NoiseSchedule("linear", 200)
    m, v0 = torch.tensor(1.0, dtype=torch.float64), 0.25
    den = _gaussian_denoiser(m, v0, sched)
    out = DDPMSampler(sched).sample(den, (20000, 1), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.float64)
    assert abs(float(out.mean()) - 1.0) < 0.02 and abs(float(out.var()) - v0) < 0.02


def test_ddim_inversion_round_trips_with_the_exact_gaussian_denoiser():
    sched = NoiseSchedule("cosine", 1000)
    den = _gaussian_denoiser(torch.tensor(0.5, dtype=torch.float64), 0.2, sched)
    x0 = 0.5 + 0.2**0.5 * torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ddim = DDIMSampler(sched)
    errors = []
    for n in (100, 400):
        x_T = ddim.invert(den, x0, num_steps=n)
        assert x_T.std() > 0.5  # it went somewhere noise-like
        back = ddim.sample(den, x0.shape, num_steps=n, x_T=x_T)
        errors.append(float((back - x0).abs().max()))
    # the round trip is exact up to the ODE's discretisation error, first order in 1/N
    assert errors[1] < 0.015 and errors[1] < errors[0] / 3, errors
