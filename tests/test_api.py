"""The public Python API of DESIGN.md section 2, checked the way an outside user would call it."""

import dataclasses

import numpy as np
import pytest
import torch

import dulab
from dulab.config import TrainConfig, config_fields
from dulab.registry import MODELS, get_model_class


def test_version_and_listings():
    assert isinstance(dulab.__version__, str)
    assert "histogram" in dulab.list_models() and "logistic_mixture" in dulab.list_models()
    assert all(name == name.lower() and " " not in name for name in dulab.list_models())
    assert {"digits", "discrete1d", "moons", "mnist"} <= set(dulab.list_datasets())


def test_build_model_rejects_unknown_hparam_with_value_error():
    spec = dulab.load_dataset("discrete1d").spec
    with pytest.raises(ValueError, match="valid keys"):
        dulab.build_model("histogram", spec=spec, nonsense=1)
    with pytest.raises(ValueError, match="unknown model"):
        dulab.build_model("histogramm", spec=spec)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_configs_are_typed_and_do_not_shadow_training_options(name):
    cls = get_model_class(name)
    assert dataclasses.is_dataclass(cls.Config)
    fields = config_fields(cls.Config)
    clash = set(fields) & set(config_fields(TrainConfig))
    assert not clash, f"{name}: config fields {clash} collide with TrainConfig fields"
    for f in dataclasses.fields(cls.Config):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, \
            f"{name}.{f.name} needs a default"
    assert cls.__doc__ and cls.family
    assert set(getattr(cls, "train_defaults", {})) <= set(config_fields(TrainConfig))
    assert cls.__module__.startswith("dulab.models.")


def test_from_array_and_train_on_users_data(tmp_path):
    rng = np.random.default_rng(0)
    ds = dulab.datasets.from_array(rng.integers(0, 5, size=200), num_levels=5)
    assert ds.spec.shape == (1,) and ds.spec.kind == "discrete" and ds.spec.num_levels == 5
    x, y = ds[0]
    assert x.dtype == torch.long and int(y) == -1
    run = dulab.train("histogram", data=ds, epochs=1, out_dir=tmp_path / "r", progress=False)
    assert isinstance(run, dulab.Run) and run.model is not None
    assert dulab.load(run.dir).spec == ds.spec


def test_train_returns_metrics_with_bpd(tmp_path):
    run = dulab.train("histogram", data="discrete1d", epochs=1, out_dir=tmp_path / "r", progress=False)
    assert run.metrics[-1]["test_bpd"] > 0 and run.metrics[-1]["train_loss"] > 0


def test_from_array_rejects_bad_input():
    with pytest.raises(ValueError, match="lie in"):
        dulab.datasets.from_array(np.array([0, 1, 7]), num_levels=5)
    with pytest.raises(ValueError, match="non-integer"):
        dulab.datasets.from_array(np.array([0.5, 1.0]), num_levels=5)
    with pytest.raises(ValueError, match="NaN"):
        dulab.datasets.from_array(np.array([[0.5, np.nan]]))


def test_model_rejects_wrongly_shaped_input():
    model = dulab.build_model("histogram", dulab.load_dataset("discrete1d").spec)
    with pytest.raises(ValueError, match="expects inputs of shape"):
        model.log_prob(torch.zeros(3, 2, dtype=torch.long))
