"""Preprocessing functions: exact values on small inputs, ranges, inverses."""

import pytest
import torch

from dulab.data import preprocess as pp


def test_quantize_merges_equal_width_bins():
    x = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(pp.quantize(x, 256, 5), torch.arange(256) // 8)
    assert torch.equal(pp.quantize(x, 256, 8), torch.arange(256))
    assert torch.equal(pp.quantize(x, 256, 1), (torch.arange(256) >= 128).long())
    q = pp.quantize(torch.arange(17), 17, 2)  # floor(v * 4 / 17)
    assert q.tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]
    assert q.dtype == torch.int64


@pytest.mark.parametrize(("from_levels", "bits"), [(16, 5), (256, 0), (1, 1)])
def test_quantize_rejects_impossible_requests(from_levels, bits):
    with pytest.raises(ValueError):
        pp.quantize(torch.zeros(3, dtype=torch.long), from_levels, bits)


def test_binarize_threshold_on_the_unit_scale():
    x = torch.arange(17)
    assert pp.binarize(x, 17).tolist() == [0] * 8 + [1] * 9  # v / 16 >= 0.5  <=>  v >= 8
    assert pp.binarize(torch.tensor([127, 128]), 256).tolist() == [0, 1]
    assert pp.binarize(x, 17, threshold=0.0).sum() == 17
    with pytest.raises(ValueError):
        pp.binarize(x, 17, threshold=1.5)


def test_unit_and_signed_scales_and_the_inverse():
    x = torch.arange(5)
    assert torch.allclose(pp.to_unit_interval(x, 5), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    s = pp.scale_to_signed(x, 5)
    assert torch.allclose(s, torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]))
    assert s.dtype == torch.get_default_dtype()
    for k in (2, 17, 256):
        levels = torch.arange(k)
        assert torch.equal(pp.from_signed(pp.scale_to_signed(levels, k), k), levels)
    assert pp.from_signed(torch.tensor([-3.0, 3.0]), 4).tolist() == [0, 3]  # clamped


def test_uniform_dequantize_stays_in_its_bin_in_half_open_unit_interval():
    k = 256
    x = torch.arange(k).repeat(200)
    y = pp.uniform_dequantize(x, k, generator=torch.Generator().manual_seed(0))
    assert y.dtype == torch.float32 and float(y.min()) >= 0 and float(y.max()) < 1
    assert torch.equal(torch.floor(y.double() * k).long(), x)
    assert float(y.double().mean()) == pytest.approx(0.5, abs=0.01)  # E[(x + u) / K] = 1/2 for uniform x


def test_uniform_dequantize_top_level_never_reaches_one_in_float32():
    x = torch.full((100000,), 2**20 - 1)  # (K - 1 + u) / K rounds to 1.0 in float32 for u near 1
    y = pp.uniform_dequantize(x, 2**20, generator=torch.Generator().manual_seed(1))
    assert float(y.max()) < 1.0


def test_uniform_dequantize_is_reproducible_with_a_generator():
    x = torch.randint(0, 4, (3, 5))
    a = pp.uniform_dequantize(x, 4, generator=torch.Generator().manual_seed(3))
    b = pp.uniform_dequantize(x, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape


def test_functions_follow_the_default_dtype():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert pp.uniform_dequantize(torch.arange(3), 3).dtype == torch.float64
        assert pp.to_unit_interval(torch.arange(3), 3).dtype == torch.float64
    finally:
        torch.set_default_dtype(old)


@pytest.mark.parametrize("levels", [1, 0, 2.5, True])
def test_bad_num_levels_raise_value_error(levels):
    with pytest.raises(ValueError):
        pp.scale_to_signed(torch.arange(2), levels)
