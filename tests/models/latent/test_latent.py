"""Latent-variable models and autoencoders (family "latent"): the property tests of DESIGN.md 6.1, 6.7 and 6.8.

Bounds are checked on a linear-Gaussian VAE whose marginal is known in closed form (z ~ N(0, I),
x = W z + b + sigma * noise, so p(x) = N(b, W W^T + sigma^2 I)) and on a 2x2 binary VAE with a 1-D latent whose
marginal pmf is computed by Gauss-Hermite quadrature. float64 throughout.
"""

import math

import numpy as np
import pytest
import torch
from torch import distributions as td

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.latent.autoencoder import corrupt
from properties import (
    assert_checkpoint_roundtrip,
    assert_grads_finite,
    assert_same_seed_same_samples,
    enumerate_domain,
)

# ---------------------------------------------------------------------------------------- linear-Gaussian model
SIGMA = 0.5
W = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)  # orthogonal columns: diagonal posterior
B_ = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)


def _linear_gaussian_vae(perturb: float = 0.0, seed: int = 0):
    """A VAE with linear encoder/decoder: decoder mean W z + b, std SIGMA; encoder = the exact posterior
    (perturbed by ``perturb`` when > 0)."""
    model = dulab.build_model("vae", DataSpec((3,), "continuous"), latent_dim=2, hidden_sizes=(),
                              architecture="mlp", learned_std=False, decoder_std=SIGMA).double()
    Z = 2
    # exact posterior of the linear-Gaussian model: Sigma = (I + W^T W / s^2)^-1, mean = Sigma W^T (x - b) / s^2
    post_cov = torch.linalg.inv(torch.eye(Z, dtype=torch.float64) + W.T @ W / SIGMA**2)
    A = post_cov @ W.T / SIGMA**2
    enc, dec = model.encoder.net[-1], model.decoder.fc[-1]
    with torch.no_grad():
        dec.weight.copy_(W)
        dec.bias.copy_(B_)
        enc.weight.zero_()
        enc.weight[:Z] = A
        enc.bias[:Z] = -A @ B_
        enc.bias[Z:] = torch.log(torch.diagonal(post_cov))
        if perturb:
            g = torch.Generator().manual_seed(seed)
            enc.weight.add_(perturb * torch.randn(enc.weight.shape, generator=g, dtype=torch.float64))
            enc.bias.add_(perturb * torch.randn(enc.bias.shape, generator=g, dtype=torch.float64))
    return model.eval()


def _true_log_prob(x):
    cov = W @ W.T + SIGMA**2 * torch.eye(3, dtype=torch.float64)
    return td.MultivariateNormal(B_, covariance_matrix=cov).log_prob(x)


def _analytic_elbo(model, x):
    """E_q[log p(x|z)] - KL in closed form for the linear-Gaussian decoder (Gaussian expectations)."""
    mean, log_var = model.posterior(x)
    resid = x - mean @ W.T - B_
    trace = (log_var.exp() @ (W**2).sum(0))  # tr(W diag(s^2) W^T)
    D = x.shape[1]
    recon = -0.5 * D * math.log(2 * math.pi * SIGMA**2) - ((resid**2).sum(1) + trace) / (2 * SIGMA**2)
    kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(1)
    return recon - kl


def _data_from_model(n, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return z @ W.T + B_ + SIGMA * torch.randn(n, 3, generator=g, dtype=torch.float64)


@torch.no_grad()
def test_exact_posterior_makes_every_bound_equal_log_p():
    # with q(z|x) = p(z|x) every log-weight equals log p(x) (closed form), so ELBO = IWAE_K = log p(x) for any K
    model, x = _linear_gaussian_vae(), _data_from_model(16, 1)
    ref = _true_log_prob(x)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(_analytic_elbo(model, x), ref, rtol=0, atol=1e-10)
    # elbo() uses the analytic KL and one reconstruction sample: unbiased for the ELBO, not constant; 2000 draws
    draws = torch.stack([model.elbo(x, generator=g) for _ in range(2000)])  # (2000, 16)
    assert ((draws.mean(0) - ref).abs() < 4 * draws.std(0) / math.sqrt(2000)).all()
    for k in (1, 7, 100):
        torch.testing.assert_close(model.log_prob(x, num_samples=k, generator=g), ref, rtol=0, atol=1e-10)


@torch.no_grad()
def test_elbo_below_iwae_k_below_log_p_and_iwae_rises_with_k():
    """Burda et al. theorem 1: E[IWAE_K] rises with K from the ELBO (K = 1) towards log p(x). Averages over 200 x and
    8 seeds; each rise must exceed 4 standard errors of the mean difference over x, and no estimate may lie more
    than 4 standard errors above log p."""
    model, x = _linear_gaussian_vae(perturb=0.1), _data_from_model(200, 2)
    log_p, elbo = _true_log_prob(x), _analytic_elbo(model, x)
    ks = (1, 10, 100, 1000)
    est = {k: torch.stack([model.log_prob(x, num_samples=k, generator=torch.Generator().manual_seed(s))
                           for s in range(8)]).mean(0) for k in ks}  # (N,) per K, averaged over seeds

    def above(a, b, what):  # mean(a - b) > 4 SE
        d = a - b
        se = d.std() / math.sqrt(len(d))
        assert d.mean() > 4 * se, f"{what}: mean difference {d.mean():.4f} (SE {se:.4f})"

    # the K = 1 estimate is unbiased for the ELBO (closed form): within 4 SE
    d = est[1] - elbo
    assert abs(d.mean()) < 4 * d.std() / math.sqrt(len(d)) + 1e-3
    assert (elbo <= log_p + 1e-12).all()  # exact ELBO below exact log p for every x (Jensen)
    for k_lo, k_hi in zip(ks[:-1], ks[1:]):
        above(est[k_hi], est[k_lo], f"IWAE_{k_hi} > IWAE_{k_lo}")
    # below log p in expectation (Jensen): no more than 4 SE above it for every K
    for k in ks:
        d = log_p - est[k]
        assert d.mean() > -4 * d.std() / math.sqrt(len(d)), f"IWAE_{k} above log p: {d.mean():.4f}"
    # ... and approaches log p: the gap at K = 1000 is under a fifth of the ELBO's gap
    assert (log_p - est[1000]).mean() < 0.2 * (log_p - elbo).mean()


# ---------------------------------------------------------------------------------------- tiny discrete domain
def _binary_vae(seed=0):
    torch.manual_seed(seed)
    model = dulab.build_model("vae", DataSpec((1, 2, 2), "discrete", 2), latent_dim=1, hidden_sizes=(8,)).double()
    with torch.no_grad():
        for p in model.decoder.parameters():  # a decoder that depends strongly on z
            p.mul_(3.0)
    return model.eval()


@torch.no_grad()
def test_decoder_pmf_normalises_for_every_z():
    model = _binary_vae()
    xs = enumerate_domain((1, 2, 2), 2)  # all 16 images
    for z in torch.linspace(-3, 3, 7, dtype=torch.float64):
        params = model.decoder_params(z.reshape(1, 1).expand(len(xs), 1))
        total = torch.logsumexp(model.observation.log_likelihood(xs, params), 0)
        assert abs(float(total)) < 1e-12, f"sum_x p(x|z={float(z):.1f}) = exp({float(total):.2e})"


@torch.no_grad()
def test_importance_estimate_of_a_discrete_pmf_normalises():
    """The exact marginal p(x) = int p(x|z) N(z) dz by 120-node Gauss-Hermite quadrature (1-D latent) sums to 1 over
    the 16 images. exp(log_prob_K(x)) is an unbiased estimate of p(x) (a mean of importance weights), so averaged
    over R = 40 seeds its total over the domain is 1 within 4 standard errors (CLT). log_prob_K itself is low in
    expectation (Jensen), so sum_x exp(mean_r log_prob_K(x)) stays <= 1 (plus 4 SE) and rises to 1 with K."""
    model = _binary_vae()
    xs = enumerate_domain((1, 2, 2), 2)
    t, w = (torch.from_numpy(a) for a in np.polynomial.hermite.hermgauss(120))
    z = (math.sqrt(2.0) * t)[:, None]  # N(0, 1) nodes; weights w / sqrt(pi)
    log_px_z = torch.stack([model.observation.log_likelihood(xs, model.decoder_params(zi.expand(16, 1)))
                            for zi in z])  # (Q, 16)
    log_p = torch.logsumexp(log_px_z + torch.log(w / math.sqrt(math.pi))[:, None], 0)  # (16,)
    assert abs(float(torch.logsumexp(log_p, 0))) < 1e-8
    R, mass_of_mean = 40, {}
    for k in (1, 10, 100, 1000):
        runs = torch.stack([model.log_prob(xs, num_samples=k, generator=torch.Generator().manual_seed(r))
                            for r in range(R)])  # (R, 16)
        totals = runs.exp().sum(1)  # (R,) estimates of the total mass 1
        se = totals.std() / math.sqrt(R)
        assert abs(float(totals.mean()) - 1) < 4 * se + 1e-9, f"K={k}: mean total mass {totals.mean():.4f} ({se:.4f})"
        per_x_se = runs.std(0) / math.sqrt(R)
        assert (runs.mean(0) <= log_p + 4 * per_x_se + 1e-9).all(), f"K={k}: estimate above log p(x) (Jensen)"
        mass_of_mean[k] = float(runs.mean(0).exp().sum())
    assert mass_of_mean[1] < mass_of_mean[10] < mass_of_mean[100] <= mass_of_mean[1000] + 1e-3
    assert 1 - mass_of_mean[1000] < 0.01, mass_of_mean


# ---------------------------------------------------------------------------------------- contract properties
SPECS = {
    "binary_img": DataSpec((1, 8, 8), "discrete", 2),  # conv, Bernoulli
    "levels_vec": DataSpec((6,), "discrete", 5),  # MLP, categorical
    "levels_img": DataSpec((1, 4, 4), "discrete", 5),  # MLP (H, W < 8), discretized logistic
    "many_levels_img": DataSpec((1, 8, 8), "discrete", 256),  # conv, discretized logistic
    "continuous": DataSpec((3,), "continuous"),  # MLP, Gaussian with learned std
}
TINY = dict(latent_dim=3, hidden_sizes=(16,), hidden_channels=4)


def _x(spec, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    if spec.is_discrete:
        return torch.randint(0, spec.num_levels, (n, *spec.shape), generator=g)
    return torch.randn(n, *spec.shape, generator=g, dtype=torch.float64)


def _build(name, spec_name, **hp):
    torch.manual_seed(0)
    if name == "autoencoder":
        hp = {"code_dim": 3, **{k: v for k, v in TINY.items() if k != "latent_dim"}, **hp}
    else:
        hp = {**TINY, **hp}
    return dulab.build_model(name, SPECS[spec_name], **hp).double()


def test_auto_choices_follow_the_data():
    kinds = {s: (_build("vae", s).architecture, _build("vae", s).observation.kind) for s in SPECS}
    assert kinds == {"binary_img": ("conv", "bernoulli"), "levels_vec": ("mlp", "categorical"),
                     "levels_img": ("mlp", "logistic"),
                     "many_levels_img": ("conv", "logistic"), "continuous": ("mlp", "gaussian")}
    with pytest.raises(UserError, match="does not fit"):
        dulab.build_model("vae", SPECS["continuous"], decoder="bernoulli")
    assert _build("vae", "levels_img", decoder="categorical").observation.params_per_dim == 5
    with pytest.raises(UserError, match="beta, free_bits"):
        dulab.build_model("iwae", SPECS["continuous"], beta=4.0)


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("name,hp", [("vae", {}), ("vae", {"free_bits": 0.5, "beta": 2.0}), ("iwae", {}),
                                     ("autoencoder", {}),
                                     ("autoencoder", {"use_sparsity": True, "sparsity": "kl", "noise": "gaussian"}),
                                     ("autoencoder", {"use_sparsity": True, "noise": "salt_and_pepper"})])
def test_every_parameter_gets_a_finite_gradient(name, hp, spec_name):
    model = _build(name, spec_name, **hp)
    assert_grads_finite(model, _x(model.spec))
    out = model.loss(_x(model.spec))
    assert all(v.ndim == 0 for v in out.values())
    expected = {"loss", "recon"} if name == "autoencoder" else {"loss", "nll", "recon", "kl"}
    assert set(out) == expected


@pytest.mark.parametrize("name", ["vae", "iwae"])
@pytest.mark.parametrize("spec_name", ["binary_img", "continuous"])
def test_checkpoint_roundtrip_and_seeded_sampling(name, spec_name, tmp_path):
    model = _build(name, spec_name).eval()
    x = _x(model.spec)
    assert_checkpoint_roundtrip(name, model, x, tmp_path)
    assert_same_seed_same_samples(model)
    a = model.log_prob(x, num_samples=20, generator=torch.Generator().manual_seed(3))
    b = model.log_prob(x, num_samples=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    s = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (7, *model.spec.shape)
    if model.spec.is_discrete:
        assert s.dtype == torch.long and s.min() >= 0 and s.max() < model.spec.num_levels
        mode = model.sample(7, generator=torch.Generator().manual_seed(0), use_decoder_noise=False)
        torch.testing.assert_close(mode, model.decode(torch.randn(7, 3, generator=torch.Generator().manual_seed(0),
                                                                  dtype=torch.float64)))


@torch.no_grad()
def test_log_prob_in_chunks_handles_large_k():
    """K = 1000 drawn 64 decoder rows at a time agrees with one pass: both estimate the same log p(x); with K = 1000
    their Monte Carlo spread on this untrained model is far below 0.1 nats."""
    model = _build("vae", "binary_img").eval()
    x = _x(model.spec, n=3)
    chunked = model.log_prob(x, num_samples=1000, max_rows=64, generator=torch.Generator().manual_seed(0))
    whole = model.log_prob(x, num_samples=1000, generator=torch.Generator().manual_seed(1))
    assert chunked.shape == (3,) and torch.isfinite(chunked).all()
    assert (chunked - whole).abs().max() < 0.1


@torch.no_grad()
def test_encode_decode_interpolate_and_diagnostics():
    model = _linear_gaussian_vae()
    x = _data_from_model(300, 3)
    torch.testing.assert_close(model.encode(x), model.posterior(x)[0])
    path = model.interpolate(x[:2], x[2:4], steps=5)
    assert path.shape == (2, 5, 3)
    torch.testing.assert_close(path[:, 0], model.decode(model.encode(x[:2])))
    torch.testing.assert_close(path[:, -1], model.decode(model.encode(x[2:4])))
    diag = model.posterior_diagnostics(x)
    assert diag["active_units"] == 2 and diag["kl_per_dim"].shape == (2,)
    # the mean KL per dimension sums to the batch-mean KL that loss() reports
    torch.testing.assert_close(diag["kl_per_dim"].sum(), model.loss(x)["kl"])
    # switch off the encoder's dependence on x for latent 1: Cov_x(E_q[z_1]) = 0, one active unit left
    with torch.no_grad():
        model.encoder.net[-1].weight[1].zero_()
    assert model.posterior_diagnostics(x)["active_units"] == 1


def test_iwae_with_one_sample_is_the_single_sample_elbo():
    model = _build("iwae", "continuous", num_importance_samples=1).eval()
    x = _x(model.spec)
    torch.manual_seed(5)
    nll = model.loss(x)["nll"]
    torch.manual_seed(5)
    torch.testing.assert_close(nll, -model.log_weights(x, 1)[0].mean())


# ---------------------------------------------------------------------------------------- autoencoders
def test_denoising_corrupts_only_in_training():
    model = _build("autoencoder", "binary_img", noise="masking", noise_level=0.5)
    x = _x(model.spec, n=16)
    model.eval()
    assert torch.equal(model.loss(x)["recon"], model.loss(x)["recon"])
    model.train()
    assert not torch.equal(model.loss(x)["recon"], model.loss(x)["recon"])
    torch.testing.assert_close(model.encode(x), model.eval().encode(x))  # encode sees the clean input
    f = torch.zeros(1000, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    masked = corrupt(f, "masking", 0.3, g)  # 0.05 is > 3 binomial SEs (0.0145) at n = 1000
    assert set(masked.unique().tolist()) <= {0.0, -1.0} and abs(float((masked == -1).double().mean()) - 0.3) < 0.05
    salt = corrupt(f, "salt_and_pepper", 0.3, g)
    for value in (1.0, -1.0):  # half of the 30% corrupted each way; 0.04 is > 4 binomial SEs (0.011) at n = 1000
        assert abs(float((salt == value).double().mean()) - 0.15) < 0.04


def _fit(model, x, steps=150, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model.loss(x)["loss"].backward()
        opt.step()
    return model.eval()


def test_sparsity_penalty_lowers_mean_activation():
    x = dulab.load_dataset("digits_binary").x[:128]
    acts = {}
    for use in (False, True):
        model = _build("autoencoder", "binary_img", code_dim=16, code_activation="sigmoid", use_sparsity=use,
                       sparsity="kl", sparsity_target=0.05, sparsity_weight=0.5)
        model = _fit(model, x)
        with torch.no_grad():
            acts[use] = float(model.encode(x).mean())
    assert acts[True] < 0.5 * acts[False], acts
    assert abs(acts[True] - 0.05) < 0.05, acts


# ---------------------------------------------------------------------------------------- end to end
def test_train_and_evaluate_vae_and_autoencoder(tmp_path):
    hp = dict(latent_dim=4, hidden_sizes=(32,), hidden_channels=4)
    run = dulab.train("vae", data="digits", epochs=1, out_dir=tmp_path / "vae", progress=False, **hp)
    out = dulab.evaluate(run.dir, num_samples=100)
    assert {"bpd", "nll", "recon", "kl", "fid", "kid", "inception_score", "precision", "recall"} <= set(out)
    assert out["bpd"] > 0 and math.isfinite(out["fid"])
    run = dulab.train("vae", data="digits_binary", epochs=1, out_dir=tmp_path / "bin", progress=False, **hp)
    assert dulab.evaluate(run.dir)["bpd"] > 0
    run = dulab.train("autoencoder", data="digits", epochs=1, out_dir=tmp_path / "ae", progress=False, code_dim=8,
                      hidden_sizes=(32,), hidden_channels=4)
    out = dulab.evaluate(run.dir)
    assert "linear_probe" in out and "recon" in out and "bpd" not in out and "nll" not in out


# ---------------------------------------------------------------------------------------- KL warm-up
@pytest.mark.parametrize("name", ["vae", "pixel_vae"])
def test_vae_kl_warmup_weights_the_kl_linearly_and_counts_training_steps_only(name):
    spec = DataSpec((1, 4, 4), "discrete", 5)
    hp = {"pixel_vae": dict(num_filters=8, num_layers=1, first_kernel_size=3)}.get(name, {})
    torch.manual_seed(0)
    model = dulab.build_model(name, spec, latent_dim=2, hidden_sizes=(16,), kl_warmup_steps=4, beta=2.0, **hp)
    x = torch.randint(0, 5, (6, *spec.shape), generator=torch.Generator().manual_seed(0))
    model.eval()
    out = model.loss(x)  # evaluation: the full beta, no step counted
    torch.testing.assert_close(out["loss"], (2.0 * out["kl"] + out["recon"]) / spec.num_dims)
    assert int(model.num_updates) == 0
    model.train()
    weights = []
    for step in range(6):
        torch.manual_seed(step)
        out = model.loss(x)
        weights.append(float(((out["loss"] * spec.num_dims - out["recon"]) / out["kl"]).detach()))
    torch.testing.assert_close(torch.tensor(weights), torch.tensor([0.5, 1.0, 1.5, 2.0, 2.0, 2.0]))
    assert int(model.num_updates) == 6 and "num_updates" in model.state_dict()
    with torch.no_grad():
        model.loss(x)
    assert int(model.num_updates) == 6


def test_vae_without_warmup_uses_beta_from_the_first_step_and_iwae_rejects_warmup():
    spec = DataSpec((1, 4, 4), "discrete", 5)
    model = dulab.build_model("vae", spec, latent_dim=2, hidden_sizes=(16,), kl_warmup_steps=0, beta=3.0).train()
    x = torch.randint(0, 5, (6, *spec.shape), generator=torch.Generator().manual_seed(0))
    out = model.loss(x)
    torch.testing.assert_close(out["loss"], (3.0 * out["kl"] + out["recon"]) / spec.num_dims)
    assert dulab.build_model("iwae", spec, latent_dim=2, hidden_sizes=(16,)).config.kl_warmup_steps == 0
    with pytest.raises(UserError, match="kl_warmup_steps"):
        dulab.build_model("iwae", spec, latent_dim=2, kl_warmup_steps=10)


def test_weights_saved_before_the_warmup_existed_still_load():
    # old vae checkpoints have no num_updates: they load, with the warm-up counted as over (they trained without)
    spec = DataSpec((1, 4, 4), "discrete", 5)
    model = dulab.build_model("vae", spec, latent_dim=2, hidden_sizes=(16,), kl_warmup_steps=7)
    state = {k: v for k, v in model.state_dict().items() if k != "num_updates"}
    fresh = dulab.build_model("vae", spec, latent_dim=2, hidden_sizes=(16,), kl_warmup_steps=7)
    fresh.load_state_dict(state)
    assert int(fresh.num_updates) == 7 and fresh.kl_weight() == 1.0


# ---------------------------------------------------------------------------------------- posterior caps
def test_posterior_caps_keep_an_exploding_encoder_finite():
    # the fourth Adam step at lr 2e-3 on sprites (BENCHMARKS 22): log-variances far past exp's float32 range
    spec = DataSpec((1, 8, 8), "discrete", 2)
    torch.manual_seed(0)
    for name in ("vae", "iwae"):
        model = dulab.build_model(name, spec, latent_dim=3, hidden_sizes=(16,), hidden_channels=4).train()
        with torch.no_grad():
            model.encoder.net[-1].bias[:3] = -400.0  # means
            model.encoder.net[-1].bias[3:] = 250.0  # log-variances: exp(125) = inf in float32
        x = torch.randint(0, 2, (4, *spec.shape), generator=torch.Generator().manual_seed(0))
        mean, log_var = model.posterior(x)
        assert mean.min() >= -10.0 and log_var.max() <= 5.0
        out = model.loss(x)
        assert all(torch.isfinite(v).all() for v in out.values()), name
        out["loss"].backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None), name


def test_soft_cap_is_exact_below_its_start_and_bounded_above():
    from dulab.models.latent.vae import bound_posterior, soft_cap

    x = torch.tensor([-50.0, -1.0, 0.0, 1.9, 2.0, 2.5, 4.0, 1e4], dtype=torch.float64, requires_grad=True)
    y = soft_cap(x, 2.0, 5.0)
    assert torch.equal(y[:5], x[:5]) and y.max() <= 5.0 and torch.all(y[1:] > y[:-1] - 1e-12)
    y.sum().backward()  # continuous slope: 1 below the start, 1 just above it, 0 far above
    assert x.grad[4] == 1.0 and abs(float(x.grad[5]) - 1.0) < 0.05 and float(x.grad[-1]) == 0.0
    mean, log_var = bound_posterior(torch.tensor([-30.0, -4.0, 4.0, 30.0]), torch.tensor([-30.0, 0.0, 2.0, 30.0]))
    torch.testing.assert_close(mean[1:3], torch.tensor([-4.0, 4.0]))
    assert mean[0] == -mean[3] and 5.0 < mean[3] <= 10.0
    torch.testing.assert_close(log_var[:3], torch.tensor([-30.0, 0.0, 2.0]))
    assert 2.0 < log_var[3] <= 5.0
