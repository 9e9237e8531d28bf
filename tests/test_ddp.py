"""A real 2-process CPU DDP run (gloo) through Fabric, launched as a user would: the `dulab` command."""

import json
import os
import subprocess
import sys


def test_two_process_cpu_ddp_writes_one_run_directory(tmp_path):
    out = tmp_path / "ddp_run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("DULAB_RUN_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "dulab", "train", "histogram", "--data", "discrete1d", "--epochs", "2",
         "--device", "cpu", "--devices", "2", "--strategy", "ddp", "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    # each process takes half of the 8333 training examples: ceil(4166 / 128) = 33 steps per epoch
    assert summary["step"] == 2 * 33
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["ddp_run"], "exactly one run directory"
    assert proc.stdout.count("done:") == 1
