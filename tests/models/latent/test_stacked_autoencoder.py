"""Stacked denoising autoencoder (Vincent et al. 2010): greedy layer-wise phases driven by a saved step counter,
then end-to-end fine-tuning; corruption in training only; the sparsity penalty lowers the mean activation."""

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from properties import assert_grads_finite

SPEC = DataSpec((1, 4, 4), "discrete", 2)


def _model(**hp):
    torch.manual_seed(0)
    hp = {"hidden_sizes": (12, 8), "code_dim": 4, "use_stacking": True, "stack_phase_steps": 2, **hp}
    return dulab.build_model("autoencoder", SPEC, **hp).double()


def _x(n=16):
    return torch.randint(0, 2, (n, *SPEC.shape), generator=torch.Generator().manual_seed(0))


def _grad_owners(model, x):
    model.zero_grad(set_to_none=True)
    model.loss(x)["loss"].backward()
    return {n.rsplit(".", 1)[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_each_phase_trains_one_layer_then_all_are_fine_tuned():
    model, x = _model(noise="masking", noise_level=0.3), _x()
    model.train()
    assert model.num_stack_layers == 3
    seen = []
    for _ in range(8):  # 3 layers x 2 steps, then fine-tuning
        seen.append((model.stack_phase(), _grad_owners(model, x)))
    for step, (phase, owners) in enumerate(seen):
        assert phase == min(step // 2, 3)
        if phase < 3:
            assert owners == {f"encoder.layers.{phase}", f"decoder.layers.{phase}"}, (step, owners)
        else:
            assert owners == {f"{part}.layers.{i}" for part in ("encoder", "decoder") for i in range(3)}
    assert int(model.num_updates) == 8
    assert "num_updates" in model.state_dict()  # saved with the weights: a resumed run continues the schedule
    assert_grads_finite(model, x)  # fine-tuning: every parameter


def test_evaluation_does_not_advance_the_schedule_and_reports_the_whole_stack():
    model, x = _model(noise="gaussian"), _x()
    model.eval()
    a = model.loss(x)
    assert int(model.num_updates) == 0 and torch.equal(a["recon"], model.loss(x)["recon"])  # no corruption
    torch.testing.assert_close(a["recon"], model.reconstruction_error(x, model.encode(x)).mean())
    model.train()
    with torch.no_grad():
        model.loss(x)
    assert int(model.num_updates) == 0


def test_corruption_only_in_training_for_the_stack():
    model, x = _model(noise="salt_and_pepper", noise_level=0.5, stack_phase_steps=1000), _x()
    model.train()
    torch.manual_seed(0)
    a = model.loss(x)["recon"]
    torch.manual_seed(1)
    b = model.loss(x)["recon"]
    assert not torch.equal(a, b)  # the layer-0 phase sees differently corrupted inputs
    model.eval()
    assert torch.equal(model.loss(x)["recon"], model.loss(x)["recon"])


def test_stacking_needs_an_mlp():
    with pytest.raises(UserError, match="mlp"):
        dulab.build_model("autoencoder", DataSpec((1, 8, 8), "discrete", 2), use_stacking=True, architecture="conv")
    with pytest.raises(UserError, match="mlp"):  # auto picks conv for 8x8 images
        dulab.build_model("autoencoder", DataSpec((1, 8, 8), "discrete", 2), use_stacking=True)


def test_l1_sparsity_lowers_mean_absolute_code():
    ds = dulab.load_dataset("digits_binary")
    x = ds.x[:128]
    acts = {}
    for use in (False, True):
        torch.manual_seed(0)
        model = dulab.build_model("autoencoder", ds.spec, code_dim=16, hidden_sizes=(32,), architecture="mlp",
                                  use_sparsity=use, sparsity="l1", sparsity_weight=1.0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        model.train()
        for _ in range(60):
            opt.zero_grad()
            model.loss(x)["loss"].backward()
            opt.step()
        with torch.no_grad():
            acts[use] = float(model.eval().encode(x).abs().mean())
    assert acts[True] < 0.5 * acts[False], acts


def test_resume_mid_schedule_equals_straight_run(tmp_path):
    """Stopped after 3 of 8 steps (inside phase 1 with 2 steps per phase), resumed: bitwise the straight run."""
    import numpy as np

    from properties import assert_resume_equals_straight_run

    rng = np.random.default_rng(0)
    train = dulab.datasets.from_array(rng.integers(0, 2, size=(32, 1, 4, 4)), num_levels=2)
    test = dulab.datasets.from_array(rng.integers(0, 2, size=(8, 1, 4, 4)), num_levels=2)
    assert_resume_equals_straight_run("autoencoder", train, test, tmp_path, lr=1e-2, hidden_sizes=(8, 6), code_dim=3,
                                      use_stacking=True, stack_phase_steps=2, noise="masking")
