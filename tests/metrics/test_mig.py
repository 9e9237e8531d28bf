"""MIG (Chen et al. 2018) on synthetic codes whose score is known."""

import math

import pytest
import torch

from dulab.metrics.disentanglement import discrete_mutual_information, mig


def _factors(n=6000, sizes=(3, 6, 10), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, s, (n,), generator=g) for s in sizes], 1)


def test_mutual_information_of_known_joints():
    a = torch.arange(4).repeat(250)  # uniform on 4 values
    assert abs(discrete_mutual_information(a, a) - math.log(4)) < 1e-12  # I(a; a) = H(a) = log 4
    b = torch.arange(2).repeat_interleave(500)  # independent of a by construction (a cycles within each half)
    assert abs(discrete_mutual_information(a, b)) < 1e-12


def test_a_code_that_copies_the_factors_scores_one():
    # each factor copied (affinely, plus noise far below one bin) by its own code dimension: I(z_k; v_k) = H(v_k)
    # and the other dimensions hold independent factors, so the gap is H minus a plug-in MI bias of O(bins / N)
    f = _factors()
    g = torch.Generator().manual_seed(1)
    codes = f.double() * torch.tensor([0.5, -2.0, 1.0]) + 1e-3 * torch.randn(f.shape, generator=g, dtype=torch.float64)
    score, gaps = mig(codes, f, num_bins=20, per_factor=True)
    assert score > 0.98 and set(gaps) == {0, 1, 2}, gaps


def test_a_random_code_scores_near_zero():
    f = _factors()
    codes = torch.randn(len(f), 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert mig(codes, f) < 0.02


def test_a_factor_shared_by_two_dimensions_has_no_gap():
    # dimensions 0 and 1 both copy factor 0 exactly: the top two MIs are equal, that factor's gap is 0
    f = _factors()
    codes = torch.stack([f[:, 0], f[:, 0], f[:, 1], f[:, 2]], 1).double()
    score, gaps = mig(codes, f, per_factor=True)
    assert abs(gaps[0]) < 1e-12 and gaps[1] > 0.98 and gaps[2] > 0.98
    assert abs(score - (gaps[1] + gaps[2]) / 3) < 1e-12


def test_constant_factors_are_left_out_and_bad_shapes_raise():
    f = _factors()
    f = torch.cat([f, torch.zeros(len(f), 1, dtype=torch.long)], 1)
    _, gaps = mig(f.double(), f, per_factor=True)
    assert set(gaps) == {0, 1, 2}
    with pytest.raises(ValueError, match="J >= 2"):
        mig(torch.zeros(10, 1), f[:10])
