"""``dulab.evaluate``: every metric that applies to a model on a dataset, for any family.

Three layers, each used when it applies:

* the model's ``Task.evaluate`` (likelihood models: loss, nll, bits/dim and KL to a closed-form density; other
  families: what their task measures);
* sample quality (FID, KID, IS, precision/recall against the dataset, ``dulab.metrics.sample_quality``) for models
  that sample images of a dataset with a feature extractor (shipped ones, or ``feature_weights=``);
* representation probes (linear probe and k-NN accuracy, beside raw pixels and a randomly initialised copy of the
  model) for representation models (``is_representation = True``) on labelled data.

``dulab eval RUN`` and ``dulab compare`` call this function; the engine calls the task's part after each epoch.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dulab.errors import UserError

__all__ = ["evaluate", "has_extractor", "run_dataset"]


def has_extractor(dataset_name: str | None, spec) -> bool:
    """Whether a shipped feature extractor fits data ``spec`` of dataset ``dataset_name`` (as they are, or enlarged by
    an integer factor: ``dulab.metrics.sample_quality.upsampling_factor``)."""
    from dulab.metrics.extractors import EXTRACTORS, extractor_for
    from dulab.metrics.sample_quality import upsampling_factor

    if dataset_name not in EXTRACTORS or not spec.is_image:
        return False
    extractor = extractor_for(dataset_name, shape=spec.shape)
    return upsampling_factor(spec.shape, getattr(extractor, "input_shape", spec.shape), spec.num_levels,
                             getattr(extractor, "num_levels", spec.num_levels)) is not None


def run_dataset(run_dir, split: str = "test", *, root: str | None = None):
    """The dataset a run was trained on (its ``split``), from ``config.json``; ``root`` overrides the data folder."""
    from dulab.data import load_dataset
    from dulab.registry import DATASETS
    from dulab.training.run import read_run_config

    config, spec = read_run_config(run_dir)
    if config.data.name not in DATASETS:
        raise UserError(f"{run_dir} was trained on in-memory data ({config.data.name!r}); pass the data:"
                        " dulab.evaluate(run_dir, data=dataset)")
    ds = load_dataset(config.data.name, split, root or config.data.root, **config.data.options)
    if ds.spec.shape != spec.shape or ds.spec.kind != spec.kind or ds.spec.num_levels != spec.num_levels:
        raise UserError(f"the data found are {ds.spec.describe()}, the run was trained on {spec.describe()}")
    return ds


def evaluate(model_or_run_dir, data=None, split: str = "test", *, which: str = "auto", root: str | None = None,
             data_options: dict | None = None, sample_quality: bool | None = None, num_samples: int | None = None,
             probe: bool | None = None, probe_labels_per_class: int | None = None,
             feature_weights: str | None = None, batch_size: int = 256, seed: int = 0, device: str = "cpu",
             progress: bool = False) -> dict:
    """Evaluate a model (or a run directory) on a dataset split with every metric that applies.

    Args:
        model_or_run_dir: a dulab model, or a run directory (its model is loaded with ``which`` weights).
        data: a dataset name or a ``TensorDataset``; default: the run's own dataset (run directories only).
        split: ``"test"`` or ``"train"`` (for named datasets).
        which: weights of a run directory: ``auto`` (the ones the run's last evaluation preferred), ``last``,
            ``best`` or ``ema``.
        root: the folder of file-backed datasets (overrides the one stored in the run).
        data_options: options of a named dataset (default: the run's).
        sample_quality: compute FID/KID/IS/precision/recall of ``num_samples`` samples (``None``: when the model
            samples images and an extractor exists for the data).
        num_samples: samples drawn for sample quality (default: the size of the split, at most 1000).
        probe: linear/k-NN probes of ``model.encode`` (``None``: for representation models on labelled data).
        probe_labels_per_class: fit the probes on only this many labelled training examples per class (the data
            layer's ``labels_per_class``; the test split keeps every label).
        feature_weights: a local InceptionV3 FID weights file (data without a shipped extractor).
        batch_size: examples per evaluation batch.
        seed: seeds sampling and any randomness of the evaluation.
        device: where to evaluate.
        progress: print what is being computed.
    Returns:
        A flat dict: ``split``, ``weights`` (for run directories), ``num_examples``, the task's metrics (``loss``,
        ``nll``, ``bpd``, ...), and where applicable ``fid``, ``kid``, ``kid_std``, ``inception_score``,
        ``precision``, ``recall``, ``linear_probe``, ``knn_accuracy`` and their baselines.
    """
    from dulab.config import TrainConfig
    from dulab.data import TensorDataset, load_dataset
    from dulab.training.tasks import get_task_class

    result: dict = {"split": split}
    data_name = None
    if isinstance(model_or_run_dir, (str, Path)):
        from dulab.training.run import load, read_run_config, resolve_weights

        run_dir = Path(model_or_run_dir)
        config, _ = read_run_config(run_dir)
        which = resolve_weights(run_dir, which)
        model = load(run_dir, which=which, device=device)
        result["weights"] = which
        if data is None:
            if data_options is None:
                ds = run_dataset(run_dir, split, root=root)
                data_options = dict(config.data.options)
            else:
                ds = load_dataset(config.data.name, split, root or config.data.root, **data_options)
            root = root or config.data.root
            data_name = config.data.name
        else:
            ds = None
    elif isinstance(model_or_run_dir, torch.nn.Module):
        model = model_or_run_dir.to(device)
        if data is None:
            raise UserError("evaluate(model) needs data=: a dataset name or a dulab TensorDataset")
        ds = None
    else:
        raise UserError(f"evaluate() takes a model or a run directory, got {type(model_or_run_dir).__name__}")
    if ds is None:
        if isinstance(data, str):
            ds, data_name = load_dataset(data, split, root, **(data_options or {})), data
        elif isinstance(data, TensorDataset):
            ds, data_name = data, getattr(data, "name", None)
        else:
            raise UserError(f"data must be a dataset name or a dulab TensorDataset, got {type(data).__name__}")
    spec = getattr(model, "spec", None)
    if spec is not None and (spec.shape != ds.spec.shape or spec.kind != ds.spec.kind):
        raise UserError(f"the model was built for {spec.describe()}, the data are {ds.spec.describe()}")
    result["num_examples"] = len(ds)
    model.eval()

    task = get_task_class(model)(model, TrainConfig(batch_size=batch_size, device="cpu"), seed=seed)
    if progress:
        print(f"evaluating {type(model).__name__} on {len(ds)} examples ...", flush=True)
    result.update(task.evaluate(ds))

    # --- sample quality
    can_sample = hasattr(model, "sample") and ds.spec.is_image
    extractor_ok = feature_weights is not None or has_extractor(data_name, ds.spec)
    if sample_quality is None:
        sample_quality = can_sample and extractor_ok and not any(k in result for k in ("fid", "kid"))
        if progress and can_sample and not extractor_ok:
            print(f"no shipped feature extractor fits {data_name or 'these data'} ({ds.spec.describe()}): FID/KID/IS "
                  f"skipped (pass --feature-weights PATH, a local InceptionV3 FID weights file)", flush=True)
    if sample_quality:
        if not can_sample:
            raise UserError(f"{type(model).__name__} does not sample images: no sample quality to measure")
        result.update(_sample_quality(model, ds, data_name, num_samples, feature_weights, seed, progress))

    # --- representation probes
    labelled = ds.y is not None and (ds.y >= 0).any()
    if probe is None:
        probe = bool(getattr(model, "is_representation", False)) and labelled and hasattr(model, "encode")
    if probe:
        result.update(_probes(model, ds, data_name, split, root, data_options, seed, progress,
                              probe_labels_per_class))
    return result


def _sample_quality(model, ds, data_name, num_samples, feature_weights, seed, progress) -> dict:
    from dulab.metrics import sample_quality as quality
    from dulab.metrics.extractors import extractor_for
    from dulab.viz import draw_samples

    n = num_samples or min(len(ds), 1000)
    if n < 10:
        raise UserError(f"sample quality needs at least 10 samples, got {n}")
    extractor = extractor_for(data_name or "", feature_weights=feature_weights,
                              num_levels=ds.spec.num_levels, shape=ds.spec.shape)
    if progress:
        print(f"drawing {n} samples for FID/KID/IS/precision/recall ...", flush=True)
    g = torch.Generator(device=next(iter(model.parameters()), torch.empty(0)).device).manual_seed(seed)
    chunks = []
    with torch.inference_mode():
        for start in range(0, n, 500):
            chunks.append(draw_samples(model, min(500, n - start), g).cpu())
    samples = torch.cat(chunks)
    out = quality(samples, ds, extractor=extractor, generator=torch.Generator().manual_seed(seed))
    out["num_samples"] = int(out.get("num_samples", n))
    return {k: (float(v) if isinstance(v, float) and math.isfinite(v) else v) for k, v in out.items()}


def _probes(model, ds, data_name, split, root, data_options, seed, progress, labels_per_class) -> dict:
    from dulab.data import load_dataset
    from dulab.metrics import probe_suite

    if data_name is None:
        raise UserError("probes need the training split of a named dataset (pass data= a dataset name)")
    train_options = dict(data_options or {})
    if labels_per_class is not None:
        train_options["labels_per_class"] = labels_per_class
    train_ds = load_dataset(data_name, "train", root, **train_options)
    test_ds = ds if split == "test" else load_dataset(data_name, "test", root, **(data_options or {}))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        fresh = type(model)(model.spec, model.config).to(next(iter(model.parameters())).device).eval()
    if progress:
        print("probing the representation (linear and k-NN, with baselines) ...", flush=True)
    return probe_suite(model.encode, train_ds, test_ds, baseline_encoders={"random_init": fresh.encode})
