"""``dulab.train``, ``dulab.load`` and ``dulab.resume``: runs as directories that carry their own config."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dulab._version import __version__
from dulab.api import build_model, model_hparams, model_name_of
from dulab.config import DataRef, ModelRef, RunConfig, TrainConfig, config_fields, make_config
from dulab.data import dataset_option_values, load_dataset
from dulab.data.base import DataSpec, TensorDataset
from dulab.errors import CheckpointError, UserError
from dulab.training import checkpoint as ckpt
from dulab.training.engine import Engine, make_fabric
from dulab.training.seeding import seed_everything
from dulab.training.tasks import get_task_class

__all__ = ["Run", "train", "load", "resume", "read_run_config", "default_run_dir", "resolve_weights"]

#: Dataset options that name files: stored as absolute paths, so a run works from any folder.
PATH_OPTIONS = ("path",)


@dataclass
class Run:
    """A finished (or stopped) run: its directory, its evaluation records and the trained model."""

    dir: Path
    metrics: list = field(default_factory=list)
    model: torch.nn.Module | None = None
    summary: dict = field(default_factory=dict)
    is_main: bool = True  # False in the other processes of a multi-process run (they print nothing)

    @property
    def final(self) -> dict:
        return self.metrics[-1] if self.metrics else {}


def default_run_dir(model_name: str, data_name: str, base: str | os.PathLike = "runs") -> Path:
    """``runs/<model>-<data>``, or ``-2``, ``-3``, ... when taken."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model_name}-{data_name}")
    path = Path(base) / stem
    i = 2
    while path.exists():
        path = Path(base) / f"{stem}-{i}"
        i += 1
    return path


def _absolute(path) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _resolve_data(data, options: dict, root):
    if isinstance(data, str):
        options = dataset_option_values(data, options)
        options = {k: (_absolute(v) if k in PATH_OPTIONS and isinstance(v, str) else v) for k, v in options.items()}
        root = _absolute(root)
        return load_dataset(data, "train", root, **options), DataRef(data, options, root)
    if isinstance(data, TensorDataset):
        if options:
            raise UserError("data options apply only to datasets given by name")
        return data, DataRef(getattr(data, "name", "array") or "array", {}, None)
    raise UserError(f"data must be a dataset name or a dulab TensorDataset (see dulab.datasets.from_array),"
                    f" got {type(data).__name__}")


def _data_info(ds) -> dict:
    """What pictures of samples need from the data besides the spec (kept in config.json: sampling needs no data)."""
    info = {}
    for key in ("vocab", "true_pmf", "classes"):
        value = ds.info.get(key)
        if value is not None:
            info[key] = value.tolist() if hasattr(value, "tolist") else value
    return info


def _holdout(ds, fraction: float, seed: int):
    from dulab.data.base import split_indices

    if not 0 < fraction < 1:
        raise UserError(f"eval_fraction must be in (0, 1), got {fraction}")
    train_idx, test_idx = split_indices(len(ds), fraction, seed)
    if len(test_idx) == 0 or len(train_idx) == 0:
        raise UserError(f"eval_fraction={fraction} of {len(ds)} examples leaves an empty split")
    return ds.subset(train_idx), ds.subset(test_idx)


def _broadcast_run_dir(fabric, make) -> Path:
    """Rank 0 creates the run directory (``make() -> Path``); every rank gets its path, or rank 0's error."""
    result = None
    if fabric.is_global_zero:
        try:
            result = ("ok", str(make()))
        except UserError as e:
            result = ("error", str(e))
    if fabric.world_size > 1:
        result = fabric.broadcast(result, src=0)
    kind, value = result
    if kind == "error":
        raise UserError(value)
    return Path(value)


def train(name_or_model, data="digits", eval_data=None, *, epochs: int | None = None, out_dir=None, seed: int = 0,
          data_options: dict | None = None, root: str | None = None, overwrite: bool = False,
          eval_fraction: float | None = None, train_config: TrainConfig | None = None, sample_fn="default",
          verbose: bool | None = None, **hparams) -> Run:
    """Train a model and write a run directory.

    Args:
        name_or_model: a registry key (``"histogram"``) or a built model.
        data: a dataset name or a ``TensorDataset`` (e.g. from ``dulab.datasets.from_array``).
        eval_data: dataset evaluated after each epoch; defaults to the test split of a named dataset.
        epochs: number of epochs (default: the model's recommended value).
        out_dir: the run directory (default ``runs/<model>-<data>``, made unique). Must not hold a run already
            unless ``overwrite``.
        seed: seeds model initialisation, data order and sampling.
        data_options: dataset options (``{"bins": 100}``); root: directory of file-backed datasets (both stored
            with absolute paths, so the run can be evaluated and resumed from any folder).
        eval_fraction: for in-memory ``data`` without ``eval_data``: hold out this fraction (a seeded split) and
            evaluate on it after each epoch. Without either, the run has no test metrics and no
            ``best.safetensors`` (``summary.json`` says so).
        train_config: a full ``TrainConfig``; keyword arguments below override its fields.
        verbose: print the run directory and the data used at the start (default: when the progress bar shows).
        **hparams: model hyperparameters (fields of the model's config) and/or ``TrainConfig`` fields
            (``lr=``, ``batch_size=``, ``ema_decay=``, ``device=``, ...).
    Returns:
        ``Run(dir, metrics, model)``: ``metrics`` holds one record per evaluation (``test_loss``, ``test_nll``,
        ``test_bpd`` where defined, ``train_loss``).
    """
    data_options = dict(data_options or {})
    train_fields = config_fields(TrainConfig)
    train_kw = {k: hparams.pop(k) for k in list(hparams) if k in train_fields}
    if epochs is not None:
        train_kw["epochs"] = epochs

    train_ds, data_ref = _resolve_data(data, data_options, root)
    if eval_data is None and isinstance(data, str):
        eval_ds = load_dataset(data, "test", data_ref.root, **data_ref.options)
    elif isinstance(eval_data, str):
        eval_ds = load_dataset(eval_data, "test", data_ref.root, **data_ref.options)
    else:
        eval_ds = eval_data
    if eval_fraction is not None:
        if eval_ds is not None:
            raise UserError("eval_fraction applies only when there is no eval_data (and data is not a named dataset)")
        train_ds, eval_ds = _holdout(train_ds, eval_fraction, seed)
        data_ref.eval_fraction = eval_fraction
    if eval_ds is not None and eval_ds.spec.shape != train_ds.spec.shape:
        raise UserError(f"eval_data has shape {eval_ds.spec.shape}, training data {train_ds.spec.shape}")

    seed_everything(seed)
    if isinstance(name_or_model, str):
        model = build_model(name_or_model, train_ds.spec, **hparams)
        model_name = name_or_model
    elif isinstance(name_or_model, torch.nn.Module):
        if hparams:
            raise UserError(f"hyperparameters {sorted(hparams)} apply only when the model is given by name")
        model = name_or_model
        model_name = model_name_of(model)
        if getattr(model, "spec", None) != train_ds.spec:
            raise UserError(f"the model was built for {model.spec.describe()}, the data are {train_ds.spec.describe()}")
    else:
        raise UserError(f"train() takes a model name or a dulab model, got {type(name_or_model).__name__}")

    base = dataclasses.asdict(train_config) if train_config is not None else {}
    if train_config is None:
        base.update(getattr(model, "train_defaults", {}) or {})
    base.update(train_kw)
    train_cfg = make_config(TrainConfig, base, "training option")

    # Launch first (Fabric's launcher, torchrun or SLURM): then only rank 0 creates and writes the run directory.
    fabric = make_fabric(train_cfg, get_task_class(model))
    fabric.launch()

    def make_dir() -> Path:
        run_dir = Path(out_dir) if out_dir is not None else default_run_dir(model_name, data_ref.name)
        if run_dir.exists() and any(run_dir.iterdir()):
            if not overwrite:
                raise UserError(f"{run_dir} already holds files; use `dulab resume {run_dir}` or another --out")
            for name in ("metrics.jsonl", "steps.jsonl", "summary.json", "best.safetensors", "ema.safetensors"):
                (run_dir / name).unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        config = RunConfig(model=ModelRef(model_name, model_hparams(model)), data=data_ref, train=train_cfg,
                           seed=seed, out_dir=str(run_dir))
        ckpt.write_json(run_dir / "config.json", {**config.to_dict(), "spec": train_ds.spec.to_dict(),
                                                  "data_info": _data_info(train_ds), "dulab_version": __version__})
        return run_dir

    run_dir = _broadcast_run_dir(fabric, make_dir)
    if fabric.is_global_zero and (train_cfg.progress if verbose is None else verbose):
        inferred = train_ds.info.get("inferred")
        inferred = f" (inferred from the files: {inferred})" if inferred else ""
        print(f"run: {run_dir}\ndata: {data_ref.name}, {train_ds.spec.describe()}{inferred}", flush=True)
    config = RunConfig(model=ModelRef(model_name, model_hparams(model)), data=data_ref, train=train_cfg, seed=seed,
                       out_dir=str(run_dir))
    return _fit(config, model, train_ds, eval_ds, run_dir, resume=False, sample_fn=sample_fn, fabric=fabric)


def _fit(config, model, train_ds, eval_ds, run_dir, *, resume, sample_fn, fabric) -> Run:
    from dulab import viz

    if sample_fn == "default":
        def sample_fn(m, path, generator, _ds=train_ds, _n=config.train.num_samples):
            return viz.save_samples(m, _ds, path, num_samples=_n, generator=generator)
    engine = Engine(config, model, train_ds, eval_ds, run_dir, resume=resume, sample_fn=sample_fn,
                    curves_fn=viz.save_curves, fabric=fabric)
    summary = engine.fit()
    model.eval()
    return Run(Path(run_dir), ckpt.read_jsonl(Path(run_dir) / "metrics.jsonl"), model, summary,
               is_main=fabric.is_global_zero)


def read_run_config(run_dir) -> tuple[RunConfig, DataSpec]:
    """The ``RunConfig`` and ``DataSpec`` saved in a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} is not a run directory")
    raw = ckpt.read_json(run_dir / "config.json")
    try:
        return RunConfig.from_dict(raw), DataSpec.from_dict(raw["spec"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{run_dir / 'config.json'} is incomplete or corrupt ({e})") from None


WEIGHT_FILES = {"last": "model.safetensors", "best": "best.safetensors", "ema": "ema.safetensors"}


def resolve_weights(run_dir, which: str = "auto") -> str:
    """The weights ``which`` names in a run directory: ``auto`` becomes the ones the run's last evaluation
    preferred (``summary.json``'s ``eval_weights``: EMA only when it scored better), else ``last``."""
    run_dir = Path(run_dir)
    if which not in ("auto", *WEIGHT_FILES):
        raise UserError(f"which must be one of auto, {', '.join(WEIGHT_FILES)}; got {which!r}")
    if which != "auto":
        if not (run_dir / WEIGHT_FILES[which]).exists():
            hint = " (the run has no test data)" if which == "best" else " (the run was trained without --ema)"
            raise CheckpointError(f"{run_dir} has no {WEIGHT_FILES[which]}{hint if which != 'last' else ''}")
        return which
    summary_path = run_dir / "summary.json"
    preferred = ckpt.read_json(summary_path).get("eval_weights") if summary_path.exists() else None
    if preferred in WEIGHT_FILES and (run_dir / WEIGHT_FILES[preferred]).exists():
        return preferred
    return "last"


def load(run_dir, *, which: str = "auto", device: str = "cpu"):
    """Rebuild a trained model from a run directory (``config.json`` + weights), in eval mode. Needs no data.

    Args:
        run_dir: the run directory.
        which: ``"last"`` (``model.safetensors``), ``"best"`` (best test metric), ``"ema"``, or ``"auto"``
            (the EMA weights when the run's last evaluation found them better than the last weights, else the last;
            ``resolve_weights`` says which).
        device: where to put the model.
    """
    run_dir = Path(run_dir)
    config, spec = read_run_config(run_dir)
    model = build_model(config.model.name, spec, **config.model.hparams)
    which = resolve_weights(run_dir, which)
    state = ckpt.load_weights(run_dir / WEIGHT_FILES[which], device=device)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{run_dir / WEIGHT_FILES[which]} does not match the model in config.json"
                              f" ({e})") from None
    return model.to(device).eval()


def resume(run_dir, *, epochs: int | None = None, data: TensorDataset | None = None,
           eval_data: TensorDataset | None = None, root: str | None = None, schedule: str = "restart",
           sample_fn="default", verbose: bool | None = None, **overrides) -> Run:
    """Continue a run to ``epochs`` epochs in total (default: its configured total), exactly where it stopped.

    An interrupted run continues bit for bit. A run whose schedule has finished (or ``epochs`` past the configured
    total) is *extended*: the learning rate continues from where it ended, without a jump, as ``schedule`` says
    (``"restart"``: a linear warm-up back to the peak, then a new cosine over the added epochs; ``"final"``: hold
    the final learning rate). ``epochs`` at or below the epochs already trained raises ``UserError`` and changes
    nothing, as does resuming a completed run without ``epochs``.

    Runs trained on a named dataset reload it (``root`` points to a moved data folder); runs trained on
    in-memory data need ``data=`` (and ``eval_data=``, or the same data when the run held out ``eval_fraction``).
    ``overrides`` change ``TrainConfig`` fields that do not alter the optimisation (``progress``, ``device``).
    """
    from dulab.config import EXTENSION_SCHEDULES

    run_dir = Path(run_dir)
    config, spec = read_run_config(run_dir)
    if not (run_dir / "state.pt").exists():
        raise CheckpointError(f"{run_dir} has no state.pt to resume from")
    if schedule not in EXTENSION_SCHEDULES:
        raise UserError(f"schedule must be one of {', '.join(EXTENSION_SCHEDULES)}; got {schedule!r}")
    state = ckpt.load_state(run_dir / "state.pt")
    summary = ckpt.read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
    mid_epoch = state.get("batch", 0) > 0
    configured = config.train.epochs
    completed = not mid_epoch and state["epoch"] >= configured
    shown = f"more than {state['epoch']}" if mid_epoch else str(state["epoch"])
    if epochs is None and completed:
        raise UserError(f"{run_dir} is complete ({configured} epochs); pass --epochs N with N > {configured}"
                        " to train longer")
    if epochs is not None and epochs <= state["epoch"]:
        raise UserError(f"{run_dir} has already trained {shown} epochs; pass --epochs > {state['epoch']}"
                        " to continue")

    train_kw = dataclasses.asdict(config.train)
    if epochs is not None and epochs != configured:
        base_end = max(configured, config.train.schedule_epochs or 0)
        if epochs > base_end:  # past the end of the schedule: extend it from there, without a jump
            train_kw["extensions"] = [*config.train.extensions, {"epoch": base_end, "schedule": schedule}]
        elif not config.train.extensions:  # cut short: the schedule keeps its original length
            train_kw["schedule_epochs"] = base_end
        train_kw["epochs"] = epochs
    train_kw["max_steps"] = None  # a run stopped by --max-steps continues; pass max_steps= to stop again
    train_kw.update(overrides)
    config.train = make_config(TrainConfig, train_kw, "training option")
    if root is not None:
        config.data.root = _absolute(root)
    if data is not None:
        train_ds, eval_ds = data, eval_data
        if config.data.eval_fraction is not None and eval_data is None:
            train_ds, eval_ds = _holdout(data, config.data.eval_fraction, config.seed)
    elif config.data.name in _registered_datasets():
        train_ds = load_dataset(config.data.name, "train", config.data.root, **config.data.options)
        eval_ds = load_dataset(config.data.name, "test", config.data.root, **config.data.options)
    else:
        raise UserError(f"{run_dir} was trained on in-memory data ({config.data.name!r}); resume it from Python:"
                        " dulab.resume(run_dir, data=...)")
    if train_ds.spec != spec:
        raise UserError(f"the data are {train_ds.spec.describe()} but the run was trained on {spec.describe()}")
    model = build_model(config.model.name, spec, **config.model.hparams)
    fabric = make_fabric(config.train, get_task_class(model))
    fabric.launch()
    if fabric.is_global_zero:
        raw = ckpt.read_json(run_dir / "config.json")
        raw["train"] = dataclasses.asdict(config.train)
        raw["data"] = dataclasses.asdict(config.data)
        ckpt.write_json(run_dir / "config.json", raw)
        (run_dir / "eval.json").unlink(missing_ok=True)  # it described the weights before this resume
        if summary.get("status") == "completed" and (config.train.progress if verbose is None else verbose):
            ext = config.train.extensions[-1] if config.train.extensions else None
            how = {"restart": "warms up again from the final learning rate, then a new cosine",
                   "final": "holds the final learning rate"}[ext["schedule"]] if ext else ""
            print(f"extending {run_dir} from {configured} to {config.train.epochs} epochs; the learning rate {how}"
                  f" (--schedule {ext['schedule'] if ext else schedule})", flush=True)
    return _fit(config, model, train_ds, eval_ds, run_dir, resume=True, sample_fn=sample_fn, fabric=fabric)


def _registered_datasets():
    from dulab.registry import DATASETS

    return DATASETS
