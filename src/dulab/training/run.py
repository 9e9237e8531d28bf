"""``dulab.train``, ``dulab.load`` and ``dulab.resume``: runs as directories that carry their own config."""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dulab import __version__
from dulab.api import build_model, model_hparams, model_name_of
from dulab.config import DataRef, ModelRef, RunConfig, TrainConfig, config_fields, make_config
from dulab.data import dataset_option_values, load_dataset
from dulab.data.base import DataSpec, TensorDataset
from dulab.errors import CheckpointError, UserError
from dulab.training import checkpoint as ckpt
from dulab.training.engine import Engine
from dulab.training.seeding import seed_everything

__all__ = ["Run", "train", "load", "resume", "read_run_config", "default_run_dir"]

_RUN_DIR_ENV = "DULAB_RUN_DIR"  # hands the run directory to DDP worker processes, which re-run the command


@dataclass
class Run:
    """A finished (or stopped) run: its directory, its evaluation records and the trained model."""

    dir: Path
    metrics: list = field(default_factory=list)
    model: torch.nn.Module | None = None
    summary: dict = field(default_factory=dict)

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


def _is_worker() -> bool:
    return os.environ.get(_RUN_DIR_ENV) is not None and int(os.environ.get("LOCAL_RANK", "0") or 0) > 0


def _resolve_data(data, options: dict, root):
    if isinstance(data, str):
        options = dataset_option_values(data, options)
        return load_dataset(data, "train", root, **options), DataRef(data, options, root)
    if isinstance(data, TensorDataset):
        if options:
            raise UserError("data options apply only to datasets given by name")
        return data, DataRef(getattr(data, "name", "array") or "array", {}, None)
    raise UserError(f"data must be a dataset name or a dulab TensorDataset (see dulab.datasets.from_array),"
                    f" got {type(data).__name__}")


def train(name_or_model, data="digits", eval_data=None, *, epochs: int | None = None, out_dir=None, seed: int = 0,
          data_options: dict | None = None, root: str | None = None, overwrite: bool = False,
          train_config: TrainConfig | None = None, sample_fn="default", **hparams) -> Run:
    """Train a model and write a run directory.

    Args:
        name_or_model: a registry key (``"histogram"``) or a built model.
        data: a dataset name or a ``TensorDataset`` (e.g. from ``dulab.datasets.from_array``).
        eval_data: dataset evaluated after each epoch; defaults to the test split of a named dataset.
        epochs: number of epochs (default: the model's recommended value).
        out_dir: the run directory (default ``runs/<model>-<data>``, made unique). Must not hold a run already
            unless ``overwrite``.
        seed: seeds model initialisation, data order and sampling.
        data_options: dataset options (``{"bins": 100}``); root: directory of file-backed datasets.
        train_config: a full ``TrainConfig``; keyword arguments below override its fields.
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
        eval_ds = load_dataset(data, "test", root, **data_options)
    elif isinstance(eval_data, str):
        eval_ds = load_dataset(eval_data, "test", root, **data_options)
    else:
        eval_ds = eval_data
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

    if _is_worker():
        run_dir = Path(os.environ[_RUN_DIR_ENV])
    else:
        run_dir = Path(out_dir) if out_dir is not None else default_run_dir(model_name, data_ref.name)
        if run_dir.exists() and any(run_dir.iterdir()):
            if not overwrite:
                raise UserError(f"{run_dir} already holds files; use `dulab resume {run_dir}` or another --out")
            for name in ("metrics.jsonl", "steps.jsonl"):
                (run_dir / name).unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        os.environ[_RUN_DIR_ENV] = str(run_dir.resolve())

    config = RunConfig(model=ModelRef(model_name, model_hparams(model)), data=data_ref, train=train_cfg, seed=seed,
                       out_dir=str(run_dir))
    if not _is_worker():
        ckpt.write_json(run_dir / "config.json", {**config.to_dict(), "spec": train_ds.spec.to_dict(),
                                                  "dulab_version": __version__})
    return _fit(config, model, train_ds, eval_ds, run_dir, resume=False, sample_fn=sample_fn)


def _fit(config, model, train_ds, eval_ds, run_dir, *, resume, sample_fn) -> Run:
    from dulab import viz

    if sample_fn == "default":
        def sample_fn(m, path, generator, _ds=train_ds, _n=config.train.num_samples):
            return viz.save_samples(m, _ds, path, num_samples=_n, generator=generator)
    engine = Engine(config, model, train_ds, eval_ds, run_dir, resume=resume, sample_fn=sample_fn,
                    curves_fn=viz.save_curves)
    try:
        summary = engine.fit()
    finally:
        if not _is_worker():
            os.environ.pop(_RUN_DIR_ENV, None)
    model.eval()
    return Run(Path(run_dir), ckpt.read_jsonl(Path(run_dir) / "metrics.jsonl"), model, summary)


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


def load(run_dir, *, which: str = "auto", device: str = "cpu"):
    """Rebuild a trained model from a run directory (``config.json`` + weights), in eval mode.

    Args:
        run_dir: the run directory.
        which: ``"last"`` (``model.safetensors``), ``"best"`` (lowest test loss), ``"ema"``, or ``"auto"``
            (the EMA weights when the run kept them, else the last).
        device: where to put the model.
    """
    run_dir = Path(run_dir)
    config, spec = read_run_config(run_dir)
    model = build_model(config.model.name, spec, **config.model.hparams)
    files = {"last": "model.safetensors", "best": "best.safetensors", "ema": "ema.safetensors"}
    if which == "auto":
        which = "ema" if (run_dir / files["ema"]).exists() else "last"
    if which not in files:
        raise UserError(f"which must be one of auto, {', '.join(files)}; got {which!r}")
    state = ckpt.load_weights(run_dir / files[which], device=device)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{run_dir / files[which]} does not match the model in config.json ({e})") from None
    return model.to(device).eval()


def resume(run_dir, *, epochs: int | None = None, data: TensorDataset | None = None,
           eval_data: TensorDataset | None = None, sample_fn="default", **overrides) -> Run:
    """Continue a run to ``epochs`` epochs in total (default: its configured total), exactly where it stopped.

    Runs trained on a named dataset reload it; runs trained on in-memory data need ``data=`` (and ``eval_data=``).
    ``overrides`` change ``TrainConfig`` fields that do not alter the optimisation (``progress``, ``device``).
    """
    run_dir = Path(run_dir)
    config, spec = read_run_config(run_dir)
    if not (run_dir / "state.pt").exists():
        raise CheckpointError(f"{run_dir} has no state.pt to resume from")
    train_kw = dataclasses.asdict(config.train)
    if epochs is not None:
        train_kw["epochs"] = epochs
    train_kw["max_steps"] = None  # a run stopped by --max-steps continues; pass max_steps= to stop again
    train_kw.update(overrides)
    config.train = make_config(TrainConfig, train_kw, "training option")
    if data is not None:
        train_ds, eval_ds = data, eval_data
    elif config.data.name in _registered_datasets():
        train_ds = load_dataset(config.data.name, "train", config.data.root, **config.data.options)
        eval_ds = load_dataset(config.data.name, "test", config.data.root, **config.data.options)
    else:
        raise UserError(f"{run_dir} was trained on in-memory data ({config.data.name!r}); resume it from Python:"
                        " dulab.resume(run_dir, data=...)")
    if train_ds.spec != spec:
        raise UserError(f"the data are {train_ds.spec.describe()} but the run was trained on {spec.describe()}")
    model = build_model(config.model.name, spec, **config.model.hparams)
    if not _is_worker():
        raw = ckpt.read_json(run_dir / "config.json")
        raw["train"] = dataclasses.asdict(config.train)
        ckpt.write_json(run_dir / "config.json", raw)
        os.environ[_RUN_DIR_ENV] = str(run_dir.resolve())
    return _fit(config, model, train_ds, eval_ds, run_dir, resume=True, sample_fn=sample_fn)


def _registered_datasets():
    from dulab.registry import DATASETS

    return DATASETS
