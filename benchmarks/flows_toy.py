"""KL to the true density for every flow on the 2-D toys with a closed-form density, trained with each model's
``dulab.train`` defaults (the same as ``dulab train MODEL --data NAME``), plus the README pictures: data, data pushed
to the latent space, samples and density heat maps.

``test_kl_to_truth`` is the test NLL minus the true entropy (both nats, estimated on the test split),
i.e. KL(p || model).

    .venv/bin/python benchmarks/flows_toy.py [--quick] [--models maf,glow] [--datasets checkerboard]

Writes ``benchmarks/results/flows_toy.json`` (after every run, so partial results survive) and
``benchmarks/results/flows/<model>_<dataset>.png``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import dulab  # noqa: E402
from dulab.registry import MODELS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
DATASETS = ["eight_gaussians", "checkerboard", "gaussians2d"]


@torch.no_grad()
def picture(model, ds, path: Path, title: str) -> None:
    """Data | data pushed to the latent | samples | model density | true density (where known)."""
    model.eval()
    x = ds.x[:3000]
    z, _ = model.transform(x)
    if type(model).__name__ == "CDFFlow":
        z = torch.sigmoid(z)  # the CDF flow's latent is logistic; its sigmoid is the Uniform(0, 1) of the lecture
    s = model.sample(3000, generator=torch.Generator().manual_seed(0))
    lim = 4.5
    n = 200
    axis = torch.linspace(-lim, lim, n)
    grid = torch.cartesian_prod(axis, axis)  # (n*n, 2), first coordinate slowest
    dens = torch.cat([model.log_prob(c).exp() for c in grid.split(8192)]).view(n, n).T
    panels = 5 if ds.true_log_prob is not None else 4
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.3))
    axes[0].scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
    axes[0].set_title("data")
    axes[1].scatter(z[:, 0], z[:, 1], s=1, alpha=0.4, c="tab:orange")
    axes[1].set_title("data pushed to latent")
    axes[2].scatter(s[:, 0], s[:, 1], s=1, alpha=0.4, c="tab:green")
    axes[2].set_title("samples")
    axes[3].imshow(dens.numpy(), origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis")
    axes[3].set_title("model density")
    if panels == 5:
        true = ds.true_log_prob(grid.double()).exp().float().view(n, n).T
        axes[4].imshow(true.numpy(), origin="lower", extent=(-lim, lim, -lim, lim), cmap="viridis")
        axes[4].set_title("true density")
    for a in (axes[0], axes[2]):
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
    for a in axes:
        a.set_aspect("equal")
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 epochs per run (a smoke test, not the benchmark)")
    p.add_argument("--models", default=",".join(n for n, e in MODELS.items() if e.family == "flow"))
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--out", default=str(RESULTS / "flows_toy.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    out_path = Path(args.out)
    results = json.loads(out_path.read_text()) if out_path.exists() and not args.quick else {}
    for data in args.datasets.split(","):
        ds = dulab.load_dataset(data, "train")
        for name in args.models.split(","):
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.time()
                run = dulab.train(name, data=data, out_dir=Path(tmp) / "run", progress=False, sample_fn=None,
                                  **({"epochs": 3} if args.quick else {}))
                wall = time.time() - t0
            final = run.final
            results.setdefault(data, {})[name] = {
                "test_kl_to_truth": final.get("test_kl_to_truth"), "test_nll": final.get("test_nll"),
                "epochs": final.get("epoch"),
                "steps": final.get("step"), "train_seconds": final.get("time"), "wall_seconds": wall,
                "num_parameters": run.model.num_parameters, "quick": args.quick,
                "date": time.strftime("%Y-%m-%d")}
            kl = final.get("test_kl_to_truth")
            print(f"{data:16s} {name:10s} KL {kl:.4f} nats  {final.get('time'):.0f} s", flush=True)
            picture(run.model, ds, RESULTS / "flows" / f"{name}_{data}.png",
                    f"{name} on {data}: KL {final.get('test_kl_to_truth'):.3f} nats")
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=2))
    print("\n| data | " + " | ".join(n for n in args.models.split(",")) + " |")
    print("| --- |" + " ---: |" * len(args.models.split(",")))
    for data, r in results.items():
        cells = [f"{r[n]['test_kl_to_truth']:.3f} ({r[n]['train_seconds']:.0f} s)" if n in r else "-"
                 for n in args.models.split(",")]
        print(f"| {data} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
