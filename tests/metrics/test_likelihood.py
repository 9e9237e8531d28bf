"""Likelihood metrics against closed forms."""

import math

import pytest
import torch

import dulab
from dulab.metrics import bits_per_dim, dataset_nll


def test_bits_per_dim_is_nats_over_d_ln2():
    assert bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0)


def test_uniform_model_scores_log2_k_bits_per_dim():
    # A histogram at initialisation (all logits zero) is uniform over K levels: exactly log2 K bits per dimension.
    ds = dulab.load_dataset("digits", "test")
    model = dulab.build_model("histogram", ds.spec)
    result = dataset_nll(model, ds)
    assert result["bpd"] == pytest.approx(math.log2(17), rel=1e-6)
    assert result["nll"] == pytest.approx(64 * math.log(17), rel=1e-6)


def test_dataset_nll_agrees_with_log_prob():
    ds = dulab.load_dataset("discrete1d", "test")
    torch.manual_seed(0)
    model = dulab.build_model("logistic_mixture", ds.spec)
    expected = -model.log_prob(ds.x).double().mean().item()
    assert dataset_nll(model, ds, batch_size=100)["nll"] == pytest.approx(expected, rel=1e-6)
