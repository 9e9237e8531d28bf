"""Property tests of the autoregressive image models (PixelCNN, Gated PixelCNN, PixelCNN++, PixelSNAIL and any
registered autoregressive model that takes images but not vectors), DESIGN.md section 6, float64, tiny domains.
"""

from __future__ import annotations

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.autoregressive.base import AutoregressiveModel
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
    dependency_map,
    random_levels,
)

#: small networks so that each test runs in about a second on a busy 2-core CPU (unlisted models: defaults)
TINY = {
    "pixel_cnn": {"num_filters": 8, "num_layers": 2, "first_kernel_size": 3, "num_head_filters": 8},
    "gated_pixel_cnn": {"num_filters": 8, "num_layers": 2, "first_kernel_size": 3, "num_head_filters": 8},
    "pixel_cnn_pp": {"num_filters": 6, "num_blocks": 1, "num_scales": 1, "num_components": 2},
    "pixel_snail": {"num_filters": 6, "num_blocks": 1, "num_res_layers": 1, "first_kernel_size": 3,
                    "attention_dim": 4, "num_head_filters": 6},
    "multiscale_pixel_cnn": {"num_filters": 8, "num_layers": 3},
}
_VECTOR = TINY_DISCRETE_SPECS["vector4x3"]


def _image_models() -> list[str]:
    names = []
    for name, entry in MODELS.items():
        if entry.family != "autoregressive":
            continue
        try:
            cls = get_model_class(name)
        except ImportError:  # a colleague's entry whose module is not written yet; its own tests report it
            continue
        if not issubclass(cls, AutoregressiveModel):
            continue
        try:
            cls.check_spec(_VECTOR, cls.Config(**TINY.get(name, {})))
        except UserError:
            names.append(name)  # rejects vectors: an image model
    return names


IMAGE_MODELS = _image_models()
IMAGE_SPECS = ["binary3x3", "levels2x2x3", "rgb2x2binary"]
#: models whose ``sample`` is ``naive_sample`` (so "cached == naive" would compare a function with itself), and why
NAIVE_ONLY: dict[str, str] = {}  # every image model has a cached sampler (pixel_snail: conv + key/value caches)
CACHED_MODELS = [n for n in IMAGE_MODELS if n not in NAIVE_ONLY]


def build(name: str, spec: DataSpec, seed: int = 0, **extra):
    torch.manual_seed(seed)
    return dulab.build_model(name, spec, **{**TINY.get(name, {}), **extra}).double().eval()


def test_the_four_image_models_are_registered():
    assert {"pixel_cnn", "gated_pixel_cnn", "pixel_cnn_pp", "pixel_snail"} <= set(IMAGE_MODELS)


# ------------------------------------------------------------------------------------------------ likelihood


@pytest.mark.parametrize("spec_name", IMAGE_SPECS)
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_normalised_by_enumeration(name, spec_name):
    assert_normalised(build(name, TINY_DISCRETE_SPECS[spec_name]))


def test_independent_channels_pixel_cnn_is_normalised():
    assert_normalised(build("pixel_cnn", TINY_DISCRETE_SPECS["rgb2x2binary"], use_independent_channels=True))


def test_pixel_cnn_pp_normalised_with_downsampling():
    """Two resolutions on odd sizes (3x3 -> 2x2): the crops of the transposed convolutions are right."""
    assert_normalised(build("pixel_cnn_pp", DataSpec((1, 3, 3), "discrete", 2), num_scales=2))


@pytest.mark.parametrize("shape,levels", [((1, 4, 4), 3), ((3, 2, 4), 2)])
def test_pixel_cnn_pp_default_two_scales(shape, levels):
    """The default network (num_scales = 2: a strided down-sampling and a transposed up-sampling) keeps the
    autoregressive order, and its cropped sampler draws what the naive one draws."""
    spec = DataSpec(shape, "discrete", levels)
    tiny = {k: v for k, v in TINY["pixel_cnn_pp"].items() if k != "num_scales"}
    torch.manual_seed(0)
    model = dulab.build_model("pixel_cnn_pp", spec, **tiny).double().eval()
    assert model.config.num_scales == 2
    assert_autoregressive_dependencies(model, random_levels(spec, 2))
    assert_cached_sampling_matches_naive(model, 2, temperature=0.8)


def test_pixel_cnn_pp_handles_many_levels():
    """256 levels (the edge bins take the tails): a one-pixel image enumerated exactly."""
    assert_normalised(build("pixel_cnn_pp", DataSpec((1, 1, 1), "discrete", 256)))


# ------------------------------------------------------------------------------------------------ dependencies


@pytest.mark.parametrize("shape,levels", [((1, 3, 4), 3), ((3, 2, 3), 2)])
@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_autoregressive_dependencies(name, shape, levels):
    """No conditional sees its own, a later (incl. later colour channel) or another row's input; earlier ones matter."""
    spec = DataSpec(shape, "discrete", levels)
    assert_autoregressive_dependencies(build(name, spec), random_levels(spec, 2))


def test_independent_channels_do_not_see_the_same_pixel():
    spec = DataSpec((3, 2, 2), "discrete", 2)
    model = build("pixel_cnn", spec, use_independent_channels=True)
    x = random_levels(spec, 2)
    assert_autoregressive_dependencies(model, x, strict_each=False)  # G and B of pixel (0, 0) see nothing
    dep = dependency_map(model, x)[0, :, 0, :].view(3, 2, 2, 3, 2, 2)  # (C, H, W) out x (C, H, W) in
    for i in range(2):
        for j in range(2):
            assert (dep[:, i, j, :, i, j] == 0).all(), "a channel sees another channel of its own pixel"
    assert dep[1, 1, 1].sum() > 0


def _pixel_dependency(model, shape):
    """``dep[i, j, a, b]``: does the conditional of pixel (i, j) (any channel) move with pixel (a, b)?"""
    spec = DataSpec(shape, "discrete", 2)
    _, H, W = shape
    dep = dependency_map(model, random_levels(spec, 1))[0, :, 0, :]  # (D, D)
    return dep.view(1, H, W, 1, H, W).sum((0, 3)) > 0


def test_pixel_cnn_blind_spot():
    """Default PixelCNN (5x5 type A + 3x3 type B): pixel (1, 0) never sees pixels (0, j) for j > 2 (module doc)."""
    shape = (1, 3, 8)
    model = build("pixel_cnn", DataSpec(shape, "discrete", 2), num_layers=4, first_kernel_size=5)
    dep = _pixel_dependency(model, shape)
    assert dep[1, 0, 0, :3].all(), "pixels within reach must matter"
    assert not dep[1, 0, 0, 3:].any(), "the blind spot is expected: stacked masked convolutions cannot see it"
    # deeper rows see further right, but the blind region above-right persists: (2, 0) misses (0, 7)
    assert not dep[2, 0, 0, 7]


def test_gated_pixel_cnn_has_no_blind_spot():
    """Every earlier pixel influences the last pixel's conditional (vertical + horizontal stacks)."""
    shape = (1, 5, 5)
    model = build("gated_pixel_cnn", DataSpec(shape, "discrete", 2), num_layers=5, first_kernel_size=5)
    dep = _pixel_dependency(model, shape)
    earlier = torch.ones(5, 5, dtype=torch.bool)
    earlier[4, 4] = False
    assert dep[4, 4][earlier].all(), f"pixels the last conditional ignores: {(~dep[4, 4] & earlier).nonzero().tolist()}"
    # and the first pixels of later rows see every pixel of the rows above (the PixelCNN blind spot)
    assert dep[1, 0, 0].all()


# ------------------------------------------------------------------------------------------------ sampling


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_naive_only_list_is_accurate(name, monkeypatch):
    """``sample`` in eval mode runs ``naive_sample`` exactly for the models in ``NAIVE_ONLY`` (the others are
    tested as cached samplers below, and a model that loses its cache must move to the list, with a reason)."""
    model = build(name, DataSpec((1, 3, 3), "discrete", 2))
    calls = []
    naive = model.naive_sample
    monkeypatch.setattr(model, "naive_sample", lambda *a, **k: calls.append(1) or naive(*a, **k))
    model.sample(2, generator=torch.Generator().manual_seed(0))
    assert bool(calls) == (name in NAIVE_ONLY), f"{name}: sample {'ran' if calls else 'did not run'} naive_sample"


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("name", CACHED_MODELS)
def test_cached_sampling_equals_naive(name, temperature):
    """``sample`` (per-layer caches or receptive-field crops) draws from the same conditionals (log-pmfs within
    1e-9, float64) and draws exactly what ``naive_sample`` draws, at temperature 1 and below."""
    extra = {"num_layers": 3} if name in ("pixel_cnn", "gated_pixel_cnn") else {}
    for spec in (DataSpec((1, 9, 9), "discrete", 3), DataSpec((3, 3, 4), "discrete", 4)):
        assert_cached_sampling_matches_naive(build(name, spec, **extra), 2, seed=3, temperature=temperature)


@pytest.mark.parametrize("name,sampler", [(n, s) for n in IMAGE_MODELS
                                          for s in ["naive_sample"] + ([] if n in NAIVE_ONLY else ["sample"])])
def test_sampler_draws_the_tempered_conditionals(name, sampler):
    """Each draw uses the model's own conditional (enumerated from ``log_prob``) at temperature 1, the tempered one
    (softmax of logits / T) at T = 0.5 and 2, and low temperature sharpens (properties.py)."""
    assert_sampler_draws_from_log_prob(build(name, TINY_DISCRETE_SPECS["levels2x2x3"]), sampler)
    assert_sampler_draws_from_log_prob(build(name, TINY_DISCRETE_SPECS["rgb2x2binary"]), sampler, num_samples=3)


@pytest.mark.parametrize("name", ["pixel_cnn", "gated_pixel_cnn"])
def test_cropped_sampling_equals_naive(name, monkeypatch):
    """The receptive-field crop sampler (which PixelCNN/Gated PixelCNN replace by per-layer caches) is exact too."""
    spec = DataSpec((1, 9, 9), "discrete", 3)
    model = build(name, spec, num_layers=1)
    assert model.receptive_field()[0] < 8, "the crop must be smaller than the image here"
    monkeypatch.setattr(model, "sample", model.cropped_sample)  # the checker compares sample with naive_sample
    assert_cached_sampling_matches_naive(model, 2, seed=3, temperature=0.7)


def test_cached_sampling_equals_naive_with_downsampling():
    spec = DataSpec((1, 7, 7), "discrete", 2)
    assert_cached_sampling_matches_naive(build("pixel_cnn_pp", spec, num_scales=2), 2, seed=4)


#: models whose ``receptive_field`` is bounded (attention models have none and sample naively)
CROPPABLE = [n for n in IMAGE_MODELS if build(n, DataSpec((1, 4, 4), "discrete", 2)).receptive_field() is not None]


@pytest.mark.parametrize("name", CROPPABLE)
def test_receptive_field_bound_holds(name):
    """The declared receptive field (used to crop) contains every input that influences a conditional (autograd)."""
    model = build(name, DataSpec((1, 4, 4), "discrete", 2))
    field = model.receptive_field()
    up, left, right = field
    size = max(field) * 2 + 3
    v = torch.zeros(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    i = j = size - 1 - max(field) // 2
    (g,) = torch.autograd.grad(model.network(v, None)[0, :, :, i, j].sum(), v)
    rows, cols = g[0, 0].nonzero().unbind(1)
    assert rows.max() <= i and i - rows.min() <= up and j - cols.min() <= left and cols.max() - j <= right


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_completion_keeps_given_pixels(name):
    spec = DataSpec((1, 4, 4), "discrete", 3)
    model = build(name, spec)
    given = random_levels(spec, 3, seed=1)
    mask = torch.zeros(1, *spec.shape, dtype=torch.bool)
    mask[:, :, :2] = True  # the top half is given
    out = model.sample(3, generator=torch.Generator().manual_seed(0), given=given, given_mask=mask)
    assert torch.equal(out[:, :, :2], given[:, :, :2])
    if name not in NAIVE_ONLY:  # naive_sample against itself could not fail
        assert_cached_sampling_matches_naive(model, 3, given=given, given_mask=mask)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_sample_frequencies(name):
    assert_sample_frequencies(build(name, TINY_DISCRETE_SPECS["levels2x2x3"]), num_samples=8000)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_colour_sample_frequencies(name):
    assert_sample_frequencies(build(name, TINY_DISCRETE_SPECS["rgb2x2binary"]), num_samples=4000)


# ------------------------------------------------------------------------------------------------ contract


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_parameter_gets_a_finite_gradient(name):
    for spec in (DataSpec((1, 4, 4), "discrete", 5), DataSpec((3, 3, 3), "discrete", 2)):
        model = build(name, spec)
        assert_grads_finite(model, random_levels(spec, 3))


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_checkpoint_roundtrip(name, tmp_path):
    spec = DataSpec((3, 3, 3), "discrete", 4)
    assert_checkpoint_roundtrip(name, build(name, spec), random_levels(spec, 3), tmp_path)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_same_seed_same_samples(name):
    assert_same_seed_same_samples(build(name, DataSpec((1, 3, 3), "discrete", 3)), 3)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_rejects_vectors_and_bad_input(name):
    with pytest.raises(UserError):
        dulab.build_model(name, _VECTOR, **TINY.get(name, {}))
    model = build(name, DataSpec((1, 3, 3), "discrete", 2))
    with pytest.raises(UserError):
        model.log_prob(torch.zeros(2, 1, 3, 3))  # floats, not levels
    with pytest.raises(ValueError):
        dulab.build_model(name, DataSpec((1, 3, 3), "discrete", 2), no_such_hparam=1)


# ------------------------------------------------------------------------------------------------ conditioning


def test_class_conditional_gated_pixel_cnn():
    spec = DataSpec((1, 2, 2), "discrete", 3, num_classes=3)
    model = build("gated_pixel_cnn", spec, use_context=True)
    assert model.is_conditional
    for label in range(3):
        assert_normalised(model, context=torch.full((81,), label))
    x = random_levels(spec, 4)
    a, b = model.log_prob(x, context=torch.zeros(4)), model.log_prob(x, context=torch.ones(4))
    assert not torch.allclose(a, b), "the label must change the likelihood"
    with pytest.raises(UserError):
        model.log_prob(x)  # context is required
    assert_sample_frequencies(model, num_samples=6000, context=torch.full((81,), 2))
    assert_cached_sampling_matches_naive(model, 3, context=torch.tensor([0, 1, 2]), temperature=0.8)
    assert_sampler_draws_from_log_prob(model, context=1)
    assert_autoregressive_dependencies(model, x[:2], context=torch.tensor([1, 2]))


def test_use_context_needs_classes():
    with pytest.raises(UserError):
        dulab.build_model("gated_pixel_cnn", DataSpec((1, 3, 3), "discrete", 2), use_context=True)


# ------------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_trains_end_to_end(name, tmp_path):
    """A few steps through ``dulab.train`` lower the loss on tiny structured data, and the run reloads."""
    x = torch.zeros(64, 1, 4, 4, dtype=torch.long)
    x[::2, :, ::2] = 1  # two kinds of images: striped and blank
    ds = dulab.datasets.from_array(x.numpy(), num_levels=2)
    run = dulab.train(name, data=ds, eval_data=ds, epochs=3, out_dir=tmp_path / "run", progress=False,
                      batch_size=16, lr=3e-3, ema_decay=0.0, warmup_steps=0, sample_fn=None, **TINY.get(name, {}))
    assert run.metrics[-1]["test_loss"] < run.metrics[0]["test_loss"]
    again = dulab.load(run.dir)
    assert torch.allclose(again.log_prob(x[:4]), run.model.log_prob(x[:4]))


def test_cached_sampling_equals_naive_independent_channels():
    model = build("pixel_cnn", DataSpec((3, 3, 4), "discrete", 3), use_independent_channels=True)
    assert_cached_sampling_matches_naive(model, 2, seed=5, temperature=0.7)
