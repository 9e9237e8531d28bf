"""Test bits/dim of trained latent-variable runs by the importance-weighted estimate log p(x) ~ IWAE_K.

``dulab eval RUN`` reports bits/dim from the negative ELBO (an upper bound); this script adds the K-sample estimate
(``model.log_prob(x, num_samples=K)``, default K = 1000), the test KL and the active units (Burda et al. 2016).

Usage:
    .venv/bin/python benchmarks/latent_bpd.py RUN [RUN ...] [--num-samples 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine  # noqa: E402


def main(argv=None) -> None:
    import dulab
    from dulab.evaluation import run_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {machine()}; K = {args.num_samples}\n")
    print("| run | data | test -ELBO bpd | test IWAE bpd (K) | test KL (nats) | active units | eval s |")
    print("|---|---|---|---|---|---|---|")
    for run in args.runs:
        model = dulab.load(run).eval()
        ds = run_dataset(run, "test")
        D = ds.spec.num_dims
        g = torch.Generator().manual_seed(args.seed)
        t0 = time.time()
        neg_elbo, lp, kl = [], [], []
        with torch.inference_mode():
            for x in ds.x.split(args.batch_size):
                neg_elbo.append(-model.elbo(x, generator=g))
                lp.append(model.log_prob(x, num_samples=args.num_samples, generator=g))
                kl.append(model.loss(x)["kl"] * len(x))
            diag = model.posterior_diagnostics(ds.x)
        nll_elbo, nll = float(torch.cat(neg_elbo).mean()), -float(torch.cat(lp).mean())
        to_bpd = 1 / (D * math.log(2))
        print(f"| `{Path(run).name}` | {ds.spec.describe()} | {nll_elbo * to_bpd:.4f} | "
              f"{nll * to_bpd:.4f} ({args.num_samples}) | {float(sum(kl)) / len(ds):.2f} | "
              f"{diag['active_units']} / {model.config.latent_dim} | {time.time() - t0:.1f} |", flush=True)


if __name__ == "__main__":
    main()
