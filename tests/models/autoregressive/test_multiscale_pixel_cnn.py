"""Multiscale PixelCNN (parallel multiscale sampling, Reed et al. 2017): the group schedule covers every sub-pixel
exactly once in O(log N) groups, each group's conditionals see only earlier groups (dependency Jacobian), the
model is normalised (enumeration) and the grouped sampler draws exactly what the naive one draws, in one
network call per group. The shared image-model properties run on it too (test_image_models.py)."""

from __future__ import annotations

import math

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.models.autoregressive.multiscale import multiscale_groups
from properties import (
    assert_autoregressive_dependencies,
    assert_cached_sampling_matches_naive,
    assert_normalised,
    dependency_map,
    random_levels,
)

TINY = {"num_filters": 8, "num_layers": 3}


def build(spec, **extra):
    torch.manual_seed(0)
    return dulab.build_model("multiscale_pixel_cnn", spec, **{**TINY, **extra}).double().eval()


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 4, 4), (1, 3, 5), (1, 1, 7), (2, 6, 3)])
def test_schedule_covers_every_sub_pixel_once(shape):
    groups = multiscale_groups(shape)
    flat = torch.cat(groups)
    assert sorted(flat.tolist()) == list(range(math.prod(shape))), "every sub-pixel exactly once"
    assert all(len(g) for g in groups)


def test_schedule_is_logarithmic_and_coarse_to_fine():
    """28x28: 4 base pixels (stride 16) + 4 doublings x 3 groups = 16 network calls, not 784."""
    groups = multiscale_groups((1, 28, 28))
    assert len(groups) == 16
    assert [g.tolist() for g in groups[:4]] == [[0], [16], [16 * 28], [16 * 28 + 16]]
    last = groups[-1]  # the centres of the finest doubling: odd rows, odd columns
    rows, cols = last // 28, last % 28
    assert (rows % 2 == 1).all() and (cols % 2 == 1).all() and len(last) == 14 * 14
    # 8x8 digits: 4 base pixels (stride 4) then 2 doublings
    assert len(multiscale_groups((1, 8, 8))) == 10


def test_channels_split_every_group_in_order():
    groups = multiscale_groups((3, 2, 2))
    assert len(groups) == 12
    assert [int(g[0]) // 4 for g in groups[:3]] == [0, 1, 2]  # pixel (0, 0): R, then G, then B


def _group_dependencies(model, x):
    """Assert no conditional sees its own group or a later one; return the (D_out, D_in) dependency map."""
    dep = dependency_map(model, x)  # (B, D, B, D)
    group = model.group_of.cpu()
    for b in range(x.shape[0]):
        block = dep[b, :, b, :]
        forbidden = group[None, :] >= group[:, None]  # input in the same or a later group
        assert (block[forbidden] == 0).all(), "a conditional sees a pixel of its own or a later group"
    return dep[0, :, 0, :]


@pytest.mark.parametrize("shape,levels", [((1, 4, 4), 2), ((3, 2, 3), 2), ((1, 5, 3), 3)])
def test_groups_see_only_earlier_groups(shape, levels):
    spec = DataSpec(shape, "discrete", levels)
    model = build(spec)
    x = random_levels(spec, 2)
    block = _group_dependencies(model, x)
    assert_autoregressive_dependencies(model, x)  # the generic checker in generation order, too
    # the last group (finest centres) depends on every pixel of earlier groups at some point? at least on many
    group = model.group_of.cpu()
    last = (group == group.max()).nonzero()[:, 0]
    assert (block[last][:, group < group.max()].sum(0) > 0).float().mean() > 0.5


def test_group_check_can_fail():
    """Without the known mask (a model that reads the whole image) the group check must fail."""
    spec = DataSpec((1, 4, 4), "discrete", 2)
    model = build(spec)
    ones = lambda groups, dtype: (torch.ones(len(list(groups)), *spec.shape, dtype=dtype),) * 2  # noqa: E731
    model.group_masks = ones
    with pytest.raises(AssertionError):
        _group_dependencies(model, random_levels(spec, 2))


@pytest.mark.parametrize("shape,levels", [((1, 2, 2), 3), ((1, 3, 3), 2), ((1, 1, 6), 3), ((3, 2, 2), 2)])
def test_normalised_by_enumeration(shape, levels):
    assert_normalised(build(DataSpec(shape, "discrete", levels)))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_grouped_sampling_equals_naive(temperature):
    for spec in (DataSpec((1, 8, 8), "discrete", 3), DataSpec((3, 4, 4), "discrete", 2)):
        assert_cached_sampling_matches_naive(build(spec), 3, seed=2, temperature=temperature)


def test_one_network_call_per_group(monkeypatch):
    spec = DataSpec((1, 8, 8), "discrete", 17)
    model = build(spec)
    calls = []
    inner = model.group_network
    monkeypatch.setattr(model, "group_network", lambda *a, **k: calls.append(1) or inner(*a, **k))
    model.sample(4, generator=torch.Generator().manual_seed(0))
    assert len(calls) == model.num_groups == 10
