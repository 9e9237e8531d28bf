"""The VAE decoder likelihoods are normalised for every z: categorical and discretized-logistic pmfs sum to 1 over
a tiny discrete domain (enumeration; the Bernoulli case is in test_latent.py), the Gaussian density with learned
standard deviation integrates to 1 on a fine 1-D grid. float64."""

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from properties import enumerate_domain


def _vae(spec, **hp):
    torch.manual_seed(0)
    model = dulab.build_model("vae", spec, latent_dim=2, hidden_sizes=(8,), architecture="mlp", **hp).double()
    with torch.no_grad():
        for p in model.decoder.parameters():  # far from the initial near-uniform pmf
            p.mul_(3.0)
    return model.eval()


@torch.no_grad()
@pytest.mark.parametrize("decoder", ["categorical", "logistic"])
def test_discrete_decoders_sum_to_one_over_the_domain(decoder):
    spec = DataSpec((2,), "discrete", 5)
    model = _vae(spec, decoder=decoder)
    assert model.observation.kind == decoder
    xs = enumerate_domain((2,), 5)  # all 25 vectors
    g = torch.Generator().manual_seed(1)
    for z in 2.0 * torch.randn(6, 2, generator=g, dtype=torch.float64):
        params = model.decoder_params(z.expand(len(xs), 2))
        total = torch.logsumexp(model.observation.log_likelihood(xs, params), 0)
        assert abs(float(total)) < 1e-10, f"{decoder}: sum_x p(x|z) = exp({float(total):.2e})"


@torch.no_grad()
def test_gaussian_decoder_integrates_to_one_on_a_grid():
    model = _vae(DataSpec((1,), "continuous"), learned_std=True)
    g = torch.Generator().manual_seed(2)
    for z in 2.0 * torch.randn(4, 2, generator=g, dtype=torch.float64):
        mean, log_std = model.observation._gaussian(model.decoder_params(z[None]))
        m, s = float(mean[0, 0]), float(log_std[0, 0].exp())
        grid = torch.linspace(m - 15 * s, m + 15 * s, 30001, dtype=torch.float64)[:, None]  # step s / 1000
        params = model.decoder_params(z.expand(len(grid), 2))
        dens = model.observation.log_likelihood(grid, params).exp()
        mass = float(torch.trapezoid(dens, grid[:, 0]))
        assert abs(mass - 1) < 1e-6, f"integral of p(x|z) = {mass} (mean {m:.3f}, std {s:.3f})"
