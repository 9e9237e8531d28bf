"""hierarchical_vae and pixel_vae: analytic KL terms against torch.distributions, the importance-sampled bounds
(ELBO <= IWAE_K, IWAE_K rises with K, exp(IWAE_K) an unbiased estimate of p(x) that sums to 1 over a tiny
discrete domain), gradients, checkpoints and seeded sampling. float64 throughout."""

import math

import pytest
import torch
from torch import distributions as td

import dulab
from dulab.data.base import DataSpec
from properties import (
    assert_checkpoint_roundtrip,
    assert_grads_finite,
    assert_same_seed_same_samples,
    enumerate_domain,
)

TINY = {"hierarchical_vae": dict(latent_dim=2, top_latent_dim=2, hidden_sizes=(16,), hidden_channels=4,
                                 prior_hidden=8),
        "pixel_vae": dict(latent_dim=2, hidden_sizes=(16,), hidden_channels=4, num_filters=8, num_layers=1,
                          first_kernel_size=3, conditioning_channels=2)}
SPECS = {
    "binary_img": DataSpec((1, 8, 8), "discrete", 2),  # conv encoder
    "levels_img": DataSpec((1, 4, 4), "discrete", 5),  # MLP encoder
    "rgb_img": DataSpec((3, 2, 2), "discrete", 3),
    "levels_vec": DataSpec((6,), "discrete", 5),  # hierarchical_vae only
    "continuous": DataSpec((3,), "continuous"),  # hierarchical_vae only
}


def _build(name, spec, seed=0, scale=1.0, **hp):
    torch.manual_seed(seed)
    model = dulab.build_model(name, spec, **{**TINY[name], **hp}).double()
    if scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale)
    return model


def _x(spec, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    if spec.is_discrete:
        return torch.randint(0, spec.num_levels, (n, *spec.shape), generator=g)
    return torch.randn(n, *spec.shape, generator=g, dtype=torch.float64)


def _cases():
    for name in TINY:
        for s in SPECS:
            if name == "pixel_vae" and s in ("levels_vec", "continuous"):
                continue
            yield name, s


# ---------------------------------------------------------------------------------------- KL terms
@torch.no_grad()
def test_hierarchical_kl_terms_match_torch_distributions():
    model = _build("hierarchical_vae", SPECS["continuous"], scale=2.0)
    x = _x(model.spec, n=7)
    recon, kl1, kl2 = model._terms(x, generator=torch.Generator().manual_seed(4))
    # replay the same reparameterised z2 (the first draw of the generator)
    h = model.features(x)
    mean2, log_var2 = model.posterior2(h)
    g = torch.Generator().manual_seed(4)
    z2 = mean2 + torch.exp(0.5 * log_var2) * torch.randn(mean2.shape, generator=g, dtype=torch.float64)
    mean1, log_var1, p_mean, p_log_var = model.posterior1(h, z2)
    ref1 = td.kl_divergence(td.Normal(mean1, (0.5 * log_var1).exp()), td.Normal(p_mean, (0.5 * p_log_var).exp()))
    ref2 = td.kl_divergence(td.Normal(mean2, (0.5 * log_var2).exp()), td.Normal(0.0, 1.0))
    torch.testing.assert_close(kl1, ref1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(kl2, ref2, rtol=1e-12, atol=1e-12)
    # the residual-normal form of NVAE eq. 2: depends on the residuals (dmu, dlog_var) and the prior scale only
    d_mean, d_log_var = mean1 - p_mean, log_var1 - p_log_var
    nvae = 0.5 * (d_mean.square() / p_log_var.exp() + d_log_var.exp() - 1 - d_log_var)
    torch.testing.assert_close(kl1, nvae, rtol=1e-10, atol=1e-12)
    assert (kl1 > 0).any() and (kl2 > 0).any()
    # elbo() draws in the same order: recon - both KL sums
    torch.testing.assert_close(model.elbo(x, generator=torch.Generator().manual_seed(4)),
                               recon - kl1.sum(1) - kl2.sum(1))


@torch.no_grad()
def test_loss_reports_both_kl_terms():
    model = _build("hierarchical_vae", SPECS["levels_img"])
    out = model.loss(_x(model.spec))
    assert {"loss", "nll", "recon", "kl", "kl_z1", "kl_z2"} == set(out)
    torch.testing.assert_close(out["kl"], out["kl_z1"] + out["kl_z2"])
    torch.testing.assert_close(out["nll"], out["recon"] + out["kl"])


@torch.no_grad()
def test_pixel_vae_kl_matches_torch_distributions():
    model = _build("pixel_vae", SPECS["levels_img"], scale=2.0)
    x = _x(model.spec, n=6)
    _, kl = model._terms(x)
    mean, log_var = model.posterior(x)
    ref = td.kl_divergence(td.Normal(mean, (0.5 * log_var).exp()), td.Normal(0.0, 1.0))
    torch.testing.assert_close(kl, ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("name", list(TINY))
@torch.no_grad()
def test_elbo_below_iwae_and_iwae_rises_with_k(name):
    """Burda et al. theorem 1 on an untrained (mismatched) model over 64 examples: E[IWAE_K] rises with K from the
    ELBO (K = 1). Each rise of the per-example mean over 6 seeds must exceed 4 standard errors over examples."""
    model = _build(name, SPECS["levels_img"], scale=1.5).eval()
    x = _x(model.spec, n=64, seed=3)
    elbo = torch.stack([model.elbo(x, generator=torch.Generator().manual_seed(s)) for s in range(6)]).mean(0)
    est = {k: torch.stack([model.log_prob(x, num_samples=k, generator=torch.Generator().manual_seed(s))
                           for s in range(6)]).mean(0) for k in (1, 10, 100)}

    def above(a, b, what):
        d = a - b
        se = d.std() / math.sqrt(len(d))
        assert d.mean() > 4 * se, f"{what}: {d.mean():.4f} (SE {se:.4f})"

    above(est[10], elbo, "IWAE_10 > ELBO")
    above(est[10], est[1], "IWAE_10 > IWAE_1")
    above(est[100], est[10], "IWAE_100 > IWAE_10")
    d = est[1] - elbo  # both unbiased for the same ELBO (the analytic-KL estimator has lower variance)
    assert abs(d.mean()) < 4 * d.std() / math.sqrt(len(d)) + 1e-3


@pytest.mark.parametrize("name", list(TINY))
@torch.no_grad()
def test_importance_estimate_sums_to_one_over_a_tiny_domain(name):
    """exp(log_prob_K(x)) is an unbiased estimate of p(x) (a mean of importance weights), so averaged over R seeds
    its total over all 16 images of a 2x2 binary domain is 1 within 4 standard errors (CLT); a wrong log q or log
    prior term shifts it. The log estimate itself is low (Jensen): the mass of exp(mean log) stays below 1."""
    model = _build(name, DataSpec((1, 2, 2), "discrete", 2), scale=1.5).eval()
    xs = enumerate_domain((1, 2, 2), 2)
    R = 30
    runs = torch.stack([model.log_prob(xs, num_samples=200, generator=torch.Generator().manual_seed(r))
                        for r in range(R)])  # (R, 16)
    totals = runs.exp().sum(1)
    se = totals.std() / math.sqrt(R)
    assert se < 0.05, f"importance weights too spread (SE {se:.4f} of the total mass): a wrong proposal density?"
    assert abs(float(totals.mean()) - 1) < 4 * se + 1e-6, f"mean total mass {totals.mean():.4f} (SE {se:.4f})"
    assert float(runs.mean(0).exp().sum()) <= 1 + 4 * float(se)


@pytest.mark.parametrize("name", list(TINY))
@torch.no_grad()
def test_log_prob_with_k_1000_in_chunks(name):
    model = _build(name, SPECS["binary_img"]).eval()
    x = _x(model.spec, n=3)
    chunked = model.log_prob(x, num_samples=1000, max_rows=64, generator=torch.Generator().manual_seed(0))
    whole = model.log_prob(x, num_samples=1000, generator=torch.Generator().manual_seed(1))
    assert chunked.shape == (3,) and torch.isfinite(chunked).all()
    assert (chunked - whole).abs().max() < 0.1  # two K = 1000 estimates of the same log p(x)


# ---------------------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name,spec_name", list(_cases()))
@pytest.mark.parametrize("hp", [{}, {"free_bits": 0.5, "beta": 2.0}])
def test_every_parameter_gets_a_finite_gradient(name, spec_name, hp):
    model = _build(name, SPECS[spec_name], **hp)
    assert_grads_finite(model, _x(model.spec))


@pytest.mark.parametrize("name,spec_name", [("hierarchical_vae", "binary_img"), ("hierarchical_vae", "continuous"),
                                            ("pixel_vae", "rgb_img")])
def test_checkpoint_roundtrip_and_seeded_sampling(name, spec_name, tmp_path):
    model = _build(name, SPECS[spec_name]).eval()
    x = _x(model.spec)
    assert_checkpoint_roundtrip(name, model, x, tmp_path)
    assert_same_seed_same_samples(model, num_differ=16)
    s = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert s.shape == (4, *model.spec.shape)
    if model.spec.is_discrete:
        assert s.dtype == torch.long and s.min() >= 0 and s.max() < model.spec.num_levels
    z = model.encode(x)
    width = TINY[name]["latent_dim"] + TINY[name].get("top_latent_dim", 0)
    assert z.shape == (5, width)
    assert model.decode(z).shape == x.shape
    assert model.interpolate(x[:2], x[2:4], steps=3).shape == (2, 3, *model.spec.shape)


@torch.no_grad()
def test_hierarchical_diagnostics_count_units_per_layer():
    model = _build("hierarchical_vae", SPECS["continuous"], scale=2.0)
    x = _x(model.spec, n=200)
    diag = model.posterior_diagnostics(x)
    assert diag["kl_per_dim"].shape == (4,)
    assert diag["active_units"] == diag["active_units_z1"] + diag["active_units_z2"]
    with torch.no_grad():  # z2's posterior mean no longer depends on x: no active unit in the top layer
        model.top_posterior.weight[:2].zero_()
    assert model.posterior_diagnostics(x)["active_units_z2"] == 0


def test_kl_warmup_weights_the_kl_linearly_and_counts_training_steps_only():
    model = _build("hierarchical_vae", SPECS["levels_img"], kl_warmup_steps=4, beta=2.0)
    x = _x(model.spec)
    model.eval()
    out = model.loss(x)  # evaluation: the full beta, no step counted
    torch.testing.assert_close(out["loss"], (2.0 * out["kl"] + out["recon"]) / model.spec.num_dims)
    assert int(model.num_updates) == 0
    model.train()
    for step in range(6):
        torch.manual_seed(step)
        out = model.loss(x)
        weight = 2.0 * min(1.0, (step + 1) / 4)
        torch.testing.assert_close(out["loss"], (weight * out["kl"] + out["recon"]) / model.spec.num_dims)
    assert int(model.num_updates) == 6 and "num_updates" in model.state_dict()
    with torch.no_grad():
        model.loss(x)
    assert int(model.num_updates) == 6


# ---------------------------------------------------------------------------------------- stability
def test_bounded_gaussians_keep_loss_and_gradients_finite_under_extreme_outputs():
    # the state that diverged at lr 2e-3 on sprites (BENCHMARKS 17): raw log-variances of q(z2|x) and of the
    # residual posterior far past exp's float32 range; unbounded, the KL was inf at once
    torch.manual_seed(0)
    model = dulab.build_model("hierarchical_vae", SPECS["binary_img"], **TINY["hierarchical_vae"]).train()
    Z1, Z2 = TINY["hierarchical_vae"]["latent_dim"], TINY["hierarchical_vae"]["top_latent_dim"]
    with torch.no_grad():
        model.top_posterior.bias[:Z2] = 300.0  # means
        model.top_posterior.bias[Z2:] = 200.0  # log-variances: exp(200) = inf in float32
        model.residual_net[-1].bias[Z1:] = 150.0
        model.prior_net[-1].bias[:Z1] = -300.0
    x = _x(model.spec, n=4)
    out = model.loss(x)
    assert all(torch.isfinite(v).all() for v in out.values())
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    h = model.features(x)
    mean2, log_var2 = model.posterior2(h)
    assert mean2.abs().max() <= 5.0 and log_var2.abs().max() <= 10.0
    mean1, log_var1, p_mean, p_log_var = model.posterior1(h, mean2)
    assert max(t.abs().max() for t in (mean1, p_mean)) <= 5.0
    assert max(t.abs().max() for t in (log_var1, p_log_var)) <= 10.0
    with torch.no_grad():
        assert torch.isfinite(model.log_prob(x, num_samples=8)).all()


def test_soft_clamp_is_the_identity_near_zero_and_bounded():
    from dulab.models.latent.hierarchical_vae import soft_clamp

    x = torch.tensor([-1e6, -3.0, -0.01, 0.0, 0.01, 3.0, 1e6], dtype=torch.float64)
    y = soft_clamp(x, 5.0)
    assert y.abs().max() <= 5.0 and torch.all(y[1:] >= y[:-1])
    torch.testing.assert_close(y[2:5], x[2:5], rtol=1e-5, atol=0)
