"""The training loop: Lightning Fabric for devices, precision and DDP; everything else explicit and resumable.

One ``Engine.fit()`` call trains a model for ``config.train.epochs`` epochs (or until ``max_steps``), evaluating
on the test split at the start and after every ``eval_every`` epochs, writing the run directory as it goes:

* ``model.safetensors`` + ``state.pt`` (the last checkpoint: optimisers, schedulers, RNG, step, data position),
  ``best.safetensors`` (lowest test loss), ``ema.safetensors`` when EMA is on;
* ``metrics.jsonl`` (one line per evaluation), ``steps.jsonl`` (train loss every ``log_every`` steps);
* ``samples_*.png``, ``curves.png``, ``summary.json``.

Data held in memory are batched by indexing a tensor with a per-epoch permutation that depends on (seed, epoch)
only, so resuming from step k replays exactly what an uninterrupted run would have done. Ctrl-C sets a flag; the
loop saves at the next step boundary and exits. A NaN/inf loss stops the run, keeping the last good checkpoint.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path

import torch

from dulab.config import RunConfig
from dulab.errors import NonFiniteLossError, UserError
from dulab.training import checkpoint as ckpt
from dulab.training.ema import EMA
from dulab.training.seeding import epoch_permutation, isolated_rng, rng_state, set_rng_state
from dulab.training.tasks import get_task_class

__all__ = ["Engine", "evaluate", "make_fabric"]


def make_fabric(train_cfg):
    """A ``lightning.fabric.Fabric`` for the requested device, device count, strategy and precision."""
    from lightning_fabric import Fabric

    accelerator = train_cfg.device
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available (try --device cpu)")
    if accelerator == "auto":
        accelerator = "cuda" if torch.cuda.is_available() else "cpu"
    strategy = train_cfg.strategy
    if train_cfg.devices > 1 and strategy == "auto":
        strategy = "ddp"
    precision = "32-true" if train_cfg.precision == "32" else train_cfg.precision
    return Fabric(accelerator=accelerator, devices=train_cfg.devices, strategy=strategy, precision=precision)


@torch.inference_mode()
def evaluate(model, dataset, batch_size: int = 256, *, fabric=None, seed: int = 0) -> dict:
    """Mean of each entry of ``model.loss`` over a dataset (sharded over processes under DDP).

    Returns ``{"loss": .., "nll": .., ...}`` plus ``"bpd"`` for discrete data with an ``nll`` and ``"kl"``
    (test NLL minus the true entropy estimate) when the dataset has ``true_log_prob``.
    """
    device = next(iter(model.parameters()), torch.empty(0)).device
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = torch.zeros((), dtype=torch.float64, device=device)
    n = len(dataset)
    index = torch.arange(rank, n, world)
    ys = dataset.labels_or_default()
    conditional = getattr(model, "is_conditional", False)
    with isolated_rng(seed, device):
        for start in range(0, len(index), batch_size):
            idx = index[start:start + batch_size]
            x = dataset.x[idx].to(device)
            y = ys[idx].to(device)
            out = model.loss(x, context=y if conditional else None)
            for k, v in out.items():
                sums[k] = sums.get(k, torch.zeros((), dtype=torch.float64, device=device)) + v.double() * len(idx)
            count += len(idx)
    if world > 1:
        keys = sorted(sums)
        packed = torch.stack([sums[k] for k in keys] + [count])
        packed = fabric.all_reduce(packed, reduce_op="sum")
        sums, count = dict(zip(keys, packed[:-1])), packed[-1]
    model.train(was_training)
    result = {k: float(v / count) for k, v in sums.items()}
    spec = dataset.spec
    if "nll" in result and spec.is_discrete:
        result["bpd"] = result["nll"] / (spec.num_dims * math.log(2))
    if "nll" in result and dataset.true_log_prob is not None:
        entropy = -float(dataset.true_log_prob(dataset.x.double()).mean())
        result["kl"] = result["nll"] - entropy
    return result


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


class Engine:
    """Trains ``model`` under ``config`` into ``run_dir``.

    Args:
        config: the run configuration (its ``train`` part drives the loop).
        model: the model (already built and seeded); its weights are overwritten on resume.
        train_data, eval_data: in-memory datasets (``eval_data`` may be ``None``).
        run_dir: the run directory (created by the caller).
        resume: continue from the checkpoint in ``run_dir``.
        sample_fn: ``(model, path, generator) -> path | None``, writes a sample picture; ``None`` disables.
        curves_fn: ``(run_dir) -> None``, redraws ``curves.png``.
    """

    def __init__(self, config: RunConfig, model, train_data, eval_data, run_dir, *, resume: bool = False,
                 sample_fn=None, curves_fn=None):
        self.config, self.model = config, model
        self.train_data, self.eval_data = train_data, eval_data
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.sample_fn, self.curves_fn = sample_fn, curves_fn
        self.summary: dict = {}

    # ------------------------------------------------------------------ checkpoints
    def _save(self, *, epoch: int, batch: int, step: int, extra: dict) -> None:
        if not self.fabric.is_global_zero:
            return
        ckpt.save_weights(self.run_dir / "model.safetensors", self.model.state_dict())
        if self.ema is not None:
            ckpt.save_weights(self.run_dir / "ema.safetensors", self.ema.state_dict())
        state = {
            "step": step, "epoch": epoch, "batch": batch,
            "optimizers": [o.state_dict() for o in self.task.optimizers],
            "schedulers": [s.state_dict() for s in self.task.schedulers],
            "rng": rng_state(), "task": self.task.state_dict(),
            **extra,
        }
        ckpt.save_state(self.run_dir / "state.pt", state)

    def _load(self) -> dict:
        weights = ckpt.load_weights(self.run_dir / "model.safetensors")
        self.model.load_state_dict(weights)
        state = ckpt.load_state(self.run_dir / "state.pt")
        if self.ema is not None and (self.run_dir / "ema.safetensors").exists():
            self.ema.load_state_dict(ckpt.load_weights(self.run_dir / "ema.safetensors"))
        return state

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        cfg = self.config.train
        self.fabric = fabric = make_fabric(cfg)
        fabric.launch()
        rank, world = fabric.global_rank, fabric.world_size
        model = self.model
        self.ema = EMA(model, cfg.ema_decay) if cfg.ema_decay > 0 else None

        n = len(self.train_data)
        per_rank = n // world
        if per_rank == 0:
            raise UserError(f"the training set has {n} examples, fewer than the {world} processes")
        steps_per_epoch = math.ceil(per_rank / cfg.batch_size)
        total_steps = cfg.epochs * steps_per_epoch

        self.task = task = get_task_class(model)(model, cfg)
        optimizers, schedulers = task.configure_optimizers(total_steps)

        state = None
        if self.resume:
            state = self._load()  # weights first, before Fabric wraps the module
        torch.manual_seed(self.config.seed + rank)  # fresh runs: a per-rank stream (resume restores it below)
        if cfg.compile:
            wrapped_src = torch.compile(model)
        else:
            wrapped_src = model
        module, *optimizers = fabric.setup(wrapped_src, *optimizers)
        if hasattr(module, "mark_forward_method"):
            module.mark_forward_method("loss")
        task.setup(fabric, module, optimizers, schedulers)

        step, start_epoch, start_batch = 0, 0, 0
        best = math.inf
        elapsed_before = 0.0
        running = {"sum": 0.0, "count": 0}
        if state is not None:
            for opt, s in zip(task.optimizers, state["optimizers"]):
                opt.load_state_dict(s)
            for sch, s in zip(task.schedulers, state["schedulers"]):
                sch.load_state_dict(s)
            task.load_state_dict(state.get("task", {}))
            step, start_epoch, start_batch = state["step"], state["epoch"], state["batch"]
            best = state.get("best", math.inf)
            elapsed_before = state.get("elapsed", 0.0)
            running = {"sum": state.get("epoch_loss_sum", 0.0), "count": state.get("epoch_loss_count", 0)}
            set_rng_state(state["rng"])
            if world > 1:  # each rank continues its own stream, offset from rank 0's saved one
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,))) + rank)
            for name in ("metrics.jsonl", "steps.jsonl"):
                if rank == 0 and (self.run_dir / name).exists():
                    ckpt.truncate_jsonl(self.run_dir / name, step)

        device = fabric.device
        # Data already in memory: move it once; batches are then tensor indexing, no per-item collation.
        xs = self.train_data.x.to(device)
        ys = self.train_data.labels_or_default().to(device)

        t0 = time.time()
        status = "completed"
        is_zero = fabric.is_global_zero

        def elapsed():
            return elapsed_before + time.time() - t0

        def run_eval(epoch_done: int, train_loss):
            nonlocal best
            if self.eval_data is None:
                result = {}
            elif self.ema is not None:
                with self.ema.swapped_in():
                    result = evaluate(model, self.eval_data, max(cfg.batch_size, 256), fabric=fabric,
                                      seed=self.config.seed)
            else:
                result = evaluate(model, self.eval_data, max(cfg.batch_size, 256), fabric=fabric,
                                  seed=self.config.seed)
            record = {"epoch": epoch_done, "step": step, "time": round(elapsed(), 3), "train_loss": train_loss,
                      **{f"test_{k}": v for k, v in result.items()}}
            if is_zero:
                ckpt.append_jsonl(self.run_dir / "metrics.jsonl", record)
                test_loss = result.get("loss")
                if test_loss is not None and test_loss < best:
                    best = test_loss
                    weights = self.ema.state_dict() if self.ema is not None else model.state_dict()
                    ckpt.save_weights(self.run_dir / "best.safetensors", weights)
            return record

        def write_samples(tag: str):
            if not is_zero or self.sample_fn is None:
                return None
            g = torch.Generator(device=device).manual_seed(self.config.seed)
            with isolated_rng(self.config.seed, device):
                if self.ema is not None:
                    with self.ema.swapped_in():
                        return self.sample_fn(model, self.run_dir / f"samples_{tag}.png", g)
                return self.sample_fn(model, self.run_dir / f"samples_{tag}.png", g)

        progress = None
        if is_zero and cfg.progress:
            import sys

            from tqdm.auto import tqdm

            # In a log file (SLURM, CI, a pipe) redraw rarely instead of flooding it with carriage returns.
            interactive = sys.stderr.isatty()
            progress = tqdm(total=cfg.max_steps or total_steps, initial=step, unit="step", dynamic_ncols=True,
                            desc=f"{self.config.model.name}", mininterval=0.1 if interactive else 30.0)

        last_record = None
        if state is None:
            last_record = run_eval(0, None)
            if is_zero:
                self._save(epoch=0, batch=0, step=0, extra={"best": best, "elapsed": 0.0})

        nonfinite = torch.zeros((), dtype=torch.bool, device=device)
        pending = torch.zeros((), dtype=torch.float64, device=device)
        pending_n = 0
        epoch = start_epoch
        with _Interrupt() as interrupt:
            try:
                for epoch in range(start_epoch, cfg.epochs):
                    perm = epoch_permutation(self.config.seed, epoch, n)[rank::world][:per_rank].to(device)
                    b0 = start_batch if epoch == start_epoch else 0
                    if b0 == 0:
                        running = {"sum": 0.0, "count": 0}
                    for b in range(b0, steps_per_epoch):
                        idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                        out = task.training_step((xs[idx], ys[idx]), step)
                        step += 1
                        if self.ema is not None:
                            self.ema.update()
                        loss = out["loss"]
                        nonfinite |= ~torch.isfinite(loss)
                        pending += loss.double()
                        pending_n += 1
                        stop_now = cfg.max_steps is not None and step >= cfg.max_steps
                        if step % cfg.log_every == 0 or b == steps_per_epoch - 1 or stop_now:
                            if bool(nonfinite):  # the only synchronisation: every log_every steps
                                raise NonFiniteLossError(
                                    f"the loss became NaN or infinite near step {step} (epoch {epoch + 1}); the last"
                                    f" good checkpoint in {self.run_dir} is kept. Try a lower --lr or --set grad_clip.")
                            mean = float(pending) / pending_n
                            running["sum"] += mean * pending_n
                            running["count"] += pending_n
                            pending.zero_()
                            pending_n = 0
                            lr = task.optimizers[0].param_groups[0]["lr"]
                            if is_zero:
                                ckpt.append_jsonl(self.run_dir / "steps.jsonl",
                                                  {"step": step, "epoch": epoch, "loss": mean, "lr": lr})
                            if progress is not None:
                                progress.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{mean:.4f}")
                            if world > 1:
                                flag = torch.tensor(float(interrupt.requested), device=device)
                                interrupt.requested = bool(fabric.all_reduce(flag, reduce_op="sum") > 0)
                        if progress is not None:
                            progress.update(1)
                        if interrupt.requested or stop_now:
                            self._flush(pending, pending_n, running)
                            pending_n = 0
                            self._save(epoch=epoch, batch=b + 1, step=step, extra=self._extra(best, elapsed(), running))
                            status = "interrupted" if interrupt.requested else "stopped"
                            raise _Stop
                    # epoch boundary
                    train_loss = running["sum"] / max(1, running["count"])
                    if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
                        last_record = run_eval(epoch + 1, train_loss)
                    if cfg.sample_every and (epoch + 1) % cfg.sample_every == 0 and epoch + 1 < cfg.epochs:
                        write_samples(f"epoch{epoch + 1:03d}")
                    self._save(epoch=epoch + 1, batch=0, step=step, extra=self._extra(best, elapsed(), running))
                    if is_zero and self.curves_fn is not None:
                        self.curves_fn(self.run_dir)
            except _Stop:
                pass
            finally:
                if progress is not None:
                    progress.close()

        samples_path = None
        if status == "completed":
            samples_path = write_samples("final")
            if is_zero and self.curves_fn is not None:
                self.curves_fn(self.run_dir)
        self.summary = {
            "status": status, "step": step, "epochs_completed": cfg.epochs if status == "completed" else epoch,
            "epochs": cfg.epochs, "seconds": round(elapsed(), 2), "num_parameters": model.num_parameters,
            "final": last_record, "best_test_loss": None if best == math.inf else best,
            "samples": str(samples_path) if samples_path else None, "device": str(device), "world_size": world,
        }
        if is_zero:
            ckpt.write_json(self.run_dir / "summary.json", self.summary)
        fabric.barrier()
        return self.summary

    @staticmethod
    def _flush(pending, pending_n, running):
        if pending_n:
            running["sum"] += float(pending)
            running["count"] += pending_n

    @staticmethod
    def _extra(best, elapsed, running) -> dict:
        return {"best": best, "elapsed": elapsed, "epoch_loss_sum": running["sum"],
                "epoch_loss_count": running["count"]}


class _Stop(Exception):
    """Internal: leave the loop after saving (Ctrl-C or max_steps)."""

