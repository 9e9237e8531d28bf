"""Pictures of GAN training: the 1-D figure and the 2-D mode-coverage panels (docs/img/).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/gan_pictures.py [--only 1d|2d]

``gan_1d.png``: the figure of the Berkeley CS294-158 GAN lecture / homework: a histogram of real 1-D data (a
two-component mixture), a histogram of G's samples and D's output ``sigmoid(D(x))`` over x, at the start and at the
end of training, for the minimax (saturating) and the non-saturating generator loss, through ``AdversarialTask``
with the same seed and networks. ``gan_modes.png``: for ring8 and grid25, G's 2500 samples over the data with D's
output as contours, for the best and the worst setting of ``benchmarks/gan_modes.py`` (read from its results and
run directories: run that first).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from lightning_fabric import Fabric  # noqa: E402

import dulab  # noqa: E402
from dulab.config import TrainConfig  # noqa: E402
from dulab.data import toy2d  # noqa: E402
from dulab.data.base import DataSpec  # noqa: E402
from dulab.models.gan.tricks import MinibatchDiscrimination  # noqa: E402
from dulab.training.batch import Batch  # noqa: E402
from dulab.training.tasks import AdversarialTask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IMG = ROOT / "docs" / "img"


def _real_1d(n: int, g: torch.Generator) -> torch.Tensor:
    """0.5 N(-1.5, 0.4^2) + 0.5 N(1.5, 0.4^2), ``(n, 1)``."""
    sign = torch.randint(0, 2, (n, 1), generator=g) * 2.0 - 1.0
    return 1.5 * sign + 0.4 * torch.randn(n, 1, generator=g)


def _snapshot(model, g_seed=0, n=5000):
    model.eval()
    with torch.no_grad():
        fake = model.sample(n, generator=torch.Generator().manual_seed(g_seed))[:, 0]
        grid = torch.linspace(-4, 4, 401)
        d = torch.sigmoid(model.discriminate(grid[:, None]))
    model.train()
    return fake, grid, d


def figure_1d(steps: int = 1500, seed: int = 0) -> None:
    spec = DataSpec((1,), "continuous")
    real = _real_1d(20000, torch.Generator().manual_seed(seed))
    rows = {}
    for kind in ("minimax", "non_saturating"):
        torch.manual_seed(seed)
        model = dulab.build_model("gan", spec, loss=kind, hidden_sizes=(64, 64), latent_dim=2)
        fabric = Fabric(accelerator="cpu", devices=1)
        task = AdversarialTask(model, TrainConfig(lr=1e-3, betas=(0.5, 0.999)), seed=seed)
        opts, scheds = task.configure_optimizers(lambda k: 1.0)
        module, *opts = fabric.setup(model, *opts)
        task.setup(fabric, module, opts, scheds)
        start = _snapshot(model)
        g = torch.Generator().manual_seed(seed + 1)
        for step in range(steps):
            idx = torch.randint(0, len(real), (128,), generator=g)
            task.training_step(Batch(real[idx], torch.full((128,), -1)), step)
        rows[kind] = (start, _snapshot(model))
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.6), sharex=True)
    bins = torch.linspace(-4, 4, 81).numpy()
    for r, (kind, snaps) in enumerate(rows.items()):
        for c, (when, (fake, grid, d)) in enumerate(zip(("start", f"after {steps} steps"), snaps)):
            ax = axes[r, c]
            ax.hist(real[:, 0].numpy(), bins=bins, density=True, alpha=0.5, label="real")
            ax.hist(fake.clamp(-4, 4).numpy(), bins=bins, density=True, alpha=0.5, label="fake")
            ax.plot(grid.numpy(), d.numpy(), "k", label="D(x)")
            ax.set_ylim(0, 1.4)
            ax.set_title(f"{kind}, {when}", fontsize=10)
            if r == 0 and c == 0:
                ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(IMG / "gan_1d.png", dpi=72)
    plt.close(fig)


def _discriminate_grid(model, grid: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """D's logits on grid points. With minibatch discrimination D's output depends on the batch: each point is then
    scored as if it were one example of a batch holding also ``context`` (127 of G's samples: a fake batch). With
    PacGAN packing (no minibatch discrimination with it here) a point is scored as a pack of ``m`` copies of it."""
    mbd = next((m for m in model.D.modules() if isinstance(m, MinibatchDiscrimination)), None)
    if model.config.pack > 1:  # PacGAN: D scores packs; each point is scored as a pack of copies of itself
        grid = grid.repeat_interleave(model.config.pack, 0)
    if mbd is None:
        return model.discriminate(grid)
    f, f_ctx = model.discriminator_features(grid), model.discriminator_features(context)  # (G, A), (K, A)
    m = (f @ mbd.T).reshape(len(f), mbd.num_kernels, mbd.kernel_dim).transpose(0, 1)  # (B, G, C)
    m_ctx = (f_ctx @ mbd.T).reshape(len(f_ctx), mbd.num_kernels, mbd.kernel_dim).transpose(0, 1)  # (B, K, C)
    o = torch.exp(-torch.cdist(m, m_ctx, p=1)).sum(2).transpose(0, 1)  # (G, B)
    head = model.D[-1]  # Sequential(MinibatchDiscrimination, Linear)
    return head[1:](torch.cat([f, o], 1)).reshape(-1)


def _panel(ax, data: str, setting: str, result: dict, run_dir: Path) -> None:
    model = dulab.load(run_dir, which="last").eval()
    samples = torch.load(run_dir / "samples_2500.pt")
    lim = 2.8 if data == "ring8" else 5.0
    c = torch.linspace(-lim, lim, 201)
    xx, yy = torch.meshgrid(c, c, indexing="xy")
    with torch.no_grad():
        out = _discriminate_grid(model, torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), samples[:127])
        out = out.reshape(xx.shape)
    if model.config.loss in ("minimax", "non_saturating"):
        out, label = torch.sigmoid(out), "sigmoid D(x)"
    else:
        label = "critic D(x)"
    cs = ax.contourf(xx.numpy(), yy.numpy(), out.numpy(), levels=12, cmap="Greys", alpha=0.6)
    plt.colorbar(cs, ax=ax, fraction=0.046, pad=0.03).set_label(label, fontsize=7)
    centres = toy2d.mode_centres(data)
    ax.scatter(centres[:, 0], centres[:, 1], s=60, facecolors="none", edgecolors="tab:blue", linewidths=1)
    ax.scatter(samples[:, 0], samples[:, 1], s=1.5, c="tab:red", alpha=0.5)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(f"{data}, {setting}: {result['modes']}/{result['of']} modes, "
                 f"{100 * result['high_quality']:.0f}% HQ", fontsize=9)
    ax.tick_params(labelsize=7)


def figure_modes(out: Path) -> None:
    fig, axes = plt.subplots(2, 2, figsize=(10, 9.4))
    for r, data in enumerate(("ring8", "grid25")):
        results = json.loads((ROOT / "benchmarks" / "results" / f"gan_modes_{data}.json").read_text())
        ranked = sorted(results.items(), key=lambda kv: (kv[1]["modes"], kv[1]["high_quality"]))
        for ax, (setting, result) in zip(axes[r], (ranked[-1], ranked[0])):
            _panel(ax, data, setting, result, out / f"{data}-{setting}")
    fig.suptitle("G's samples (red) over the modes (blue circles) and D's output: best (left), worst (right)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(IMG / "gan_modes.png", dpi=66)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["1d", "2d"], default=None)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_gan_modes"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    IMG.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "1d"):
        figure_1d()
    if args.only in (None, "2d"):
        figure_modes(Path(args.out))


if __name__ == "__main__":
    main()
