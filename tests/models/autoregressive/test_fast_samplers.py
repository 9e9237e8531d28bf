"""Cached samplers of PixelCNN++ (a schedule over per-layer activation caches at every U-Net resolution) and
PixelSNAIL (convolution caches + attention key/value caches) against their naive samplers, on networks deeper
than the shared image tests use: same conditionals at every draw (float64, within 1e-9) and the same draws."""

from __future__ import annotations

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.models.autoregressive import cached
from properties import assert_cached_sampling_matches_naive, random_levels

PP = {"num_filters": 6, "num_components": 2}
SNAIL = {"num_filters": 6, "first_kernel_size": 3, "attention_dim": 4, "num_head_filters": 6}


def build(name, spec, **extra):
    torch.manual_seed(0)
    return dulab.build_model(name, spec, **extra).double().eval()


@pytest.mark.parametrize("extra", [{"num_scales": 3, "num_blocks": 1}, {"num_scales": 2, "num_blocks": 2}])
@pytest.mark.parametrize("shape", [(1, 7, 9), (3, 5, 4)])
def test_pixel_cnn_pp_schedule_equals_naive(shape, extra):
    """Odd sizes at every resolution (9 -> 5 -> 3 columns) exercise the crops of the transposed convolutions."""
    model = build("pixel_cnn_pp", DataSpec(shape, "discrete", 5), **PP, **extra)
    assert_cached_sampling_matches_naive(model, 2, seed=1, temperature=0.8)


def test_pixel_cnn_pp_schedule_with_given_pixels():
    spec = DataSpec((3, 4, 5), "discrete", 4)
    model = build("pixel_cnn_pp", spec, **PP, num_scales=2)
    given = random_levels(spec, 2, seed=3)
    mask = torch.rand(2, *spec.shape, generator=torch.Generator().manual_seed(4)) < 0.4  # scattered sub-pixels
    assert_cached_sampling_matches_naive(model, 2, given=given, given_mask=mask)


def test_pixel_cnn_pp_cached_check_can_fail(monkeypatch):
    """Dropping the boxes of one step from the schedule (a stale cache) must break the equality."""
    model = build("pixel_cnn_pp", DataSpec((1, 5, 5), "discrete", 5), **PP, num_scales=2)
    real = cached.build_schedule

    def stale(ops, num_steps):
        steps = real(ops, num_steps)
        steps[7] = steps[7][:-1]
        return steps

    monkeypatch.setattr("dulab.models.autoregressive.pixel_cnn_pp.build_schedule", stale)
    with pytest.raises(AssertionError):
        assert_cached_sampling_matches_naive(model, 2, seed=1)


def test_pixel_cnn_pp_features_ready_before_each_pixel():
    """Every position of the last feature map is final no later than the step that draws its pixel."""
    model = build("pixel_cnn_pp", DataSpec((1, 6, 7), "discrete", 3), **PP, num_scales=3)
    _, ops, ul = model._schedule_program(1, torch.float64, "cpu")
    assert (ul.ready.flatten() <= torch.arange(42)).all()
    # the vertical stream (u_init, down-shifted) sees rows above only: row i is ready by the start of row i,
    # while before the shift it reads row i itself (pixel (2, j + 1) is known from step 2 * 7 + j + 2)
    u_init, u = ops[0].dst.ready, ops[1].dst.ready
    assert (u[2] <= 2 * 7).all() and u[2].max() == 2 * 7
    assert u_init[2].tolist() == [2 * 7 + min(j + 1, 6) + 1 for j in range(7)]


@pytest.mark.parametrize("extra", [{"num_blocks": 2, "num_res_layers": 2}, {"num_blocks": 1, "num_res_layers": 1}])
@pytest.mark.parametrize("shape", [(1, 6, 7), (3, 3, 4)])
def test_pixel_snail_cached_equals_naive(shape, extra):
    model = build("pixel_snail", DataSpec(shape, "discrete", 4), **SNAIL, **extra)
    assert_cached_sampling_matches_naive(model, 2, seed=2, temperature=0.9)


def test_pixel_snail_cached_check_can_fail(monkeypatch):
    """An attention cache that forgets the newest position must break the equality."""
    from dulab.nn.attention import KVCache

    model = build("pixel_snail", DataSpec((1, 4, 4), "discrete", 4), **SNAIL, num_blocks=1, num_res_layers=1)
    real = KVCache.append

    def forgetful(self, k, v):
        keys, values = real(self, k, v)
        return (keys[:, :, :-1], values[:, :, :-1]) if self.length > 1 else (keys, values)

    monkeypatch.setattr(KVCache, "append", forgetful)
    with pytest.raises(AssertionError):
        assert_cached_sampling_matches_naive(model, 2, seed=1)


@pytest.mark.parametrize("name", ["pixel_cnn_pp", "pixel_snail"])
def test_training_mode_falls_back_to_naive(name, monkeypatch):
    model = build(name, DataSpec((1, 3, 3), "discrete", 3), **(PP if name == "pixel_cnn_pp" else SNAIL)).train()
    calls = []
    naive = model.naive_sample
    monkeypatch.setattr(model, "naive_sample", lambda *a, **k: calls.append(1) or naive(*a, **k))
    model.sample(2, generator=torch.Generator().manual_seed(0))
    assert calls
