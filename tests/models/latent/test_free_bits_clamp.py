"""Free bits (Kingma et al. 2016, appendix C.8): ``sum_j max(lambda, E_batch KL_j)``, as documented in
``dulab.losses.elbo.free_bits_kl`` and applied per latent dimension by vae, hierarchical_vae (each layer) and
pixel_vae. float64."""

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.losses.elbo import free_bits_kl

SPEC = DataSpec((1, 4, 4), "discrete", 3)
HP = {"vae": dict(latent_dim=3, hidden_sizes=(16,), kl_warmup_steps=0),
      "hierarchical_vae": dict(latent_dim=3, top_latent_dim=2, hidden_sizes=(16,), prior_hidden=8, kl_warmup_steps=0),
      "pixel_vae": dict(latent_dim=3, hidden_sizes=(16,), num_filters=8, num_layers=1, first_kernel_size=3)}
#: latent dimensions that free bits apply to
NUM_LATENTS = {"vae": 3, "hierarchical_vae": 5, "pixel_vae": 3}


def test_free_bits_value_and_gradient():
    kl = torch.tensor([[0.1, 2.0, 0.4], [0.3, 1.0, 0.8]], dtype=torch.float64, requires_grad=True)
    value = free_bits_kl(kl, 0.5)  # batch means 0.2, 1.5, 0.6: clamped to 0.5, kept, kept
    assert abs(float(value.detach()) - (0.5 + 1.5 + 0.6)) < 1e-12
    value.backward()
    # a clamped dimension gets no gradient (nothing to gain below lambda); the others 1/B per example
    torch.testing.assert_close(kl.grad, torch.tensor([[0.0, 0.5, 0.5], [0.0, 0.5, 0.5]], dtype=torch.float64))
    assert float(free_bits_kl(kl.detach(), 0.0)) == pytest.approx(float(kl.detach().mean(0).sum()))
    with pytest.raises(ValueError):
        free_bits_kl(kl, -1.0)


def _model(name, **hp):
    torch.manual_seed(0)
    return dulab.build_model(name, SPEC, **HP[name], **hp).double()


def _x():
    return torch.randint(0, 3, (8, *SPEC.shape), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", list(HP))
def test_free_bits_above_every_kl_leaves_only_the_reconstruction(name):
    """With lambda above every dimension's KL the KL term is the constant beta * lambda * Z: the loss is
    (beta lambda Z + recon) / D and its gradient is that of recon / D alone."""
    lam, beta = 50.0, 2.0
    model, x = _model(name, free_bits=lam, beta=beta), _x()
    torch.manual_seed(1)
    out = model.loss(x)
    assert float(out["kl"].detach()) < lam
    expected = (beta * lam * NUM_LATENTS[name] + out["recon"]) / SPEC.num_dims
    torch.testing.assert_close(out["loss"], expected, rtol=1e-12, atol=1e-12)
    grads = torch.autograd.grad(out["loss"], list(model.parameters()), allow_unused=True, retain_graph=True)
    ref = torch.autograd.grad(out["recon"] / SPEC.num_dims, list(model.parameters()), allow_unused=True)
    for (n, _), a, b in zip(model.named_parameters(), grads, ref):
        if a is None or b is None:
            assert a is None and b is None, n
            continue
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("name", list(HP))
def test_zero_free_bits_is_the_beta_elbo(name):
    model, x = _model(name, beta=3.0), _x()
    out = model.loss(x)
    torch.testing.assert_close(out["loss"], (3.0 * out["kl"] + out["recon"]) / SPEC.num_dims, rtol=1e-12, atol=0)
