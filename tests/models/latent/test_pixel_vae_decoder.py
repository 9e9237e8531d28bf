"""pixel_vae's decoder: autoregressive order by autograd (DESIGN.md 6.2), normalisation of p(x|z) by enumeration
for fixed z (6.1), and the greedy decoding and sampling loops against one-pass conditionals. float64."""

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from properties import enumerate_domain

HP = dict(latent_dim=2, hidden_sizes=(16,), hidden_channels=4, num_filters=8, num_layers=2, first_kernel_size=3,
          conditioning_channels=2)


def _model(spec, seed=0):
    torch.manual_seed(seed)
    model = dulab.build_model("pixel_vae", spec, **HP).double().eval()
    with torch.no_grad():  # larger weights: every allowed dependency clearly non-zero
        for p in model.parameters():
            p.mul_(1.5)
    return model


@pytest.mark.parametrize("shape", [(1, 4, 4), (3, 3, 3)])
def test_logits_depend_only_on_earlier_pixels_and_channels(shape):
    """Jacobian of every conditional's logits w.r.t. the (relaxed) input image: exactly zero for the current and
    later pixels (and for the current pixel's own and later channels), non-zero for the left neighbour, the pixel
    above, and the earlier channels of the same pixel."""
    spec = DataSpec(shape, "discrete", 3)
    model = _model(spec)
    C, H, W = shape
    g = torch.Generator().manual_seed(1)
    z = torch.randn(1, 2, generator=g, dtype=torch.float64)
    m = model.conditioning(z)
    v0 = torch.rand(1, C, H, W, generator=g, dtype=torch.float64) * 2 - 1
    jac = torch.autograd.functional.jacobian(lambda v: model.decoder_logits(v, m), v0)  # (1, K, C, H, W, 1, C, H, W)
    dep = jac[0].abs().sum(0)[..., 0, :, :, :]  # (C, H, W, C, H, W): output (c, i, j) vs input (c', i', j')
    for c in range(C):
        for i in range(H):
            for j in range(W):
                d = dep[c, i, j]  # (C, H, W)
                later = torch.zeros(C, H, W, dtype=torch.bool)
                later.view(C, -1)[:, i * W + j + 1:] = True  # later pixels, every channel
                later[c:, i, j] = True  # the current channel and later ones of this pixel
                assert d[later].abs().max() == 0, f"output ({c},{i},{j}) sees the current or a later sub-pixel"
                if j > 0:
                    assert d[:, i, j - 1].sum() > 0, f"output ({c},{i},{j}) misses its left neighbour"
                if i > 0:
                    assert d[:, i - 1, j].sum() > 0, f"output ({c},{i},{j}) misses the pixel above"
                if c > 0:
                    assert d[:c, i, j].sum() > 0, f"output ({c},{i},{j}) misses earlier channels of its pixel"


@pytest.mark.parametrize("shape,levels", [((1, 3, 3), 2), ((1, 2, 2), 3), ((3, 2, 2), 2)])
@torch.no_grad()
def test_decoder_normalises_over_every_image_for_fixed_z(shape, levels):
    spec = DataSpec(shape, "discrete", levels)
    model = _model(spec)
    xs = enumerate_domain(shape, levels)  # every image of the domain
    for seed in range(3):
        z = torch.randn(1, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
        total = torch.logsumexp(model.decoder_log_likelihood(xs, z.expand(len(xs), 2)), 0)
        assert abs(float(total)) < 1e-10, f"sum_x p(x|z) = exp({float(total):.2e})"


@torch.no_grad()
def test_greedy_decoding_takes_every_conditionals_mode():
    spec = DataSpec((3, 3, 3), "discrete", 4)
    model = _model(spec)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = model.decode(z)
    logits = model.decoder_logits(x.double() * (2 / 3) - 1, model.conditioning(z))  # (5, K, C, H, W)
    assert torch.equal(logits.argmax(1), x)  # x_i = argmax p(x_i | x_<i, z) at every sub-pixel
    s = model.sample(6, generator=torch.Generator().manual_seed(2))
    assert s.shape == (6, 3, 3, 3) and s.dtype == torch.long and 0 <= s.min() and s.max() < 4
    assert model.sample(6, generator=torch.Generator().manual_seed(2), use_decoder_noise=False).shape == s.shape


def test_pixel_vae_needs_discrete_images():
    with pytest.raises(UserError, match="discrete images"):
        dulab.build_model("pixel_vae", DataSpec((6,), "discrete", 3))
    with pytest.raises(UserError, match="discrete images"):
        dulab.build_model("pixel_vae", DataSpec((1, 4, 4), "continuous"))
