"""VQ-VAE and VQ-VAE-2 (first stage): straight-through gradients, codebook and commitment losses, EMA codebook,
dead-code restarts, code ranges, shapes, the uniform-prior bound, gradients, checkpoints and seeded sampling."""

from __future__ import annotations

import math

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.latent.vq_vae import VectorQuantizer, _usage
from properties import (
    assert_checkpoint_roundtrip,
    assert_grads_finite,
    assert_same_seed_same_samples,
    perturb_parameters,
    random_levels,
)

DIGITS = DataSpec((1, 8, 8), "discrete", 17)
BINARY = DataSpec((1, 4, 4), "discrete", 2)
CONTINUOUS = DataSpec((3, 8, 8), "continuous")
SMALL = {"hidden_channels": 6, "code_dim": 3, "num_codes": 5, "num_blocks": 1}


def _model(name, spec=DIGITS, **kw):
    torch.manual_seed(0)
    return dulab.build_model(name, spec, **{**SMALL, **kw}).double()


def _x(spec, n=6, seed=0):
    if spec.is_discrete:
        return random_levels(spec, n, seed)
    return torch.randn((n, *spec.shape), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ---------------------------------------------------------------------------------------------- the quantizer
def test_straight_through_copies_the_decoder_input_gradient_to_the_encoder_output():
    vq = VectorQuantizer(4, 3).double()
    z_e = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    out = vq(z_e, update=False)
    w = torch.randn_like(z_e)
    (out["z_q"] * w).sum().backward()
    assert torch.equal(z_e.grad, w)  # d z_q / d z_e = identity (eq. 3 of the paper)
    # the value is the nearest code vector
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    nearest = torch.cdist(flat, vq.codebook.detach()).argmin(1)
    assert torch.equal(out["codes"].reshape(-1), nearest)
    assert torch.allclose(out["z_q"].detach().permute(0, 2, 3, 1).reshape(-1, 3), vq.codebook.detach()[nearest])


@pytest.mark.parametrize("name", ["vq_vae", "vq_vae2"])
def test_reconstruction_gradient_reaches_the_encoder(name):
    model = _model(name)
    model.loss(_x(DIGITS))["recon"].backward()
    encoders = [p for n, p in model.named_parameters() if n.startswith("encoder")]
    assert encoders and all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoders)


def test_codebook_loss_moves_codes_towards_encodings_and_only_the_codebook():
    torch.manual_seed(0)
    vq = VectorQuantizer(4, 2).double()
    z_e = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    out = vq(z_e, update=False)
    out["codebook_loss"].backward()
    assert z_e.grad is None or not z_e.grad.any()  # sg[z_e]: the encoder gets nothing from this term
    before = float(out["codebook_loss"].detach())
    with torch.no_grad():
        vq.codebook -= 0.5 * vq.codebook.grad
    after = float(vq(z_e, update=False)["codebook_loss"].detach())
    assert after < before
    # the commitment loss, conversely, pulls only the encoder
    vq.codebook.grad = None
    vq(z_e, update=False)["commitment_loss"].backward()
    assert vq.codebook.grad is None and z_e.grad.abs().sum() > 0


def test_ema_codebook_converges_to_cluster_means():
    centres = torch.tensor([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    points = torch.cat([c + 0.3 * torch.randn(20, 2, generator=g, dtype=torch.float64) for c in centres])  # (60, 2)
    vq = VectorQuantizer(3, 2, use_ema=True, ema_decay=0.8).double()
    with torch.no_grad():  # start each code near (not at) its cluster
        vq.codebook.copy_(centres + 0.8)
        vq.ema_sum.copy_(vq.codebook)
    z_e = points.T.reshape(1, 2, 60, 1)  # (1, E, 60, 1): 60 positions
    for _ in range(120):
        vq(z_e, update=True)
    means = torch.stack([points[20 * k:20 * (k + 1)].mean(0) for k in range(3)])
    assert torch.allclose(vq.codebook, means, atol=1e-4)  # the smoothing moves them by ~1e-6


def test_dead_codes_are_restarted_at_batch_encodings_and_seeded():
    def run(seed):
        vq = VectorQuantizer(4, 2, restart_every=2).double()
        with torch.no_grad():
            vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [500.0, 500.0], [-500.0, 500.0]]))
        z_e = torch.rand(1, 2, 3, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
        g = torch.Generator().manual_seed(seed)
        for _ in range(2):
            out = vq(z_e, generator=g, update=True)
        assert set(out["codes"].unique().tolist()) <= {0, 1} and int(vq.num_restarts) == 0
        vq(z_e, generator=g, update=True)  # the third call checks: codes 2 and 3 had no hits
        return vq, z_e.permute(0, 2, 3, 1).reshape(-1, 2)

    vq, flat = run(0)
    assert int(vq.num_restarts) == 2
    for k in (2, 3):  # each restarted code now sits exactly on an encoding of the batch
        assert (flat - vq.codebook[k]).abs().sum(1).min() == 0
    assert not torch.equal(vq.codebook[2], vq.codebook[3])  # distinct encodings
    assert torch.equal(run(0)[0].codebook, vq.codebook)  # same generator seed, same restart


def test_evaluation_does_not_update_codebook_statistics():
    model = _model("vq_vae", use_ema=True, restart_every=1)
    x = _x(DIGITS)
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.loss(x)
    model.log_prob(x)
    model.encode(x)
    model.train()
    model.log_prob(x)  # log_prob never updates, in any mode
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    model.loss(x)
    assert int(model.quantizer.num_updates) == 1 and not torch.equal(state["quantizers.0.codebook"],
                                                                    model.quantizer.codebook)


# ---------------------------------------------------------------------------------------------- the models
@pytest.mark.parametrize("name", ["vq_vae", "vq_vae2"])
@pytest.mark.parametrize("spec", [DIGITS, BINARY, CONTINUOUS], ids=["levels", "binary", "continuous"])
def test_codes_in_range_and_decode_encode_shapes(name, spec):
    model = _model(name, spec)
    x = _x(spec)
    codes = model.encode(x)
    grids = codes if isinstance(codes, tuple) else (codes,)
    assert [tuple(c.shape[1:]) for c in grids] == [tuple(s) for s in model.grid_shapes]
    for c in grids:
        assert c.dtype == torch.long and c.min() >= 0 and c.max() < SMALL["num_codes"]
    rec = model.decode(codes)
    assert rec.shape == x.shape
    if spec.is_discrete:
        assert rec.dtype == torch.long and rec.min() >= 0 and rec.max() < spec.num_levels
    else:
        assert rec.dtype == torch.float64


def test_grids_follow_the_downsampling_plan():
    assert _model("vq_vae").grid_shapes == [(4, 4)]
    assert _model("vq_vae2").grid_shapes == [(2, 2), (4, 4)]
    assert _model("vq_vae", DataSpec((1, 64, 64), "discrete", 2)).grid_shapes == [(8, 8)]
    assert _model("vq_vae2", DataSpec((1, 4, 6), "discrete", 2)).grid_shapes == [(2, 3), (2, 3)]  # odd: same res
    assert _model("vq_vae", num_downsamples=2).grid_shapes == [(2, 2)]


def test_log_prob_is_the_uniform_prior_bound():
    model = _model("vq_vae", BINARY)
    x = _x(BINARY)
    model.eval()
    n = 2 * 2
    expected = model.log_likelihood_given_codes(x, model.encode(x)) - n * math.log(SMALL["num_codes"])
    assert torch.allclose(model.log_prob(x), expected)
    out = model.loss(x)
    assert torch.allclose(out["nll"], -model.log_prob(x).mean())
    assert set(out) == {"loss", "nll", "recon", "codebook", "commitment"}


@pytest.mark.parametrize("use_ema", [False, True])
@pytest.mark.parametrize("name", ["vq_vae", "vq_vae2"])
def test_every_parameter_gets_a_finite_gradient(name, use_ema):
    assert_grads_finite(_model(name, use_ema=use_ema), _x(DIGITS))


@pytest.mark.parametrize("name", ["vq_vae", "vq_vae2"])
def test_checkpoint_round_trip_and_seeded_samples(name, tmp_path):
    model = _model(name, BINARY, use_ema=True)
    with torch.no_grad():  # spread the codes, so that different codes decode to different images
        for q in model.quantizers:
            q.codebook.copy_(3 * torch.randn(q.codebook.shape, generator=torch.Generator().manual_seed(1)))
            q.ema_sum.copy_(q.codebook)
        perturb_parameters(model, 0.3)
    model.loss(_x(BINARY))  # move the EMA buffers off their initial values
    assert_checkpoint_roundtrip(name, model, _x(BINARY), tmp_path)
    assert_same_seed_same_samples(model)
    s = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (7, *BINARY.shape) and s.dtype == torch.long and set(s.unique().tolist()) <= {0, 1}


def test_usage_metrics():
    assert _usage(torch.arange(6).repeat(5), 8) == {"perplexity": pytest.approx(6.0), "codes_used": 6}
    assert _usage(torch.zeros(10, dtype=torch.long), 8) == {"perplexity": pytest.approx(1.0), "codes_used": 1}
    model = _model("vq_vae2")
    ds = dulab.datasets.from_array(_x(DIGITS, 20).numpy(), num_levels=17)
    m = model.evaluation_metrics(ds)
    assert set(m) == {"perplexity_top", "codes_used_top", "perplexity_bottom", "codes_used_bottom", "recon_mse"}
    assert 1 <= m["perplexity_top"] <= m["codes_used_top"] <= SMALL["num_codes"] and 0 < m["recon_mse"] < 1


def test_user_mistakes():
    with pytest.raises(UserError, match="needs images"):
        dulab.build_model("vq_vae", DataSpec((4,), "discrete", 3))
    with pytest.raises(UserError, match="divisible"):
        dulab.build_model("vq_vae", DIGITS, num_downsamples=4)
    with pytest.raises(UserError, match="even"):
        dulab.build_model("vq_vae", DataSpec((1, 5, 5), "discrete", 2))
    model = _model("vq_vae")
    with pytest.raises(UserError, match="code indices"):
        model.decode(torch.full((1, 4, 4), SMALL["num_codes"]))
    with pytest.raises(UserError, match="shape"):
        model.decode(torch.zeros(1, 2, 2, dtype=torch.long))
