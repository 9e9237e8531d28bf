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

import functools
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

    Returns ``{"loss": .., "nll": .., ...}`` plus ``"bpd"`` for discrete data with an ``nll`` and ``"kl_to_truth"``
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
        result["kl_to_truth"] = result["nll"] - entropy  # not "kl": VAEs report their posterior KL as "kl"
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
    #: True when a step can leave some parameters without gradients (DDP must then search for unused ones).
    ddp_find_unused_parameters: bool = False

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
        """Metrics of ``self.model`` on ``dataset``: the means of ``model.loss``, plus whatever the model's optional
        ``evaluation_metrics(dataset) -> dict`` adds (e.g. a VAE's importance-sampled NLL and active units; run
        with the evaluation's own seeded RNG, under inference mode)."""
        result = loss_means(self.model, dataset, max(self.config.batch_size, 256), fabric=self.fabric, seed=self.seed)
        extra = getattr(self.model, "evaluation_metrics", None)
        if callable(extra):
            device = next(iter(self.model.parameters()), torch.empty(0)).device
            was_training = self.model.training
            self.model.eval()
            try:
                with isolated_rng(self.seed, device), torch.inference_mode():
                    result.update(extra(dataset))
            finally:
                self.model.train(was_training)
        return result

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


class AdversarialTask(Task):
    """GAN training: a discriminator (critic) step on every batch, a generator step after every ``n_critic``-th.

    The model provides the ``GANModel`` interface (``dulab.models.gan.base``): ``generator_parameters``,
    ``discriminator_parameters``, ``sample_latent``, ``generate``, ``discriminate``, ``to_critic_input``,
    ``from_critic_input`` and a ``config`` with ``loss``, ``n_critic``, ``clip_value``, ``gp_weight``,
    ``r1_gamma``, ``lr_g``/``lr_d`` and ``betas_g``/``betas_d`` (``None``: the ``TrainConfig`` values; different
    learning rates for the two give TTUR, Heusel et al. 2017) and ``optimizer`` (``adam`` or ``rmsprop``).

    One ``training_step`` call is one D step on that batch (so the ``n_critic`` D steps of one round each use the
    next batch of the epoch), followed, on calls ``n_critic - 1, 2 n_critic - 1, ...``, by one G step on a fresh
    latent batch of the same size. In the D step G runs under ``no_grad``; in the G step D's parameters have
    ``requires_grad`` off: each phase changes only its own network's parameters (batch-norm running statistics and
    spectral-norm power iterates are buffers and do follow both forward passes). With ``loss="wasserstein"`` and
    ``clip_value > 0`` every D parameter is clamped to ``[-clip_value, clip_value]`` after its step (Arjovsky et
    al. 2017); ``gp_weight`` adds the WGAN-GP penalty and ``r1_gamma`` the R1 penalty to the D loss; the model's
    ``generator_regularizer()`` (when not ``None``) is added to G's loss. Class-conditional models
    (``is_conditional``) get the batch's labels as ``context=`` in both networks, in both phases and in evaluation.
    The improved-training options of the config (``dulab.models.gan.tricks``: instance noise on D's inputs, one-sided
    label smoothing, the bottleneck's KL term and beta, historical averaging of both players, feature matching) act
    here; their state (historical means, beta) is in ``state_dict()["tricks"]``; ``model.set_training_step(step)``
    runs before each step (progressive growing).

    Optimisers: ``[D, G]``, each with its scheduler. D's scheduler steps with every call, G's with every G step,
    and G's multiplier at its k-th step is the engine's schedule at step ``k n_critic``, so both follow the same
    curve over the run. The latent noise and interpolation weights come from the global RNG (saved and restored by
    the engine), the phase from the engine's step count: resuming replays the same steps exactly.

    The logged ``"loss"`` is D's objective with its penalties, plus ``0 x`` G's loss on G steps so that a NaN or
    infinite G loss also stops the run (NaN handling as for every task); ``d_loss``, ``g_loss``, ``gp``, ``r1``
    are reported as well.

    ``evaluate(dataset)`` draws ``min(len(dataset), eval_samples)`` samples (seeded from ``self.seed``) and scores
    them against as many dataset examples: with a shipped feature extractor (``dulab.evaluation.has_extractor``),
    ``sample_quality``'s FID, KID, Inception Score, precision and recall; otherwise FID and KID of the raw
    flattened data (2-D toys, vectors). KID averages subsets of half the set (subsets of the whole set would all
    be the same set). ``"loss"`` is D's loss on those examples against those samples.
    """

    best_metric = "fid"
    best_mode = "min"
    #: Each phase leaves the other network without gradients: DDP must look for unused parameters.
    ddp_find_unused_parameters = True
    #: Samples drawn per evaluation (at most the dataset's size).
    eval_samples: int = 500

    def __init__(self, model, config: TrainConfig | None = None, *, seed: int = 0):
        super().__init__(model, config, seed=seed)
        missing = [name for name in ("generator_parameters", "discriminator_parameters", "sample_latent",
                                     "generate", "discriminate", "to_critic_input", "from_critic_input")
                   if not hasattr(model, name)]
        if missing:
            raise UserError(f"{type(model).__name__} cannot be trained adversarially: it lacks {', '.join(missing)}"
                            " (subclass dulab.models.gan.base.GANModel)")
        self.gan = model.config
        self.num_discriminator_steps = 0
        self.num_generator_steps = 0
        from dulab.models.gan.tricks import TrainingTricks

        self.tricks = TrainingTricks(model)  # improved-training options of the config (off by default)

    def make_optimizer(self, params, *, lr: float | None = None, betas=None) -> torch.optim.Optimizer:
        if getattr(self.gan, "optimizer", "adam") == "rmsprop":  # WGAN with clipping (Arjovsky et al. 2017)
            return torch.optim.RMSprop(params, lr=lr or self.config.lr, weight_decay=self.config.weight_decay)
        return super().make_optimizer(params, lr=lr, betas=betas)

    def configure_optimizers(self, schedule):
        c, n = self.gan, self.gan.n_critic
        d_opt = self.make_optimizer(self.model.discriminator_parameters(), lr=c.lr_d, betas=c.betas_d)
        g_opt = self.make_optimizer(self.model.generator_parameters(), lr=c.lr_g, betas=c.betas_g)
        return [d_opt, g_opt], [self.make_scheduler(d_opt, schedule),
                                self.make_scheduler(g_opt, lambda k: schedule(k * n))]

    def setup(self, fabric, module, optimizers, schedulers) -> None:
        super().setup(fabric, module, optimizers, schedulers)
        # the two parameter lists, built once (listing the modules' parameters on every step costs ~1 ms)
        self._d_params = list(self.model.discriminator_parameters())
        self._g_params = list(self.model.generator_parameters())
        if hasattr(module, "mark_forward_method"):  # calls through DDP's forward when the module is wrapped
            for name in ("generate", "discriminate", "discriminator_features"):
                if hasattr(self.model, name):
                    module.mark_forward_method(name)

    def training_step(self, batch: Batch, step: int) -> dict:
        from dulab.losses.gan import discriminator_loss, generator_loss, gradient_penalty, r1_penalty

        c, model, module, tricks = self.gan, self.model, self.module, self.tricks
        d_params, g_params = self._d_params, self._g_params
        if hasattr(model, "set_training_step"):
            model.set_training_step(step)  # progressive growing's fade-in
        real = model.to_critic_input(batch.x)
        n = real.shape[0]
        # class-conditional GANs (is_conditional): G and D both see the batch's labels, fakes drawn for the same ones
        ctx = self.context_of(batch.y)
        kw = {} if ctx is None else {"context": model._check_context(ctx, n)}
        # --- discriminator phase: G's output is a constant here
        with torch.no_grad():
            fake = module.generate(model.sample_latent(n), **kw)
        # improved training (dulab.models.gan.tricks): instance noise, label smoothing, the bottleneck's KL
        real, fake = tricks.noisy(real, step), tricks.noisy(fake, step)
        real_logits = module.discriminate(real, **kw)
        kl_real = tricks.last_kl()
        fake_logits = module.discriminate(fake, **kw)
        kl_fake = tricks.last_kl()
        smooth = {"real_target": 1.0 - tricks.c.label_smoothing} if tricks.c.label_smoothing > 0 else {}
        d_loss = discriminator_loss(real_logits, fake_logits, c.loss, **smooth)
        total, out = d_loss, {"d_loss": d_loss.detach()}
        if kl_real is not None:
            term, kl = tricks.bottleneck_term(kl_real, kl_fake)
            total = total + term
            out["vdb_kl"], out["vdb_beta"] = kl, tricks.beta.detach().clone()
        d_history = tricks.historical_penalty("d", d_params)
        if d_history is not None:
            total = total + d_history
            out["history_d"] = d_history.detach()
        if c.gp_weight > 0:
            gp = gradient_penalty(functools.partial(module.discriminate, **kw), real, fake)
            total = total + c.gp_weight * gp
            out["gp"] = gp.detach()
        if c.r1_gamma > 0 and self.num_discriminator_steps % c.r1_every == 0:  # lazy R1: every r1_every-th
            r1 = r1_penalty(functools.partial(module.discriminate, **kw), real)
            total = total + 0.5 * c.r1_gamma * c.r1_every * r1
            out["r1"] = r1.detach()
        self.optimizer_step(total, 0)
        if c.loss == "wasserstein" and c.clip_value > 0:
            with torch.no_grad():
                for p in d_params:
                    p.clamp_(-c.clip_value, c.clip_value)
        tricks.after_step("d", d_params)
        if kl_real is not None:
            tricks.update_beta(kl)
        self.num_discriminator_steps += 1
        loss = total.detach()
        # --- generator phase, after every n_critic-th discriminator step
        if (step + 1) % c.n_critic == 0:
            flags = [p.requires_grad for p in d_params]
            for p in d_params:
                p.requires_grad_(False)
            try:
                fake = tricks.noisy(module.generate(model.sample_latent(n), **kw), step)
                if tricks.c.feature_matching:  # Salimans et al. 2016: match D's mean features on real data
                    from dulab.losses.gan import feature_matching_loss

                    with torch.no_grad():
                        real_features = module.discriminator_features(real, **kw)
                    g_loss = feature_matching_loss(real_features, module.discriminator_features(fake, **kw))
                else:
                    g_loss = generator_loss(module.discriminate(fake, **kw), c.loss)
                reg = model.generator_regularizer()  # e.g. BigGAN's orthogonal regularisation; None for most
                extra = [t for t in (reg, tricks.historical_penalty("g", g_params))
                         if t is not None]
                self.optimizer_step(g_loss + sum(extra) if extra else g_loss, 1)
            finally:
                for p, flag in zip(d_params, flags):
                    p.requires_grad_(flag)
            tricks.after_step("g", g_params)
            self.num_generator_steps += 1
            out["g_loss"] = g_loss.detach()
            loss = loss + 0.0 * out["g_loss"]  # NaN/inf in G's loss reaches the engine's check
        out["loss"] = loss
        return out

    @torch.inference_mode()
    def evaluate(self, dataset) -> dict:
        from dulab.evaluation import has_extractor
        from dulab.losses.gan import discriminator_loss
        from dulab.metrics.sample_quality import fid, kid, sample_quality

        model = self.model
        n = min(len(dataset), self.eval_samples)
        if n < 4:
            raise UserError(f"adversarial evaluation needs at least 4 test examples, got {len(dataset)}")
        device = model._param_device()
        was_training = model.training
        model.eval()
        try:
            with isolated_rng(self.seed, device):
                g = torch.Generator(device=device).manual_seed(self.seed)
                idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self.seed))[:n]
                reference = dataset.subset(idx)
                # class-conditional GANs sample for the reference examples' labels
                kw = ({"context": model._check_context(reference.labels_or_default().to(device), n)}
                      if getattr(model, "is_conditional", False) else {})
                fake = model.generate(model.sample_latent(n, generator=g), **kw)
                real = model.to_critic_input(reference.x.to(device))
                d_loss = discriminator_loss(model.discriminate(real, **kw), model.discriminate(fake, **kw),
                                            self.gan.loss)
            samples = model.from_critic_input(fake).cpu()
        finally:
            model.train(was_training)
        result = {"loss": float(d_loss)}
        if n >= 10 and has_extractor(getattr(dataset, "name", None), dataset.spec):  # IS needs 10 splits
            # KID on halves: subsets as large as the sets would all be the same set (kid_std 0).
            q = sample_quality(samples, reference, generator=torch.Generator().manual_seed(self.seed),
                               kid_subset_size=n // 2)
            result.update({k: float(q[k]) for k in ("fid", "kid", "kid_std", "inception_score", "precision",
                                                    "recall")})
        else:
            a, b = reference.x.reshape(n, -1).double(), samples.reshape(n, -1).double()
            kid_mean, kid_std = kid(a, b, subset_size=n // 2, generator=torch.Generator().manual_seed(self.seed))
            result.update({"fid": fid(a, b), "kid": kid_mean, "kid_std": kid_std})
        return result

    def state_dict(self) -> dict:
        tricks = self.tricks.state_dict()  # historical averages, the bottleneck's beta (when those are on)
        return {"num_discriminator_steps": self.num_discriminator_steps,
                "num_generator_steps": self.num_generator_steps, **({"tricks": tricks} if tricks else {})}

    def load_state_dict(self, state: dict) -> None:
        self.num_discriminator_steps = int(state.get("num_discriminator_steps", 0))
        self.num_generator_steps = int(state.get("num_generator_steps", 0))
        self.tricks.load_state_dict(state.get("tricks", {}))


__all__ += ["AdversarialTask"]


class ContrastiveDivergenceTask(Task):
    """Energy-based models (``dulab.models.diffusion.ebm``): contrastive divergence with short-run Langevin MCMC
    seeded from a replay buffer (Du & Mordatch 2019, arXiv:1903.08689).

    Each step draws the batch's chain starts from the buffer (a fraction ``reinit_prob`` from fresh noise), runs the
    model's Langevin sampler (``model.langevin``: gradients with respect to the samples only), pushes the samples
    into the buffer and takes one optimiser step on ``model.loss(x, negatives=samples)``. The buffer is task state:
    ``state_dict`` saves it with the checkpoint, so a resumed run continues bit for bit; its draws and the Langevin
    noise come from the global RNG, which the engine saves and restores. ``evaluate`` draws ``eval_samples`` chains
    from noise (seeded from ``self.seed``) and reports ``model.evaluation_metrics``: the CD loss against them and
    their sample scores; ``fid`` (of extractor features for images, of raw coordinates otherwise) picks the best.
    """

    best_metric = "fid"
    best_mode = "min"
    eval_samples: int = 500

    def __init__(self, model, config: TrainConfig | None = None, *, seed: int = 0):
        super().__init__(model, config, seed=seed)
        missing = [n for n in ("langevin", "initial_noise", "make_replay_buffer", "evaluation_metrics")
                   if not hasattr(model, n)]
        if missing:
            raise UserError(f"{type(model).__name__} cannot be trained by contrastive divergence: it lacks"
                            f" {', '.join(missing)} (see dulab.models.diffusion.ebm.EBM)")
        self.buffer = None

    def _buffer(self, device):
        if self.buffer is None:
            self.buffer = self.model.make_replay_buffer(device)
        return self.buffer

    def training_step(self, batch: Batch, step: int) -> dict:
        model = self.model
        start, _ = self._buffer(batch.x.device).sample_init(batch.x.shape[0], model.initial_noise)
        negatives = model.langevin(start)
        self.buffer.push(negatives)
        out = self.module.loss(batch.x, negatives=negatives)
        self.optimizer_step(out["loss"])
        return {k: v.detach() for k, v in out.items()}

    def evaluate(self, dataset) -> dict:
        model = self.model
        device = model._param_device()
        was_training = model.training
        model.eval()
        try:
            with isolated_rng(self.seed, device):
                g = torch.Generator(device=device).manual_seed(self.seed)
                return model.evaluation_metrics(dataset, num_samples=self.eval_samples, generator=g, seed=self.seed)
        finally:
            model.train(was_training)

    def state_dict(self) -> dict:
        return {} if self.buffer is None else {"replay_buffer": self.buffer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if "replay_buffer" in state:
            self._buffer(self.model._param_device()).load_state_dict(state["replay_buffer"])


__all__ += ["ContrastiveDivergenceTask"]

TASKS: dict[str, type[Task]] = {
    "likelihood": MaximumLikelihoodTask,
    "adversarial": AdversarialTask,
    "contrastive_divergence": ContrastiveDivergenceTask,
}


def get_task_class(model) -> type[Task]:
    task = getattr(model, "task", "likelihood")
    if isinstance(task, type) and issubclass(task, Task):
        return task
    if task not in TASKS:
        raise UserError(f"{type(model).__name__} asks for training task {task!r}, which is not available")
    return TASKS[task]
