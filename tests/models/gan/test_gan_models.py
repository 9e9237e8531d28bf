"""Every registered GAN (family "gan") and the adversarial task: samples in the data's representation, phase
isolation (each optimiser step changes only its own network, every parameter gets a finite gradient in its phase),
weight clipping, spectral normalisation, a generator step that descends G's loss, same seed same samples, bitwise
resume of both networks and both optimisers, and ``best.safetensors`` picked by FID."""

from __future__ import annotations

import pytest
import torch
from lightning_fabric import Fabric

import dulab
import dulab.losses.gan
import dulab.models.gan.gan
from dulab.config import TrainConfig, config_fields
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.losses.gan import LOSS_KINDS, generator_loss
from dulab.models.gan.dcgan import DCGAN, UnflattenChannelsLast, num_stages
from dulab.registry import MODELS, get_model_class
from dulab.training.checkpoint import load_state, load_weights
from dulab.training.tasks import AdversarialTask, get_task_class
from properties import assert_same_seed_same_samples

GANS = [name for name, entry in MODELS.items() if entry.family == "gan"]

#: small sizes for whichever of these fields a GAN's config has (no per-model special cases)
TINY = {"hidden_sizes": (16,), "base_channels": 4, "latent_dim": 4}

#: the embedded data's shapes: 2-D toys, digits (17 levels), digits_color, shapes (20x20), sprites (64x64)
SPECS = {
    "moons": DataSpec((2,), "continuous"),
    "discrete1d": DataSpec((1,), "discrete", 20),
    "digits": DataSpec((1, 8, 8), "discrete", 17, 10),
    "digits_color": DataSpec((3, 8, 8), "discrete", 4, 10),
    "shapes": DataSpec((1, 20, 20), "discrete", 2, 4),
    "sprites": DataSpec((1, 64, 64), "discrete", 2, 3),
}


def _tiny(name, **hparams):
    fields = config_fields(get_model_class(name).Config)
    return {**{k: v for k, v in TINY.items() if k in fields}, **hparams}


def _supports(name, spec_name) -> bool:
    cls = get_model_class(name)
    try:
        cls.check_spec(SPECS[spec_name], cls.Config(**_tiny(name)))
    except UserError:
        return False
    return True


CASES = [(n, s) for n in GANS for s in SPECS if _supports(n, s)]


def _model(name, spec_name, seed=0, **hparams):
    torch.manual_seed(seed)
    return dulab.build_model(name, SPECS[spec_name], **_tiny(name, **hparams))


def _real(spec, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    if spec.is_discrete:
        return torch.randint(0, spec.num_levels, (n, *spec.shape), generator=g)
    return torch.randn(n, *spec.shape, generator=g)


def _labels(spec, n):
    """Balanced labels for labelled specs (class-conditional GANs use them), -1 (no label) otherwise."""
    return torch.arange(n) % spec.num_classes if spec.num_classes else torch.full((n,), -1)


def _task(model, **train):
    """An ``AdversarialTask`` set up the way the engine does it, on a one-process CPU Fabric."""
    fabric = Fabric(accelerator="cpu", devices=1)
    task = AdversarialTask(model, TrainConfig(**{"lr": 1e-3, **train}), seed=0)
    optimizers, schedulers = task.configure_optimizers(lambda step: 1.0)
    module, *optimizers = fabric.setup(model, *optimizers)
    task.setup(fabric, module, optimizers, schedulers)
    return task


def _names(params, model):
    ids = {id(p) for p in params}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_every_gan_is_checked_on_vectors_and_images():
    assert {"gan", "dcgan", "wgan", "wgan_gp", "sngan"} <= set(GANS)
    for name in GANS:
        assert get_task_class(get_model_class(name)) is AdversarialTask
    assert ("gan", "moons") in CASES and ("dcgan", "shapes") in CASES and ("dcgan", "sprites") in CASES


def test_gan_trains_on_moons_by_default():
    from dulab.cli import _default_data

    assert _default_data("gan") == "moons"


@pytest.mark.parametrize(("name", "spec_name"), CASES)
def test_samples_in_the_data_representation(name, spec_name):
    spec = SPECS[spec_name]
    model = _model(name, spec_name).eval()
    context = _labels(spec, 6) if model.is_conditional else None
    x = model.sample(6, generator=torch.Generator().manual_seed(0), context=context)
    assert tuple(x.shape) == (6, *spec.shape)
    if spec.is_discrete:
        assert x.dtype == torch.int64 and int(x.min()) >= 0 and int(x.max()) < spec.num_levels
    else:
        assert x.is_floating_point() and torch.isfinite(x).all()


def test_level_map_round_trips():
    # to_critic_input maps levels 0..L-1 onto [-1, 1] (affine, endpoints exact); from_critic_input inverts it.
    model = _model("dcgan", "digits")
    levels = torch.arange(17).reshape(1, 1, 1, 17).expand(1, 1, 8, 17)[..., :8]
    scaled = model.to_critic_input(levels)
    assert float(scaled.min()) == -1.0 and float(model.to_critic_input(torch.full((1,), 16))) == 1.0
    assert torch.equal(model.from_critic_input(scaled), levels)


def test_level_map_is_the_affine_formula_bit_for_bit_and_leaves_its_input_alone():
    # the in-place form must equal the plain expression exactly (resumed and older runs depend on it), and a
    # float tensor of levels passed in must not be overwritten
    model = _model("dcgan", "digits")
    levels = torch.randint(0, 17, (5, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.to_critic_input(levels), levels.float() * (2.0 / 16) - 1.0)
    as_float = levels.float()
    kept = as_float.clone()
    model.to_critic_input(as_float)
    assert torch.equal(as_float, kept)


@pytest.mark.parametrize(("size", "stages"), [((8, 8), 2), ((20, 20), 2), ((32, 32), 3), ((64, 64), 4), ((7, 7), 0)])
def test_number_of_stages_from_the_image_size(size, stages):
    assert num_stages(*size) == stages


@pytest.mark.parametrize(("name", "spec_name"), CASES)
def test_each_phase_changes_only_its_network(name, spec_name, monkeypatch):
    """Step 0 (n_critic=2): D only. Step 1: D, then G. Every optimiser step is watched: what it changes, and which
    parameters received a gradient (all of its own, all finite; none of the other network's)."""
    model = _model(name, spec_name, n_critic=2)
    task = _task(model, grad_clip=1.0)
    d_names = _names(model.discriminator_parameters(), model)
    g_names = _names(model.generator_parameters(), model)
    assert d_names and g_names and not d_names & g_names and d_names | g_names == set(dict(model.named_parameters()))
    phase, grads, changed = [None], {0: {}, 1: {}}, {0: set(), 1: set()}
    for n, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(
            lambda p, n=n: grads[phase[0]].__setitem__(n, bool(torch.isfinite(p.grad).all())))
    original = task.optimizer_step

    def watched(loss, index=0, module=None):
        phase[0] = index
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        original(loss, index, module)
        changed[index] |= {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}

    monkeypatch.setattr(task, "optimizer_step", watched)
    spec = SPECS[spec_name]
    out0 = task.training_step(dulab.training.batch.Batch(_real(spec, 8, 0), _labels(spec, 8)), 0)
    assert "g_loss" not in out0 and not grads[1] and not changed[1]
    out1 = task.training_step(dulab.training.batch.Batch(_real(spec, 8, 1), _labels(spec, 8)), 1)
    assert "g_loss" in out1 and all(torch.isfinite(v) for v in out1.values())
    assert set(grads[0]) == d_names and all(grads[0].values()), f"{name}: D phase gradients {grads[0]}"
    assert set(grads[1]) == g_names and all(grads[1].values()), f"{name}: G phase gradients {grads[1]}"
    assert changed[0] and changed[0] <= d_names, f"{name}: the D step changed {changed[0] - d_names}"
    assert changed[1] and changed[1] <= g_names, f"{name}: the G step changed {changed[1] - g_names}"
    assert all(p.requires_grad for p in model.parameters())  # D's flags restored after the G phase
    assert task.state_dict() == {"num_discriminator_steps": 2, "num_generator_steps": 1}


def test_weight_clipping_bounds_every_discriminator_parameter():
    model = _model("wgan", "digits")  # wasserstein loss, clip_value 0.01, RMSprop
    task = _task(model, lr=0.5)  # a large step, so that clipping has something to do
    assert all(isinstance(o, torch.optim.RMSprop) for o in task.optimizers)
    for step in range(2):
        task.training_step(dulab.training.batch.Batch(_real(SPECS["digits"], 8, step), torch.full((8,), -1)), step)
    d = torch.cat([p.detach().reshape(-1) for p in model.discriminator_parameters()])
    assert float(d.abs().max()) == pytest.approx(0.01)  # reached the bound and kept within it
    g = torch.cat([p.detach().reshape(-1) for p in model.generator_parameters()])
    assert float(g.abs().max()) > 0.01  # the generator is not clipped


def test_two_optimisers_with_their_own_lr_and_betas():
    # TTUR (Heusel et al. 2017): D and G with their own learning rates; WGAN-GP's Adam(0, 0.9) for both.
    model = _model("wgan_gp", "digits", lr_g=1e-4, lr_d=4e-4)
    d_opt, g_opt = _task(model).optimizers
    assert d_opt.param_groups[0]["lr"] == 4e-4 and g_opt.param_groups[0]["lr"] == 1e-4
    assert d_opt.param_groups[0]["betas"] == g_opt.param_groups[0]["betas"] == (0.0, 0.9)
    d_ids = {id(p) for p in model.discriminator_parameters()}
    assert {id(p) for g in d_opt.param_groups for p in g["params"]} == d_ids
    assert not d_ids & {id(p) for g in g_opt.param_groups for p in g["params"]}


def test_spectral_norm_bounds_the_largest_singular_value():
    # Each training-mode forward pass runs one power-iteration step; after many, the estimate has converged and
    # the normalised weight (as a matrix out x (in k k), the reshaping torch uses) has sigma_max = 1.
    model = _model("sngan", "shapes")
    model.train()
    x = model.to_critic_input(_real(SPECS["shapes"], 4))
    with torch.no_grad():
        for _ in range(200):
            model.discriminate(x)
    model.eval()
    weights = [m.weight for m in model.D.modules() if hasattr(m, "parametrizations")]
    assert len(weights) == 3  # two strided convolutions and the final linear layer
    for w in weights:
        sigma = torch.linalg.matrix_norm(w.detach().reshape(w.shape[0], -1).double(), ord=2)
        assert float(sigma) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", ["sngan", "sagan"])
def test_spectral_norm_critics_see_the_batch_by_default(name):
    # minibatch discrimination is on in sngan and sagan (their critics have no batch norm; without it G collapsed
    # on sprites / shapes): an example's logit then depends on the other examples of the batch; with
    # minibatch_kernels=0 it does not
    spec = SPECS["shapes"]
    x = _real(spec, 8)
    for kernels, sees_batch in ((None, True), (0, False)):
        model = _model(name, "shapes", **({} if kernels is None else {"minibatch_kernels": kernels})).eval()
        with torch.no_grad():
            a = model.discriminate(model.to_critic_input(x))
            b = model.discriminate(model.to_critic_input(torch.cat([x[:1], _real(spec, 7, seed=1)])))
        assert (not torch.allclose(a[0], b[0])) == sees_batch


def assert_generator_step_descends(name="gan", spec_name="moons", kinds=LOSS_KINDS) -> None:
    """Property: one G step lowers G's loss (the reference ``generator_loss``) against the D it was taken against,
    on the very latent batch of the step. The G batch is replayed from the seed: the step draws the D phase's
    latents, then the G phase's."""
    spec = SPECS[spec_name]
    for kind in kinds:
        model = _model(name, spec_name, loss=kind, clip_value=0.0)
        task = _task(model, lr=1e-4)
        old_g = {k: v.clone() for k, v in model.G.state_dict().items()}
        torch.manual_seed(123)
        task.training_step(dulab.training.batch.Batch(_real(spec, 64), _labels(spec, 64)), 0)
        torch.manual_seed(123)
        model.sample_latent(64)  # the D phase's draw
        z = model.sample_latent(64)  # the G phase's
        with torch.no_grad():
            after = generator_loss(model.discriminate(model.generate(z)), kind)
            model.G.load_state_dict(old_g)
            before = generator_loss(model.discriminate(model.generate(z)), kind)
        assert float(after) < float(before), f"{kind}: the G step raised G's loss ({float(before)} -> {float(after)})"


def test_generator_step_descends_the_generator_loss():
    assert_generator_step_descends()


def test_mutation_flipped_generator_loss_is_caught(monkeypatch):
    # The task imports dulab.losses.gan.generator_loss when it steps; the property keeps the original reference.
    monkeypatch.setattr(dulab.losses.gan, "generator_loss", lambda f, kind: -generator_loss(f, kind))
    with pytest.raises(AssertionError, match="raised G's loss"):
        assert_generator_step_descends(kinds=("non_saturating",))


@pytest.mark.parametrize("name", GANS)
def test_same_seed_same_samples(name):
    spec_name = "moons" if _supports(name, "moons") else "digits"
    assert_same_seed_same_samples(_model(name, spec_name))


def _moons_run(out, epochs=1, **kw):
    return dulab.train("gan", data="moons", data_options={"num_samples": 600}, epochs=epochs, batch_size=64, seed=3,
                       out_dir=out, progress=False, sample_fn=None, hidden_sizes=(16,), **kw)


def test_resume_after_k_steps_equals_2k_straight(tmp_path):
    # 500 training examples / 64 = 8 steps; stop after 4 (mid-epoch), resume to the end.
    straight = _moons_run(tmp_path / "straight")
    stopped = _moons_run(tmp_path / "stopped", max_steps=4)
    assert stopped.summary["step"] == 4 and straight.summary["step"] == 8
    dulab.resume(tmp_path / "stopped", progress=False, max_steps=None, sample_fn=None)
    a, b = (load_weights(tmp_path / d / "model.safetensors") for d in ("straight", "stopped"))
    assert a.keys() == b.keys() and any(k.startswith("G.") for k in a) and any(k.startswith("D.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    sa, sb = (load_state(tmp_path / d / "state.pt") for d in ("straight", "stopped"))
    assert len(sa["optimizers"]) == 2 and sa["task"] == sb["task"] == {"num_discriminator_steps": 8,
                                                                         "num_generator_steps": 8}
    for oa, ob in zip(sa["optimizers"], sb["optimizers"]):  # both optimisers' Adam moments, bitwise
        for i, st in oa["state"].items():
            for key, value in st.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(ob["state"][i][key])), (i, key)


def test_best_checkpoint_is_chosen_by_fid(tmp_path):
    run = _moons_run(tmp_path / "r", epochs=3)
    summary = run.summary
    assert summary["best_metric"] == "fid" and summary["best_mode"] == "min"
    fids = [r["test_fid"] for r in run.metrics]
    assert len(fids) == 4 and summary["best"] == min(fids)
    assert {"test_kid", "test_loss"} <= set(run.metrics[-1])
    # The weights in best.safetensors score exactly the best FID again (evaluation is seeded from the run seed).
    model = dulab.load(tmp_path / "r", which="best")
    test = dulab.load_dataset("moons", "test", num_samples=600)
    assert AdversarialTask(model, seed=3).evaluate(test)["fid"] == summary["best"]


def test_evaluation_uses_the_image_extractor_on_digits():
    model = _model("dcgan", "digits")
    result = AdversarialTask(model, seed=0).evaluate(dulab.load_dataset("digits", "test").subset(range(40)))
    assert {"loss", "fid", "kid", "inception_score", "precision", "recall"} <= set(result)
    assert all(isinstance(v, float) for v in result.values())
    assert 1.0 <= result["inception_score"] <= 10.0 and result["fid"] > 0


def test_gradient_penalty_needs_a_critic_without_batch_norm():
    with pytest.raises(UserError, match="d_norm"):
        dulab.build_model("wgan_gp", SPECS["digits"], d_norm="batch")


def test_wgan_gp_defaults_layer_norm_critic_and_a_faster_generator():
    # the defaults found on sprites 32x32 (wgan_gp.py's docstring): layer norm in the critic, G's Adam at lr_g 5e-4
    # while the critic keeps the TrainConfig lr (1e-4, Gulrajani et al.'s)
    model = _model("wgan_gp", "shapes")
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.D.modules())
    task = AdversarialTask(model, TrainConfig(lr=1e-4), seed=0)
    (d_opt, g_opt), _ = task.configure_optimizers(lambda step: 1.0)
    assert [g["lr"] for g in d_opt.param_groups] == [1e-4] and [g["lr"] for g in g_opt.param_groups] == [5e-4]
    assert d_opt.param_groups[0]["betas"] == g_opt.param_groups[0]["betas"] == (0.0, 0.9)


@pytest.mark.parametrize("progressive", [0, 5])
def test_layer_norm_critic_normalises_each_example_on_its_own(progressive):
    # d_norm="layer" (Gulrajani et al.'s drop-in for batch norm in a gradient-penalty critic): one GroupNorm(1, C)
    # per hidden stage; an example's critic value does not depend on the rest of its batch (the per-example
    # penalty needs that), and the normalisation does act (scaling a hidden map leaves the next stage unchanged).
    spec = SPECS["shapes"]
    model = _model("wgan_gp", "shapes", d_norm="layer", progressive_steps=progressive).train()
    norms = [m for m in model.D.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == num_stages(20, 20) - 1 and all(m.num_groups == 1 for m in norms)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.D.modules())
    x = model.to_critic_input(_real(spec, 8))
    y = model.to_critic_input(torch.cat([_real(spec, 1), _real(spec, 7, seed=1)]))
    with torch.no_grad():
        assert torch.allclose(model.discriminate(x)[0], model.discriminate(y)[0], atol=1e-6)
        h = torch.randn(3, norms[0].num_channels, 5, 5)
        assert torch.allclose(norms[0](h), norms[0](7.0 * h + 2.0), atol=1e-5)
    penalty = dulab.losses.gan.gradient_penalty(model.discriminate, x, torch.tanh(torch.randn_like(x)))
    assert torch.isfinite(penalty) and penalty > 0


class _ShiftGAN(dulab.models.gan.gan.GAN):
    """A GAN whose generator is the fixed map z -> z + 1, so that p_g = N(1, 1) is known."""

    def build_generator(self):
        g = torch.nn.Linear(1, 1)
        with torch.no_grad():
            g.weight.fill_(1.0)
            g.bias.fill_(1.0)
        return g


def test_discriminator_approaches_the_bayes_optimal_one():
    # Goodfellow et al. 2014, Prop. 1: for a fixed G the optimal D is p_data / (p_data + p_g). With p_data = N(0, 1)
    # and p_g = N(1, 1) that is sigmoid(log N(x; 0, 1) - log N(x; 1, 1)) = sigmoid(1/2 - x). G never steps here
    # (n_critic larger than the number of steps), so only D trains, through the task's D phase.
    torch.manual_seed(0)
    model = _ShiftGAN(DataSpec((1,), "continuous"), _ShiftGAN.Config(latent_dim=1, hidden_sizes=(32,),
                                                                     n_critic=10**6))
    task = _task(model, lr=3e-3)
    for step in range(400):
        task.training_step(dulab.training.batch.Batch(torch.randn(256, 1), torch.full((256,), -1)), step)
    x = torch.linspace(-1.5, 2.5, 41)[:, None]
    with torch.no_grad():
        d = torch.sigmoid(model.discriminate(x))
    optimal = torch.sigmoid(0.5 - x[:, 0])
    err = float((d - optimal).abs().max())
    assert err < 0.06, f"max |D - D*| = {err:.4f}"  # 0.015 when written (seed 0)
    assert float(model.G.bias.detach()) == 1.0 and float(model.G.weight.detach()) == 1.0  # G untouched


def test_engine_ema_averages_the_generator_and_is_scored(tmp_path):
    # The engine's --ema averages every weight (G's included); each evaluation scores the average and the raw
    # weights by FID and keeps the better one, whose G is what samples come from (dulab.load(which="auto")).
    run = _moons_run(tmp_path / "e", epochs=2, ema_decay=0.9)
    raw, ema = (load_weights(tmp_path / "e" / f) for f in ("model.safetensors", "ema.safetensors"))
    assert any(not torch.equal(raw[k], ema[k]) for k in raw if k.startswith("G."))
    last = run.metrics[-1]
    assert {"test_fid_last", "test_fid_ema"} <= set(last) and last["weights"] in ("last", "ema")
    chosen = min(("last", "ema"), key=lambda w: last[f"test_fid_{w}"])
    assert last["weights"] == chosen and last["test_fid"] == last[f"test_fid_{chosen}"]
    model = dulab.load(tmp_path / "e", which="ema")
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name, pack", [(n, p) for n in GANS if issubclass(get_model_class(n), DCGAN) for p in (1, 2)
                                        if p == 1 or get_model_class(n).Config().gp_weight == 0])  # no GP with packing
def test_channels_last_layout_changes_no_value_and_no_saved_weight(name, pack):
    """DCGAN-family activations run channels-last (speed); the numbers equal the default layout's and every weight
    stays contiguous in the default layout (safetensors checkpoints, old runs load)."""
    model = _model(name, "digits_color", pack=pack).eval()  # 3 channels: the two layouts differ
    z = model.sample_latent(4, generator=torch.Generator().manual_seed(0))
    x = model.to_critic_input(_real(model.spec, 4))
    with torch.no_grad():
        fake = model.generate(z)
        assert fake.is_contiguous(memory_format=torch.channels_last)
        plain = torch.nn.Sequential(*[torch.nn.Unflatten(m.dim, m.unflattened_size)
                                      if isinstance(m, UnflattenChannelsLast) else m for m in model.G])
        reference = plain(z)
        assert reference.is_contiguous() and not reference.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(fake, reference, rtol=1e-5, atol=1e-6)
        logits = model.discriminate(x)
        nchw = model.pack_inputs(x.contiguous())
        torch.testing.assert_close(logits, model.D(nchw).reshape(-1), rtol=1e-5, atol=1e-6)
    assert all(t.is_contiguous() for t in model.state_dict().values())


def test_lazy_r1_every_kth_discriminator_step_with_k_times_the_weight():
    """r1_every=k: the R1 term is in D's loss on D steps 0, k, 2k, ... only, weighted k * gamma / 2."""
    model = _model("gan", "moons", r1_gamma=2.0, r1_every=3)
    task = _task(model)
    spec = SPECS["moons"]
    for step in range(7):
        out = task.training_step(dulab.training.batch.Batch(_real(spec, 8, step), _labels(spec, 8)), step)
        if step % 3 == 0:
            assert float(out["r1"]) > 0
            torch.testing.assert_close(out["loss"], out["d_loss"] + 0.5 * 2.0 * 3 * out["r1"])
        else:
            assert "r1" not in out
            torch.testing.assert_close(out["loss"], out["d_loss"])
    with pytest.raises(UserError, match="r1_every"):
        _model("gan", "moons", r1_gamma=2.0, r1_every=0)


def test_dcgan_r1_gamma_defaults_from_the_image_size():
    """r1_gamma=None: 10 * H * W / 64^2 (10 at 64x64, 0.15625 at 8x8); a given value is kept; the caller's config
    object is not changed; the other DCGAN-family models keep their own (0)."""
    from dulab.models.gan.dcgan import DCGANConfig

    config = DCGANConfig(**_tiny("dcgan"))
    assert config.r1_gamma is None
    assert dulab.build_model("dcgan", SPECS["sprites"], **_tiny("dcgan")).config.r1_gamma == 10.0
    assert get_model_class("dcgan")(SPECS["digits"], config).config.r1_gamma == 0.15625
    assert config.r1_gamma is None
    assert dulab.build_model("dcgan", SPECS["digits"], **_tiny("dcgan", r1_gamma=3.0)).config.r1_gamma == 3.0
    for name in ("wgan", "wgan_gp", "sngan"):
        assert dulab.build_model(name, SPECS["digits"], **_tiny(name)).config.r1_gamma == 0.0
    # r1_gamma=None on a model without its own rule: the base default, no R1 (and a task that can train it)
    model = _model("gan", "moons", r1_gamma=None)
    assert model.config.r1_gamma == 0.0
    batch = dulab.training.batch.Batch(_real(SPECS["moons"], 8), _labels(SPECS["moons"], 8))
    out = _task(model).training_step(batch, 0)
    assert "r1" not in out and torch.isfinite(out["loss"])
