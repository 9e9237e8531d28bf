"""Tasks own the recipe: which optimisers, what one training step does, and how a model is evaluated.

The engine (``engine.py``) owns everything else (devices, data order, checkpoints, logging, when to evaluate) and
never changes when a new family arrives: a family with a new recipe (adversarial with ``n_critic``, an EMA
teacher, labelled + unlabelled batches, ...) adds a ``Task`` subclass here (and a ``TASKS`` entry) or sets its
model's ``task`` attribute to its own ``Task`` class.

Obligations of a subclass:
* ``configure_optimizers(schedule) -> (optimizers, schedulers)``; ``schedule(step) -> float`` is the learning-rate
  multiplier the engine built from the ``TrainConfig`` (warm-up, cosine, extensions); ``make_scheduler`` wraps it.
  Each scheduler is stepped by the task (``optimizer_step`` does it).
* ``training_step(batch, step) -> dict`` of detached scalar tensors, including ``"loss"``; ``batch`` is a
  ``dulab.training.batch.Batch`` (``x``, ``y``, named extras). The step does its own ``self.fabric.backward``,
  clipping and optimiser steps (use ``optimizer_step``).
* ``evaluate(dataset) -> dict`` of floats (default: the means of ``model.loss`` over the dataset), computed on
  ``self.model`` (the unwrapped module, with EMA weights swapped in when the engine evaluates those);
  ``best_metric`` names the entry that picks ``best.safetensors`` and ``best_mode`` whether lower (``"min"``) or
  higher (``"max"``) is better.
* ``state_dict()``/``load_state_dict()`` for any state beyond optimisers and schedulers.
"""

from __future__ import annotations

import math

import torch

from dulab.config import TrainConfig
from dulab.errors import UserError
from dulab.training.batch import Batch
from dulab.training.seeding import isolated_rng

__all__ = ["Task", "MaximumLikelihoodTask", "TASKS", "get_task_class", "warmup_cosine", "loss_means", "is_better"]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float, schedule: str) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_ratio`` (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def is_better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` improves on ``best`` (``None``: nothing yet) in direction ``mode`` (``min``/``max``)."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if mode == "min" else value > best


@torch.inference_mode()
def loss_means(model, dataset, batch_size: int = 256, *, fabric=None, seed: int = 0) -> dict:
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
    index = torch.arange(rank, len(dataset), world)
    ys = dataset.labels_or_default()
    conditional = getattr(model, "is_conditional", False)
    with isolated_rng(seed, device):
        for start in range(0, len(index), batch_size):
            idx = index[start:start + batch_size]
            x = dataset.x[idx].to(device)
            out = model.loss(x, context=ys[idx].to(device) if conditional else None)
            for k, v in out.items():
                sums[k] = sums.get(k, torch.zeros((), dtype=torch.float64, device=device)) + v.double() * len(idx)
            count += len(idx)
    if world > 1:
        keys = sorted(sums)
        packed = fabric.all_reduce(torch.stack([sums[k] for k in keys] + [count]), reduce_op="sum")
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


class Task:
    """Base recipe. ``model`` is the unwrapped module; after ``setup``, ``module`` is the Fabric-wrapped one.

    Args:
        model: the model.
        config: the ``TrainConfig``.
        seed: the run's seed (evaluation draws its randomness from it, apart from the training stream).
    """

    #: The entry of ``evaluate()`` that picks ``best.safetensors``, and whether lower or higher is better.
    best_metric: str = "loss"
    best_mode: str = "min"

    def __init__(self, model, config: TrainConfig | None = None, *, seed: int = 0):
        self.model, self.config, self.seed = model, config or TrainConfig(), seed
        self.fabric = self.module = None
        self.optimizers: list = []
        self.schedulers: list = []

    # -- building
    def make_optimizer(self, params, *, lr: float | None = None, betas=None) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.AdamW(params, lr=lr or c.lr, betas=betas or c.betas, weight_decay=c.weight_decay)

    def make_scheduler(self, optimizer, schedule):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    def configure_optimizers(self, schedule):
        opt = self.make_optimizer([p for p in self.model.parameters() if p.requires_grad])
        return [opt], [self.make_scheduler(opt, schedule)]

    def setup(self, fabric, module, optimizers, schedulers) -> None:
        self.fabric, self.module = fabric, module
        self.optimizers, self.schedulers = list(optimizers), list(schedulers)

    # -- stepping
    def context_of(self, y: torch.Tensor):
        return y if getattr(self.model, "is_conditional", False) else None

    def optimizer_step(self, loss: torch.Tensor, index: int = 0, module=None) -> None:
        """Backward, clip, step optimiser ``index`` and its scheduler, zero its gradients."""
        opt = self.optimizers[index]
        self.fabric.backward(loss)
        if self.config.grad_clip > 0:
            self.fabric.clip_gradients(module or self.module, opt, max_norm=self.config.grad_clip,
                                       error_if_nonfinite=False)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if index < len(self.schedulers):
            self.schedulers[index].step()

    def training_step(self, batch: Batch, step: int) -> dict:
        raise NotImplementedError

    # -- evaluation
    def evaluate(self, dataset) -> dict:
        """Metrics of ``self.model`` on ``dataset`` (default: the means of ``model.loss``)."""
        return loss_means(self.model, dataset, max(self.config.batch_size, 256), fabric=self.fabric, seed=self.seed)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MaximumLikelihoodTask(Task):
    """Minimise ``model.loss(x)["loss"]`` (NLL for AR models and flows, negative ELBO for VAEs, diffusion loss)."""

    def training_step(self, batch: Batch, step: int) -> dict:
        out = self.module.loss(batch.x, context=self.context_of(batch.y))
        self.optimizer_step(out["loss"])
        return {k: v.detach() for k, v in out.items()}


TASKS: dict[str, type[Task]] = {
    "likelihood": MaximumLikelihoodTask,
}


def get_task_class(model) -> type[Task]:
    task = getattr(model, "task", "likelihood")
    if isinstance(task, type) and issubclass(task, Task):
        return task
    if task not in TASKS:
        raise UserError(f"{type(model).__name__} asks for training task {task!r}, which is not available")
    return TASKS[task]
