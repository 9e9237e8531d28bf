"""The training engine: run directory contents, exact resume, determinism, NaN handling, Ctrl-C, EMA, best."""

import json

import numpy as np
import pytest
import torch

import dulab
from dulab.errors import NonFiniteLossError
from dulab.registry import MODELS, ModelEntry
from dulab.training.checkpoint import load_state, load_weights


@pytest.fixture
def toy_registry(monkeypatch):
    monkeypatch.setitem(MODELS, "noisy", ModelEntry("toy_models:NoisyIndependent", "test"))
    monkeypatch.setitem(MODELS, "cond_histogram", ModelEntry("toy_models:ConditionalHistogram", "test"))


def _data(n=300, seed=0, d=3, k=4):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, k, size=(n, d))
    x[:, 0] = rng.choice(k, size=n, p=[0.7, 0.1, 0.1, 0.1])
    return dulab.datasets.from_array(x, y=rng.integers(0, 3, size=n), num_levels=k)


def _train(name, out, **kw):
    ds, ev = _data(), _data(60, seed=1)
    kw.setdefault("progress", False)
    kw.setdefault("batch_size", 32)
    return dulab.train(name, data=ds, eval_data=ev, out_dir=out, sample_fn=None, **kw)


def test_run_directory_holds_every_file(tmp_path):
    run = dulab.train("histogram", data="discrete1d", epochs=2, out_dir=tmp_path / "r", progress=False)
    names = {p.name for p in run.dir.iterdir()}
    assert {"config.json", "model.safetensors", "state.pt", "metrics.jsonl", "samples_final.png", "curves.png",
            "summary.json", "best.safetensors", "steps.jsonl"} <= names
    assert not [n for n in names if n.endswith(".tmp")], "temporary files left behind"
    records = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]  # test loss at init, then per epoch
    assert records[0]["train_loss"] is None and records[-1]["train_loss"] > 0
    assert {"test_loss", "test_nll", "test_bpd", "test_kl_to_truth"} <= set(records[-1])
    # bits/dim is the NLL in nats over D ln 2 (D = 1 here)
    assert records[-1]["test_bpd"] == pytest.approx(records[-1]["test_nll"] / np.log(2))
    assert run.metrics == records


def test_load_rebuilds_the_trained_model(tmp_path):
    run = dulab.train("logistic_mixture", data="discrete1d", epochs=1, out_dir=tmp_path / "r", progress=False)
    model = dulab.load(run.dir)
    x = dulab.load_dataset("discrete1d", "test").x[:50]
    assert torch.equal(model.log_prob(x), run.model.log_prob(x))
    state = load_state(run.dir / "state.pt")  # weights_only=True inside
    assert state["step"] == run.summary["step"]


@pytest.mark.parametrize("stop_at", [5, 10])  # mid-epoch and exactly at an epoch boundary (300/32 -> 10 steps)
def test_resume_after_k_steps_equals_straight_run(tmp_path, toy_registry, stop_at):
    straight = _train("noisy", tmp_path / "a", epochs=2, seed=3, ema_decay=0.9)
    stopped = _train("noisy", tmp_path / "b", epochs=2, seed=3, ema_decay=0.9, max_steps=stop_at)
    assert stopped.summary["status"] == "stopped" and stopped.summary["step"] == stop_at
    resumed = dulab.resume(tmp_path / "b", data=_data(), eval_data=_data(60, seed=1), progress=False, max_steps=None,
                           sample_fn=None)
    assert resumed.summary["step"] == straight.summary["step"]
    for f in ("model.safetensors", "ema.safetensors"):
        a, b = load_weights(tmp_path / "a" / f), load_weights(tmp_path / "b" / f)
        for k in a:
            assert torch.equal(a[k], b[k]), f"{f}:{k} differs after resume"
    ma = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [m["test_loss"] for m in ma] == [m["test_loss"] for m in mb]
    assert ma[0]["train_loss"] is None and mb[0]["train_loss"] is None
    assert [m["train_loss"] for m in ma[1:]] == pytest.approx([m["train_loss"] for m in mb[1:]], rel=1e-12)


def test_resume_to_more_epochs_continues(tmp_path):
    _train("histogram", tmp_path / "r", epochs=1)
    run = dulab.resume(tmp_path / "r", epochs=3, data=_data(), eval_data=_data(60, seed=1), progress=False,
                       sample_fn=None)
    assert [m["epoch"] for m in run.metrics] == [0, 1, 2, 3]


def test_same_seed_same_run_different_seed_differs(tmp_path, toy_registry):
    a = _train("noisy", tmp_path / "a", epochs=1, seed=5)
    b = _train("noisy", tmp_path / "b", epochs=1, seed=5)
    c = _train("noisy", tmp_path / "c", epochs=1, seed=6)
    wa, wb, wc = (load_weights(p / "model.safetensors") for p in (a.dir, b.dir, c.dir))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, toy_registry):
    with pytest.raises(NonFiniteLossError, match="NaN or infinite"):
        _train("noisy", tmp_path / "r", epochs=3, nan_after=15, log_every=1)
    state = load_state(tmp_path / "r" / "state.pt")
    assert state["step"] == 10  # the end of epoch 1; the NaN came during epoch 2
    weights = load_weights(tmp_path / "r" / "model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_ctrl_c_saves_and_resume_finishes(tmp_path, toy_registry, monkeypatch):
    import signal

    from dulab.training import tasks

    original = tasks.MaximumLikelihoodTask.training_step

    def step_then_interrupt(self, batch, step):
        out = original(self, batch, step)
        if step == 6:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C delivers
        return out

    monkeypatch.setattr(tasks.MaximumLikelihoodTask, "training_step", step_then_interrupt)
    run = _train("noisy", tmp_path / "r", epochs=2, seed=1)
    assert run.summary["status"] == "interrupted" and run.summary["step"] == 7
    assert load_state(tmp_path / "r" / "state.pt")["step"] == 7
    monkeypatch.setattr(tasks.MaximumLikelihoodTask, "training_step", original)
    resumed = dulab.resume(tmp_path / "r", data=_data(), eval_data=_data(60, seed=1), progress=False, sample_fn=None)
    assert resumed.summary["status"] == "completed" and resumed.summary["step"] == 20
    _train("noisy", tmp_path / "s", epochs=2, seed=1)
    a, b = load_weights(tmp_path / "r" / "model.safetensors"), load_weights(tmp_path / "s" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_best_checkpoint_has_lowest_test_loss(tmp_path):
    run = _train("histogram", tmp_path / "r", epochs=3, lr=0.2)
    best = dulab.load(run.dir, which="best")
    ev = _data(60, seed=1)
    best_loss = -best.log_prob(ev.x).mean().item() / 3
    assert best_loss == pytest.approx(min(m["test_loss"] for m in run.metrics), rel=1e-5)


def test_conditional_models_receive_labels(tmp_path, toy_registry):
    run = _train("cond_histogram", tmp_path / "r", epochs=1)
    assert run.summary["status"] == "completed"


def test_refuses_to_overwrite_a_run(tmp_path):
    _train("histogram", tmp_path / "r", epochs=1)
    with pytest.raises(ValueError, match="already holds files"):
        _train("histogram", tmp_path / "r", epochs=1)


def test_unknown_training_option_and_hparam_are_value_errors():
    with pytest.raises(ValueError, match="valid keys"):
        dulab.train("histogram", data="discrete1d", epochs=1, nonsense=3)
    with pytest.raises(ValueError, match="lr must be > 0"):
        dulab.train("histogram", data="discrete1d", epochs=1, lr=-1)


def test_warmup_cosine_schedule_shape():
    from dulab.training.tasks import warmup_cosine

    lrs = [warmup_cosine(s, 100, 10, 0.1, "cosine") for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # non-increasing after warm-up


def test_resume_continues_a_run_stopped_by_max_steps(tmp_path):
    stopped = _train("histogram", tmp_path / "r", epochs=2, max_steps=3)
    assert stopped.summary["status"] == "stopped"
    run = dulab.resume(tmp_path / "r", data=_data(), eval_data=_data(60, seed=1), progress=False, sample_fn=None)
    assert run.summary["status"] == "completed" and run.summary["step"] == 20
    assert run.summary["epochs_completed"] == 2


# ------------------------------------------------------------------ the task's evaluation hook and the batch structure

class _ScoredTask:
    """Builds a likelihood task whose evaluation returns a scripted score per call (higher is better)."""

    @staticmethod
    def make(scores, seen):
        from dulab.training.tasks import MaximumLikelihoodTask

        class Scored(MaximumLikelihoodTask):
            best_metric, best_mode = "score", "max"

            def evaluate(self, dataset):
                value = scores[min(len(seen), len(scores) - 1)]
                seen.append(value)
                return {"score": value}

            def training_step(self, batch, step):
                seen_batches.append(batch)
                return super().training_step(batch, step)

        seen_batches = []
        Scored.seen_batches = seen_batches
        return Scored


def test_best_checkpoint_follows_the_tasks_metric_and_direction(tmp_path, monkeypatch):
    from dulab.models.autoregressive.histogram import Histogram
    from dulab.training.checkpoint import load_weights

    scores, seen = [0.1, 0.9, 0.5, 0.2], []
    task = _ScoredTask.make(scores, seen)
    monkeypatch.setattr(Histogram, "task", task)
    snapshots = {}

    original = task.evaluate

    def evaluate_and_snapshot(self, dataset):
        out = original(self, dataset)
        snapshots[len(seen)] = {k: v.clone() for k, v in self.model.state_dict().items()}
        return out

    monkeypatch.setattr(task, "evaluate", evaluate_and_snapshot)
    run = _train("histogram", tmp_path / "r", epochs=3, lr=0.1)
    assert [m["test_score"] for m in run.metrics] == scores  # step 0 and three epochs
    best = load_weights(run.dir / "best.safetensors")
    assert all(torch.equal(best[k], snapshots[2][k]) for k in best), "best = the weights that scored 0.9 (max)"
    assert run.summary["best"] == 0.9 and run.summary["best_mode"] == "max"


def test_dataset_extras_reach_the_task_in_every_batch(tmp_path, monkeypatch):
    from dulab.models.autoregressive.histogram import Histogram

    task = _ScoredTask.make([0.0], [])
    monkeypatch.setattr(Histogram, "task", task)
    ds = _data()
    ds.extras["target"] = torch.arange(len(ds)) * 10  # a per-example extra (e.g. a paired image)
    ds.y[:100] = -1  # unlabelled examples
    dulab.train("histogram", data=ds, eval_data=_data(60, seed=1), epochs=1, out_dir=tmp_path / "r",
                progress=False, batch_size=32, sample_fn=None)
    batches = task.seen_batches
    assert len(batches) == 10 and all("target" in b for b in batches)
    index = torch.cat([b["target"] // 10 for b in batches])
    assert sorted(index.tolist()) == list(range(len(ds))), "every example once per epoch, extras aligned"
    for b in batches:
        assert torch.equal(b.x, ds.x[b["target"] // 10]) and torch.equal(b.labelled, ds.y[b["target"] // 10] >= 0)


def test_csv_logger_writes_metrics(tmp_path):
    run = _train("histogram", tmp_path / "r", epochs=1, logger="csv")
    files = list((run.dir / "logs").rglob("metrics.csv"))
    assert files and "test_loss" in files[0].read_text().splitlines()[0]
