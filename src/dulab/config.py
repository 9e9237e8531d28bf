"""Dataclass configurations, and the parsing of ``key=value`` strings into typed values.

``RunConfig(model, data, train, seed, out_dir)`` is everything needed to rebuild a run; it is written to
``config.json`` in the run directory.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from dulab.errors import UserError, closest

__all__ = ["TrainConfig", "ModelRef", "DataRef", "RunConfig", "coerce", "parse_assignments", "make_config",
           "config_fields", "require_at_least", "require_odd", "require_fraction", "require_widths"]


#: How the learning rate continues when a finished schedule is extended (``dulab resume --schedule``).
EXTENSION_SCHEDULES = ("restart", "final")


@dataclass
class TrainConfig:
    """The optimisation recipe and how to run it.

    Attributes:
        epochs: passes over the training split.
        batch_size: examples per step (per process under DDP).
        lr: peak learning rate.
        weight_decay: decoupled weight decay (AdamW).
        betas: Adam betas.
        warmup_steps: linear warm-up steps before the cosine decay.
        schedule: ``"cosine"`` (decay to ``min_lr_ratio * lr``) or ``"constant"``.
        min_lr_ratio: final learning rate as a fraction of ``lr`` for the cosine schedule.
        grad_clip: maximum gradient norm (0 disables clipping).
        ema_decay: decay of an exponential moving average of the weights (0 disables). With EMA on, each
            evaluation scores both the average and the raw weights and uses the better one (``summary.json`` names it).
        ema_warmup: warm the EMA decay up as ``min(ema_decay, (1 + n) / (10 + n))`` after n updates, so a short
            run's average is not dominated by the initial weights.
        eval_every: evaluate on the test split every this many epochs (and always at the start and the end).
        sample_every: write a sample picture every this many epochs (0: only at the end).
        num_samples: samples drawn for each picture.
        log_every: steps between progress/metric logs (the only host-device synchronisations).
        max_steps: stop (saving a resumable checkpoint) after this many steps in total; None runs all epochs.
        device: ``auto``, ``cpu`` or ``cuda``.
        devices: number of devices (processes) to use per node.
        num_nodes: number of machines (torchrun / SLURM launches); ``devices * num_nodes`` processes in all.
        strategy: ``auto`` or ``ddp``.
        precision: ``32`` or ``bf16-mixed``.
        compile: wrap the model with ``torch.compile``.
        progress: show a progress bar.
        logger: also log metrics through a Lightning Fabric logger (``csv`` or ``tensorboard``) under RUN/logs.
        extensions: set by ``resume --epochs`` past the configured total: ``[{"epoch": E, "schedule": S}]``, the
            learning rate after epoch E follows S (``restart``: warm up again from the LR reached, then cosine over
            the new epochs; ``final``: hold the LR reached). Not a command-line option.
        schedule_epochs: the epochs the base schedule spans when it differs from ``epochs`` (a run cut short
            by ``resume --epochs``); ``None``: ``epochs``.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: Literal["cosine", "constant"] = "cosine"
    min_lr_ratio: float = 0.0
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    eval_every: int = 1
    sample_every: int = 0
    num_samples: int = 64
    log_every: int = 10
    max_steps: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    devices: int = 1
    num_nodes: int = 1
    strategy: Literal["auto", "ddp"] = "auto"
    precision: Literal["32", "bf16-mixed"] = "32"
    compile: bool = False
    progress: bool = True
    ema_warmup: bool = True
    logger: Literal["none", "csv", "tensorboard"] = "none"
    extensions: list = field(default_factory=list)
    schedule_epochs: int | None = None

    def __post_init__(self):
        check_choices(self)
        for name in ("epochs", "batch_size", "devices", "num_nodes", "eval_every", "log_every", "num_samples"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise UserError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.max_steps is not None and self.max_steps < 1:
            raise UserError("max_steps must be >= 1")
        for name in ("warmup_steps", "grad_clip", "weight_decay", "sample_every", "min_lr_ratio"):
            if getattr(self, name) < 0:
                raise UserError(f"{name} must be >= 0")
        for ext in self.extensions:
            if not isinstance(ext, dict) or ext.get("schedule") not in EXTENSION_SCHEDULES or "epoch" not in ext:
                raise UserError(f"extensions entries are {{'epoch': E, 'schedule': one of {EXTENSION_SCHEDULES}}},"
                                f" got {ext!r}")


@dataclass
class ModelRef:
    """A registered model and its hyperparameters (the fields of its config dataclass)."""

    name: str
    hparams: dict = field(default_factory=dict)


@dataclass
class DataRef:
    """A registered dataset (or ``"array"`` for data passed in memory), its options and root directory."""

    name: str
    options: dict = field(default_factory=dict)
    root: str | None = None
    eval_fraction: float | None = None  # in-memory data: the held-out fraction evaluated after each epoch


@dataclass
class RunConfig:
    """Everything needed to rebuild a run: ``config.json``."""

    model: ModelRef
    data: DataRef
    train: TrainConfig
    seed: int = 0
    out_dir: str = "runs"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        train = dict(d["train"])
        if "betas" in train:
            train["betas"] = tuple(train["betas"])
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        return cls(model=ModelRef(**d["model"]), data=DataRef(**d["data"]),
                   train=TrainConfig(**{k: v for k, v in train.items() if k in known}),
                   seed=d.get("seed", 0), out_dir=d.get("out_dir", "runs"))


# ----------------------------------------------------------------------------------------------- validation
# Shared by the configs' __post_init__ methods: each raises a one-line UserError naming the field and its value.

def require_at_least(obj, minimum, *names: str) -> None:
    """Every named field of ``obj`` must be >= ``minimum``."""
    for name in names:
        value = getattr(obj, name)
        if value < minimum:
            raise UserError(f"{name} must be >= {minimum}, got {value}")


def require_widths(obj, *names: str) -> None:
    """Every named field (layer widths, e.g. ``hidden_sizes``) becomes a tuple of ints, each >= 1."""
    for name in names:
        widths = tuple(int(h) for h in getattr(obj, name))
        if any(h < 1 for h in widths):
            raise UserError(f"{name} must be positive widths, got {widths}")
        setattr(obj, name, widths)


def require_odd(obj, minimum: int, *names: str) -> None:
    """Every named field (a kernel size) must be an odd integer >= ``minimum``."""
    for name in names:
        value = getattr(obj, name)
        if value < minimum or value % 2 == 0:
            raise UserError(f"{name} must be an odd number >= {minimum}, got {value}")


def require_fraction(obj, *names: str) -> None:
    """Every named field (a dropout rate, a decay) must lie in [0, 1)."""
    for name in names:
        value = getattr(obj, name)
        if not 0 <= value < 1:
            raise UserError(f"{name} must be in [0, 1), got {value}")


# ----------------------------------------------------------------------------------------------- typed parsing

def check_choices(obj) -> None:
    """Raise ``UserError`` when a ``Literal``-typed field of a dataclass holds a value outside its choices."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        choices = _literal_choices(hints.get(f.name))
        if choices is not None and getattr(obj, f.name) not in choices:
            raise UserError(f"{f.name} must be one of {', '.join(map(repr, choices))}; got {getattr(obj, f.name)!r}")


def _literal_choices(tp):
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if _is_union(tp):
        for a in typing.get_args(tp):
            if typing.get_origin(a) is Literal:
                return typing.get_args(a) + ((None,) if type(None) in typing.get_args(tp) else ())
    return None


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def coerce(value: Any, tp, name: str = "value") -> Any:
    """Convert ``value`` (often a string from the command line) to type ``tp``, or raise ``UserError``.

    Supports bool, int, float, str, ``Literal``, ``Optional``/unions, ``tuple[...]`` and ``list[...]``
    (comma-separated on the command line).
    """
    if tp is Any or tp is None:
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, name)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if errors else f"{name}: cannot use {value!r}")
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if value == c or (isinstance(value, str) and str(c) == value):
                return c
        raise UserError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    if origin in (tuple, list):
        args = typing.get_args(tp)
        items = value.split(",") if isinstance(value, str) else list(value)
        items = [i.strip() if isinstance(i, str) else i for i in items if not (isinstance(i, str) and not i.strip())]
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise UserError(f"{name} needs {len(args)} comma-separated values, got {value!r}")
            return tuple(coerce(v, a, name) for v, a in zip(items, args))
        inner = args[0] if args else Any
        out = [coerce(v, inner, name) for v in items]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise UserError(f"{name} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise UserError(f"{name} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value))
        except ValueError:
            raise UserError(f"{name} must be an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value))
        except ValueError:
            raise UserError(f"{name} must be a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, str):
            return value
        raise UserError(f"{name} must be a string, got {value!r}")
    return value


def config_fields(cls) -> dict:
    """``{field name: type}`` of a config dataclass, with string annotations resolved."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def make_config(cls, values: dict, what: str):
    """Build dataclass ``cls`` from ``values``, type-checking each.

    Unknown keys raise ``UserError`` listing the valid ones.
    """
    fields = config_fields(cls)
    unknown = [k for k in values if k not in fields]
    if unknown:
        valid = ", ".join(fields) if fields else "(none)"
        hint = closest(unknown[0], fields)
        hint = f" ({hint})" if hint.startswith("did you mean") else ""
        raise UserError(f"unknown {what} {unknown[0]!r}{hint}; valid keys: {valid}")
    typed = {k: coerce(v, fields[k], k) for k, v in values.items()}
    try:
        return cls(**typed)
    except TypeError as e:  # a dataclass with required fields left out
        raise UserError(f"{what}: {e}") from None


def parse_assignments(items, what: str = "option") -> dict:
    """``["a=1", "b=x"] -> {"a": "1", "b": "x"}``; values stay strings until ``coerce``."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"{what} {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        k = k.strip().replace("-", "_")
        if not k:
            raise UserError(f"{what} {item!r} has an empty key")
        out[k] = v.strip()
    return out
