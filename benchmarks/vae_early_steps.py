"""The first Adam steps of ``vae`` on sprites 32x32, step by step: why the plain VAE collapsed there.

Trains ``vae`` (10 latents, the MIG setting of ``latent_more.py mig``; KL warm-up 300 steps) with plain Adam at lr
2e-3 on batches of 64 drawn with a fixed generator, and prints the loss (per dimension), KL, reconstruction (nats per
image), the range of q(z|x)'s log-variances, the largest |mean| and the gradient norm, at the first steps and every
40 steps. ``--caps``: ``on`` (the model as shipped, ``vae.bound_posterior``), ``off`` (the raw encoder outputs, as
before the caps), ``nvae`` (NVAE's symmetric soft clamp, ``5 tanh(mean / 5)`` and ``10 tanh(log_var / 10)``).
Writes benchmarks/results/vae_early_steps_<caps>.json.

Usage:
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vae_early_steps.py --caps off [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--caps", choices=["on", "off", "nvae"], default="on")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    import dulab
    import dulab.models.latent.vae as vae_module

    torch.set_num_threads(1)
    if args.caps == "off":
        vae_module.bound_posterior = lambda mean, log_var: (mean, log_var)
    elif args.caps == "nvae":
        vae_module.bound_posterior = lambda mean, log_var: (5 * torch.tanh(mean / 5), 10 * torch.tanh(log_var / 10))
    torch.manual_seed(args.seed)
    ds = dulab.load_dataset("sprites", split="train", size=32, num_samples=6000)
    model = dulab.build_model("vae", ds.spec, latent_dim=10, kl_warmup_steps=300).train()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(args.seed)
    rows = []
    for step in range(args.steps):
        x = ds.x[torch.randint(0, len(ds.x), (64,), generator=g)]
        with torch.no_grad():
            mean, log_var = model.posterior(x)
        out = model.loss(x)
        opt.zero_grad()
        out["loss"].backward()
        grad_norm = float(sum(q.grad.square().sum() for q in model.parameters() if q.grad is not None).sqrt())
        opt.step()
        if step < 6 or step % 40 == 0 or step == args.steps - 1:
            row = {"step": step, "loss": float(out["loss"].detach()), "kl": float(out["kl"].detach()),
                   "recon": float(out["recon"].detach()),
                   "log_var_min": float(log_var.min()), "log_var_max": float(log_var.max()),
                   "mean_abs_max": float(mean.abs().max()), "grad_norm": grad_norm}
            rows.append(row)
            print({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"vae_early_steps_{args.caps}.json").write_text(json.dumps({"machine": machine(), "args": vars(args),
                                                                            "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
