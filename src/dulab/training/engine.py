"""The training loop: Lightning Fabric for devices, precision and DDP; everything else explicit and resumable.

One ``Engine.fit()`` call trains a model for ``config.train.epochs`` epochs (or until ``max_steps``), letting the
model's ``Task`` evaluate it on the test split at the start and after every ``eval_every`` epochs, and writes
the run directory as it goes:

* ``model.safetensors`` + ``state.pt`` (the last checkpoint: optimisers, schedulers, RNG, step, data position),
  ``best.safetensors`` (best by the task's metric and direction), ``ema.safetensors`` when EMA is on;
* ``metrics.jsonl`` (one line per evaluation), ``steps.jsonl`` (train loss every ``log_every`` steps);
* ``samples_*.png``, ``curves.png``, ``summary.json``.

``fit`` reads as its steps: ``_setup`` (Fabric, task, optimisers), ``_restore`` (resume), ``_run_epoch`` (the
batches of one epoch), ``_evaluate`` and ``_checkpoint``, then ``_finish`` (samples, summary). The engine knows
nothing of any one family: what a step does and what is measured belong to the task.

Data held in memory are batched by indexing tensors (``x``, ``y`` and the dataset's named extras) with a
per-epoch permutation that depends on (seed, epoch) only, so resuming from step k replays exactly what an
uninterrupted run would have done. Ctrl-C sets a flag; the loop saves at the next step boundary and exits. A
NaN/inf loss stops the run, keeping the last good checkpoint and writing ``summary.json`` with status
``diverged``.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from dulab.config import RunConfig
from dulab.errors import NonFiniteLossError, UserError
from dulab.training import checkpoint as ckpt
from dulab.training.batch import Batch
from dulab.training.ema import EMA
from dulab.training.seeding import epoch_permutation, isolated_rng, rng_state, set_rng_state
from dulab.training.tasks import get_task_class, is_better, loss_means, warmup_cosine

__all__ = ["Engine", "evaluate", "make_fabric", "lr_schedule", "weights_checksum"]

# The old name of the default evaluation (means of model.loss), kept for callers of dulab.training.engine.
evaluate = loss_means


def make_fabric(train_cfg, task_class=None):
    """A (not yet launched) ``lightning.fabric.Fabric`` for the requested device, device count, strategy and
    precision. Under DDP, a task whose steps leave some parameters without gradients (``task_class.
    ddp_find_unused_parameters``: an adversarial task's D step never touches G) gets DDP's unused-parameter search."""
    from lightning_fabric import Fabric

    accelerator = train_cfg.device
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available (try --device cpu)")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    strategy = train_cfg.strategy
    if (train_cfg.devices > 1 or train_cfg.num_nodes > 1) and strategy == "auto":
        strategy = "ddp"
    precision = "32-true" if train_cfg.precision == "32" else train_cfg.precision
    if strategy == "ddp" and getattr(task_class, "ddp_find_unused_parameters", False):
        from lightning_fabric.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=True)
    return Fabric(accelerator=accelerator, devices=train_cfg.devices, num_nodes=train_cfg.num_nodes,
                  strategy=strategy, precision=precision)


def lr_schedule(cfg, steps_per_epoch: int):
    """The learning-rate multiplier ``step -> float`` of a ``TrainConfig``, extensions included.

    The base schedule (warm-up, then cosine or constant) spans its epochs; each extension
    (``dulab resume --epochs`` past a finished schedule) starts where the previous part ended and never jumps:
    ``final`` holds the multiplier reached, ``restart`` warms up linearly from it back to 1 over
    ``max(warmup_steps, 5% of the extension)`` steps (at most a quarter of the extension), then decays by cosine to
    ``min_lr_ratio`` over the rest.
    """
    exts = sorted(cfg.extensions, key=lambda e: e["epoch"])
    base_end = (exts[0]["epoch"] if exts else (cfg.schedule_epochs or cfg.epochs)) * steps_per_epoch

    def base(step):
        return warmup_cosine(step, base_end, cfg.warmup_steps, cfg.min_lr_ratio, cfg.schedule)

    parts = [(0, base)]
    for i, ext in enumerate(exts):
        start = ext["epoch"] * steps_per_epoch
        end = (exts[i + 1]["epoch"] if i + 1 < len(exts) else max(cfg.epochs, cfg.schedule_epochs or 0))
        end = max(start + 1, end * steps_per_epoch)
        prev = parts[-1][1]
        reached = prev(start - 1) if start > 0 else 1.0  # the multiplier of the last step taken
        if ext["schedule"] == "final":
            def part(step, _m=reached):
                return _m
        else:
            length = end - start  # warm up over the run's warm-up steps (at least 5%), at most a quarter of it
            warm = max(1, min(max(cfg.warmup_steps, math.ceil(0.05 * length)), length // 4))

            def part(step, _s=start, _e=end, _w=warm, _m=reached):
                t = step - _s
                if t < _w:
                    return _m + (1.0 - _m) * (t + 1) / _w
                progress = min(1.0, (t - _w) / max(1, _e - _s - _w))
                return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        parts.append((start, part))

    def schedule(step: int) -> float:
        for start, fn in reversed(parts):
            if step >= start:
                return fn(step)
        return base(step)

    return schedule


def weights_checksum(module) -> float:
    """A float64 fingerprint of every parameter (position-weighted sum), equal across ranks kept in sync by DDP."""
    total = torch.zeros((), dtype=torch.float64)
    for p in module.parameters():
        flat = p.detach().double().reshape(-1).cpu()
        total += (flat * torch.linspace(1.0, 2.0, flat.numel(), dtype=torch.float64)).sum()
    return float(total)


class _Interrupt:
    """First Ctrl-C asks the loop to save and stop; a second one stops at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class _Stop(Exception):
    """Internal: leave the loop after saving (Ctrl-C or max_steps)."""


class Engine:
    """Trains ``model`` under ``config`` into ``run_dir``.

    Args:
        config: the run configuration (its ``train`` part drives the loop).
        model: the model (already built and seeded); its weights are overwritten on resume.
        train_data, eval_data: in-memory datasets (``eval_data`` may be ``None``: no test metrics, no best).
        run_dir: the run directory (created by the caller).
        resume: continue from the checkpoint in ``run_dir``.
        sample_fn: ``(model, path, generator) -> path | None``, writes a sample picture; ``None`` disables.
        curves_fn: ``(run_dir) -> None``, redraws ``curves.png``.
        fabric: an already launched ``Fabric`` (``None``: made and launched here).
    """

    def __init__(self, config: RunConfig, model, train_data, eval_data, run_dir, *, resume: bool = False,
                 sample_fn=None, curves_fn=None, fabric=None):
        self.config, self.model = config, model
        self.train_data, self.eval_data = train_data, eval_data
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.sample_fn, self.curves_fn = sample_fn, curves_fn
        self.fabric = fabric
        self.summary: dict = {}

    # ================================================================== the steps of fit()
    def fit(self) -> dict:
        """Train to ``config.train.epochs`` epochs (or ``max_steps``); returns the summary (also ``summary.json``)."""
        self._setup()
        self._restore()
        self.status = "completed"
        if self.state is None:
            self.last_record = self._evaluate(0, None)
            self._checkpoint(epoch=0, batch=0)
        self._open_progress()
        with _Interrupt() as self.interrupt:
            try:
                for epoch in range(self.start_epoch, self.cfg.epochs):
                    self.epoch = epoch
                    self._run_epoch(epoch)
                    self._end_epoch(epoch)
            except _Stop:
                pass
            except NonFiniteLossError:
                self.status = "diverged"
                self._write_summary(None)
                raise
            finally:
                if self.progress is not None:
                    self.progress.close()
                self._close_loggers()
        return self._finish()

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        cfg = self.cfg = self.config.train
        if self.fabric is None:
            self.fabric = make_fabric(cfg, get_task_class(self.model))
            self.fabric.launch()
        fabric = self.fabric
        self.rank, self.world = fabric.global_rank, fabric.world_size
        self.is_zero = fabric.is_global_zero
        self.device = fabric.device
        self.ema = EMA(self.model, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema_decay > 0 else None

        n = self.num_examples = len(self.train_data)
        self.per_rank = n // self.world
        if self.per_rank == 0:
            raise UserError(f"the training set has {n} examples, fewer than the {self.world} processes")
        self.steps_per_epoch = math.ceil(self.per_rank / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch

        self.task = get_task_class(self.model)(self.model, cfg, seed=self.config.seed)
        optimizers, schedulers = self.task.configure_optimizers(lr_schedule(cfg, self.steps_per_epoch))
        self.state = self._load() if self.resume else None  # weights first, before Fabric wraps the module
        torch.manual_seed(self.config.seed + self.rank)  # fresh runs: a per-rank stream (resume restores it below)
        wrapped = torch.compile(self.model) if cfg.compile else self.model
        module, *optimizers = fabric.setup(wrapped, *optimizers)
        if hasattr(module, "mark_forward_method"):
            module.mark_forward_method("loss")
        self.task.setup(fabric, module, optimizers, schedulers)

        # Data already in memory: move it once; batches are then tensor indexing, no per-item collation.
        self.tensors = Batch.of(self.train_data).to(self.device)
        self.step, self.start_epoch, self.start_batch, self.epoch = 0, 0, 0, 0
        self.best, self.elapsed_before = None, 0.0
        self.running = {"sum": 0.0, "count": 0}
        self.last_record = None
        self.eval_weights = None
        self.loggers = self._make_loggers()
        self.t0 = time.time()

    def _make_loggers(self) -> list:
        if self.cfg.logger == "none" or not self.is_zero:
            return []
        try:
            from lightning_fabric.loggers import CSVLogger, TensorBoardLogger

            cls = CSVLogger if self.cfg.logger == "csv" else TensorBoardLogger
            return [cls(root_dir=str(self.run_dir / "logs"), name="", version="")]
        except (ImportError, ModuleNotFoundError) as e:
            raise UserError(f"--logger {self.cfg.logger} needs a package that is missing ({e});"
                            " `pip install tensorboard` for tensorboard, or use --logger csv") from None

    def _log(self, metrics: dict, step: int) -> None:
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for logger in self.loggers:
            logger.log_metrics(numeric, step=step)

    def _close_loggers(self) -> None:
        for logger in self.loggers:
            logger.finalize("success" if self.status == "completed" else self.status)

    def _open_progress(self) -> None:
        self.progress = None
        self.interactive = sys.stderr.isatty()
        if self.is_zero and self.cfg.progress:
            from tqdm.auto import tqdm

            # In a log file (SLURM, CI, a pipe) redraw rarely instead of flooding it with carriage returns.
            interactive = self.interactive
            self.progress = tqdm(total=self.cfg.max_steps or self.total_steps, initial=self.step, unit="step",
                                 dynamic_ncols=True, desc=self.config.model.name,
                                 mininterval=0.1 if interactive else 30.0)

    # ------------------------------------------------------------------ resume
    def _load(self) -> dict:
        weights = ckpt.load_weights(self.run_dir / "model.safetensors")
        self.model.load_state_dict(weights)
        state = ckpt.load_state(self.run_dir / "state.pt")
        if self.ema is not None and (self.run_dir / "ema.safetensors").exists():
            self.ema.load_state_dict(ckpt.load_weights(self.run_dir / "ema.safetensors"),
                                     num_updates=state.get("ema_updates", state["step"]))
        return state

    def _restore(self) -> None:
        state = self.state
        if state is None:
            return
        task = self.task
        for opt, s in zip(task.optimizers, state["optimizers"]):
            opt.load_state_dict(s)
        for sch, s in zip(task.schedulers, state["schedulers"]):
            sch.load_state_dict(s)
        task.load_state_dict(state.get("task", {}))
        self.step, self.start_epoch, self.start_batch = state["step"], state["epoch"], state["batch"]
        best = state.get("best")
        self.best = None if best is None or (isinstance(best, float) and math.isinf(best)) else best
        self.elapsed_before = state.get("elapsed", 0.0)
        self.running = {"sum": state.get("epoch_loss_sum", 0.0), "count": state.get("epoch_loss_count", 0)}
        self.eval_weights = state.get("eval_weights")
        set_rng_state(state["rng"])
        if self.world > 1:  # each rank continues its own stream, offset from rank 0's saved one
            torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,))) + self.rank)
        if self.is_zero:
            for name in ("metrics.jsonl", "steps.jsonl"):
                if (self.run_dir / name).exists():
                    ckpt.truncate_jsonl(self.run_dir / name, self.step)
        records = ckpt.read_jsonl(self.run_dir / "metrics.jsonl")
        self.last_record = records[-1] if records else None

    # ------------------------------------------------------------------ one epoch
    def _run_epoch(self, epoch: int) -> None:
        cfg, task, device = self.cfg, self.task, self.device
        perm = epoch_permutation(self.config.seed, epoch, self.num_examples)
        perm = perm[self.rank::self.world][:self.per_rank].to(device)
        b0 = self.start_batch if epoch == self.start_epoch else 0
        if b0 == 0:
            self.running = {"sum": 0.0, "count": 0}
        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        pending = torch.zeros((), dtype=torch.float64, device=device)
        pending_n = 0
        for b in range(b0, self.steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            out = task.training_step(self.tensors.index(idx), self.step)
            self.step += 1
            if self.ema is not None:
                self.ema.update()
            loss = out["loss"]
            nonfinite |= ~torch.isfinite(loss)
            pending += loss.double()
            pending_n += 1
            stop_now = cfg.max_steps is not None and self.step >= cfg.max_steps
            if self.step % cfg.log_every == 0 or b == self.steps_per_epoch - 1 or stop_now:
                if bool(nonfinite):  # the only synchronisation: every log_every steps
                    raise NonFiniteLossError(
                        f"the loss became NaN or infinite near step {self.step} (epoch {epoch + 1}); the last"
                        f" good checkpoint in {self.run_dir} is kept. Try a lower --lr or --set grad_clip.")
                mean = float(pending) / pending_n
                self.running["sum"] += mean * pending_n
                self.running["count"] += pending_n
                pending.zero_()
                pending_n = 0
                self._log_step(epoch, mean, out)
            if self.progress is not None:
                self.progress.update(1)
            if self.interrupt.requested or stop_now:
                if pending_n:
                    self.running["sum"] += float(pending)
                    self.running["count"] += pending_n
                self._checkpoint(epoch=epoch, batch=b + 1)
                self.status = "interrupted" if self.interrupt.requested else "stopped"
                raise _Stop

    def _log_step(self, epoch: int, mean: float, out: dict) -> None:
        lr = self.task.optimizers[0].param_groups[0]["lr"]
        record = {"step": self.step, "epoch": epoch, "loss": mean, "lr": lr}
        if self.is_zero:
            ckpt.append_jsonl(self.run_dir / "steps.jsonl", record)
            self._log({"train_loss": mean, "lr": lr}, self.step)
        if self.progress is not None:
            # refresh=False off a terminal: the bar's own (30 s) interval decides when a log line is written
            self.progress.set_postfix(epoch=f"{epoch + 1}/{self.cfg.epochs}", loss=f"{mean:.4f}",
                                      refresh=self.interactive)
        if self.world > 1:
            flag = torch.tensor(float(self.interrupt.requested), device=self.device)
            self.interrupt.requested = bool(self.fabric.all_reduce(flag, reduce_op="sum") > 0)

    def _end_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        train_loss = self.running["sum"] / max(1, self.running["count"])
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            self.last_record = self._evaluate(epoch + 1, train_loss)
        if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0 and epoch + 1 < cfg.epochs:
            self._write_samples(f"epoch{epoch + 1:03d}")
        self._checkpoint(epoch=epoch + 1, batch=0)
        if self.is_zero and self.curves_fn is not None:
            self.curves_fn(self.run_dir)

    # ------------------------------------------------------------------ evaluation
    def _evaluate(self, epoch_done: int, train_loss) -> dict:
        """Let the task score the weights; with EMA, both the average and the raw weights, keeping the better.

        Writes one ``metrics.jsonl`` record and, when the chosen weights beat the best so far by the task's
        metric and direction, ``best.safetensors``.
        """
        task = self.task
        metric, mode = task.best_metric, task.best_mode
        record = {"epoch": epoch_done, "step": self.step, "train_loss": train_loss}
        if self.eval_data is not None:
            scores = {"last": task.evaluate(self.eval_data)}
            if self.ema is not None:
                with self.ema.swapped_in():
                    scores["ema"] = task.evaluate(self.eval_data)
            # The average starts as the initial weights: prefer it only when it scores better.
            chosen = "last"
            if "ema" in scores and is_better(scores["ema"].get(metric), scores["last"].get(metric), mode):
                chosen = "ema"
            result = scores[chosen]
            record.update({f"test_{k}": v for k, v in result.items()})
            if self.ema is not None:
                record["weights"] = chosen
                for name, s in scores.items():
                    record[f"test_{metric}_{name}"] = s.get(metric)
            self.eval_weights = chosen
            value = result.get(metric)
            if self.is_zero and is_better(value, self.best, mode):
                self.best = value
                weights = self.ema.state_dict() if chosen == "ema" else self.model.state_dict()
                ckpt.save_weights(self.run_dir / "best.safetensors", weights)
        record["time"] = round(self._elapsed(), 3)
        if self.is_zero:
            ckpt.append_jsonl(self.run_dir / "metrics.jsonl", record)
            self._log({k: v for k, v in record.items() if k not in ("epoch", "step")}, self.step)
        return record

    # ------------------------------------------------------------------ checkpoints
    def _elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.t0

    def _checkpoint(self, *, epoch: int, batch: int) -> None:
        if not self.is_zero:
            return
        ckpt.save_weights(self.run_dir / "model.safetensors", self.model.state_dict())
        if self.ema is not None:
            ckpt.save_weights(self.run_dir / "ema.safetensors", self.ema.state_dict())
        state = {
            "step": self.step, "epoch": epoch, "batch": batch,
            "optimizers": [o.state_dict() for o in self.task.optimizers],
            "schedulers": [s.state_dict() for s in self.task.schedulers],
            "rng": rng_state(), "task": self.task.state_dict(),
            "best": self.best, "elapsed": self._elapsed(), "eval_weights": self.eval_weights,
            "epoch_loss_sum": self.running["sum"], "epoch_loss_count": self.running["count"],
        }
        if self.ema is not None:
            state["ema_updates"] = self.ema.num_updates
        ckpt.save_state(self.run_dir / "state.pt", state)

    # ------------------------------------------------------------------ the end
    def _write_samples(self, tag: str):
        if not self.is_zero or self.sample_fn is None:
            return None
        seed, device = self.config.seed, self.device
        g = torch.Generator(device=device).manual_seed(seed)
        with isolated_rng(seed, device):
            if self.ema is not None and self.eval_weights == "ema":
                with self.ema.swapped_in():
                    return self.sample_fn(self.model, self.run_dir / f"samples_{tag}.png", g)
            return self.sample_fn(self.model, self.run_dir / f"samples_{tag}.png", g)

    def _finish(self) -> dict:
        samples_path = None
        if self.status == "completed":
            samples_path = self._write_samples("final")
            if self.is_zero and self.curves_fn is not None:
                self.curves_fn(self.run_dir)
        # One checksum per rank, gathered: DDP keeps them equal; a difference means the ranks drifted apart.
        local = torch.tensor([weights_checksum(self.model)], dtype=torch.float64, device=self.device)
        gathered = self.fabric.all_gather(local) if self.world > 1 else local[None]
        self._write_summary(samples_path, [float(v) for v in gathered.reshape(-1).cpu()])
        self.fabric.barrier()
        return self.summary

    def _write_summary(self, samples_path, rank_checksums=None) -> None:
        cfg = self.cfg
        completed = self.status == "completed"
        done = self.step / self.steps_per_epoch
        self.summary = {
            "status": self.status, "step": self.step,
            "epochs_completed": cfg.epochs if completed else int(done),
            "epochs_done": round(done, 4), "epochs": cfg.epochs, "seconds": round(self._elapsed(), 2),
            "num_parameters": self.model.num_parameters, "final": self.last_record,
            "best_metric": self.task.best_metric, "best_mode": self.task.best_mode, "best": self.best,
            "eval_weights": self.eval_weights,
            "samples": str(samples_path) if samples_path else None, "device": str(self.device),
            "world_size": self.world,
        }
        if self.task.best_metric == "loss":
            self.summary["best_test_loss"] = self.best
        if self.eval_data is None:
            self.summary["note"] = ("no test data: no test metrics and no best.safetensors (pass eval_data= or"
                                    " eval_fraction= to dulab.train)")
        if rank_checksums is not None:
            self.summary["rank_checksums"] = rank_checksums
        if self.is_zero:
            ckpt.write_json(self.run_dir / "summary.json", self.summary)
