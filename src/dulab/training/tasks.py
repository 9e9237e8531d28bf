"""Tasks own the optimisation recipe: which optimisers, and what one training step does.

The engine (``engine.py``) owns everything else (devices, data order, evaluation, checkpoints, logging) and
never changes when a new family arrives: a family with a new recipe (adversarial with ``n_critic``, an EMA
teacher, ...) adds a ``Task`` subclass here or sets its model's ``task`` attribute to its own ``Task`` class.

Obligations of a subclass:
* ``configure_optimizers(total_steps) -> (optimizers, schedulers)``; each scheduler is stepped by the task.
* ``training_step(batch, step) -> dict`` of detached scalar tensors, including ``"loss"``; the step does its own
  ``self.fabric.backward``, clipping and optimiser steps (use ``optimizer_step``).
* ``state_dict()``/``load_state_dict()`` for any state beyond optimisers and schedulers.
"""

from __future__ import annotations

import math

import torch

from dulab.config import TrainConfig
from dulab.errors import UserError

__all__ = ["Task", "MaximumLikelihoodTask", "TASKS", "get_task_class", "warmup_cosine"]


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, min_ratio: float, schedule: str) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to ``min_ratio`` (or constant)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Task:
    """Base recipe. ``model`` is the unwrapped module; after ``setup``, ``module`` is the Fabric-wrapped one."""

    def __init__(self, model, config: TrainConfig):
        self.model, self.config = model, config
        self.fabric = self.module = None
        self.optimizers: list = []
        self.schedulers: list = []

    # -- building
    def make_optimizer(self, params) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.AdamW(params, lr=c.lr, betas=c.betas, weight_decay=c.weight_decay)

    def make_scheduler(self, optimizer, total_steps: int):
        c = self.config
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: warmup_cosine(s, total_steps, c.warmup_steps, c.min_lr_ratio, c.schedule))

    def configure_optimizers(self, total_steps: int):
        opt = self.make_optimizer([p for p in self.model.parameters() if p.requires_grad])
        return [opt], [self.make_scheduler(opt, total_steps)]

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

    def training_step(self, batch, step: int) -> dict:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class MaximumLikelihoodTask(Task):
    """Minimise ``model.loss(x)["loss"]`` (NLL for AR models and flows, negative ELBO for VAEs, diffusion loss)."""

    def training_step(self, batch, step):
        x, y = batch
        out = self.module.loss(x, context=self.context_of(y))
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
