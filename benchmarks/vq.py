"""VQ-VAE and VQ-VAE-2 with a learned prior: reconstruction, codebook usage, prior nats/code and sample FID.

For each dataset: ``dulab train vq_vae`` (first stage, uniform prior), then ``dulab train vq_prior --set
vq_run=RUN`` (a transformer over the codes), both through the CLI as a user would; the same for ``vq_vae2``. Then,
from the run directories: test reconstruction error (MSE with levels scaled to [0, 1], and the uniform-prior bound
in bits/dim), codebook perplexity and codes used, the prior's test nats per code (and the bits/dim of the negative
ELBO with the learned prior), and FID (shipped extractor, ``dulab.metrics.sample_quality``) of as many end-to-end
samples as there are test images, next to the FID of decoded uniform codes (no prior) and of the reconstructions
of the test images (what a perfect prior could reach with this decoder). Pictures go to docs/img/.

Usage:
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/vq.py digits [sprites ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, markdown_table, run_cli, save  # noqa: E402

#: per dataset: data options, first-stage epochs, training options and hyperparameters, prior epochs (CLI defaults
#: elsewhere). Sprites (64x64) are slow on one thread: fewer, narrower, smaller-batch steps.
SETTINGS = {
    "digits": {"options": [], "epochs": 30, "train": [], "sets": [], "prior_epochs": 30},
    "digits_color": {"options": [], "epochs": 30, "train": [], "sets": [], "prior_epochs": 30},
    "sprites": {"options": ["--data-option", "num_samples=2000"], "epochs": 8,
                "train": ["--batch-size", "32", "--lr", "3e-3"], "sets": ["--set", "hidden_channels=16"],
                "prior_epochs": 10},
    # photos (3x32x32, 256 levels): no shipped feature extractor, so no FID (reported as None)
    # (a first try with num_crops=1000 and 5 + 5 epochs learned only the mean colour: vq_photos_crops1000_e5.json)
    "photos": {"options": ["--data-option", "num_crops=2000"], "epochs": 10, "train": ["--batch-size", "32"],
               "sets": [], "prior_epochs": 5},
}


def _grid_pictures(name, data, vq, prior, test, out_dir, tag=""):
    from dulab.viz import save_image_grid

    g = torch.Generator().manual_seed(0)
    levels = test.spec.num_levels
    x = test.x[:16]
    with torch.inference_mode():
        rec = vq.reconstruct(x)
        samples = prior.sample(48, generator=g)
    recon_path = save_image_grid(torch.cat([x, rec]), out_dir / f"{name}_{data}{tag}_recon.png", levels, nrow=16)
    sample_path = save_image_grid(samples, out_dir / f"{name}_{data}{tag}_samples.png", levels, nrow=16)
    return [str(recon_path.relative_to(ROOT)), str(sample_path.relative_to(ROOT))]


def _fid(samples, test, extractor):
    from dulab.metrics import sample_quality

    if extractor is None:
        return {"fid": None, "precision": None, "recall": None}
    q = sample_quality(samples, test, extractor=extractor, generator=torch.Generator().manual_seed(0))
    return {k: float(q[k]) for k in ("fid", "precision", "recall")}


def run_pair(name: str, data: str, work: Path, img_dir: Path, extra_sets=(), tag: str = "") -> dict:
    import dulab
    from dulab.metrics import extractor_for

    s = SETTINGS[data]
    vq_dir, prior_dir = work / f"{name}-{data}{tag}", work / f"{name}_prior-{data}{tag}"
    extra = [a for kv in extra_sets for a in ("--set", kv)]
    vq_args = [name, "--data", data, *s["options"], "--epochs", str(s["epochs"]), "--seed", "0", *s["train"],
               *s["sets"], *extra]
    vq_final, vq_wall = run_cli(vq_args, vq_dir)
    prior_args = ["vq_prior", "--data", data, *s["options"], "--epochs", str(s["prior_epochs"]), "--seed", "0",
                  "--set", f"vq_run={vq_dir.resolve()}"]
    prior_final, prior_wall = run_cli(prior_args, prior_dir)

    vq, prior = dulab.load(vq_dir).eval(), dulab.load(prior_dir).eval()
    opts = dict(o.split("=", 1) for o in s["options"][1::2])
    opts = {k: int(v) for k, v in opts.items()}
    test = dulab.load_dataset(data, "test", **opts)
    from dulab.errors import UserError

    try:
        extractor = extractor_for(data)
    except UserError:  # e.g. photos: no shipped extractor
        extractor = None
    n = len(test)
    t0 = time.time()
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        end_to_end = torch.cat([prior.sample(min(500, n - i), generator=g) for i in range(0, n, 500)])
        uniform = torch.cat([vq.sample(min(500, n - i), generator=g) for i in range(0, n, 500)])
        recon = torch.cat([vq.reconstruct(c) for c in test.x.split(500)])
    sample_seconds = time.time() - t0
    row = {
        "model": name, "data": data,
        "recon_mse": vq_final["test_recon_mse"], "recon_bpd_uniform_prior": vq_final["test_bpd"],
        "prior_nats_per_code": prior_final["test_nats_per_code"], "bpd_learned_prior": prior_final["test_bpd"],
        "fid_samples": _fid(end_to_end, test, extractor)["fid"],
        "fid_uniform_codes": _fid(uniform, test, extractor)["fid"],
        "fid_reconstructions": _fid(recon, test, extractor)["fid"],
        "vq_seconds": vq_final["train_seconds"], "prior_seconds": prior_final["train_seconds"],
        "sample_seconds": round(sample_seconds, 1),
        "commands": [f"dulab train {' '.join(vq_args)} --out {vq_dir}",
                     f"dulab train {' '.join(prior_args)} --out {prior_dir}"],
    }
    row.update(_fid(end_to_end, test, extractor) | {"fid": row["fid_samples"]})
    for key in ("perplexity", "codes_used", "perplexity_top", "codes_used_top", "perplexity_bottom",
                "codes_used_bottom"):
        if f"test_{key}" in vq_final:
            row[key] = vq_final[f"test_{key}"]
    for key in ("nats_per_code_top", "nats_per_code_bottom"):
        if f"test_{key}" in prior_final:
            row[f"prior_{key}"] = prior_final[f"test_{key}"]
    row["grid"] = f"{vq.grid_shapes}" + f", K={vq.config.num_codes}"
    row["pictures"] = _grid_pictures(name, data, vq, prior, test, img_dir, tag)
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("datasets", nargs="+", choices=sorted(SETTINGS))
    p.add_argument("--models", nargs="+", default=["vq_vae", "vq_vae2"])
    p.add_argument("--work", default=str(ROOT / "runs" / "bench_vq"))
    p.add_argument("--vq-set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra first-stage hyperparameters (results, runs and pictures get a suffix from them)")
    p.add_argument("--quick", action="store_true", help="1 epoch per stage (a smoke test; results not saved)")
    args = p.parse_args(argv)
    if args.quick:
        for s in SETTINGS.values():
            s["epochs"] = s["prior_epochs"] = 1
    torch.set_num_threads(1)
    work, img_dir = Path(args.work), ROOT / "docs" / "img"
    img_dir.mkdir(parents=True, exist_ok=True)
    tag = "".join(f"_{kv.replace('=', '')}" for kv in args.vq_set)
    print(f"machine: {machine()}\n", flush=True)
    rows = []
    for data in args.datasets:
        for name in args.models:
            rows.append(run_pair(name, data, work, img_dir, args.vq_set, tag))
            print(rows[-1], flush=True)
    columns = ["model", "data", "grid", "recon_mse", "recon_bpd_uniform_prior", "perplexity", "codes_used",
               "perplexity_top", "perplexity_bottom", "prior_nats_per_code", "prior_nats_per_code_top",
               "prior_nats_per_code_bottom", "bpd_learned_prior", "fid_samples", "fid_uniform_codes",
               "fid_reconstructions", "vq_seconds", "prior_seconds"]
    print(markdown_table(rows, columns))
    if args.quick:
        return
    command = " ".join(["OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/vq.py", *args.datasets,
                        *(["--models", *args.models] if args.models != ["vq_vae", "vq_vae2"] else []),
                        *(["--vq-set", *args.vq_set] if args.vq_set else [])])
    save(f"vq_{'_'.join(args.datasets)}{tag}", {"command": command, "rows": rows})


if __name__ == "__main__":
    main()
