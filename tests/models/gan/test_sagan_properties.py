"""SAGAN: the self-attention block (identity at gamma = 0, against a hand-written loop), spectral norm on every
weight of G and D bounding sigma_max by 1, TTUR optimisers, the attention placement, and samples on every size."""

from __future__ import annotations

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.gan.image_base import attention_index
from dulab.nn.attention import SelfAttention2d
from dulab.training.tasks import AdversarialTask

SIZES = {"digits": DataSpec((1, 8, 8), "discrete", 17), "shapes": DataSpec((1, 20, 20), "discrete", 2),
         "photos": DataSpec((3, 32, 32), "discrete", 256), "sprites": DataSpec((1, 64, 64), "discrete", 2),
         "odd": DataSpec((1, 7, 7), "discrete", 2), "tiny": DataSpec((1, 4, 4), "discrete", 2)}


def test_self_attention_with_gamma_zero_is_the_identity():
    torch.manual_seed(0)
    attn = SelfAttention2d(16).double()
    x = torch.randn(3, 16, 5, 4, dtype=torch.float64)
    assert float(attn.gamma.detach()) == 0.0 and torch.equal(attn(x), x)
    with torch.no_grad():
        attn.gamma.fill_(0.7)
    assert not torch.allclose(attn(x), x)


def test_self_attention_matches_a_loop_over_positions():
    # Zhang et al. 2019, Eqs. 1-3: beta_{j,i} = softmax_i(s_ij), s_ij = f(x_i)^T g(x_j);
    # o_j = v(sum_i beta_{j,i} h(x_i))
    torch.manual_seed(1)
    attn = SelfAttention2d(8, reduction=2).double()
    with torch.no_grad():
        attn.gamma.fill_(0.5)
    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    f, g, h = (m(x).flatten(2) for m in (attn.f, attn.g, attn.h))  # (B, C', N)
    out = torch.empty_like(x).flatten(2)
    for b in range(2):
        for j in range(9):
            scores = torch.stack([g[b, :, j] @ f[b, :, i] for i in range(9)])
            beta = torch.softmax(scores, 0)
            o = sum(beta[i] * h[b, :, i] for i in range(9))
            out[b, :, j] = x.flatten(2)[b, :, j] + 0.5 * (attn.v.weight[:, :, 0, 0] @ o)
    assert torch.allclose(attn(x), out.reshape_as(x), atol=1e-12)
    assert torch.allclose(attn.attention(x).sum(-1), torch.ones(2, 9, dtype=torch.float64))


def test_spectral_norm_bounds_sigma_max_in_g_and_d():
    torch.manual_seed(0)
    model = dulab.build_model("sagan", SIZES["shapes"], base_channels=8, latent_dim=8).train()
    z = model.sample_latent(4)
    with torch.no_grad():
        for _ in range(100):  # every training-mode forward is one power-iteration step
            model.discriminate(model.generate(z))
    model.eval()
    for net in (model.G, model.D):
        weights = [m.weight for m in net.modules() if hasattr(m, "parametrizations")]
        assert len(weights) >= 4  # linear/convolutions and the attention block's 1x1 convolutions
        for m in net.modules():
            if not hasattr(m, "parametrizations"):
                continue
            w = m.weight.detach().double()
            if isinstance(m, torch.nn.ConvTranspose2d):  # torch normalises it as (in, out k k) (dim 1)
                w = w.transpose(0, 1)
            sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
            assert float(sigma) <= 1.0 + 1e-3, (type(m).__name__, float(sigma))


def test_ttur_two_learning_rates_and_hinge_loss():
    model = dulab.build_model("sagan", SIZES["digits"], base_channels=4)
    assert model.config.loss == "hinge"
    task = AdversarialTask(model, seed=0)
    d_opt, g_opt = task.configure_optimizers(lambda step: 1.0)[0]
    assert d_opt.param_groups[0]["lr"] == 4e-4 and g_opt.param_groups[0]["lr"] == 1e-4
    assert d_opt.param_groups[0]["betas"] == g_opt.param_groups[0]["betas"] == (0.0, 0.9)


@pytest.mark.parametrize(("sizes", "index"), [([(2, 2), (4, 4)], 1), ([(5, 5), (10, 10)], 1),
                                              ([(32, 32), (16, 16), (8, 8)], 1), ([(32, 32)], 0)])
def test_attention_goes_on_the_largest_map_within_the_budget(sizes, index):
    assert attention_index(sizes, 256) == index


@pytest.mark.parametrize("size", sorted(SIZES))
def test_samples_on_every_image_size(size):
    spec = SIZES[size]
    model = dulab.build_model("sagan", spec, base_channels=4, latent_dim=8).eval()
    assert sum(isinstance(m, SelfAttention2d) for m in model.modules()) == 2  # one in G, one in D
    x = model.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, *spec.shape) and x.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < spec.num_levels


def test_vectors_and_huge_odd_images_are_refused():
    with pytest.raises(UserError, match="needs images"):
        dulab.build_model("sagan", DataSpec((2,), "continuous"))
    with pytest.raises(UserError, match="at most 64"):
        dulab.build_model("sagan", DataSpec((1, 65, 65), "discrete", 2))
