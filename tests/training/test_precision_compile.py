"""``--precision bf16-mixed`` and ``--compile`` (torch.compile), one epoch each on CPU with a tiny model
(DESIGN.md section 4: both are engine options; before these tests neither was ever run)."""

import json
import math

import numpy as np
import pytest
import torch

import dulab
from dulab.cli import main


def _images(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, size=(n, 1, 4, 4))
    x[: n // 2, :, ::2] = 1  # striped half: something to learn
    return dulab.datasets.from_array(x, num_levels=2)


def test_bf16_mixed_precision_trains_one_epoch(tmp_path):
    ds = _images()
    run = dulab.train("pixel_cnn", data=ds, eval_data=ds, epochs=1, batch_size=16, out_dir=tmp_path / "r",
                      progress=False, sample_fn=None, precision="bf16-mixed", num_filters=8, num_layers=1,
                      num_head_filters=8, first_kernel_size=3)
    assert run.summary["status"] == "completed"
    loss = run.metrics[-1]["test_loss"]
    assert math.isfinite(loss) and loss < run.metrics[0]["test_loss"] + 0.05  # finite, and no blow-up
    config = json.loads((run.dir / "config.json").read_text())
    assert config["train"]["precision"] == "bf16-mixed"
    # the saved weights are float32 (autocast computes in bf16, the parameters stay float32)
    assert all(p.dtype == torch.float32 for p in dulab.load(run.dir).parameters())


@pytest.mark.slow
def test_compile_trains_one_epoch_and_matches_eager(tmp_path, capsys):
    """``dulab train --compile``: the compiled model trains, and its test loss after one epoch equals the eager
    run's to float32 accuracy (same seed, same batches; inductor may reorder float sums, hence rel 1e-4)."""
    argv = ["train", "histogram", "--data", "discrete1d", "--data-option", "num_samples=600", "--epochs", "1",
            "--device", "cpu", "--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "eager")]) == 0
    assert main([*argv, "--compile", "--out", str(tmp_path / "compiled")]) == 0
    capsys.readouterr()
    eager, compiled = (json.loads(line) for line in
                       ((tmp_path / d / "metrics.jsonl").read_text().splitlines()[-1] for d in ("eager", "compiled")))
    assert compiled["test_loss"] == pytest.approx(eager["test_loss"], rel=1e-4)
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["train"]["compile"] is True
