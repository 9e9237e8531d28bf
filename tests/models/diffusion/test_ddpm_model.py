"""The ``ddpm`` model: variational bound terms, discretized Gaussian decoder, guidance, gradients, sampling."""

from __future__ import annotations

import math

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.diffusion.ddpm import discretized_gaussian_log_likelihood
from properties import assert_checkpoint_roundtrip, assert_grads_finite, assert_same_seed_same_samples, random_levels

IMAGE = DataSpec((1, 8, 8), "discrete", 5, num_classes=3)
VECTOR = DataSpec((2,), "continuous")
TINY_UNET = dict(num_timesteps=20, hidden_channels=8, dropout=0.0)
TINY_MLP = dict(num_timesteps=20, hidden_sizes=(16, 16), dropout=0.0)


def _model(spec, **hp):
    torch.manual_seed(0)
    m = dulab.build_model("ddpm", spec, **hp).double()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # move the zero-initialised output layers off zero, so the network is not trivial
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return m.eval()


@pytest.mark.parametrize("num_levels", [2, 5, 256])
def test_discretized_gaussian_normalises_over_levels(num_levels):
    levels = torch.arange(num_levels, dtype=torch.float64) * (2 / (num_levels - 1)) - 1  # (K,)
    mean = torch.tensor([-3.0, -1.0, -0.3, 0.0, 0.9, 1.0, 4.0], dtype=torch.float64)[:, None]
    for log_std in (-9.0, -3.0, 0.0, 2.0):
        lp = discretized_gaussian_log_likelihood(levels[None], mean, torch.full_like(mean, log_std), num_levels)
        assert torch.isfinite(lp).all()
        assert torch.allclose(lp.logsumexp(1), torch.zeros(len(mean), dtype=torch.float64), atol=1e-9)


def test_discretized_gaussian_matches_cdf_difference_in_the_middle():
    normal = torch.distributions.Normal(torch.tensor(0.1, dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64))
    x = torch.tensor([0.0], dtype=torch.float64)  # level 2 of 5 (bin [-0.25, 0.25])
    lp = discretized_gaussian_log_likelihood(x, torch.tensor(0.1, dtype=torch.float64),
                                             torch.tensor(math.log(0.4), dtype=torch.float64), 5)
    ref = torch.log(normal.cdf(torch.tensor(0.25)) - normal.cdf(torch.tensor(-0.25)))
    assert torch.allclose(lp, ref.double(), atol=1e-12)
    far = discretized_gaussian_log_likelihood(x, torch.tensor(0.9, dtype=torch.float64),
                                              torch.tensor(math.log(1e-3), dtype=torch.float64), 5)
    assert torch.isfinite(far).all() and far < -1e5  # a tail far beyond float64's cdf resolution


def test_bound_terms_are_nonnegative_and_sum_to_total():
    m = _model(IMAGE, conditional=True, **TINY_UNET)
    x, y = random_levels(IMAGE, 6), torch.tensor([0, 1, 2, 0, 1, 2])
    for steps in (0, 4):
        terms = m.bound_terms(x, y, num_bound_steps=steps, generator=torch.Generator().manual_seed(0))
        assert (terms["prior"] >= 0).all() and (terms["diffusion"] >= 0).all() and (terms["decoder"] >= 0).all()
        assert terms["diffusion"].shape == (6, 19 if steps == 0 else steps)
        total = terms["prior"] + terms["diffusion"].sum(1) + terms["decoder"]
        assert torch.allclose(total, terms["total"], rtol=1e-12)
        assert torch.allclose(m.log_prob(x, y, num_bound_steps=steps, generator=torch.Generator().manual_seed(0)),
                              -terms["total"])
    assert (terms["timesteps"] >= 2).all() and (terms["timesteps"] <= 20).all()
    assert float(terms["weights"].sum()) == 19  # strata cover t = 2..T


def test_stratified_bound_is_unbiased():
    m = _model(VECTOR, **TINY_MLP)
    x = torch.randn(1, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64).expand(4000, 2)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        exact = m.bound_terms(x, num_bound_steps=0, generator=g)["diffusion"].sum(1)
        strat = m.bound_terms(x, num_bound_steps=3, generator=g)["diffusion"].sum(1)
    se = math.sqrt(float(exact.var() / len(x) + strat.var() / len(x)))
    assert abs(float(exact.mean() - strat.mean())) < 4 * se, (float(exact.mean()), float(strat.mean()), se)


def test_bound_is_never_better_than_the_true_entropy_of_a_gaussian(monkeypatch):
    """Data N(0, v0 I) in 2-D with the exact posterior-mean denoiser: the bound's NLL is above the entropy."""
    v0 = 0.5
    # variance "large" (beta_t) is the optimal fixed reverse variance for such data (Ho et al. 2020, section 3.2)
    m = _model(VECTOR, num_timesteps=100, noise_schedule="linear", variance="large", hidden_sizes=(4,), dropout=0.0,
               prediction="eps")

    def exact(x_t, t, y=None):
        a, s = m.schedule.coefficients(t, x_t)
        x0 = a * v0 / (a * a * v0 + s * s) * x_t
        return (x_t - a * x0) / s

    monkeypatch.setattr(m, "denoise", exact)
    x = math.sqrt(v0) * torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    nll = -m.log_prob(x, generator=torch.Generator().manual_seed(1))
    entropy = 2 * 0.5 * math.log(2 * math.pi * math.e * v0)
    se = float(nll.std()) / math.sqrt(len(x))
    assert float(nll.mean()) > entropy - 3 * se, (float(nll.mean()), entropy)
    assert float(nll.mean()) < entropy + 0.1  # and the optimal denoiser's bound is close to it


def test_data_scale_enters_the_bound_as_a_jacobian():
    m1, m2 = _model(VECTOR, **TINY_MLP), _model(VECTOR, data_scale=2.0, **TINY_MLP)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a = m1.log_prob(x, generator=torch.Generator().manual_seed(0))
    b = m2.log_prob(2 * x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(b, a - 2 * math.log(2.0))


def test_guidance_scale_one_is_conditional_and_zero_unconditional():
    m = _model(IMAGE, conditional=True, **TINY_UNET)
    x_t = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t, y = torch.tensor([3, 10, 20]), torch.tensor([0, 2, 1])
    null = torch.full((3,), 3)
    cond, uncond = m.denoise(x_t, t, y), m.denoise(x_t, t, null)
    assert not torch.allclose(cond, uncond)
    assert torch.allclose(m.guided_denoiser(y, 1.0)(x_t, t), cond)
    assert torch.allclose(m.guided_denoiser(y, 0.0)(x_t, t), uncond)
    assert torch.allclose(m.guided_denoiser(y, 3.0)(x_t, t), uncond + 3.0 * (cond - uncond), atol=1e-12)
    assert torch.allclose(m.guided_denoiser(y, 1.0 + 1e-9)(x_t, t), cond, atol=1e-7)  # the batched path
    kw = dict(num_steps=4, sampler="ddim", generator=None)
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(3, 1, 8, 8, generator=g, dtype=torch.float64)
    s1 = m.sample(3, context=y, guidance_scale=1.0, x_T=x_T, return_model_scale=True, **kw)
    s_cond = m.make_sampler("ddim").sample(lambda x, tt: m.denoise(x, tt, y), x_T.shape, num_steps=4, x_T=x_T)
    assert torch.allclose(s1, s_cond)
    s0 = m.sample(3, context=y, guidance_scale=0.0, x_T=x_T, return_model_scale=True, **kw)
    s_unc = m.sample(3, context=None, x_T=x_T, return_model_scale=True, **kw)
    assert torch.allclose(s0, s_unc)


@pytest.mark.parametrize("spec,hp", [(IMAGE, TINY_UNET), (VECTOR, TINY_MLP),
                                     (DataSpec((3,), "discrete", 4), TINY_MLP)])
@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_every_parameter_gets_a_finite_gradient(spec, hp, prediction):
    m = _model(spec, prediction=prediction, conditional=spec.num_classes is not None, **hp)
    x = random_levels(spec, 4) if spec.is_discrete else torch.randn(4, *spec.shape, dtype=torch.float64)
    assert_grads_finite(m, x, context=torch.tensor([0, 1, 2, 0]) if spec.num_classes else None)


def test_unet_resolutions_follow_the_shape():
    from dulab.nn.unet import resolutions_for

    assert resolutions_for(8, 8) == [(8, 8), (4, 4)]
    assert resolutions_for(20, 20) == [(20, 20), (10, 10), (5, 5)]
    assert resolutions_for(32, 32)[-1] == (4, 4) and len(resolutions_for(64, 64)) == 5
    for shape in [(1, 20, 20), (2, 6, 10)]:
        m = _model(DataSpec(shape, "discrete", 2), num_timesteps=5, hidden_channels=4)
        x = random_levels(m.spec, 2)
        assert m.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, *shape)
        assert m.log_prob(x).shape == (2,)


def test_samples_dtype_range_and_seeding():
    m = _model(IMAGE, **TINY_UNET)
    for sampler, eta in [("ddpm", None), ("ddim", 0.0), ("ddim", 1.0)]:
        s = m.sample(5, generator=torch.Generator().manual_seed(0), sampler=sampler, eta=eta, num_steps=3)
        assert s.dtype == torch.int64 and s.shape == (5, 1, 8, 8) and s.min() >= 0 and s.max() < 5
    assert_same_seed_same_samples(m, num_samples=2, num_differ=4)
    assert m.invert(random_levels(IMAGE, 2), num_steps=4).shape == (2, 1, 8, 8)


def test_checkpoint_roundtrip(tmp_path):
    m = _model(VECTOR, **TINY_MLP)
    assert_checkpoint_roundtrip("ddpm", m, torch.randn(4, 2, dtype=torch.float64), tmp_path)


def test_user_errors():
    with pytest.raises(UserError, match="labelled"):
        dulab.build_model("ddpm", VECTOR, conditional=True)
    m = dulab.build_model("ddpm", VECTOR, **TINY_MLP)
    with pytest.raises(UserError, match="num_steps"):
        m.sample(2, num_steps=21)
    with pytest.raises(UserError, match="sampler"):
        m.sample(2, sampler="euler")
    with pytest.raises(UserError):
        dulab.build_model("ddpm", VECTOR, sample_steps=5000)
    with pytest.raises(UserError, match="context"):
        dulab.build_model("ddpm", IMAGE, conditional=True, **TINY_UNET).loss(random_levels(IMAGE, 2))


def test_auto_prediction_is_eps_for_images_and_v_for_vectors():
    assert _model(IMAGE, **TINY_UNET).prediction == "eps"
    assert _model(VECTOR, **TINY_MLP).prediction == "v"
    assert _model(VECTOR, prediction="x0", **TINY_MLP).prediction == "x0"
