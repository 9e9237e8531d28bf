"""Mode coverage of 2-D MLP GANs on the ring of 8 and the 5 x 5 grid of 25 Gaussians (std 0.05).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/gan_modes.py --data grid25 [--settings ...]
        [--steps N --batch-size B --hidden 256,256,256 --seed S --tag @name]

The protocol of VEEGAN (Srivastava et al. 2017, arXiv:1705.07761) and PacGAN (Lin et al. 2018,
arXiv:1712.04086): after training, draw 2500 samples from G; a mode is *covered* when at least 20 samples lie
within 3 std (0.15) of its centre; a sample is *high quality* when it lies within 3 std of some centre. Every run is
``dulab.train("gan", data=..., ...)`` with the options below (the loss, and minibatch discrimination or not), one
seed, on one CPU thread, batch 128, Adam lr 5e-3 with betas (0.5, 0.9) decayed by cosine to 2% (a high rate: at
1e-3 neither network grows weights steep enough for modes 0.05 wide within a few thousand steps); the samples are
drawn from the raw (not EMA) generator in eval mode. Writes ``benchmarks/results/gan_modes_<data>.json`` (and the
samples, for the pictures of ``gan_pictures.py``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dulab
from dulab.data import toy2d

ROOT = Path(__file__).resolve().parents[1]
STD = 0.05

#: name -> model options; all use G and D MLPs of 3 hidden layers of 128 units (latent 8) and Adam(0.5, 0.9)
SETTINGS = {
    "minimax": {"loss": "minimax"},
    "non_saturating": {"loss": "non_saturating"},
    "wgan_gp": {"loss": "wasserstein", "clip_value": 0.0, "gp_weight": 0.1, "n_critic": 5},  # lambda 0.1: toy
    "hinge": {"loss": "hinge"},
}
COMMON = {"hidden_sizes": (128, 128, 128), "latent_dim": 8, "betas_g": (0.5, 0.9), "betas_d": (0.5, 0.9)}
MBD = {"minibatch_kernels": 8, "minibatch_kernel_dim": 3}


def setting_options(item: str) -> dict:
    """Model options of a setting name ``loss[+mbd][+packM]``: the loss's options, minibatch discrimination
    (``+mbd``), PacGAN packing of ``M`` samples per D input (``+packM``, Lin et al. 2018)."""
    base, *extras = item.split("+")
    options = dict(SETTINGS[base])
    for extra in extras:
        if extra == "mbd":
            options.update(MBD)
        elif extra.startswith("pack"):
            options["pack"] = int(extra[4:])
        else:
            raise ValueError(f"unknown setting part {extra!r} in {item!r} (mbd, packM)")
    return options
#: training steps (D steps) per dataset: the grid needs more
STEPS = {"ring8": 2000, "grid25": 4000}


def coverage(samples: torch.Tensor, centres: torch.Tensor, std: float = STD, min_count: int = 20) -> dict:
    """Modes covered (>= ``min_count`` samples within 3 std) and the share of samples within 3 std of a mode."""
    dist = torch.cdist(samples.double(), centres.double())  # (N, K)
    near = dist < 3 * std
    per_mode = near.sum(0)
    return {"modes": int((per_mode >= min_count).sum()), "of": len(centres),
            "high_quality": float(near.any(1).double().mean()), "per_mode": per_mode.tolist()}


def run_setting(data: str, name: str, options: dict, *, steps: int, batch_size: int, lr: float, seed: int,
                out: Path, num_samples: int = 2500, common: dict | None = None) -> dict:
    train = dulab.load_dataset(data, num_samples=60000)
    test = dulab.load_dataset(data, "test", num_samples=60000)
    steps_per_epoch = -(-len(train) // batch_size)
    epochs = max(1, round(steps / steps_per_epoch))
    t0 = time.perf_counter()
    run = dulab.train("gan", data=train, eval_data=test, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                      schedule="cosine", min_lr_ratio=0.02, out_dir=out / f"{data}-{name}", overwrite=True,
                      progress=False, verbose=False, sample_fn=None, **{**(common or COMMON), **options})
    seconds = time.perf_counter() - t0
    model = run.model.eval()
    with torch.no_grad():
        samples = model.sample(num_samples, generator=torch.Generator().manual_seed(seed))
    result = coverage(samples, toy2d.mode_centres(data))
    result.update({"setting": name, "lr": lr, "batch_size": batch_size, "options": {**(common or COMMON), **options},
                   "seconds": round(seconds, 1), "steps": run.summary["step"],
                   "fid": run.metrics[-1].get("test_fid")})
    torch.save(samples, out / f"{data}-{name}" / "samples_2500.pt")
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="grid25", choices=["ring8", "grid25"])
    parser.add_argument("--settings", default=",".join(f"{s}{m}" for s in SETTINGS for m in ("", "+mbd")))
    parser.add_argument("--steps", type=int, default=None, help="default: 2000 (ring8), 4000 (grid25)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", default=None, help="hidden widths of G and D, e.g. 256,256,256 (default 128 x 3)")
    parser.add_argument("--latent-dim", type=int, default=None, help="default 8")
    parser.add_argument("--tag", default="", help="suffix of the result keys and run directories, e.g. @wide")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_gan_modes"))
    args = parser.parse_args()
    common = dict(COMMON)
    if args.hidden:
        common["hidden_sizes"] = tuple(int(h) for h in args.hidden.split(","))
    if args.latent_dim:
        common["latent_dim"] = args.latent_dim
    torch.set_num_threads(1)
    out = Path(args.out)
    path = ROOT / "benchmarks" / "results" / f"gan_modes_{args.data}.json"
    for item in args.settings.split(","):
        options = setting_options(item)
        key = item + args.tag
        r = run_setting(args.data, key, options, steps=args.steps or STEPS[args.data], batch_size=args.batch_size,
                        lr=args.lr, seed=args.seed, out=out, common=common)
        print(f"{args.data:7s} {key:20s} modes {r['modes']:2d}/{r['of']}  high-quality {r['high_quality']:.3f}"
              f"  ({r['steps']} steps, {r['seconds']:.0f} s)", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        # re-read before writing, so that runs of this script side by side keep each other's rows
        results = {**(json.loads(path.read_text()) if path.exists() else {}), key: r}
        path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
