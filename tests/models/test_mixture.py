"""Mixtures of trained density models: normalised, sampled from their density, EM never lowers the held-out
likelihood, and mismatched members are refused."""

from __future__ import annotations

import pytest
import torch

import dulab
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.mixture import Mixture, from_runs
from properties import assert_normalised, assert_sample_frequencies, perturb_parameters

SPEC = DataSpec((1, 2, 2), "discrete", 3)


def _members():
    torch.manual_seed(0)
    a = perturb_parameters(dulab.build_model("pixel_cnn", SPEC, num_filters=4, num_layers=2), 0.5, seed=1)
    b = perturb_parameters(dulab.build_model("made", DataSpec((4,), "discrete", 3), hidden_sizes=(8,)), 0.5, seed=2)
    return a, b


def test_mixture_is_normalised_and_samples_from_its_density():
    a, _ = _members()
    c = perturb_parameters(dulab.build_model("pixel_cnn", SPEC, num_filters=4, num_layers=2), 0.5, seed=3)
    m = Mixture([a, c], weights=[0.3, 0.7])
    assert_normalised(m)
    assert_sample_frequencies(m, num_samples=20000)
    x = torch.randint(0, 3, (5, *SPEC.shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp = m.member_log_probs(x)
        assert (m.log_prob(x) <= lp.max(1).values + 1e-9).all() and (m.log_prob(x) >= lp.min(1).values - 1e-9).all()


def test_em_weights_never_lower_the_held_out_likelihood_and_find_the_better_member():
    a, _ = _members()
    torch.manual_seed(5)
    good = dulab.build_model("pixel_cnn", SPEC, num_filters=4, num_layers=2).double()
    data = a.double().sample(400, generator=torch.Generator().manual_seed(1))  # drawn from member a
    m = Mixture([a, good], weights=[0.1, 0.9]).double()
    history = m.fit_weights(data, num_iterations=50)
    assert all(h2 >= h1 - 1e-12 for h1, h2 in zip(history, history[1:]))
    assert history[-1] > history[0]
    assert float(m.weights[0]) > 0.5  # the member the data came from gets most of the weight


def test_mismatched_members_and_bad_weights_are_user_errors():
    a, b = _members()
    with pytest.raises(UserError, match="same data"):
        Mixture([a, b])
    with pytest.raises(UserError, match="non-negative"):
        Mixture([a, a], weights=[1.0, -1.0])
    with pytest.raises(UserError, match="at least one"):
        Mixture([])


def test_from_runs_loads_each_run(tmp_path):
    ds = dulab.datasets.from_array(torch.randint(0, 3, (40, 4)).numpy(), num_levels=3)
    run = dulab.train("histogram", data=ds, eval_data=ds, epochs=1, out_dir=tmp_path / "r", progress=False,
                      sample_fn=None).dir
    m = from_runs([run, run])
    assert len(m.members) == 2 and torch.allclose(m.weights, torch.full((2,), 0.5, dtype=torch.float64))
    assert torch.isfinite(m.log_prob(ds.x[:4])).all()
