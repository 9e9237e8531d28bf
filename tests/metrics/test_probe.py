"""Representation probes: separable features, random labels, unlabelled markers, a hand-computed k-NN vote."""

import math

import pytest
import torch

from dulab.data.base import DataSpec, TensorDataset
from dulab.errors import UserError
from dulab.metrics import knn_accuracy, linear_probe, probe_suite


def _separable(n_per_class=30, num_classes=3, seed=0):
    # Class c sits at 10 * e_c plus unit noise in 5 dims: linearly separable with a margin of many sigmas.
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = torch.randn(len(y), 5, generator=g, dtype=torch.float64)
    x[torch.arange(len(y)), y] += 10
    return x, y


def test_probes_are_perfect_on_separable_features():
    xtr, ytr = _separable(seed=0)
    xte, yte = _separable(seed=1)
    assert linear_probe(xtr, ytr, xte, yte) == 1.0
    assert knn_accuracy(xtr, ytr, xte, yte) == 1.0


def test_probes_are_at_chance_on_random_labels():
    # Labels independent of the features: accuracy ~ Binomial(400, 1/4) / 400, std 0.022; 0.25 +- 0.1 is > 4 std.
    g = torch.Generator().manual_seed(2)
    xtr, xte = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    ytr, yte = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (400,), generator=g)
    assert abs(linear_probe(xtr, ytr, xte, yte) - 0.25) < 0.1
    assert abs(knn_accuracy(xtr, ytr, xte, yte) - 0.25) < 0.1


def test_unlabelled_examples_are_ignored():
    xtr, ytr = _separable(seed=0)
    xte, yte = _separable(seed=1)
    # Extra training points with deliberately wrong features, marked -1: they must not change anything.
    junk = torch.randn(50, 5, dtype=torch.float64) * 100
    xtr2, ytr2 = torch.cat([xtr, junk]), torch.cat([ytr, torch.full((50,), -1)])
    assert knn_accuracy(xtr2, ytr2, xte, yte, k=5) == knn_accuracy(xtr, ytr, xte, yte, k=5)
    assert linear_probe(xtr2, ytr2, xte, yte) == linear_probe(xtr, ytr, xte, yte)
    only_one = torch.where(ytr == 0, ytr, torch.full_like(ytr, -1))
    with pytest.raises(UserError, match="at least 2"):
        linear_probe(xtr, only_one, xte, yte)
    with pytest.raises(UserError, match="at least 2"):
        knn_accuracy(xtr, only_one, xte, yte)


def test_knn_temperature_weighting_worked_example():
    # Train vectors at angles 0, 10, 20 degrees (class 0) and 5 degrees (class 1); the test vector at 6 degrees.
    # Cosine similarities: cos 6 = 0.99452, cos 4 = 0.99756, cos 14 = 0.97030 (class 0); cos 1 = 0.99985 (class 1).
    # k = 3 keeps 1 deg (class 1), 4 deg and 6 deg (class 0).
    # tau = 0.07: class 0 scores exp(0.99756/0.07) + exp(0.99452/0.07) = 3.03e6 > class 1 exp(0.99985/0.07) = 1.60e6.
    # tau = 0.001: relative to class 1's weight, class 0 scores exp(-2.29) + exp(-5.33) = 0.107 < 1: class 1.
    # (exp(0.99985 / 0.001) itself overflows float64: the vote must not compute it.)
    def unit(deg):
        r = math.radians(deg)
        return [math.cos(r), math.sin(r)]

    xtr = torch.tensor([unit(0), unit(10), unit(20), unit(5)], dtype=torch.float64)
    ytr = torch.tensor([0, 0, 0, 1])
    xte, yte = torch.tensor([unit(6)], dtype=torch.float64), torch.tensor([0])
    w = {d: math.exp(math.cos(math.radians(d)) / 0.07) for d in (1, 4, 6)}
    assert w[4] + w[6] > w[1]  # the hand computation above
    assert knn_accuracy(xtr, ytr, xte, yte, k=3, temperature=0.07) == 1.0
    assert knn_accuracy(xtr, ytr, xte, yte, k=3, temperature=0.001) == 0.0
    assert knn_accuracy(xtr, ytr, xte, yte, k=1) == 0.0  # plain nearest neighbour: class 1


def test_linear_probe_is_deterministic_and_scale_invariant():
    g = torch.Generator().manual_seed(3)
    xtr, xte = torch.randn(200, 6, generator=g), torch.randn(100, 6, generator=g)
    ytr, yte = (xtr[:, 0] + 0.5 * xtr[:, 1] > 0).long(), (xte[:, 0] + 0.5 * xte[:, 1] > 0).long()
    a = linear_probe(xtr, ytr, xte, yte)
    assert a == linear_probe(xtr, ytr, xte, yte)
    # Standardisation with train statistics: rescaling a feature leaves the probe unchanged.
    scale = torch.tensor([1000.0, 0.001, 1, 1, 1, 1])
    assert linear_probe(xtr * scale, ytr, xte * scale, yte) == pytest.approx(a, abs=0.011)
    assert a > 0.9


def test_probe_suite_reports_encoder_and_baselines():
    xtr, ytr = _separable(seed=0)
    xte, yte = _separable(seed=1)
    spec = DataSpec((5,), "continuous")
    train, test = TensorDataset(xtr, ytr, spec), TensorDataset(xte, yte, spec)
    calls = []

    def encoder(x):
        assert torch.is_inference_mode_enabled()
        calls.append(len(x))
        return x[:, :3] * 2

    def constant(x):
        return torch.ones(len(x), 2)

    out = probe_suite(encoder, train, test, baseline_encoders={"constant": constant}, batch_size=40)
    assert set(out) == {"linear_probe", "knn_accuracy", "raw_pixels/linear_probe", "raw_pixels/knn_accuracy",
                        "constant/linear_probe", "constant/knn_accuracy"}
    assert out["linear_probe"] == out["raw_pixels/linear_probe"] == 1.0
    # Constant features carry no information: every test point gets the same prediction, 1/3 of them right.
    assert out["constant/linear_probe"] == pytest.approx(1 / 3)
    assert calls == [40, 40, 10, 40, 40, 10]
    with pytest.raises(UserError, match="labelled"):
        probe_suite(encoder, TensorDataset(xtr, None, spec), test)
