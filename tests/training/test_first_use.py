"""What a new user hits first (issue 11): resume of finished runs, learning rate on extension, run paths from other
folders, in-memory data, EMA on short runs, Ctrl-C and NaN exit paths, messages, pictures."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dulab
from dulab.cli import main
from dulab.config import TrainConfig
from dulab.training.checkpoint import load_state
from dulab.training.ema import EMA
from dulab.training.engine import lr_schedule

README = Path(__file__).resolve().parents[2] / "README.md"


def _hist(out, epochs=2, **kw):
    kw.setdefault("progress", False)
    return dulab.train("histogram", data="discrete1d", epochs=epochs, out_dir=out, **kw)


def _snapshot(run_dir):
    return {p.name: p.read_bytes() for p in Path(run_dir).iterdir() if p.is_file()}


# ------------------------------------------------------------------ 1. resume of a finished run

def test_resume_to_fewer_or_equal_epochs_exits_2_and_writes_nothing(tmp_path, capsys):
    run = _hist(tmp_path / "r", epochs=2)
    before = _snapshot(run.dir)
    for n in ("2", "1"):
        assert main(["resume", str(run.dir), "--epochs", n, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "has already trained 2 epochs; pass --epochs > 2 to continue" in err
    assert _snapshot(run.dir) == before


def test_resume_of_a_complete_run_without_epochs_says_so_and_changes_nothing(tmp_path, capsys):
    run = _hist(tmp_path / "r", epochs=1)
    before = _snapshot(run.dir)
    assert main(["resume", str(run.dir), "--no-progress"]) == 2
    assert "is complete (1 epochs)" in capsys.readouterr().err
    assert _snapshot(run.dir) == before


# ------------------------------------------------------------------ 2. no learning-rate jump on extension

def _cfg(**kw):
    return TrainConfig(**{"epochs": 4, "lr": 1e-2, **kw})


@pytest.mark.parametrize("schedule", ["restart", "final"])
def test_extension_schedule_is_continuous(schedule):
    spe = 10
    base = lr_schedule(_cfg(), spe)
    ext = lr_schedule(_cfg(epochs=8, extensions=[{"epoch": 4, "schedule": schedule}]), spe)
    assert [ext(s) for s in range(40)] == [base(s) for s in range(40)], "the original part is unchanged"
    last = base(39)
    assert abs(ext(40) - last) <= 1.0 / 2 + 1e-12  # at most one warm-up increment (2 warm-up steps here)
    if schedule == "final":
        assert all(ext(s) == pytest.approx(last) for s in range(40, 80))
    else:
        steps = [ext(s) for s in range(40, 80)]
        assert max(steps) == pytest.approx(1.0) and steps[-1] < 0.01  # warm-up back to the peak, cosine down
        assert all(abs(b - a) <= 0.5 + 1e-12 for a, b in zip([last] + steps, steps))


def test_restart_reaches_the_peak_even_when_the_extension_is_shorter_than_the_warmup():
    spe = 10  # a 1-epoch extension (10 steps) of a run configured with 50 warm-up steps
    ext = lr_schedule(_cfg(epochs=5, warmup_steps=50, extensions=[{"epoch": 4, "schedule": "restart"}]), spe)
    assert max(ext(s) for s in range(40, 50)) == pytest.approx(1.0)


def test_extending_a_finished_run_logs_no_lr_jump(tmp_path):
    run = _hist(tmp_path / "r", epochs=2, lr=0.05, log_every=1)
    dulab.resume(run.dir, epochs=4, progress=False)
    steps = [json.loads(line) for line in (run.dir / "steps.jsonl").read_text().splitlines()]
    end_of_first = max(r["step"] for r in steps if r["epoch"] < 2)
    before = [r["lr"] for r in steps if r["step"] <= end_of_first]
    after = [r["lr"] for r in steps if r["step"] > end_of_first]
    assert after and after[0] < 0.3 * 0.05, f"the extension starts at lr {after[0]} after ending at {before[-1]}"
    assert max(after) == pytest.approx(0.05, rel=1e-3)  # warmed up to the peak again (--schedule restart)
    assert json.loads((run.dir / "config.json").read_text())["train"]["extensions"] == [
        {"epoch": 2, "schedule": "restart"}]


def test_interrupted_run_resumed_longer_keeps_its_original_schedule(tmp_path):
    stopped = _hist(tmp_path / "r", epochs=2, max_steps=40, lr=0.05)
    assert stopped.summary["status"] == "stopped"
    dulab.resume(stopped.dir, epochs=3, progress=False)
    straight = _hist(tmp_path / "s", epochs=2, lr=0.05)
    lr = {r["step"]: r["lr"] for r in map(json.loads, (stopped.dir / "steps.jsonl").read_text().splitlines())}
    ref = {r["step"]: r["lr"] for r in map(json.loads, (straight.dir / "steps.jsonl").read_text().splitlines())}
    # steps.jsonl logs the learning rate of the next step: compare the steps taken inside the original 2 epochs
    assert all(lr[s] == ref[s] for s in ref if s < max(ref)), "the first 2 epochs follow the original schedule"


# ------------------------------------------------------------------ 3. paths from another folder

def test_run_with_relative_paths_works_from_another_folder(tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    rng = np.random.default_rng(0)
    np.savez("own.npz", x=rng.integers(0, 3, size=(200, 2)))
    assert main(["train", "histogram", "--data", "npz", "--data-option", "path=own.npz", "--epochs", "1",
                 "--out", "runs/npz", "--no-progress"]) == 0
    config = json.loads((work / "runs/npz/config.json").read_text())
    assert Path(config["data"]["options"]["path"]).is_absolute()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = str(work / "runs/npz")
    assert main(["eval", run, "--no-sample-quality"]) == 0
    assert main(["resume", run, "--epochs", "2", "--no-progress"]) == 0
    (work / "own.npz").unlink()  # sampling never needs the data
    assert main(["sample", run, "-n", "50", "--out", "s.png"]) == 0
    assert (elsewhere / "s.png").exists()
    assert dulab.load(run).sample(3).shape == (3, 2)


def test_eval_and_resume_take_data_dir_for_moved_data(tmp_path, monkeypatch, capsys):
    from PIL import Image

    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, size=(4, 4), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "histogram", "--data", "image_folder", "--data-dir", "imgs", "--data-option", "bits=1",
                 "--epochs", "1", "--out", "r", "--no-progress"]) == 0
    assert "1x4x4" in capsys.readouterr().out  # the spec used, inferred from the files, is printed
    os.rename(tmp_path / "imgs", tmp_path / "moved")
    assert main(["eval", "r", "--no-sample-quality"]) == 2
    assert main(["eval", "r", "--data-dir", "moved", "--no-sample-quality"]) == 0
    assert main(["resume", "r", "--epochs", "2", "--data-dir", "moved", "--no-progress"]) == 0
    assert main(["sample", "r", "-n", "4"]) == 0


# ------------------------------------------------------------------ 4. in-memory data

def _own(n=300):
    rng = np.random.default_rng(0)
    return dulab.datasets.from_array(rng.integers(0, 3, size=(n, 3)), num_levels=3)


def test_in_memory_run_can_be_sampled_from_the_cli(tmp_path):
    run = dulab.train("histogram", data=_own(), epochs=1, out_dir=tmp_path / "r", progress=False)
    assert main(["sample", str(run.dir), "-n", "8", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").exists()


def test_in_memory_run_without_eval_data_says_it_has_no_test_metrics(tmp_path):
    run = dulab.train("histogram", data=_own(), epochs=1, out_dir=tmp_path / "r", progress=False)
    assert "no test data" in run.summary["note"]
    assert not (run.dir / "best.safetensors").exists()
    assert "test_loss" not in run.metrics[-1]


def test_in_memory_run_with_eval_fraction_has_test_metrics_and_best(tmp_path):
    run = dulab.train("histogram", data=_own(), epochs=2, out_dir=tmp_path / "r", progress=False,
                      eval_fraction=0.2)
    assert "test_bpd" in run.metrics[-1] and (run.dir / "best.safetensors").exists()
    batch = json.loads((run.dir / "config.json").read_text())["train"]["batch_size"]
    per_epoch = -(-240 // batch)  # 240 training examples after holding out 20% of 300
    assert run.summary["step"] == 2 * per_epoch
    resumed = dulab.resume(run.dir, epochs=3, data=_own(), progress=False)  # the same held-out split again
    assert resumed.summary["step"] == 3 * per_epoch


# ------------------------------------------------------------------ 5. EMA on short runs

def test_ema_decay_warms_up():
    ema = EMA(torch.nn.Linear(2, 2), 0.999)
    decays = []
    for _ in range(10000):  # (1 + n) / (10 + n) reaches 0.999 at n = 8991
        decays.append(ema.current_decay())
        ema.num_updates += 1
    assert decays[0] == pytest.approx(0.1) and decays[10] == pytest.approx(11 / 20)
    assert decays[-1] == 0.999 and all(a <= b for a, b in zip(decays, decays[1:]))


def test_short_ema_run_is_not_ruined_by_the_initial_weights(tmp_path):
    plain = dulab.train("histogram", data="digits", epochs=2, out_dir=tmp_path / "a", progress=False, lr=0.05)
    ema = dulab.train("histogram", data="digits", epochs=2, out_dir=tmp_path / "b", progress=False, lr=0.05,
                      ema_decay=0.999)
    # 46 updates: a fixed 0.999 average would still be ~95% initial weights (bpd ~4); the warmed-up one is close.
    assert ema.final["test_bpd"] < plain.final["test_bpd"] + 0.1
    assert ema.final["weights"] in ("ema", "last") and "test_loss_ema" in ema.final and "test_loss_last" in ema.final
    assert ema.summary["eval_weights"] == ema.final["weights"]


def test_eval_names_the_weights_it_used(tmp_path, capsys):
    _hist(tmp_path / "r", epochs=1, ema_decay=0.9)
    assert main(["eval", str(tmp_path / "r"), "--no-sample-quality"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"weights\s+(ema|last) \(auto\)", out)
    assert json.loads((tmp_path / "r" / "eval.json").read_text())["weights"].endswith("(auto)")


# ------------------------------------------------------------------ 6. the README quickstart chains

def test_readme_quickstart_commands_use_their_own_run_directories():
    text = README.read_text()
    block = text.split("## Quickstart", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip().startswith(".venv/bin/dulab")]
    outs = set()
    for ln in lines:
        words = ln.split()
        if words[1] == "train":
            assert "--out" in words, f"{ln!r} has no --out: it would collide with `make demo`'s run"
            out = words[words.index("--out") + 1]
            assert out != "runs/pixel_cnn-digits", "the demo's run directory"
            outs.add(out)
        elif words[1] in ("sample", "eval", "resume"):
            assert words[2] in outs, f"{ln!r} acts on {words[2]}, which no earlier quickstart command trained"


# ------------------------------------------------------------------ 7. messages

def test_glow_size_message_names_sizes_that_work():
    spec = dulab.DataSpec((1, 12, 12), "continuous")
    with pytest.raises(ValueError, match=r"num_squeezes=3 needs height and width divisible by 8.*num_squeezes=2 fits"):
        dulab.build_model("glow", spec, num_squeezes=3)
    with pytest.raises(ValueError, match=r"no num_squeezes fits 15x15.*size=16"):
        dulab.build_model("glow", dulab.DataSpec((1, 15, 15), "continuous"), num_squeezes=1)


# ------------------------------------------------------------------ 9. exit codes and summaries

def test_ctrl_c_exits_130_and_resume_continues(tmp_path, monkeypatch, capsys):
    from dulab.training import tasks

    original = tasks.MaximumLikelihoodTask.training_step

    def step_then_interrupt(self, batch, step):
        out = original(self, batch, step)
        if step == 3:
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(tasks.MaximumLikelihoodTask, "training_step", step_then_interrupt)
    assert main(["train", "histogram", "--data", "discrete1d", "--epochs", "1", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 130
    assert "dulab resume" in capsys.readouterr().out
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(tasks.MaximumLikelihoodTask, "training_step", original)
    assert main(["resume", str(tmp_path / "r"), "--no-progress"]) == 0


def test_nan_stop_exits_1_and_writes_a_diverged_summary(tmp_path, monkeypatch, capsys):
    from dulab.training import tasks

    original = tasks.MaximumLikelihoodTask.training_step

    def nan_after_5(self, batch, step):
        out = original(self, batch, step)
        if step >= 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(tasks.MaximumLikelihoodTask, "training_step", nan_after_5)
    assert main(["train", "histogram", "--data", "discrete1d", "--epochs", "2", "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["step"] == 10  # detected at the first log after step 5
    assert load_state(tmp_path / "r" / "state.pt")["step"] == 0  # the last good checkpoint is kept


# ------------------------------------------------------------------ 10. curves label their unit

def test_curves_axis_names_its_unit(tmp_path, monkeypatch):
    from dulab.viz import plots

    seen = {}
    real_save = plots._save

    def capture(fig, path):
        seen["ylabel"] = fig.axes[0].get_ylabel()
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", capture)
    plots.plot_curves(tmp_path / "c.png", [{"step": 1, "loss": 1.0}],
                      [{"step": 1, "test_loss": 1.0, "test_nll": 2.0, "test_bpd": 1.4}])
    assert "nats per dimension" in seen["ylabel"]


# ------------------------------------------------------------------ 11. torchrun

def test_torchrun_launch_writes_one_run_directory(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "dulab", "train", "histogram", "--data", "discrete1d", "--epochs", "1", "--device", "cpu",
           "--devices", "2", "--strategy", "ddp", "--out", "runs/ddp", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((tmp_path / "runs/ddp/summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "completed"
    assert len(set(summary["rank_checksums"])) == 1, "the ranks hold the same weights"
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["ddp"]
    assert proc.stdout.count("done:") == 1
