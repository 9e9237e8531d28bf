"""Pictures: sample grids, 1-D pmfs, 2-D densities next to the data, training curves.

``save_samples`` picks the picture that suits the data: an image grid for images, a density/pmf plot for 1-D
and 2-D data, rendered text for character data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from dulab.viz.grid import image_grid
from dulab.viz.plots import plot_curves, plot_density_2d, plot_discrete_2d, plot_pmf_1d, plot_text

__all__ = ["save_samples", "save_curves", "image_grid", "draw_samples", "save_image_grid"]


def save_image_grid(x: torch.Tensor, path, num_levels: int | None = None, nrow: int | None = None) -> Path:
    import io

    from dulab.files import atomic_write_bytes

    buf = io.BytesIO()
    image_grid(x, num_levels, nrow=nrow).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


@torch.inference_mode()
def draw_samples(model, num_samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``model.sample``, with balanced class labels as context for class-conditional models."""
    context = None
    if getattr(model, "is_conditional", False):
        k = model.spec.num_classes or getattr(model.config, "num_classes", 1)
        context = torch.arange(num_samples, device=model._param_device()) % k
    return model.sample(num_samples, generator=generator, context=context)


def _enumerate_pmf(model, num_levels: int, dims: int) -> np.ndarray | None:
    if not hasattr(model, "log_prob") or num_levels**dims > 250_000:
        return None
    grid = torch.cartesian_prod(*[torch.arange(num_levels)] * dims) if dims > 1 else torch.arange(num_levels)[:, None]
    grid = grid.reshape(-1, dims).to(model._param_device())
    with torch.inference_mode():
        lp = torch.cat([model.log_prob(chunk) for chunk in grid.split(8192)])
    return lp.exp().cpu().double().numpy().reshape([num_levels] * dims)


def save_samples(model, dataset, path, *, num_samples: int = 64, generator: torch.Generator | None = None,
                 exact: bool = False) -> Path | None:
    """Draw samples and write the picture that suits ``dataset``'s kind; returns the path (``None``: no sampler).

    For 1-D and 2-D data a histogram or scatter needs many points: unless ``exact``, at least 10,000 (discrete) or
    2,000 (continuous) samples are drawn whatever ``num_samples`` says.
    """
    if not hasattr(model, "sample"):
        return None
    spec = dataset.spec
    was_training = model.training
    model.eval()
    try:
        if spec.is_image:
            x = draw_samples(model, num_samples, generator)
            return save_image_grid(x, path, spec.num_levels if spec.is_discrete else None)
        if spec.shape == (1,) and spec.is_discrete:
            x = draw_samples(model, num_samples if exact else max(num_samples, 10_000), generator)
            pmf = _enumerate_pmf(model, spec.num_levels, 1)
            true = dataset.info.get("true_pmf")
            return plot_pmf_1d(path, dataset.x, spec.num_levels, pmf, x,
                               None if true is None else np.asarray(true), title=dataset.name)
        if spec.shape == (2,) and spec.is_discrete:
            x = draw_samples(model, num_samples if exact else max(num_samples, 10_000), generator)
            pmf = _enumerate_pmf(model, spec.num_levels, 2)
            true = dataset.info.get("true_pmf")
            true = None if true is None else np.asarray(true)
            return plot_discrete_2d(path, dataset.x, spec.num_levels, pmf, x, true)
        if spec.shape == (2,):
            x = draw_samples(model, num_samples if exact else max(num_samples, 2000), generator)
            lp = None
            if hasattr(model, "log_prob"):
                dtype = model._param_dtype()

                def lp(g):
                    with torch.inference_mode():
                        return torch.cat([model.log_prob(c.to(model._param_device(), dtype)) for c in g.split(8192)])
            return plot_density_2d(path, dataset.x, x, lp)
        if "vocab" in dataset.info:
            x = draw_samples(model, min(num_samples, 16), generator)
            vocab = dataset.info["vocab"]
            texts = ["".join(vocab[i] for i in row.tolist()) for row in x.cpu()]
            Path(path).with_suffix(".txt").write_text("\n\n".join(texts) + "\n")
            return plot_text(path, texts, title=f"{len(texts)} samples")
        x = draw_samples(model, num_samples, generator)
        D = spec.num_dims
        side = int(math.isqrt(D))
        if side * side == D:  # a flattened square image
            return save_image_grid(x.reshape(-1, 1, side, side), path, spec.num_levels if spec.is_discrete else None)
        return save_image_grid(x.reshape(1, 1, len(x), D), path, spec.num_levels if spec.is_discrete else None)
    finally:
        model.train(was_training)


def save_curves(run_dir) -> Path | None:
    """Redraw ``curves.png`` in a run directory from ``steps.jsonl`` and ``metrics.jsonl``."""
    from dulab.files import read_jsonl

    run_dir = Path(run_dir)
    steps, evals = read_jsonl(run_dir / "steps.jsonl"), read_jsonl(run_dir / "metrics.jsonl")
    if not steps and not evals:
        return None
    return plot_curves(run_dir / "curves.png", steps, evals, title=run_dir.name)
