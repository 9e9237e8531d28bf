"""The improved-training options of every GAN (``dulab.models.gan.tricks``, ``progressive.py``) against closed
forms: one-sided label smoothing, feature matching, minibatch discrimination (cross-batch dependence), historical
averaging, virtual batch norm, instance noise, the variational discriminator bottleneck, progressive fade-in; bitwise
resume with the stateful options on; the Bayes-optimal discriminator on a two-component mixture; ring8 / grid25."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from lightning_fabric import Fabric

import dulab
import dulab.losses.gan
import dulab.models.gan.gan
from dulab.config import TrainConfig
from dulab.data import toy2d
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.losses.gan import discriminator_loss, feature_matching_loss
from dulab.models.gan import tricks
from dulab.models.gan.progressive import growth_at, level_and_alpha
from dulab.training.batch import Batch
from dulab.training.tasks import AdversarialTask
from properties import assert_resume_equals_straight_run

VEC, IMG = DataSpec((2,), "continuous"), DataSpec((1, 8, 8), "discrete", 17)


def _model(name="gan", spec=VEC, seed=0, **hp):
    torch.manual_seed(seed)
    tiny = {"hidden_sizes": (8,), "latent_dim": 3} if name == "gan" else {"base_channels": 4, "latent_dim": 4}
    return dulab.build_model(name, spec, **{**tiny, **hp})


def _task(model, **train):
    fabric = Fabric(accelerator="cpu", devices=1)
    task = AdversarialTask(model, TrainConfig(**{"lr": 1e-2, **train}), seed=0)
    optimizers, schedulers = task.configure_optimizers(lambda step: 1.0)
    module, *optimizers = fabric.setup(model, *optimizers)
    task.setup(fabric, module, optimizers, schedulers)
    return task


def _batch(n=8, seed=0, spec=VEC):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randint(0, spec.num_levels, (n, *spec.shape), generator=g) if spec.is_discrete
         else torch.randn(n, *spec.shape, generator=g))
    return Batch(x, torch.full((n,), -1))


# ============================================================================ one-sided label smoothing

def test_label_smoothing_changes_only_the_real_target():
    # Cross-entropy with target t at logit r: t softplus(-r) + (1 - t) softplus(r). At r = 2, f = -1, t = 0.9:
    r, f = torch.tensor([2.0], dtype=torch.float64), torch.tensor([-1.0], dtype=torch.float64)
    expected = 0.9 * math.log1p(math.exp(-2)) + 0.1 * math.log1p(math.exp(2)) + math.log1p(math.exp(-1))
    assert float(discriminator_loss(r, f, "non_saturating", real_target=0.9)) == pytest.approx(expected, abs=1e-12)
    # the fake term is untouched: moving the fake logits changes both losses by the same amount
    f2 = torch.tensor([0.5], dtype=torch.float64)
    delta = [float(discriminator_loss(r, f2, "minimax", real_target=t) - discriminator_loss(r, f, "minimax",
                                                                                              real_target=t))
             for t in (1.0, 0.9)]
    assert delta[0] == pytest.approx(delta[1], abs=1e-12)
    # D's optimum on real data moves from +inf to logit(0.9)
    grid = torch.linspace(-5, 8, 13001, dtype=torch.float64)
    best = grid[torch.argmin(0.9 * F.softplus(-grid) + 0.1 * F.softplus(grid))]
    assert float(best) == pytest.approx(math.log(9), abs=2e-3)


def test_label_smoothing_reaches_the_task_and_needs_a_logistic_loss(monkeypatch):
    seen = []
    original = dulab.losses.gan.discriminator_loss
    monkeypatch.setattr(dulab.losses.gan, "discriminator_loss",
                        lambda r, f, kind, **kw: seen.append(kw) or original(r, f, kind, **kw))
    _task(_model(label_smoothing=0.2)).training_step(_batch(), 0)
    assert seen == [{"real_target": 0.8}]
    with pytest.raises(UserError, match="logistic"):
        _model(loss="hinge", label_smoothing=0.1)


# ============================================================================ feature matching

def test_feature_matching_loss_is_the_squared_distance_of_mean_features():
    a = torch.tensor([[1.0, 2.0], [3.0, 4.0]])  # mean (2, 3)
    b = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 1.0]])  # mean (1, 1)
    assert float(feature_matching_loss(a, b)) == pytest.approx(1.0 + 4.0)


@pytest.mark.parametrize(("name", "spec", "hp"), [("gan", VEC, {}), ("dcgan", IMG, {}),
                                                  ("dcgan", IMG, {"progressive_steps": 2})])
def test_discriminator_is_its_head_on_its_features(name, spec, hp):
    model = _model(name, spec, **hp).eval()
    x = model.to_critic_input(_batch(4, spec=spec).x)
    feats = model.discriminator_features(x)
    head = model.D[-1] if isinstance(model.D, torch.nn.Sequential) else model.D.head
    assert feats.dim() == 2 and torch.equal(head(feats).reshape(-1), model.discriminate(x))


def test_generator_step_with_feature_matching_uses_the_mean_features():
    # The G step's loss is the squared distance between D's mean features on the batch and on the G phase's
    # fakes (the latents replayed from the seed: the D phase draws first, then the G phase).
    model = _model(feature_matching=True)
    task = _task(model, lr=1e-3)
    batch = _batch(16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(5)
    out = task.training_step(batch, 0)
    torch.manual_seed(5)
    model.sample_latent(16)
    z = model.sample_latent(16)
    after_d = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict({**after_d, **{k: v for k, v in state.items() if k.startswith("G.")}})  # G before its step
    with torch.no_grad():
        expected = ((model.discriminator_features(batch.x).mean(0)
                     - model.discriminator_features(model.generate(z)).mean(0)) ** 2).sum()
    assert float(out["g_loss"]) == pytest.approx(float(expected), rel=1e-6)


# ============================================================================ minibatch discrimination

def _cross_batch_jacobian(model, x):
    """|d D(x)_0 / d x_j| summed over the inputs of every other example j (eval mode: no batch-norm coupling)."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model.discriminate(x)[0], x)
    return float(g[1:].abs().sum())


def test_minibatch_discrimination_makes_each_logit_depend_on_the_batch():
    x = torch.randn(5, 2, dtype=torch.float64)
    plain = _model().double().eval()
    mbd = _model(minibatch_kernels=4, minibatch_kernel_dim=3).double().eval()
    assert _cross_batch_jacobian(plain, x) == 0.0
    assert _cross_batch_jacobian(mbd, x) > 1e-6


def test_minibatch_discrimination_closed_form():
    # One kernel of dim 1 with T = [[1]]: o_i = sum_{j != i} exp(-|f_i - f_j|).
    layer = tricks.MinibatchDiscrimination(1, 1, 1)
    with torch.no_grad():
        layer.T.fill_(1.0)
    f = torch.tensor([[0.0], [1.0], [3.0]])
    o = layer(f)[:, 1]
    e = math.exp
    assert torch.allclose(o, torch.tensor([e(-1) + e(-3), e(-1) + e(-2), e(-3) + e(-2)]))
    assert torch.equal(layer(f)[:, :1], f)  # the features pass through


def test_minibatch_discrimination_matches_cdist_and_has_a_double_backward():
    # The gradient penalty differentiates the input gradient again: torch.cdist has no double backward.
    torch.manual_seed(0)
    layer = tricks.MinibatchDiscrimination(4, 3, 2).double()
    f = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    m = (f @ layer.T).reshape(6, 3, 2).transpose(0, 1)
    expected = torch.exp(-torch.cdist(m, m, p=1)).sum(2).transpose(0, 1) - 1.0
    out = layer(f)
    assert torch.allclose(out[:, 4:], expected)
    (grad,) = torch.autograd.grad(out[:, 4:].sum(), f, create_graph=True)
    grad.pow(2).sum().backward()
    assert layer.T.grad is not None and layer.T.grad.abs().sum() > 0


# ============================================================================ historical averaging

def test_historical_average_penalty_is_zero_at_the_running_average():
    h = tricks.HistoricalAverage()
    p = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    assert float(h.penalty(p)) == 0.0  # no history yet: the mean starts at the parameters
    h.update([torch.tensor([3.0, 4.0]), torch.tensor([[5.0]])])  # mean of the two: (2, 3), 4
    assert float(h.penalty([torch.tensor([2.0, 3.0]), torch.tensor([[4.0]])])) == 0.0
    assert float(h.penalty([torch.tensor([2.0, 5.0]), torch.tensor([[4.0]])])) == pytest.approx(4.0)


def test_task_keeps_the_mean_of_every_past_parameter_vector():
    model = _model(historical_averaging=0.5)
    task = _task(model)
    snaps = [torch.cat([p.detach().reshape(-1) for p in model.discriminator_parameters()]).clone()]
    for step in range(3):
        task.training_step(_batch(seed=step), step)
        snaps.append(torch.cat([p.detach().reshape(-1) for p in model.discriminator_parameters()]).clone())
    mean = torch.cat([m.reshape(-1) for m in task.tricks.history["d"].mean])
    assert torch.allclose(mean, torch.stack(snaps).mean(0), atol=1e-6)
    assert task.tricks.history["g"].count == 4 and "history_d" in task.training_step(_batch(seed=9), 3)


# ============================================================================ virtual batch norm

def test_virtual_batch_norm_normalises_the_reference_batch_and_each_example_with_it():
    torch.manual_seed(0)
    vbn = tricks.VirtualBatchNorm(3).double()
    with torch.no_grad():
        vbn.weight.uniform_(0.5, 2.0)
        vbn.bias.uniform_(-1, 1)
    vbn.num_reference = 6
    x = torch.randn(9, 3, 2, 2, dtype=torch.float64)
    out = vbn(x)
    ref = x[:6]
    plain = F.batch_norm(ref, None, None, vbn.weight, vbn.bias, training=True, eps=vbn.eps)
    assert torch.allclose(out[:6], plain, atol=1e-12)
    # example 7: statistics of the 6 reference images and itself, weight 1/7 for its own
    xi = x[7]
    mean = (6 * ref.mean((0, 2, 3)) + xi.mean((1, 2))) / 7
    sq = (6 * ref.pow(2).mean((0, 2, 3)) + xi.pow(2).mean((1, 2))) / 7
    expected = (xi - mean[:, None, None]) / torch.sqrt(sq - mean**2 + vbn.eps)[:, None, None]
    expected = expected * vbn.weight[:, None, None] + vbn.bias[:, None, None]
    assert torch.allclose(out[7], expected, atol=1e-12)


def test_virtual_batch_norm_generator_treats_examples_independently():
    model = _model("dcgan", IMG, virtual_batch_norm=5).double()
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.G.modules())
    assert model.G.reference.shape == (5, 4)
    z = torch.randn(4, 4, dtype=torch.float64)
    whole = model.generate(z)
    assert torch.allclose(whole[2], model.generate(z[2:3])[0], atol=1e-12)  # no dependence on the other rows
    with pytest.raises(UserError, match="batch-norm"):
        _model(virtual_batch_norm=4)  # the MLP's G has no batch norm unless g_norm=batch
    assert isinstance(_model(virtual_batch_norm=4, g_norm="batch").G, tricks.VBNGenerator)


# ============================================================================ instance noise

def test_instance_noise_is_annealed_linearly_to_zero():
    assert [tricks.instance_noise_std(s, 0.4, 4) for s in (0, 2, 4, 9)] == [0.4, 0.2, 0.0, 0.0]
    assert tricks.instance_noise_std(100, 0.4, 0) == 0.4


def test_instance_noise_reaches_the_discriminator_and_stops_after_annealing():
    def d_loss(step, **hp):
        task = _task(_model(**hp))
        torch.manual_seed(1)
        return float(task.training_step(_batch(), step)["d_loss"])

    assert d_loss(0, instance_noise=1.0, instance_noise_steps=5) != d_loss(0)
    assert d_loss(5, instance_noise=1.0, instance_noise_steps=5) == d_loss(5)  # std 0 at step 5: no draw


# ============================================================================ variational discriminator bottleneck

def test_gaussian_kl_matches_torch_distributions():
    mu, log_sigma = torch.randn(4, 3, dtype=torch.float64), 0.3 * torch.randn(4, 3, dtype=torch.float64)
    q = torch.distributions.Normal(mu, log_sigma.exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(tricks.gaussian_kl(mu, log_sigma), ref, atol=1e-12)


def test_bottleneck_beta_follows_the_dual_update():
    # Peng et al. 2019, Eq. 10: beta <- max(0, beta + alpha (KL - I_c)), with KL the mean of real and fake halves.
    assert float(tricks.update_beta(torch.tensor(0.1), torch.tensor(0.8), 0.5, 0.5)) == pytest.approx(0.25)
    assert float(tricks.update_beta(torch.tensor(0.1), torch.tensor(0.0), 0.5, 0.5)) == 0.0
    model = _model(vdb_bottleneck=2, vdb_beta_init=0.3, vdb_beta_step=0.1, vdb_info_constraint=0.2)
    task = _task(model)
    out = task.training_step(_batch(), 0)
    assert float(out["vdb_beta"]) == pytest.approx(0.3)  # beta used in this step
    assert float(task.tricks.beta) == pytest.approx(max(0.0, 0.3 + 0.1 * (float(out["vdb_kl"]) - 0.2)), rel=1e-6)
    assert torch.equal(task.state_dict()["tricks"]["vdb_beta"], task.tricks.beta)


def test_bottleneck_samples_in_training_and_uses_the_mean_in_evaluation():
    model = _model(vdb_bottleneck=3)
    x = torch.randn(6, 2)
    model.train()
    assert not torch.equal(model.discriminate(x), model.discriminate(x))
    model.eval()
    assert torch.equal(model.discriminate(x), model.discriminate(x))


# ============================================================================ progressive growing

def test_growth_schedule_alternates_fade_in_and_stable_phases():
    got = [growth_at(s, 4, 2) for s in (0, 3, 4, 6, 8, 12, 14, 16, 100)]
    assert got == [0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.5, 2.0, 2.0]
    assert level_and_alpha(0.0) == (0, 1.0) and level_and_alpha(1.5) == (2, 0.5) and level_and_alpha(2.0) == (2, 1.0)


def test_progressive_fade_in_at_alpha_0_and_1_equals_the_low_and_high_resolution_paths():
    spec = DataSpec((1, 16, 16), "discrete", 2)  # 2 stages: 4x4 base, 8x8, 16x16
    model = _model("dcgan", spec, progressive_steps=3).double().eval()
    G, D = model.G, model.D
    z = torch.randn(3, 4, dtype=torch.float64)
    x = torch.rand(3, 1, 16, 16, dtype=torch.float64) * 2 - 1
    for level in (1, 2):
        assert torch.allclose(G.forward_at(z, level, 0.0), G.forward_at(z, level - 1, 1.0), atol=1e-12)
        assert torch.allclose(D.features_at(x, level, 0.0), D.features_at(x, level - 1, 1.0), atol=1e-12)
    # level 0 is blocky (constant 4x4 cells); alpha = 1 is the high-resolution path with no blend
    low = G.forward_at(z, 0, 1.0)
    assert torch.equal(low, low[..., ::4, ::4].repeat_interleave(4, -2).repeat_interleave(4, -1))
    mid = G.forward_at(z, 2, 0.5)
    assert torch.allclose(mid, 0.5 * G.forward_at(z, 2, 1.0) + 0.5 * G.forward_at(z, 1, 1.0), atol=1e-12)
    model.set_training_step(4)  # phase 1 (steps 3..5: fade in level 1), 1/3 of the way
    assert float(G.growth) == pytest.approx(1 / 3) and float(D.growth) == pytest.approx(1 / 3)
    assert model.generate(z).shape == (3, 1, 16, 16)


# ============================================================================ resume with the stateful options

def _vector_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return dulab.datasets.from_array((torch.randn(n, 2, generator=g) * 0.5 + 1).numpy())


STATEFUL = {"historical_averaging": 0.1, "vdb_bottleneck": 2, "vdb_beta_step": 0.5, "instance_noise": 0.3,
            "instance_noise_steps": 6, "minibatch_kernels": 3, "virtual_batch_norm": 4, "g_norm": "batch",
            "label_smoothing": 0.1, "feature_matching": True}


def test_resume_with_the_stateful_options_equals_straight_run(tmp_path):
    assert_resume_equals_straight_run("gan", _vector_data(32, 0), _vector_data(8, 1), tmp_path, lr=1e-2,
                                      hidden_sizes=(8,), latent_dim=3, **STATEFUL)


def test_resume_without_the_task_state_is_caught(tmp_path, monkeypatch):
    # the same check with the historical averages and beta not restored must fail
    monkeypatch.setattr(tricks.TrainingTricks, "load_state_dict", lambda self, state: None)
    with pytest.raises(AssertionError, match="differ"):
        assert_resume_equals_straight_run("gan", _vector_data(32, 0), _vector_data(8, 1), tmp_path, lr=1e-2,
                                          hidden_sizes=(8,), latent_dim=3, historical_averaging=0.1,
                                          vdb_bottleneck=2, vdb_beta_step=0.5)


def test_resume_progressive_dcgan_equals_straight_run(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    data = [dulab.datasets.from_array(rng.integers(0, 2, (n, 1, 8, 8)), num_levels=2) for n in (32, 8)]
    assert_resume_equals_straight_run("dcgan", *data, tmp_path, lr=1e-2, base_channels=2, latent_dim=3,
                                      progressive_steps=1, vdb_bottleneck=2, historical_averaging=0.1)


# ============================================================================ Bayes-optimal D, 1-D

class _FixedGAN(dulab.models.gan.gan.GAN):
    """G is the fixed map z -> 1.5 z, so p_g = N(0, 1.5^2) is known."""

    def build_generator(self):
        g = torch.nn.Linear(1, 1, bias=False)
        with torch.no_grad():
            g.weight.fill_(1.5)
        return g


def test_discriminator_approaches_bayes_optimal_on_a_mixture():
    # Goodfellow et al. 2014, Prop. 1: D*(x) = p_data / (p_data + p_g), here with p_data the mixture
    # 0.5 N(-1, 0.4^2) + 0.5 N(1, 0.4^2) against p_g = N(0, 1.5^2): a ratio that is not monotone in x.
    torch.manual_seed(0)
    model = _FixedGAN(DataSpec((1,), "continuous"), _FixedGAN.Config(latent_dim=1, hidden_sizes=(32, 32),
                                                                     n_critic=10**6))
    task = _task(model, lr=3e-3)
    for step in range(500):
        sign = torch.randint(0, 2, (256, 1)) * 2 - 1
        task.training_step(Batch(sign + 0.4 * torch.randn(256, 1), torch.full((256,), -1)), step)
    x = torch.linspace(-1.6, 1.6, 33, dtype=torch.float64)
    n = torch.distributions.Normal
    log_data = torch.logsumexp(torch.stack([n(-1.0, 0.4).log_prob(x), n(1.0, 0.4).log_prob(x)]), 0) - math.log(2)
    optimal = torch.sigmoid(log_data - n(0.0, 1.5).log_prob(x))
    with torch.no_grad():
        d = torch.sigmoid(model.discriminate(x[:, None].float())).double()
    err = float((d - optimal).abs().max())
    assert err < 0.08, f"max |D - D*| = {err:.4f}"
    assert float(model.G.weight.detach()) == 1.5  # G never stepped


# ============================================================================ ring8 / grid25

@pytest.mark.parametrize(("name", "num_modes"), [("ring8", 8), ("grid25", 25)])
def test_mode_datasets_have_std_005_around_their_centres(name, num_modes):
    ds = getattr(toy2d, name)(num_samples=6000)
    centres = toy2d.mode_centres(name)
    assert centres.shape == (num_modes, 2) and ds.spec.num_classes == num_modes
    offsets = ds.x.double() - centres[ds.y]
    assert float(offsets.std()) == pytest.approx(0.05, rel=0.05)
    assert torch.equal(torch.cdist(ds.x.double(), centres).argmin(1), ds.y)  # modes 2 apart, far beyond 3 std
    if name == "ring8":
        assert torch.allclose(centres.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    else:
        assert set(centres.reshape(-1).tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}


# ============================================================================ PacGAN packing

@pytest.mark.parametrize("name,spec", [("gan", VEC), ("dcgan", IMG)])
def test_packing_scores_groups_of_m_and_each_logit_sees_only_its_group(name, spec):
    """pack = m: B examples give B // m logits; logit k depends on examples k*m .. k*m + m - 1 and on no other."""
    m = _model(name, spec, pack=2).double().eval()
    x = _batch(7, spec=spec).x  # 7 = 3 groups of 2 and a left-out remainder
    x = m.to_critic_input(x).double() if hasattr(m, "to_critic_input") else x.double()
    x = x.clone().requires_grad_(True)
    logits = m.discriminate(x)
    assert logits.shape == (3,)
    (g,) = torch.autograd.grad(logits[1], x)
    per_example = g.reshape(7, -1).abs().sum(1)
    assert (per_example[2:4] > 0).all()  # its own group
    assert per_example[[0, 1, 4, 5, 6]].sum() == 0  # no other group, not the remainder
    assert m.pack_inputs(x[:2]).shape[1] == 2 * x.shape[1]  # packed along features / channels


def test_packing_trains_and_rejects_what_it_cannot_pack():
    task = _task(_model(pack=4))
    for step in range(3):
        out = task.training_step(_batch(16, seed=step), step)
        assert math.isfinite(float(out["loss"]))
    with pytest.raises(UserError, match="pack"):
        _model(pack=2, gp_weight=10.0)
    with pytest.raises(UserError, match="pack"):
        _model("sagan", IMG, pack=2)
    with pytest.raises(UserError, match="pack=4"):
        _model(pack=4).discriminate(torch.randn(3, 2))
