"""The ``transformer`` over other pixel orderings (raster, zigzag, random): the order is a permutation, the
conditionals respect it (dependency Jacobian), the model stays normalised, and KV-cached sampling still draws
exactly what the naive sampler draws (float64, tiny domains)."""

from __future__ import annotations

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from properties import (
    TINY_DISCRETE_SPECS,
    assert_autoregressive_dependencies,
    assert_cached_sampling_matches_naive,
    assert_normalised,
    random_levels,
)

TINY = {"embed_dim": 16, "num_heads": 2, "num_layers": 2}
ORDERINGS = [{"ordering": "raster"}, {"ordering": "zigzag"}, {"ordering": "random", "ordering_seed": 3}]


def build(spec, **extra):
    torch.manual_seed(0)
    return dulab.build_model("transformer", spec, **TINY, **extra).double().eval()


def test_zigzag_order_on_a_3x3_image():
    """JPEG zigzag over anti-diagonals i + j = d, direction alternating (written out by hand)."""
    order = build(DataSpec((1, 3, 3), "discrete", 2), ordering="zigzag").generation_order()
    pixels = [(0, 0), (0, 1), (1, 0), (2, 0), (1, 1), (0, 2), (1, 2), (2, 1), (2, 2)]
    assert order.tolist() == [i * 3 + j for i, j in pixels]


def test_zigzag_keeps_channels_in_order_within_a_pixel():
    order = build(DataSpec((3, 2, 2), "discrete", 2), ordering="zigzag").generation_order()
    assert order[:6].tolist() == [0, 4, 8, 1, 5, 9]  # pixel (0, 0) R, G, B then pixel (0, 1) R, G, B


def test_random_order_is_seeded():
    spec = DataSpec((1, 4, 4), "discrete", 2)
    a = build(spec, ordering="random", ordering_seed=1).generation_order()
    b = build(spec, ordering="random", ordering_seed=1).generation_order()
    c = build(spec, ordering="random", ordering_seed=2).generation_order()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sorted(a.tolist()) == list(range(16)) and a.tolist() != list(range(16))


def test_zigzag_needs_images_and_bad_ordering_is_refused():
    with pytest.raises(UserError):
        dulab.build_model("transformer", TINY_DISCRETE_SPECS["vector4x3"], ordering="zigzag", **TINY)
    with pytest.raises(UserError):
        dulab.build_model("transformer", TINY_DISCRETE_SPECS["binary3x3"], ordering="hilbert", **TINY)


@pytest.mark.parametrize("extra", ORDERINGS, ids=lambda e: e["ordering"])
@pytest.mark.parametrize("spec_name", ["binary3x3", "rgb2x2binary"])
def test_ordering_dependencies_and_normalisation(spec_name, extra):
    spec = TINY_DISCRETE_SPECS[spec_name]
    model = build(spec, **extra)
    assert_autoregressive_dependencies(model, random_levels(spec, 2))
    assert_normalised(model)


@pytest.mark.parametrize("extra", ORDERINGS[1:], ids=lambda e: e["ordering"])
def test_ordering_dependency_check_can_fail(extra):
    """The checker catches a model that keeps its network but is told the raster order (the real one differs)."""
    spec = TINY_DISCRETE_SPECS["binary3x3"]
    model = build(spec, **extra)
    raster = torch.arange(spec.num_dims)
    with pytest.raises(AssertionError):
        assert_autoregressive_dependencies(model, random_levels(spec, 2), order=raster)


@pytest.mark.parametrize("extra", ORDERINGS, ids=lambda e: e["ordering"])
def test_ordering_cached_sampling_equals_naive(extra):
    for spec in (DataSpec((1, 4, 4), "discrete", 3), DataSpec((3, 2, 3), "discrete", 2)):
        model = build(spec, **extra)
        assert_cached_sampling_matches_naive(model, 8, seed=2)
        assert_cached_sampling_matches_naive(model, 4, seed=3, temperature=0.7)


def test_ordering_survives_a_checkpoint(tmp_path):
    spec = DataSpec((1, 3, 3), "discrete", 2)
    x = random_levels(spec, 16)
    ds = dulab.datasets.from_array(x.numpy(), num_levels=2)
    run = dulab.train("transformer", data=ds, eval_data=ds, epochs=1, out_dir=tmp_path / "run", progress=False,
                      batch_size=8, sample_fn=None, ordering="zigzag", **TINY)
    again = dulab.load(run.dir)
    assert again.config.ordering == "zigzag"
    assert torch.equal(again.generation_order(), run.model.generation_order())
    assert torch.allclose(again.log_prob(x[:4]), run.model.log_prob(x[:4]))
