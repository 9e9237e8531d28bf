"""Latent diffusion (``latent_ddpm``): a DDPM over a frozen VAE's / autoencoder's latents.

The latent density bound integrates to at most 1 on a grid (and with T = 1, where the bound is nearly tight, to
about 1: a missing or wrong Jacobian of the standardisation moves it by the scale), the image bound's
normalisation over a tiny domain, the frozen first stage and the first-batch statistics, end-to-end samples,
checkpoints without the first-stage run, user mistakes, CLI-style runs (``latent_run`` loading, moving the run
away, bitwise resume).
"""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.diffusion.latent_ddpm import LatentDDPM, LatentDDPMConfig
from properties import assert_checkpoint_roundtrip, assert_grads_finite, assert_resume_equals_straight_run

SPEC = DataSpec((3,), "discrete", 2)  # 8 possible inputs: enumerable
VAE = {"latent_dim": 2, "hidden_sizes": (8,)}
DIFF = {"num_timesteps": 4, "hidden_sizes": (16,), "dropout": 0.0}


def _vae(latent_dim=2, spec=SPEC):
    torch.manual_seed(0)
    return dulab.build_model("vae", spec, latent_dim=latent_dim, hidden_sizes=(8,)).double().eval()


def _model(first_stage=None, **kw):
    torch.manual_seed(1)
    config = LatentDDPMConfig(**{**DIFF, **kw})
    return LatentDDPM(SPEC, config, first_stage=first_stage if first_stage is not None else _vae()).double()


def _all_inputs():
    return torch.tensor(list(itertools.product(range(2), repeat=3)))


@pytest.mark.parametrize("T,low", [(1, 0.98), (4, 0.4)])
@pytest.mark.parametrize("scale", [0.3, 3.0])
def test_latent_bound_integrates_to_at_most_one_with_the_jacobian(T, low, scale):
    model = _model(_vae(latent_dim=1), num_timesteps=T, latent_scale=scale).eval()
    model.latent_shift.fill_(0.5)
    z = torch.linspace(-12, 12, 801, dtype=torch.float64)[:, None]
    g = torch.Generator().manual_seed(0)
    # the mean over draws of a stochastic bound is still below log p(z) in expectation, so exp of it integrates to
    # <= 1 up to the Monte Carlo error of the mean (exp of a noisy mean is biased up: with T = 4 one draw's sd is
    # ~1.7 nats, so 400 draws leave a bias factor of ~exp(0.087^2 / 2) = 1.004; with 50 draws 1.03)
    with torch.no_grad():
        lp = torch.stack([model.latent_log_prob(z, generator=g) for _ in range(400 if T > 1 else 20)]).mean(0)
    integral = float(lp.exp().sum() * (z[1, 0] - z[0, 0]))
    assert low < integral <= 1.005, integral  # without the -Z log(scale) term it would be ~scale x this


def test_image_bound_sums_to_at_most_one_over_the_domain():
    model = _model().eval()
    x = _all_inputs()
    model.fit_latent_stats(x)
    g = torch.Generator().manual_seed(0)
    lp = model.log_prob(x, num_samples=200, num_bound_steps=0, generator=g)
    assert torch.logsumexp(lp, 0) <= 0.0  # sum_x exp(E[bound(x)]) <= sum_x p(x) = 1
    assert torch.logsumexp(lp, 0) > -3.0  # and not vacuous (a bound 20x below the truth everywhere)
    with pytest.raises(UserError, match="num_samples"):
        model.log_prob(x, num_samples=0)


def test_first_stage_is_frozen_and_the_first_batch_sets_the_statistics():
    model = _model()
    assert all(not p.requires_grad for p in model.first_stage.parameters())
    before = {k: v.clone() for k, v in model.first_stage.state_dict().items()}
    x = _all_inputs()
    model.eval()
    model.loss(x)  # evaluation never fits the statistics
    assert not bool(model.stats_fitted) and float(model.latent_scale) == 1.0
    model.train()
    assert not model.first_stage.training and model.diffusion.training
    assert_grads_finite(model, x)
    assert all(p.grad is None for p in model.first_stage.parameters())
    assert bool(model.stats_fitted)
    # the latents the diffusion trains on: posterior draws (posterior=sample), from the global RNG of the step
    fresh = _model().train()
    torch.manual_seed(5)
    fresh.loss(x)
    torch.manual_seed(5)
    draws = fresh.latents(x)
    assert torch.allclose(fresh.latent_shift, draws.mean(0))
    assert torch.allclose(fresh.latent_scale, (draws - draws.mean(0)).std())
    means = model.first_stage.posterior(x)[0]
    by_mean = _model(posterior="mean").train()
    by_mean.loss(x)
    assert torch.allclose(by_mean.latent_shift, means.mean(0))
    assert torch.allclose(by_mean.latent_scale, (means - means.mean(0)).std())
    shift = model.latent_shift.clone()
    model.loss(x[:4])  # later batches leave them alone
    assert torch.equal(model.latent_shift, shift)
    assert all(torch.equal(before[k], v) for k, v in model.first_stage.state_dict().items())
    fixed = _model(latent_scale=2.5, posterior="mean").train()
    fixed.loss(x)
    assert float(fixed.latent_scale) == 2.5 and torch.allclose(fixed.latent_shift, means.mean(0))


def test_samples_are_the_decoded_latents_and_reproducible():
    model = _model().eval()
    model.fit_latent_stats(_all_inputs())
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    x = model.sample(6, generator=g(), num_steps=3, sampler="ddim")
    z = model.sample_latents(6, generator=g(), num_steps=3, sampler="ddim")
    assert x.shape == (6, 3) and x.dtype == torch.long
    assert torch.equal(x, model.first_stage.decode(z))
    assert torch.equal(x, model.sample(6, generator=g(), num_steps=3, sampler="ddim"))
    # the latents are unstandardised: the diffusion's own samples times the scale plus the shift
    u = model.diffusion.sample(6, generator=g(), num_steps=3, sampler="ddim")
    assert torch.allclose(z, u * model.latent_scale + model.latent_shift)
    noisy = model.sample(6, generator=g(), use_decoder_noise=True)
    assert noisy.shape == (6, 3) and set(noisy.unique().tolist()) <= {0, 1}


def test_autoencoder_first_stage_trains_and_samples_but_has_no_likelihood():
    torch.manual_seed(0)
    ae = dulab.build_model("autoencoder", SPEC, code_dim=2, hidden_sizes=(8,)).double().eval()
    model = _model(ae)
    x = _all_inputs()
    assert_grads_finite(model, x)
    assert model.sample(4, generator=torch.Generator().manual_seed(0)).shape == (4, 3)
    assert model.evaluation_metrics(dulab.datasets.from_array(x.numpy(), num_levels=2)) == {}
    with pytest.raises(UserError, match="no likelihood"):
        model.log_prob(x)
    with pytest.raises(UserError, match="decoder noise"):
        model.sample(2, use_decoder_noise=True)


def test_class_conditional_guidance_reaches_the_diffusion():
    spec = DataSpec((3,), "discrete", 2, 2)
    torch.manual_seed(0)
    vae = dulab.build_model("vae", spec, **VAE).double().eval()
    model = LatentDDPM(spec, LatentDDPMConfig(conditional=True, **DIFF), first_stage=vae).double().eval()
    assert model.is_conditional and model.num_classes == 2
    y = torch.tensor([0, 1, 0, 1])
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = model.sample_latents(4, generator=g(), context=y, guidance_scale=1.0)
    b = model.diffusion.sample(4, generator=g(), context=y, guidance_scale=1.0) * model.latent_scale
    assert torch.allclose(a, b + model.latent_shift)
    c = model.sample_latents(4, generator=g(), context=y, guidance_scale=3.0)
    assert not torch.allclose(a, c)
    assert torch.isfinite(model.log_prob(_all_inputs()[:4], context=y)).all()


def test_checkpoint_round_trip_needs_no_latent_run(tmp_path):
    model = _model().eval()
    model.fit_latent_stats(_all_inputs())
    assert model.config.latent_run == "" and model.config.first_stage
    assert_checkpoint_roundtrip("latent_ddpm", model, _all_inputs(), tmp_path)  # statistics travel as buffers


def test_user_mistakes(tmp_path):
    with pytest.raises(UserError, match="latent_run=RUN"):
        dulab.build_model("latent_ddpm", SPEC)
    with pytest.raises(UserError, match="not a run directory"):
        dulab.build_model("latent_ddpm", SPEC, latent_run=str(tmp_path))
    with pytest.raises(UserError, match="vae, iwae or autoencoder"):
        LatentDDPM(SPEC, LatentDDPMConfig(), first_stage=dulab.build_model("histogram", SPEC))
    with pytest.raises(UserError, match="trained on"):
        LatentDDPM(DataSpec((3,), "discrete", 3), LatentDDPMConfig(), first_stage=_vae())
    with pytest.raises(UserError, match="mlp"):
        LatentDDPMConfig(architecture="unet")
    with pytest.raises(UserError, match="latent_scale"):
        LatentDDPMConfig(latent_scale=-1.0)
    with pytest.raises(UserError, match="labelled"):
        LatentDDPM(SPEC, LatentDDPMConfig(conditional=True), first_stage=_vae())
    with pytest.raises(UserError, match="first_stage is not"):
        dulab.build_model("latent_ddpm", SPEC, first_stage="{not json")


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(n, *SPEC.shape))
    x[: n // 2, 0] = 1  # some structure
    return dulab.datasets.from_array(x, num_levels=2)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "vae_run"
    dulab.train("vae", data=_data(32, 0), eval_data=_data(8, 1), epochs=2, batch_size=8, out_dir=out,
                progress=False, sample_fn=None, **VAE)
    return out


def test_train_load_sample_evaluate_after_moving_the_vae_run(vae_run, tmp_path):
    run = dulab.train("latent_ddpm", data=_data(32, 0), eval_data=_data(8, 1), epochs=1, batch_size=8,
                      out_dir=tmp_path / "ld", progress=False, sample_fn=None, latent_run=str(vae_run), **DIFF)
    assert {"test_loss", "test_nll", "test_bpd", "test_latent_nll", "test_prior_kl_gain"} <= set(run.metrics[-1])
    frozen = dulab.load(vae_run)
    assert all(torch.equal(v, run.model.first_stage.state_dict()[k]) for k, v in frozen.state_dict().items())
    assert bool(run.model.stats_fitted)
    moved = shutil.move(str(vae_run), str(tmp_path / "elsewhere"))
    try:
        loaded = dulab.load(run.dir, which="last")  # the first stage and the statistics travel with the run
        assert torch.equal(loaded.latent_shift, run.model.latent_shift) and bool(loaded.stats_fitted)
        s = loaded.sample(3, generator=torch.Generator().manual_seed(0), num_steps=2)
        assert s.shape == (3, *SPEC.shape)
        assert dulab.evaluate(run.dir, data=_data(8, 1))["nll"] > 0
    finally:
        shutil.move(moved, str(vae_run))


def test_resume_is_bitwise(vae_run, tmp_path):
    assert_resume_equals_straight_run("latent_ddpm", _data(32, 0), _data(8, 1), tmp_path, lr=1e-2,
                                      latent_run=str(vae_run), **{**DIFF, "dropout": 0.3})
