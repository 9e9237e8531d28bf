"""Property tests of the autoregressive sequence models (MADE, RNN, WaveNet, Transformer, and any registered
autoregressive model that accepts vectors), DESIGN.md section 6, in float64 on tiny domains.

A model counts as a "sequence model" when it subclasses ``AutoregressiveModel`` and can be built for a plain vector
``(D,)`` (image-only models reject that spec), so a new one is checked the moment it is registered.
"""

from __future__ import annotations

import math

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.autoregressive.base import AutoregressiveModel, SequenceModel
from dulab.registry import MODELS, get_model_class
from properties import (
    TINY_DISCRETE_SPECS,
    assert_autoregressive_dependencies,
    assert_cached_sampling_matches_naive,
    assert_checkpoint_roundtrip,
    assert_grads_finite,
    assert_normalised,
    assert_same_seed_same_samples,
    assert_sample_frequencies,
    assert_sampler_draws_from_log_prob,
    enumerate_domain,
    random_levels,
)

#: small networks so that every test runs in well under a second (unlisted models use their defaults)
TINY = {
    "made": {"hidden_sizes": (64, 64)},
    "rnn": {"hidden_size": 16, "embed_dim": 8},
    "wavenet": {"residual_channels": 8, "skip_channels": 8, "num_layers": 4, "dilation_cycle": 3, "embed_dim": 8},
    "transformer": {"embed_dim": 16, "num_heads": 2, "num_layers": 2},
}


def _sequence_models() -> list[str]:
    names = []
    for name, entry in MODELS.items():
        if entry.family != "autoregressive":
            continue
        try:
            cls = get_model_class(name)
        except ImportError:  # registered by a colleague before the module exists; its own tests report it
            continue
        if not issubclass(cls, AutoregressiveModel):
            continue
        try:
            cls.check_spec(TINY_DISCRETE_SPECS["vector4x3"], cls.Config(**TINY.get(name, {})))
        except UserError:
            continue
        names.append(name)
    return names


SEQ_MODELS = _sequence_models()
#: models with a ``SequenceModel`` incremental sampler (``init_state``/``step``)
INCREMENTAL_MODELS = [n for n in SEQ_MODELS if issubclass(get_model_class(n), SequenceModel)]
#: models whose ``sample`` is ``naive_sample`` (so "cached == naive" would compare a function with itself), and why
NAIVE_ONLY = {
    "made": "a MADE draw is one masked-MLP pass over all D one-hot inputs; there is no incremental state to carry"
            " between steps (only the first layer is linear in the inputs), so sample is naive_sample by design",
}
CACHED_MODELS = [n for n in SEQ_MODELS if n not in NAIVE_ONLY]
SPECS = list(TINY_DISCRETE_SPECS)


def build(name: str, spec: DataSpec, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return dulab.build_model(name, spec, **{**TINY.get(name, {}), **extra}).double()


def test_the_four_sequence_models_are_registered():
    assert {"made", "rnn", "wavenet", "transformer"} <= set(SEQ_MODELS)


# ------------------------------------------------------------------------------------------ exact math (float64)
@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("name", SEQ_MODELS)
def test_normalised_by_enumeration(name, spec_name):
    assert_normalised(build(name, TINY_DISCRETE_SPECS[spec_name]))


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("name", SEQ_MODELS)
def test_autoregressive_dependencies(name, spec_name):
    spec = TINY_DISCRETE_SPECS[spec_name]
    assert_autoregressive_dependencies(build(name, spec), random_levels(spec, 2))


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_naive_only_list_is_accurate(name, monkeypatch):
    """``sample`` runs ``naive_sample`` exactly for the models in ``NAIVE_ONLY`` (the others are tested as cached
    samplers, and a model that loses its cache must move to the list, with a reason)."""
    model = build(name, TINY_DISCRETE_SPECS["vector4x3"]).eval()
    calls = []
    naive = model.naive_sample
    monkeypatch.setattr(model, "naive_sample", lambda *a, **k: calls.append(1) or naive(*a, **k))
    model.sample(2, generator=torch.Generator().manual_seed(0))
    assert bool(calls) == (name in NAIVE_ONLY), f"{name}: sample {'ran' if calls else 'did not run'} naive_sample"


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("name", CACHED_MODELS)
def test_cached_sampling_equals_naive(name, spec_name):
    """Same conditionals at every draw (log-pmfs within 1e-9) and the same draws, at temperature 1 and 0.6."""
    model = build(name, TINY_DISCRETE_SPECS[spec_name]).eval()
    assert_cached_sampling_matches_naive(model, 64, seed=5)
    assert_cached_sampling_matches_naive(model, 16, seed=6, temperature=0.6)


@pytest.mark.parametrize("name,sampler", [(n, s) for n in SEQ_MODELS
                                          for s in ["naive_sample"] + ([] if n in NAIVE_ONLY else ["sample"])])
def test_sampler_draws_the_tempered_conditionals(name, sampler):
    """Each draw uses the model's own conditional (enumerated from ``log_prob``) at temperature 1, the tempered one
    (softmax of logits / T) at T = 0.5 and 2, and low temperature sharpens (properties.py)."""
    for spec_name in ("vector4x3", "rgb2x2binary"):
        assert_sampler_draws_from_log_prob(build(name, TINY_DISCRETE_SPECS[spec_name]).eval(), sampler)


@pytest.mark.parametrize("name", INCREMENTAL_MODELS)
def test_cached_logits_equal_full_pass(name):
    """The incremental path computes the same conditionals as one full pass (float64 rounding only)."""
    spec = TINY_DISCRETE_SPECS["rgb2x2binary"]
    model = build(name, spec).eval()
    x = random_levels(spec, 3)
    full = model.to_sequence(model.conditionals(x).movedim(1, -1))  # (B, D, K) in generation order
    seq = model.to_sequence(x)
    state, prev = model.init_state(3, None), None
    for t in range(spec.num_dims):
        logits, state = model.step(state, t, prev, None)
        torch.testing.assert_close(logits, full[:, t], rtol=1e-10, atol=1e-10)
        prev = seq[:, t]


@pytest.mark.parametrize("spec_name", ["vector4x3", "binary3x3"])
@pytest.mark.parametrize("name", SEQ_MODELS)
def test_sample_frequencies(name, spec_name):
    assert_sample_frequencies(build(name, TINY_DISCRETE_SPECS[spec_name]), num_samples=20000)


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_completion_keeps_given_values(name):
    spec = TINY_DISCRETE_SPECS["rgb2x2binary"]
    model = build(name, spec).eval()
    given = random_levels(spec, 16, seed=1)
    mask = torch.rand(16, *spec.shape, generator=torch.Generator().manual_seed(2)) < 0.5
    mask[:, 0] = True  # the whole red plane given: steps where every row is given consume no randomness
    a = model.sample(16, generator=torch.Generator().manual_seed(3), given=given, given_mask=mask)
    assert torch.equal(a[mask], given[mask])
    if name not in NAIVE_ONLY:  # naive_sample against itself could not fail
        assert_cached_sampling_matches_naive(model, 16, seed=3, given=given, given_mask=mask)


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_completion_samples_the_true_conditional(name):
    """Given x_0 of a 2-dim vector, completions of x_1 follow p(x_1 | x_0) computed from log_prob."""
    from scipy import stats

    spec = DataSpec((2,), "discrete", 3)
    model = build(name, spec).eval()
    xs = enumerate_domain(spec.shape, 3)
    with torch.no_grad():
        p = torch.exp(model.log_prob(xs)).reshape(3, 3)
    cond = (p[1] / p[1].sum()).numpy()  # p(x_1 | x_0 = 1)
    n = 6000
    given = torch.ones(n, 2, dtype=torch.long)
    mask = torch.tensor([True, False]).expand(n, 2)
    s = model.sample(n, generator=torch.Generator().manual_seed(0), given=given, given_mask=mask)
    assert (s[:, 0] == 1).all()
    counts = torch.bincount(s[:, 1], minlength=3).numpy()
    assert stats.chisquare(counts, cond * n).pvalue > 1e-4


# ------------------------------------------------------------------------------------------ contract
@pytest.mark.parametrize("name", SEQ_MODELS)
def test_every_parameter_gets_a_finite_gradient(name):
    spec = TINY_DISCRETE_SPECS["rgb2x2binary"]
    assert_grads_finite(build(name, spec), random_levels(spec, 4))


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_checkpoint_roundtrip(name, tmp_path):
    spec = TINY_DISCRETE_SPECS["levels2x2x3"]
    assert_checkpoint_roundtrip(name, build(name, spec), random_levels(spec, 4), tmp_path)


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_same_seed_same_samples(name):
    model = build(name, TINY_DISCRETE_SPECS["binary3x3"])
    assert_same_seed_same_samples(model, 8)
    a = model.sample(32, generator=torch.Generator().manual_seed(1))
    b = model.sample(32, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_unknown_hparam_raises_value_error(name):
    with pytest.raises(ValueError, match="unknown"):
        dulab.build_model(name, TINY_DISCRETE_SPECS["vector4x3"], not_a_field=1)


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_rejects_continuous_data(name):
    with pytest.raises(ValueError):
        dulab.build_model(name, DataSpec((2,), "continuous"))


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_a_few_steps_reduce_the_loss(name):
    spec = DataSpec((6,), "discrete", 4)
    torch.manual_seed(0)
    model = dulab.build_model(name, spec, **TINY.get(name, {}))
    x = torch.tensor([[0, 1, 2, 3, 0, 1], [3, 2, 1, 0, 3, 2]]).repeat(8, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.eval()
    with torch.no_grad():
        before = float(model.loss(x)["loss"])
    model.train()
    for _ in range(30):
        opt.zero_grad()
        model.loss(x)["loss"].backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(model.loss(x)["loss"])
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_trains_through_the_engine(name, tmp_path):
    x = torch.randint(0, 3, (40, 5), generator=torch.Generator().manual_seed(0))
    ds = dulab.datasets.from_array(x.numpy(), num_levels=3)
    run = dulab.train(name, data=ds, eval_data=ds, epochs=1, batch_size=20, out_dir=tmp_path / "run",
                      progress=False, sample_fn=None, **TINY.get(name, {}))
    assert math.isfinite(run.metrics[-1]["test_bpd"])


# ------------------------------------------------------------------------------------------ MADE specifics
def test_made_random_ordering_ensemble_is_normalised():
    """A uniform mixture of AR models with different orderings is itself normalised (enumeration)."""
    spec = TINY_DISCRETE_SPECS["levels2x2x3"]
    model = build("made", spec, ordering="random", num_masks=3)
    orders = {tuple(o.tolist()) for o in model.mask_orders}
    assert len(orders) > 1
    assert_normalised(model)
    assert_sample_frequencies(model, num_samples=20000)


def test_made_each_mask_is_autoregressive_in_its_own_order():
    spec = TINY_DISCRETE_SPECS["rgb2x2binary"]
    model = build("made", spec, ordering="random", num_masks=3)
    x = random_levels(spec, 2)
    for m in range(3):
        model.use_mask(m)
        # random hidden degrees may leave a conditional constant, which is allowed
        assert_autoregressive_dependencies(model, x, order=model.generation_order(), strict_each=False)


def test_made_ensemble_averages_probabilities():
    spec = TINY_DISCRETE_SPECS["vector4x3"]
    model = build("made", spec, ordering="random", num_masks=4).eval()
    x = random_levels(spec, 5)
    per_mask = []
    for m in range(4):
        model.use_mask(m)
        per_mask.append(model.log_prob_from(model.conditionals(x), x))
    model.use_mask(0)
    expected = torch.stack(per_mask).exp().mean(0).log()
    torch.testing.assert_close(model.log_prob(x), expected)


def test_made_connectivity_agnostic_training_draws_masks():
    spec = TINY_DISCRETE_SPECS["vector4x3"]
    model = build("made", spec, num_masks=4).train()
    seen = set()
    for _ in range(20):
        model.loss(random_levels(spec, 2))
        seen.add(model.mask_index)
    assert len(seen) > 1


def test_made_checkpoint_restores_current_mask(tmp_path):
    spec = TINY_DISCRETE_SPECS["vector4x3"]
    model = build("made", spec, ordering="random", num_masks=3)
    model.use_mask(2)
    fresh = build("made", spec, ordering="random", num_masks=3)
    fresh.load_state_dict(model.state_dict())  # the stored layer masks are mask 2's; the current stays 0
    assert fresh.mask_index == 0
    assert torch.equal(fresh.net.layers[0].mask, fresh.mask_bank_0[0])
    x = random_levels(spec, 4)
    model.use_mask(0)
    torch.testing.assert_close(fresh.conditionals(x), model.conditionals(x))


# ------------------------------------------------------------------------------------------ Transformer specifics
def test_transformer_class_conditional():
    spec = DataSpec((1, 2, 2), "discrete", 3, num_classes=3)
    model = build("transformer", spec, use_context=True)
    assert model.is_conditional
    for label in range(3):
        assert_normalised(model, context=torch.full((81,), label))
    x = random_levels(spec, 2)
    assert_autoregressive_dependencies(model, x, context=torch.tensor([0, 2]))
    assert_cached_sampling_matches_naive(model.eval(), 4, context=torch.tensor([0, 1, 2, 1]), temperature=0.7)
    assert_sampler_draws_from_log_prob(model, context=2)
    lp0, lp1 = model.log_prob(x, context=torch.tensor([0, 0])), model.log_prob(x, context=torch.tensor([1, 1]))
    assert not torch.allclose(lp0, lp1)


def test_transformer_context_needs_labels():
    with pytest.raises(ValueError, match="labelled"):
        dulab.build_model("transformer", DataSpec((4,), "discrete", 3), use_context=True)
    model = build("transformer", DataSpec((4,), "discrete", 3, num_classes=2), use_context=True)
    with pytest.raises(ValueError, match="context"):
        model.log_prob(torch.zeros(1, 4, dtype=torch.long))


def test_transformer_as_prior_over_code_grids():
    """A (H, W) grid of discrete codes (what a VQ-VAE produces) is a valid spec: raster order, normalised."""
    spec = DataSpec((2, 2), "discrete", 3)
    model = build("transformer", spec)
    assert torch.equal(model.generation_order(), torch.arange(4))
    assert_normalised(model)
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 2, 2)


# ------------------------------------------------------------------------------------------ the checker itself
def test_dependency_checker_catches_a_leak():
    """A transformer fed its inputs unshifted sees its own dimension: the checker must say so."""

    class Leaky(get_model_class("transformer")):
        def _inputs(self, e, context):
            return e + self.position_embedding

    spec = TINY_DISCRETE_SPECS["binary3x3"]
    torch.manual_seed(0)
    model = Leaky(spec, get_model_class("transformer").Config(**TINY["transformer"])).double()
    with pytest.raises(AssertionError, match="forbids"):
        assert_autoregressive_dependencies(model, random_levels(spec, 2))


def test_generation_coordinates():
    model = build("rnn", DataSpec((3, 2, 2), "discrete", 2))
    coords = model.generation_coordinates()
    # step 0: pixel (0, 0) channel R; step 1: same pixel, G; step 3: pixel (0, 1), R; last: (1, 1), B
    torch.testing.assert_close(coords[0], torch.tensor([0.0, 0.0, 0.0]))
    torch.testing.assert_close(coords[1], torch.tensor([0.0, 0.0, 0.5]))
    torch.testing.assert_close(coords[3], torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(coords[-1], torch.tensor([1.0, 1.0, 1.0]))


# ------------------------------------------------------------------------------------------ Fisher scores
def test_fisher_score_is_the_projected_gradient():
    from dulab.models.autoregressive.fisher import fisher_score

    spec = TINY_DISCRETE_SPECS["vector4x3"]
    model = build("transformer", spec)
    x = random_levels(spec, 3)
    feats = model.encode(x, num_features=16, seed=7)
    assert feats.shape == (3, 16)
    torch.testing.assert_close(feats, fisher_score(model, x, num_features=16, seed=7))
    assert not torch.allclose(feats, model.encode(x, num_features=16, seed=8))
    # inner products are kept on average: compare with the unprojected gradient of one example
    params = list(model.parameters())
    grad = torch.autograd.grad(model.log_prob(x[:1]).sum(), params)
    flat = torch.cat([g.reshape(-1) for g in grad])
    big = model.encode(x[:1], num_features=4096, seed=0)
    assert abs(float(big.norm() ** 2 / flat.norm() ** 2) - 1) < 0.15


def test_fisher_interpolate_returns_bank_indices():
    from dulab.models.autoregressive.fisher import fisher_interpolate

    spec = TINY_DISCRETE_SPECS["binary3x3"]
    model = build("made", spec)
    bank = random_levels(spec, 12)
    out = fisher_interpolate(model, bank[0], bank[5], bank, steps=5, num_features=32)
    assert out["nearest"].shape == (5,)
    assert int(out["nearest"][0]) == 0 and int(out["nearest"][-1]) == 5  # the end points find themselves
