"""Per-example likelihood scores for anomaly and out-of-distribution (OOD) detection, and why they can fail.

``score`` gives every example's log-likelihood ``log p(x)`` in nats (the model's ``log_prob``); ``dulab score``
writes it with bits/dim to a CSV. The obvious detector flags low likelihood (anomaly score ``-log p(x)``), and
``dulab.metrics.auroc`` measures how well a score separates in- from out-of-distribution sets.

The known failure (Nalisnick et al. 2019a): deep likelihood models can give *higher* likelihood to simpler data
they never saw (constant images, or images with large flat backgrounds) than to their own test data, because
likelihood rewards low complexity as much as resemblance; an anomaly score ``-log p(x)`` then ranks those
outliers as the most normal inputs (AUROC well below 0.5). Two remedies:

* ``typicality_scores`` (Nalisnick et al. 2019b): data of dimension D from the model concentrate in a typical
  set where ``-log p(x)`` is close to the entropy, estimated by the mean NLL ``H`` of held-out in-distribution
  data; the score ``|(-log p(x)) - H|`` (or of the mean over a group of M inputs) flags inputs that are too
  likely as well as those too unlikely;
* ``likelihood_ratio_scores`` (Ren et al. 2019): ``log p(x) - log p_background(x)`` with a background model
  trained on perturbed inputs, which cancels what both models find easy (flat backgrounds) and keeps what is
  specific to the data.

References:
    Nalisnick, Matsukawa, Teh, Gorur, Lakshminarayanan. "Do Deep Generative Models Know What They Don't Know?",
    ICLR 2019, arXiv:1810.09136.
    Nalisnick, Matsukawa, Teh, Lakshminarayanan. "Detecting Out-of-Distribution Inputs to Deep Generative Models
    Using Typicality", 2019, arXiv:1906.02994.
    Ren, Liu, Fertig, Snoek, Poplin, DePristo, Dillon, Lakshminarayanan. "Likelihood Ratios for
    Out-of-Distribution Detection", NeurIPS 2019, arXiv:1906.02845.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from dulab.errors import UserError

__all__ = ["score", "score_to_csv", "typicality_scores", "likelihood_ratio_scores", "perturb"]


def _model_and_data(model_or_run, data, split, which, root, data_options, device):
    from dulab.data import TensorDataset, load_dataset

    name = None
    if isinstance(model_or_run, (str, Path)):
        from dulab.evaluation import run_dataset
        from dulab.training.run import load, read_run_config

        config, _ = read_run_config(model_or_run)
        model = load(model_or_run, which=which, device=device)
        if data is None:
            if data_options is None:
                ds = run_dataset(model_or_run, split, root=root)
            else:
                ds = load_dataset(config.data.name, split, root or config.data.root, **data_options)
            return model, ds, config.data.name
    elif isinstance(model_or_run, torch.nn.Module):
        model = model_or_run.to(device)
        if data is None:
            raise UserError("score(model) needs data=: a dataset name or a dulab TensorDataset")
    else:
        raise UserError(f"score() takes a model or a run directory, got {type(model_or_run).__name__}")
    if isinstance(data, str):
        ds, name = load_dataset(data, split, root, **(data_options or {})), data
    elif isinstance(data, TensorDataset):
        ds, name = data, data.name
    else:
        raise UserError(f"data must be a dataset name or a dulab TensorDataset, got {type(data).__name__}")
    return model, ds, name


def score(model_or_run, data=None, split: str = "test", *, which: str = "auto", root: str | None = None,
          data_options: dict | None = None, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """Per-example log-likelihood ``log p(x)`` in nats (``model.log_prob``, in eval mode), float64.

    Args:
        model_or_run: a density model, or a run directory (loaded with ``which`` weights).
        data: a dataset name or ``TensorDataset``; default: the run's own dataset.
        split: ``"test"`` or ``"train"`` for named datasets.
        root, data_options: where file-backed data live and the dataset's options.
        batch_size: examples per ``log_prob`` call.
        device: where to evaluate.
    Returns:
        ``(N,)`` float64 nats, in the dataset's order (bits/dim: ``-log_prob / (D ln 2)``). For VAEs the
        importance-weighted estimate, for diffusion models the bound, as their ``log_prob`` says.
    """
    model, ds, _ = _model_and_data(model_or_run, data, split, which, root, data_options, device)
    return _score(model, ds, batch_size)


@torch.inference_mode()
def _score(model, ds, batch_size: int) -> torch.Tensor:
    if not hasattr(model, "log_prob"):
        raise UserError(f"{type(model).__name__} has no likelihood (log_prob) to score with")
    spec = model.spec
    if spec.shape != ds.spec.shape or spec.kind != ds.spec.kind or (
            spec.is_discrete and ds.spec.num_levels != spec.num_levels):
        raise UserError(f"the model was built for {spec.describe()}, the data are {ds.spec.describe()}")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    conditional = getattr(model, "is_conditional", False)
    if conditional and (ds.y is None or bool((ds.y < 0).any())):
        raise UserError(f"{type(model).__name__} is class-conditional: every example needs a label")
    was = model.training
    model.eval()
    device = model._param_device() if hasattr(model, "_param_device") else torch.device("cpu")
    out = []
    try:
        for start in range(0, len(ds), batch_size):
            x = ds.x[start:start + batch_size].to(device)
            y = ds.y[start:start + batch_size].to(device) if conditional else None
            out.append(model.log_prob(x, context=y).double().cpu())
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def score_to_csv(model_or_run, path, data=None, split: str = "test", *, which: str = "auto",
                 root: str | None = None, data_options: dict | None = None, batch_size: int = 256,
                 device: str = "cpu") -> dict:
    """``score`` and write ``index,label,log_prob,bpd`` rows to ``path`` (label -1 where there is none).

    Returns:
        ``{"num_examples", "data", "mean_log_prob", "mean_bpd", "path"}``.
    """
    from dulab.files import atomic_write_text

    model, ds, name = _model_and_data(model_or_run, data, split, which, root, data_options, device)
    log_prob = _score(model, ds, batch_size)
    D = ds.spec.num_dims
    bpd = -log_prob / (D * math.log(2))
    labels = ds.labels_or_default().tolist()
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "label", "log_prob", "bpd"])
    for i, (lp, b) in enumerate(zip(log_prob.tolist(), bpd.tolist())):
        w.writerow([i, labels[i], repr(lp), repr(b)])
    atomic_write_text(path, buf.getvalue())
    n = len(log_prob)
    return {"num_examples": n, "data": name or "data", "path": str(path),
            "mean_log_prob": float(log_prob.mean()) if n else float("nan"),
            "mean_bpd": float(bpd.mean()) if n else float("nan")}


def typicality_scores(log_prob: torch.Tensor, reference_log_prob: torch.Tensor, *,
                      group_size: int = 1) -> torch.Tensor:
    """Typicality test statistic (Nalisnick et al. 2019b, eq. 4): distance of the NLL from the entropy estimate.

    Args:
        log_prob: ``(N,)`` log-likelihoods (nats) of the inputs to test.
        reference_log_prob: ``(R,)`` log-likelihoods of held-out *in-distribution* data (not the test split):
            their mean NLL estimates the entropy ``H``.
        group_size: M; consecutive groups of M inputs are tested together (their mean NLL), the last partial
            group dropped. M = 1 tests single inputs.
    Returns:
        ``(N // M,)`` anomaly scores ``|mean NLL of the group - H|`` (higher: less typical).
    """
    if group_size < 1:
        raise UserError(f"group_size must be >= 1, got {group_size}")
    if len(reference_log_prob) == 0:
        raise UserError("typicality needs reference log-likelihoods of in-distribution data")
    entropy = -reference_log_prob.double().mean()
    nll = -log_prob.double()
    n = len(nll) // group_size * group_size
    return (nll[:n].view(-1, group_size).mean(1) - entropy).abs()


def likelihood_ratio_scores(log_prob: torch.Tensor, background_log_prob: torch.Tensor) -> torch.Tensor:
    """Anomaly scores from the likelihood ratio (Ren et al. 2019, eq. 5): ``-(log p(x) - log p_background(x))``."""
    if log_prob.shape != background_log_prob.shape:
        raise UserError(f"log_prob {tuple(log_prob.shape)} and background_log_prob "
                        f"{tuple(background_log_prob.shape)} must have the same shape")
    return -(log_prob.double() - background_log_prob.double())


def perturb(x: torch.Tensor, num_levels: int, rate: float, *, generator: torch.Generator | None = None):
    """Ren et al. 2019's background data: each dimension replaced by a uniform level with probability ``rate``."""
    if not 0.0 <= rate <= 1.0:
        raise UserError(f"rate must be in [0, 1], got {rate}")
    flip = torch.rand(x.shape, generator=generator) < rate
    noise = torch.randint(num_levels, x.shape, generator=generator)
    return torch.where(flip, noise, x)
