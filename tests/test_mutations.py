"""Tests of the tests: plant a known bug (``monkeypatch`` or a mutated copy of a model) and check that the shared
property checker of ``tests/properties.py`` reports it with an ``AssertionError``.

Each bug class here once slipped through, or is one this field is known for (issue 12). A checker that stops
catching its planted bug fails this file. Not planted here: DDP without the gradient all-reduce (it needs a
2-process launch and a patched engine inside the child processes); ``tests/test_ddp.py`` compares the ranks'
checksums instead.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.models.autoregressive.pixel_cnn import PixelCNN
from dulab.models.flows.base import FlowModel
from properties import (
    TINY_DISCRETE_SPECS,
    assert_autoregressive_dependencies,
    assert_cached_sampling_matches_naive,
    assert_dequantized_density_integrates,
    assert_dequantized_mass,
    assert_log_det_matches_jacobian,
    assert_resume_equals_straight_run,
    assert_same_seed_same_samples,
    assert_sampler_draws_from_log_prob,
    chi_square,
    perturb_parameters,
    random_levels,
)

PIXEL_CNN = {"num_filters": 8, "num_layers": 2, "first_kernel_size": 3, "num_head_filters": 8}
FLOW_TINY = {"hidden_sizes": (8,), "num_layers": 2, "num_dequant_layers": 2, "dequant_hidden": 4}


def _pixel_cnn(spec, **extra):
    torch.manual_seed(0)
    return dulab.build_model("pixel_cnn", spec, **{**PIXEL_CNN, **extra}).double().eval()


def _flow(name, spec, perturb=0.1, **extra):
    torch.manual_seed(0)
    return perturb_parameters(dulab.build_model(name, spec, **{**FLOW_TINY, **extra}).double().eval(), perturb)


# ------------------------------------------------------------------------------------------------ masks


def test_a_pixel_that_sees_itself_is_caught():
    """Mask A with its centre tap open (the ``>`` -> ``>=`` bug): the first layer sees the pixel being predicted."""
    spec = DataSpec((1, 3, 3), "discrete", 2)
    model = _pixel_cnn(spec)
    assert_autoregressive_dependencies(model, random_levels(spec, 2))  # the unmutated model passes
    k = model.first.kernel_size[0] // 2
    with torch.no_grad():
        model.first.mask[:, :, k, k] = 1.0
    with pytest.raises(AssertionError, match="forbids"):
        assert_autoregressive_dependencies(model, random_levels(spec, 2))


def test_a_leak_hidden_by_a_dead_unit_at_the_one_hot_point_is_caught(monkeypatch):
    """A leak that passes through a ReLU which is dead at every one-hot input (its pre-activation is ``-sum(x)``,
    <= 0 on one-hot rows) shows up only at the random relaxations the checker adds."""
    spec = TINY_DISCRETE_SPECS["vector4x3"]
    torch.manual_seed(0)
    model = dulab.build_model("made", spec, hidden_sizes=(16,)).double()
    original = type(model).conditionals_from_onehot

    def leaky(self, x_onehot, context=None):
        out = original(self, x_onehot, context)
        dead = torch.relu(x_onehot[..., 1:].sum(-1) - 1.0)  # 0 with zero gradient at one-hot rows, > 0 elsewhere
        return out + dead[..., None]  # every conditional of dim d now moves with input d: a leak
    monkeypatch.setattr(type(model), "conditionals_from_onehot", leaky)
    assert_autoregressive_dependencies(model, random_levels(spec, 2), num_points=1)  # one point: slips through
    with pytest.raises(AssertionError, match="forbids"):
        assert_autoregressive_dependencies(model, random_levels(spec, 2))


# ------------------------------------------------------------------------------------------------ samplers


def test_a_half_percent_logits_error_in_the_cache_is_caught(monkeypatch):
    """The PixelCNN cache computing with output weights 0.5% off (caught before only at 2%, on two draws)."""
    model = _pixel_cnn(DataSpec((1, 4, 4), "discrete", 3))
    assert_cached_sampling_matches_naive(model, 2)
    original = PixelCNN.sample

    def off_cache(self, *args, **kwargs):
        with torch.no_grad():
            self.head.out.weight.mul_(1.005)
        try:
            return original(self, *args, **kwargs)
        finally:
            with torch.no_grad():
                self.head.out.weight.div_(1.005)
    monkeypatch.setattr(PixelCNN, "sample", off_cache)
    with pytest.raises(AssertionError, match="cached conditionals differ"):
        assert_cached_sampling_matches_naive(model, 2)


def test_a_cached_sampler_that_ignores_temperature_is_caught(monkeypatch):
    model = _pixel_cnn(TINY_DISCRETE_SPECS["levels2x2x3"])
    assert_sampler_draws_from_log_prob(model)
    original = PixelCNN.sample
    monkeypatch.setattr(PixelCNN, "sample", lambda self, n, **kw: original(self, n, **{**kw, "temperature": 1.0}))
    with pytest.raises(AssertionError, match="temperature"):
        assert_cached_sampling_matches_naive(model, 4, temperature=0.6)
    with pytest.raises(AssertionError, match="temperature"):
        assert_sampler_draws_from_log_prob(model)


def test_a_sampler_that_ignores_the_generator_is_caught(monkeypatch):
    """The "different seed differs" half of the same-seed check: a sampler that always uses seed 0."""
    model = _pixel_cnn(TINY_DISCRETE_SPECS["binary3x3"])
    assert_same_seed_same_samples(model)
    original = PixelCNN.sample

    def seed_zero(self, n, **kw):
        return original(self, n, **{**kw, "generator": torch.Generator().manual_seed(0)})
    monkeypatch.setattr(PixelCNN, "sample", seed_zero)
    with pytest.raises(AssertionError, match="seeds 1 and 2"):
        assert_same_seed_same_samples(model)


def test_chi_square_refuses_too_few_cells():
    with pytest.raises(ValueError, match=">= 2 cells"):
        chi_square([3, 1], [2.0, 2.0])
    assert chi_square([50, 50], [50.0, 50.0])[1] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------ flows


def test_a_dropped_log_det_term_is_caught(monkeypatch):
    """ActNorm forgetting its log-scale term: the log-det no longer matches the autograd Jacobian."""
    from dulab.bijectors import ActNorm

    bij = perturb_parameters(ActNorm(3).double(), 0.3)
    x = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert_log_det_matches_jacobian(lambda v: bij(v), x)
    original = ActNorm.forward
    monkeypatch.setattr(ActNorm, "forward", lambda self, v, context=None: (original(self, v, context)[0],
                                                                          torch.zeros(len(v), dtype=v.dtype)))
    with pytest.raises(AssertionError, match="slogdet"):
        assert_log_det_matches_jacobian(lambda v: bij(v), x)


@pytest.mark.parametrize("name", ["maf", "real_nvp", "cdf_flow"])
def test_a_dropped_minus_log_q_is_caught(name, monkeypatch):
    """Variational dequantization returning ``log p(x + u)`` without ``- log q(u | x)`` (maf and real_nvp passed the
    old one-sided mass check with masses 1.003 and 1.014)."""
    model = _flow(name, DataSpec((2,), "discrete", 3), dequantization="variational")
    assert_dequantized_mass(model)

    def without_log_q(self, x, context=None, *, generator=None):
        y, _ = self.dequantize(x, generator)
        z, log_det = self.transform(y, context)
        return self.base_log_prob(z) + log_det
    monkeypatch.setattr(FlowModel, "log_prob", without_log_q)
    with pytest.raises(AssertionError):
        assert_dequantized_mass(model)


def test_a_wrong_dequantizer_density_is_caught(monkeypatch):
    """``log q`` off by a constant (a dropped log-det term of q's own flow, in its simplest form)."""
    model = _flow("real_nvp", DataSpec((2,), "discrete", 3), dequantization="variational")
    assert_dequantized_mass(model)
    original = FlowModel.dequantize
    monkeypatch.setattr(FlowModel, "dequantize", lambda self, x, generator=None: (
        lambda y, lq: (y, lq - 0.3))(*original(self, x, generator)))
    with pytest.raises(AssertionError, match="q\\(u\\|x\\)"):
        assert_dequantized_mass(model)


@pytest.mark.parametrize("name", ["cdf_flow", "maf"])
def test_a_dropped_preprocessing_log_det_is_caught(name, monkeypatch):
    """``transform`` forgetting the log-det of the scaling + logit preprocessing of discrete data (went unnoticed
    for cdf_flow before): the dequantized density no longer integrates to 1 over [0, K)^D."""
    model = _flow(name, DataSpec((2,), "discrete", 3), perturb=0.03, logit_alpha=0.0)
    assert_dequantized_density_integrates(model)

    def transform(self, x, context=None):
        ctx = self._context_features(context, x.shape[0])
        y, _ = self.preprocess(self._to_continuous(x))
        return self.flow(y, ctx)
    monkeypatch.setattr(FlowModel, "transform", transform)
    with pytest.raises(AssertionError, match="integrates"):
        assert_dequantized_density_integrates(model)


# ------------------------------------------------------------------------------------------------ training


def test_a_resume_that_forgets_the_rng_is_caught(tmp_path, monkeypatch):
    """Resume without restoring the saved RNG state: MADE's per-step mask draws then differ from the straight run."""
    import dulab.training.engine as engine

    rng = np.random.default_rng(0)
    spec = TINY_DISCRETE_SPECS["vector4x3"]
    train = dulab.datasets.from_array(rng.integers(0, 3, size=(32, *spec.shape)), num_levels=3)
    test = dulab.datasets.from_array(rng.integers(0, 3, size=(8, *spec.shape)), num_levels=3)
    hp = dict(hidden_sizes=(16,), num_masks=3, ordering="random", lr=1e-2)
    assert_resume_equals_straight_run("made", train, test, tmp_path / "ok", **hp)
    monkeypatch.setattr(engine, "set_rng_state", lambda state: None)
    with pytest.raises(AssertionError, match="differ from the straight run"):
        assert_resume_equals_straight_run("made", train, test, tmp_path / "forgets", **hp)
