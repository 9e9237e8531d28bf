"""AUROC against its definition: a brute-force count over all (in, out) pairs, ties counting one half."""

import numpy as np
import pytest
import torch

from dulab.errors import UserError
from dulab.metrics import auroc


def brute_force(a, b):
    a, b = np.asarray(a, dtype=float)[:, None], np.asarray(b, dtype=float)[None, :]
    return float(((b > a) + 0.5 * (b == a)).mean())


def test_separable_toy_is_one_and_reversed_is_zero():
    inside, outside = torch.randn(50, dtype=torch.float64), torch.randn(30, dtype=torch.float64) + 100
    assert auroc(inside, outside) == 1.0
    assert auroc(outside, inside) == 0.0


@pytest.mark.parametrize("n_in, n_out, levels", [(7, 5, 3), (40, 60, 10), (200, 17, 1000), (1, 1, 2)])
def test_matches_the_pair_count_with_ties(n_in, n_out, levels):
    rng = np.random.default_rng(n_in + n_out)
    a, b = rng.integers(0, levels, n_in), rng.integers(0, levels, n_out) + 1  # integers: many ties
    assert auroc(a, b) == pytest.approx(brute_force(a, b), abs=1e-12)


def test_all_tied_is_one_half():
    assert auroc([3.0] * 4, [3.0] * 9) == 0.5


def test_empty_or_nonfinite_scores_are_refused():
    with pytest.raises(UserError):
        auroc([], [1.0])
    with pytest.raises(UserError):
        auroc([1.0, float("nan")], [1.0])
