"""The VQ-VAE's second stage (``vq_prior``): a reused transformer / PixelCNN over the codes of a frozen VQ-VAE.

Normalisation of the prior over every code grid of a tiny domain (enumeration), end-to-end samples, the frozen
first stage, the two-level (VQ-VAE-2) layout, runs: ``vq_run`` loading, moving the VQ run away, bitwise resume.
"""

from __future__ import annotations

import itertools
import math
import shutil

import numpy as np
import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.latent.vq_prior import VQPrior, VQPriorConfig
from properties import (
    assert_checkpoint_roundtrip,
    assert_grads_finite,
    assert_resume_equals_straight_run,
    random_levels,
)

SPEC = DataSpec((1, 4, 4), "discrete", 2)  # one halving: a 2x2 grid of codes (VQ-VAE-2: 1x1 top + 2x2 bottom)
VQ = {"hidden_channels": 4, "code_dim": 2, "num_codes": 3, "num_blocks": 1}
PRIOR = {"num_layers": 1, "embed_dim": 8, "num_heads": 2, "num_filters": 6, "dropout": 0.0}


def _vq(name="vq_vae"):
    torch.manual_seed(0)
    model = dulab.build_model(name, SPEC, **VQ).double()
    with torch.no_grad():  # spread the codebooks so that codes decode differently
        for q in model.quantizers:
            q.codebook.copy_(2 * torch.randn(q.codebook.shape, dtype=torch.float64))
    return model.eval()


def _prior(name="vq_vae", prior="transformer"):
    torch.manual_seed(1)
    return VQPrior(SPEC, VQPriorConfig(prior=prior, **PRIOR), vq=_vq(name)).double()


CASES = [("vq_vae", "transformer"), ("vq_vae", "pixel_cnn"), ("vq_vae2", "transformer")]


@pytest.mark.parametrize("name,prior", CASES)
def test_prior_normalises_over_every_code_grid(name, prior):
    model = _prior(name, prior).eval()
    spec = model.code_spec
    n = spec.num_dims  # 4 codes (2x2), or 1 + 4 for VQ-VAE-2
    grids = torch.tensor(list(itertools.product(range(3), repeat=n))).view(3 ** n, *spec.shape)
    lp = model.code_log_prob(grids)
    assert torch.logsumexp(lp, 0).abs() < 1e-10  # sum over all 3^n code grids = 1
    assert lp.std() > 1e-3  # not trivially uniform (the random init gives a non-uniform pmf)


@pytest.mark.parametrize("name,prior", CASES)
def test_end_to_end_samples_and_loss_parts(name, prior):
    model = _prior(name, prior).eval()
    x = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, *SPEC.shape) and x.dtype == torch.long and set(x.unique().tolist()) <= {0, 1}
    again = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    data = random_levels(SPEC, 6)
    out = model.loss(data)
    n = model.vq.num_code_positions
    assert torch.allclose(out["loss"] * n, out["prior_nll"]) and torch.allclose(out["loss"], out["nats_per_code"])
    assert torch.allclose(out["nll"], out["prior_nll"] + out["recon"])
    assert torch.allclose(-model.log_prob(data).mean(), out["nll"])  # log_prob = log p(codes) + log p(x | codes)
    assert out["nats_per_code"] < math.log(3) + 1  # near the uniform prior's log K at initialisation
    if name == "vq_vae2":  # nats per code of each level average to the whole
        both = (out["nats_per_code_top"] * 1 + out["nats_per_code_bottom"] * 4) / 5
        assert torch.allclose(both, out["nats_per_code"])


def test_first_stage_is_frozen_and_the_prior_trains():
    model = _prior()
    assert all(not p.requires_grad for p in model.vq.parameters())
    before = {k: v.clone() for k, v in model.vq.state_dict().items()}
    model.train()
    assert not model.vq.training and model.prior.training
    assert_grads_finite(model, random_levels(SPEC, 6))  # every trainable (prior) parameter
    assert all(p.grad is None for p in model.vq.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.vq.state_dict().items())


def test_checkpoint_round_trip_needs_no_vq_run(tmp_path):
    model = _prior()
    assert model.config.vq_run == "" and model.config.vq_model  # rebuilt from the embedded architecture
    assert_checkpoint_roundtrip("vq_prior", model, random_levels(SPEC, 4), tmp_path)


def test_user_mistakes(tmp_path):
    with pytest.raises(UserError, match="vq_run=RUN"):
        dulab.build_model("vq_prior", SPEC)
    with pytest.raises(UserError, match="not a run directory"):
        dulab.build_model("vq_prior", SPEC, vq_run=str(tmp_path))
    with pytest.raises(UserError, match="prior=transformer"):
        VQPrior(SPEC, VQPriorConfig(prior="pixel_cnn"), vq=_vq("vq_vae2"))
    with pytest.raises(UserError, match="trained on"):
        VQPrior(DataSpec((1, 4, 4), "discrete", 3), VQPriorConfig(), vq=_vq())
    with pytest.raises(UserError, match="vq_vae or vq_vae2"):
        VQPrior(SPEC, VQPriorConfig(), vq=dulab.build_model("histogram", SPEC))


def _data(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(n, *SPEC.shape))
    x[: n // 2, :, :2] = 0  # some structure
    return dulab.datasets.from_array(x, num_levels=2)


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    """A tiny trained vq_vae run (restarts on, so its codebook has moved)."""
    out = tmp_path_factory.mktemp("vq") / "vq_run"
    dulab.train("vq_vae", data=_data(32, 0), eval_data=_data(8, 1), epochs=2, batch_size=8, out_dir=out,
                progress=False, sample_fn=None, restart_every=2, **VQ)
    return out


def test_train_load_sample_after_moving_the_vq_run(vq_run, tmp_path):
    run = dulab.train("vq_prior", data=_data(32, 0), eval_data=_data(8, 1), epochs=1, batch_size=8,
                      out_dir=tmp_path / "prior", progress=False, sample_fn=None, vq_run=str(vq_run), **PRIOR)
    assert {"test_nats_per_code", "test_nll", "test_bpd"} <= set(run.metrics[-1])
    frozen = dulab.load(vq_run)
    assert all(torch.equal(v, run.model.vq.state_dict()[k]) for k, v in frozen.state_dict().items())
    moved = shutil.move(str(vq_run), str(tmp_path / "elsewhere"))
    try:
        loaded = dulab.load(run.dir)  # the VQ-VAE travels with the prior run
        x = _data(8, 1).x
        assert torch.equal(loaded.log_prob(x), run.model.log_prob(x))
        s = loaded.sample(3, generator=torch.Generator().manual_seed(0))
        assert s.shape == (3, *SPEC.shape)
        assert dulab.evaluate(run.dir, data=_data(8, 1))["nats_per_code"] > 0
    finally:
        shutil.move(moved, str(vq_run))


def test_resume_is_bitwise(vq_run, tmp_path):
    assert_resume_equals_straight_run("vq_prior", _data(32, 0), _data(8, 1), tmp_path, lr=1e-2,
                                      vq_run=str(vq_run), **{**PRIOR, "dropout": 0.3})


def test_building_twice_from_one_config_loads_the_vq_run_both_times(vq_run):
    config = VQPriorConfig(vq_run=str(vq_run), **PRIOR)
    a, b = VQPrior(SPEC, config), VQPrior(SPEC, config)
    assert config.vq_model == ""  # the caller's config is not filled in
    frozen = dulab.load(vq_run).state_dict()
    for model in (a, b):
        assert all(torch.equal(v, model.vq.state_dict()[k]) for k, v in frozen.items())
