"""BigGAN: conditional batch norm (plain BN at zero modulation), orthogonal regularisation (closed forms, off-diagonal
only, added to G's loss by the task), the truncation trick, the projection discriminator, the hierarchical latent,
labels required, and samples on every image size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import dulab
from dulab.config import TrainConfig
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.gan.biggan import orthogonal_penalty, truncated_normal
from dulab.nn.modulation import ConditionalBatchNorm2d
from dulab.training.batch import Batch
from dulab.training.tasks import AdversarialTask

SIZES = {"digits": DataSpec((1, 8, 8), "discrete", 17, 10), "shapes": DataSpec((1, 20, 20), "discrete", 2, 4),
         "cifar": DataSpec((3, 32, 32), "discrete", 256, 10), "sprites": DataSpec((1, 64, 64), "discrete", 2, 3),
         "odd": DataSpec((1, 7, 7), "discrete", 2, 2)}


def _model(spec="digits", **hp):
    torch.manual_seed(0)
    return dulab.build_model("biggan", SIZES[spec], **{"base_channels": 4, "embed_dim": 6, "latent_dim": 10, **hp})


@pytest.mark.parametrize("training", [True, False])
def test_conditional_batch_norm_with_zero_modulation_is_plain_batch_norm(training):
    torch.manual_seed(0)
    cbn, bn = ConditionalBatchNorm2d(5, 3).double(), torch.nn.BatchNorm2d(5, affine=False).double()
    x, c = torch.randn(6, 5, 4, 4, dtype=torch.float64) * 3 + 1, torch.randn(6, 3, dtype=torch.float64)
    cbn(x, c), bn(x)  # one training pass updates the running statistics of both
    cbn.train(training), bn.train(training)
    assert torch.allclose(cbn(x, c), bn(x), atol=1e-12)
    with torch.no_grad():  # with modulation: BN(x) * (1 + A c) + B c per example
        cbn.gain.weight.normal_()
        cbn.bias.weight.normal_()
    gain, bias = 1 + c @ cbn.gain.weight.T, c @ cbn.bias.weight.T
    assert torch.allclose(cbn(x, c), bn(x) * gain[:, :, None, None] + bias[:, :, None, None], atol=1e-12)


def test_orthogonal_penalty_closed_forms():
    q, _ = torch.linalg.qr(torch.randn(6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert float(orthogonal_penalty(q)) == pytest.approx(0.0, abs=1e-20)
    # rows of different norms but orthogonal: the diagonal of W W^T is not penalised
    assert float(orthogonal_penalty(torch.diag(torch.tensor([3.0, 0.5, 7.0], dtype=torch.float64)))) == 0.0
    # W = [[1, 2, 0], [1, 0, 1]]: W W^T = [[5, 1], [1, 2]], off-diagonal squares 1 + 1 = 2
    w = torch.tensor([[1.0, 2.0, 0.0], [1.0, 0.0, 1.0]], dtype=torch.float64)
    assert float(orthogonal_penalty(w)) == 2.0
    gram = w @ w.T  # the full ||W W^T - I||^2 = 16 + 1 + 1 + 1 = 19 would include the diagonal
    assert float((gram - torch.eye(2, dtype=torch.float64)).pow(2).sum()) == 19.0
    conv = torch.randn(4, 2, 3, 3, dtype=torch.float64)  # a convolution is a matrix of its (out) filters
    flat = conv.reshape(4, -1)
    expected = sum(float(flat[i] @ flat[j]) ** 2 for i in range(4) for j in range(4) if i != j)
    assert float(orthogonal_penalty(conv)) == pytest.approx(expected, rel=1e-12)


def test_generator_regularizer_sums_g_weights_but_the_embedding():
    model = _model(ortho_beta=1e-2)
    expected = sum(orthogonal_penalty(p) for n, p in model.G.named_parameters() if p.ndim >= 2 and "embed" not in n)
    assert float(model.generator_regularizer().detach()) == pytest.approx(1e-2 * float(expected.detach()), rel=1e-6)
    assert _model(ortho_beta=0.0).generator_regularizer() is None


def test_orthogonal_regularisation_enters_the_generator_loss(monkeypatch):
    """The G step's backpropagated loss is G's adversarial loss plus generator_regularizer() (same RNG state)."""
    seen = {}
    losses = {}
    for beta in (0.0, 0.5):
        model = _model(ortho_beta=beta)
        task = AdversarialTask(model, TrainConfig(lr=1e-3), seed=0)
        from lightning_fabric import Fabric

        fabric = Fabric(accelerator="cpu", devices=1)
        opts, scheds = task.configure_optimizers(lambda s: 1.0)
        module, *opts = fabric.setup(model, *opts)
        task.setup(fabric, module, opts, scheds)
        original = task.optimizer_step

        def watched(loss, index=0, module=None, original=original, beta=beta, model=model):
            if index == 1:
                losses[beta] = float(loss.detach())
                reg = model.generator_regularizer()
                seen[beta] = None if reg is None else float(reg.detach())
            original(loss, index, module)

        monkeypatch.setattr(task, "optimizer_step", watched)
        x = torch.randint(0, 17, (8, 1, 8, 8), generator=torch.Generator().manual_seed(0))
        torch.manual_seed(5)
        task.training_step(Batch(x, torch.arange(8) % 10), 0)
    assert seen[0.0] is None and seen[0.5] > 0
    assert losses[0.5] - losses[0.0] == pytest.approx(seen[0.5], rel=1e-5)


def test_truncation_returns_latents_within_the_threshold():
    model = _model()
    g = torch.Generator().manual_seed(0)
    for t in (0.2, 1.0, 2.0):
        z = model.sample_latent(4000, generator=g, truncation=t)
        assert z.shape == (4000, 10) and float(z.abs().max()) <= t
        # a truncated normal, not a clamp: variance 1 - 2 t phi(t) / (2 Phi(t) - 1) and no mass at +-t
        phi, Phi = math.exp(-t * t / 2) / math.sqrt(2 * math.pi), 0.5 * (1 + math.erf(t / math.sqrt(2)))
        var = 1 - 2 * t * phi / (2 * Phi - 1)
        assert float(z.var()) == pytest.approx(var, rel=0.05)
        assert float((z.abs() == t).float().mean()) == 0.0
    with pytest.raises(UserError, match="truncation"):
        truncated_normal((3,), 0.0)


def test_truncated_samples_are_seeded_and_differ_from_untruncated():
    model = _model().eval()
    y = torch.arange(6) % 10
    a = model.sample(6, generator=torch.Generator().manual_seed(1), context=y, truncation=0.5)
    b = model.sample(6, generator=torch.Generator().manual_seed(1), context=y, truncation=0.5)
    c = model.sample(6, generator=torch.Generator().manual_seed(1), context=y)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_projection_discriminator():
    # Miyato & Koyama 2018, Eq. 3: D(x, y) = psi(phi(x)) + <embed(y), phi(x)>, so changing the label moves the
    # logit by <embed(y1) - embed(y2), phi(x)>.
    model = _model().double().eval()
    x = torch.rand(5, 1, 8, 8, dtype=torch.float64) * 2 - 1
    y1, y2 = torch.zeros(5, dtype=torch.long), torch.arange(5)
    h = x
    for block in model.D.blocks:
        h = block(h)
    h = F.relu(h).sum(dim=(2, 3))
    e = model.D.embed.weight
    diff = model.discriminate(x, y1) - model.discriminate(x, y2)
    assert torch.allclose(diff, ((e[y1] - e[y2]) * h).sum(1), atol=1e-10)
    assert torch.allclose(model.discriminate(x, y1), model.D.linear(h).squeeze(1) + (e[y1] * h).sum(1), atol=1e-10)


def test_hierarchical_latent_every_chunk_reaches_the_image():
    model = _model().double().train()
    assert len(model.G.chunks) == len(model.G.blocks) + 1 == 3 and sum(model.G.chunks) == 10
    z = torch.randn(4, 10, dtype=torch.float64, requires_grad=True)
    model.generate(z, torch.arange(4)).sum().backward()
    start = 0
    for size in model.G.chunks:
        assert float(z.grad[:, start:start + size].abs().sum()) > 0
        start += size


def test_labels_are_required():
    with pytest.raises(UserError, match="labelled data"):
        dulab.build_model("biggan", DataSpec((1, 8, 8), "discrete", 17))
    model = _model()
    with pytest.raises(UserError, match="context="):
        model.sample(4)
    with pytest.raises(UserError, match=r"\[0, 10\)"):
        model.sample(4, context=torch.full((4,), 10))
    with pytest.raises(UserError, match="latent_dim"):
        dulab.build_model("biggan", SIZES["sprites"], latent_dim=4)


@pytest.mark.parametrize("size", sorted(SIZES))
def test_samples_on_every_image_size(size):
    spec = SIZES[size]
    model = _model(size, use_attention=True).eval()
    y = torch.arange(5) % spec.num_classes
    x = model.sample(5, generator=torch.Generator().manual_seed(0), context=y)
    assert x.shape == (5, *spec.shape) and x.dtype == torch.int64
    assert int(x.min()) >= 0 and int(x.max()) < spec.num_levels
    model.train()
    z = model.sample_latent(5)
    logits = model.discriminate(model.generate(z, y), y)
    (logits.sum() + model.generator_regularizer()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
