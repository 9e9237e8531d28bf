"""StyleGAN: AdaIN (plain instance norm at zero style modulation), modulated/demodulated convolutions against a
per-example loop, noise inputs, style mixing (two w's switching at the crossover), truncation in W toward the
tracked w_avg (an EMA buffer, saved with the weights), and samples on every image size for both style blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.gan.stylegan import mix_styles
from dulab.nn.modulation import AdaIN, ModulatedConv2d, NoiseInjection

SIZES = {"digits": DataSpec((1, 8, 8), "discrete", 17), "shapes": DataSpec((1, 20, 20), "discrete", 2),
         "photos": DataSpec((3, 32, 32), "discrete", 256), "sprites": DataSpec((1, 64, 64), "discrete", 2),
         "odd": DataSpec((1, 7, 7), "discrete", 2)}


def _model(spec="digits", **hp):
    torch.manual_seed(0)
    return dulab.build_model("stylegan", SIZES[spec], **{"base_channels": 4, "w_dim": 8, "latent_dim": 8, **hp})


def test_adain_with_zero_style_modulation_is_instance_norm():
    torch.manual_seed(0)
    adain = AdaIN(5, 3).double()
    x, w = torch.randn(4, 5, 6, 6, dtype=torch.float64) * 2 + 3, torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        for lin in (adain.scale, adain.shift):
            lin.weight.zero_()
            lin.bias.zero_()
    assert torch.allclose(adain(x, w), F.instance_norm(x, eps=1e-8), atol=1e-12)
    # with a style: y_s * (x - mu) / sigma + y_b, per example and channel (Huang & Belongie 2017, Eq. 8)
    with torch.no_grad():
        adain.scale.weight.normal_()
        adain.shift.weight.normal_()
    ys, yb = 1 + adain.scale(w), adain.shift(w)
    mu, var = x.mean(dim=(2, 3), keepdim=True), x.var(dim=(2, 3), unbiased=False, keepdim=True)
    expected = ys[:, :, None, None] * (x - mu) / torch.sqrt(var + 1e-8) + yb[:, :, None, None]
    assert torch.allclose(adain(x, w), expected, atol=1e-10)


@pytest.mark.parametrize("demodulate", [True, False])
def test_modulated_convolution_matches_a_per_example_loop(demodulate):
    torch.manual_seed(0)
    conv = ModulatedConv2d(3, 4, 3, 5, demodulate=demodulate).double()
    x, w = torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.randn(2, 5, dtype=torch.float64)
    out = conv(x, w)
    for b in range(2):
        s = 1 + conv.style(w[b:b + 1])[0]  # (C_in,)
        weight = conv.scale * conv.weight * s[None, :, None, None]
        if demodulate:  # Karras et al. 2020, Eq. 3: unit L2 norm per output channel
            weight = weight / torch.sqrt(weight.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        assert torch.allclose(out[b], F.conv2d(x[b:b + 1], weight, padding=1)[0], atol=1e-10)


def test_noise_injection_starts_off_and_follows_its_generator():
    noise = NoiseInjection(3)
    x = torch.randn(2, 3, 4, 4)
    assert torch.equal(noise(x), x)  # strength starts at 0
    with torch.no_grad():
        noise.strength.fill_(1.0)
    a, b = (noise(x, generator=torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert torch.allclose((a - x)[:, 0], (a - x)[:, 2])  # one map per example, shared by the channels


def test_mix_styles_switches_at_the_crossover():
    w1, w2 = torch.randn(3, 4), torch.randn(3, 4)
    ws = mix_styles(w1, w2, torch.tensor([1, 3, 6]), 6)
    assert ws.shape == (3, 6, 4)
    assert torch.equal(ws[0, :1], w1[:1].expand(1, 4)) and torch.equal(ws[0, 1:], w2[:1].expand(5, 4))
    assert torch.equal(ws[1, :3], w1[1:2].expand(3, 4)) and torch.equal(ws[1, 3:], w2[1:2].expand(3, 4))
    assert torch.equal(ws[2], w1[2:3].expand(6, 4))  # crossover L: no mixing


def test_style_mixing_uses_two_ws_while_training():
    model = _model(mixing_prob=1.0).train()
    L = model.num_style_layers
    z = torch.randn(16, 8)
    with torch.no_grad():
        ws, w1 = model.styles(z), model.G.mapping(z)
    for b in range(16):
        switch = [i for i in range(1, L) if not torch.equal(ws[b, i], ws[b, i - 1])]
        assert len(switch) == 1 and 1 <= switch[0] < L  # exactly one crossover, inside the network
        assert torch.equal(ws[b, :switch[0]], w1[b].expand(switch[0], -1))  # first part: w_1 = f(z_1)
        assert not torch.allclose(ws[b, -1], w1[b])  # then another w
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.styles(z), w1[:, None].expand(-1, L, -1))  # no mixing when sampling
    unmixed = _model(mixing_prob=0.0).train()
    with torch.no_grad():
        ws = unmixed.styles(z)
    assert torch.equal(ws, ws[:, :1].expand_as(ws))


def test_w_avg_is_an_ema_buffer_and_truncation_pulls_toward_it():
    model = _model(w_avg_beta=0.9, mixing_prob=0.0).train()
    assert "G.w_avg" in model.state_dict() and float(model.G.w_avg.abs().sum()) == 0.0  # saved with the weights
    z = torch.randn(32, 8)
    with torch.no_grad():
        model.styles(z)
        w = model.G.mapping(z)
    assert torch.allclose(model.G.w_avg, 0.1 * w.mean(0), atol=1e-6)  # 0.9 * 0 + 0.1 * mean w
    model.eval()
    before = model.G.w_avg.clone()
    with torch.no_grad():
        ws0, ws_half, ws = (model.styles(z, truncation=t) for t in (0.0, 0.5, None))
    assert torch.equal(model.G.w_avg, before)  # evaluation does not move w_avg
    assert torch.allclose(ws0, before.expand_as(ws0))  # psi = 0: every w is w_avg
    assert torch.allclose(ws_half - before, 0.5 * (ws - before), atol=1e-6)  # w_avg + psi (w - w_avg)
    a = model.sample(4, generator=torch.Generator().manual_seed(0), truncation=0.0)
    b = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert a.shape == b.shape and not torch.equal(a, b)


@pytest.mark.parametrize("style_block", ["adain", "modulated"])
@pytest.mark.parametrize("size", sorted(SIZES))
def test_samples_and_gradients_on_every_image_size(size, style_block):
    spec = SIZES[size]
    model = _model(size, style_block=style_block)
    x = model.eval().sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, *spec.shape) and x.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < spec.num_levels
    model.train()
    with torch.no_grad():  # give the noise inputs a strength so their gradients are not structurally zero
        for p in model.parameters():
            p.add_(0.01)
    model.discriminate(model.generate(model.sample_latent(4))).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name.startswith("G."):
            assert float(p.grad.abs().sum()) > 0, name


def test_unconditional_and_images_only():
    with pytest.raises(UserError, match="unconditional"):
        _model().sample(2, context=torch.zeros(2, dtype=torch.long))
    with pytest.raises(UserError, match="needs images"):
        dulab.build_model("stylegan", DataSpec((2,), "continuous"))
    with pytest.raises(UserError, match="style_block"):
        _model(style_block="other")
