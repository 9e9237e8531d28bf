"""``dulab.evaluate``: every metric that applies, for run directories and models, and its user errors."""

import numpy as np
import pytest
import torch

import dulab


@pytest.fixture(scope="module")
def hist_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "hist"
    return dulab.train("histogram", data="digits", epochs=1, out_dir=out, progress=False)


def test_run_directory_gets_likelihood_and_sample_quality(hist_run):
    result = dulab.evaluate(hist_run.dir)
    assert result["weights"] == "last" and result["split"] == "test" and result["num_examples"] == 360
    assert result["bpd"] == pytest.approx(hist_run.final["test_bpd"], rel=1e-6)  # the engine's own evaluation
    for key in ("fid", "kid", "kid_std", "inception_score", "precision", "recall"):
        assert np.isfinite(result[key]), key
    assert result["kid_std"] > 0, "KID subsets smaller than the sets, so their spread is measured"
    assert "linear_probe" not in result  # a density model is not probed unless asked


def test_model_needs_data_and_matching_shapes(hist_run):
    with pytest.raises(ValueError, match="needs data="):
        dulab.evaluate(hist_run.model)
    with pytest.raises(ValueError, match="built for"):
        dulab.evaluate(hist_run.model, data="digits_color")
    result = dulab.evaluate(hist_run.model, data="digits", sample_quality=False)
    assert "bpd" in result and "fid" not in result


def test_probes_report_baselines_and_few_label_mode(hist_run, monkeypatch):
    model = dulab.load(hist_run.dir)
    monkeypatch.setattr(type(model), "is_representation", True, raising=False)
    monkeypatch.setattr(type(model), "encode", lambda self, x: torch.nn.functional.one_hot(x.flatten(1), 17)
                        .flatten(1).float(), raising=False)
    full = dulab.evaluate(model, data="digits", sample_quality=False)
    few = dulab.evaluate(model, data="digits", sample_quality=False, probe_labels_per_class=3)
    for key in ("linear_probe", "knn_accuracy", "raw_pixels/linear_probe", "random_init/linear_probe"):
        assert 0.0 <= full[key] <= 1.0 and key in few
    assert full["linear_probe"] > 0.85  # one-hot pixels of 8x8 digits are nearly linearly separable
    assert few["linear_probe"] < full["linear_probe"]  # 30 labels instead of 1437


def test_in_memory_run_needs_its_data(tmp_path):
    own = dulab.datasets.from_array(np.random.default_rng(0).integers(0, 3, size=(100, 4)), num_levels=3)
    run = dulab.train("histogram", data=own, epochs=1, out_dir=tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="in-memory data"):
        dulab.evaluate(run.dir)
    assert "bpd" in dulab.evaluate(run.dir, data=own)
