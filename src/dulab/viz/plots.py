"""Matplotlib pictures (Agg backend, PNG): 1-D pmfs, 2-D densities next to the data, training curves, text."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

__all__ = ["plot_pmf_1d", "plot_discrete_2d", "plot_density_2d", "plot_curves", "plot_text"]


def _save(fig, path) -> Path:
    import io

    from dulab.files import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def plot_pmf_1d(path, data: torch.Tensor, num_levels: int, model_pmf: np.ndarray | None, samples: torch.Tensor,
                true_pmf: np.ndarray | None = None, title: str = "") -> Path:
    """Bars of the data frequencies, the model's pmf (line) and a histogram of model samples."""
    k = np.arange(num_levels)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    if data.numel():  # a run sampled without its data has none to show
        freq = np.bincount(data.reshape(-1).cpu().numpy(), minlength=num_levels) / data.numel()
        axes[0].bar(k, freq, color="#9ecae1", label="training data")
    if true_pmf is not None:
        axes[0].plot(k, true_pmf, "k--", lw=1, label="true pmf")
    if model_pmf is not None:
        axes[0].plot(k, model_pmf, "C3-", lw=2, label="model pmf")
    axes[0].set_title(f"{title} density".strip())
    axes[0].legend(fontsize=8)
    sfreq = np.bincount(samples.reshape(-1).cpu().numpy(), minlength=num_levels) / samples.numel()
    axes[1].bar(k, sfreq, color="#fdae6b")
    axes[1].set_title(f"{samples.numel()} model samples")
    for ax in axes:
        ax.set_xlabel("x")
    return _save(fig, path)


def plot_discrete_2d(path, data: torch.Tensor, num_levels: int, model_pmf: np.ndarray | None, samples: torch.Tensor,
                     true_pmf: np.ndarray | None = None) -> Path:
    """Heat maps of the 2-D joint: data counts, model pmf, model samples."""
    def counts(v):
        h = np.zeros((num_levels, num_levels))
        np.add.at(h, (v[:, 0].cpu().numpy(), v[:, 1].cpu().numpy()), 1)
        return h / max(1, len(v))

    panels = [("training data", counts(data))] if len(data) else []
    if true_pmf is not None:
        panels.append(("true pmf", true_pmf))
    if model_pmf is not None:
        panels.append(("model pmf", model_pmf))
    panels.append((f"{len(samples)} samples", counts(samples)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.4))
    for i, (ax, (t, h)) in enumerate(zip(np.atleast_1d(axes), panels)):
        ax.imshow(h, cmap="viridis", origin="upper")
        ax.set_title(t)
        ax.set_xlabel("x2")
        if i == 0:
            ax.set_ylabel("x1")
    return _save(fig, path)


def plot_density_2d(path, data: torch.Tensor, samples: torch.Tensor, log_prob_fn=None, extent=None,
                    resolution: int = 160) -> Path:
    """Continuous 2-D: data scatter, model samples, and the model density on a grid."""
    s = samples.detach().cpu().float().numpy()
    d = data.cpu().numpy() if len(data) else np.empty((0, 2))
    if extent is None:
        d_or_s = d if len(d) else s
        lo, hi = np.percentile(d_or_s, 0.5, axis=0), np.percentile(d_or_s, 99.5, axis=0)
        pad = 0.15 * (hi - lo) + 1e-3
        extent = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
    n_panels = 3 if log_prob_fn is not None else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(3.6 * n_panels, 3.6))
    kw = dict(s=2, alpha=0.4, rasterized=True)
    axes[0].scatter(d[:5000, 0], d[:5000, 1], color="C0", **kw)
    axes[0].set_title("data" if len(d) else "data (not available)")
    axes[1].scatter(s[:, 0], s[:, 1], color="C3", **kw)
    axes[1].set_title(f"{len(s)} samples")
    if log_prob_fn is not None:
        xs = np.linspace(extent[0], extent[1], resolution)
        ys = np.linspace(extent[2], extent[3], resolution)
        gx, gy = np.meshgrid(xs, ys)
        grid = torch.tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32)
        lp = log_prob_fn(grid).reshape(resolution, resolution).cpu().numpy()
        axes[2].imshow(np.exp(lp), origin="lower", extent=extent, cmap="magma", aspect="auto")
        axes[2].set_title("model density")
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal", adjustable="box")
    return _save(fig, path)


def plot_curves(path, steps: list[dict], evals: list[dict], title: str = "") -> Path:
    """Train loss per logged step and test loss (and bits/dim) per evaluation."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    if steps:
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="C0", lw=1, label="train loss")
    ev = [r for r in evals if r.get("test_loss") is not None]
    if ev:
        ax.plot([r["step"] for r in ev], [r["test_loss"] for r in ev], "o-", color="C3", ms=3, label="test loss")
    ax.set_xlabel("step")
    # Density models' loss is the NLL per dimension in nats (bits/dim = nats/dim / ln 2).
    per_dim = any("test_nll" in r for r in evals)
    ax.set_ylabel("loss (nats per dimension)" if per_dim else "loss")
    finite = [r["loss"] for r in steps if math.isfinite(r["loss"])] + [r["test_loss"] for r in ev]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 20:
        ax.set_yscale("log")
    if any("test_bpd" in r for r in ev):
        best = min(r["test_bpd"] for r in ev if "test_bpd" in r)
        title = f"{title}  (best test {best:.3f} bits/dim)".strip()
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_text(path, texts: list[str], title: str = "samples") -> Path:
    """Render text samples to a PNG (monospace)."""
    shown = [t.replace("\t", "  ") for t in texts[:16]]
    lines: list[str] = []
    for t in shown:
        lines.extend(t.splitlines() or [""])
        lines.append("-" * 40)
    lines = lines[:80]
    fig = plt.figure(figsize=(9, 0.18 * len(lines) + 0.6))
    fig.text(0.01, 0.99, "\n".join(lines), family="monospace", fontsize=8, va="top")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
