"""Latent diffusion on digits: a ``ddpm`` over the latents of a trained ``vae`` and of a trained ``autoencoder``
(``latent_ddpm``), against the first stages' own samplers. The course's last homework in spirit: the VAE's N(0, I)
prior replaced by a diffusion model of its latents.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/latent_diffusion.py --data digits

Every run uses its CLI defaults (``dulab train vae``, ``dulab train autoencoder``, ``dulab train latent_ddpm
--set latent_run=RUN``), trained through the Python API under ``runs/bench_latent_diffusion`` (reused when present
unless ``--retrain``). Rows: FID/KID/precision/recall of ``--num-samples`` samples against the test split with the
shipped extractor (the floor: training images in place of samples), sampling seconds per image, and where a
likelihood exists the test bits/dim: the VAE's ELBO and importance-sampled estimate, the latent DDPM's bound
(ELBO with the diffusion prior, ``log_prob`` with every step of the latent bound). Baselines: the VAE's samples from
N(0, I) decoded by the decoder's mode (as the latent DDPM's are) and with decoder noise; the autoencoder's codes
drawn from a Gaussian with the codes' mean and covariance (what an autoencoder gives without a learned prior).
Writes ``benchmarks/results/latent_diffusion_<data>.json`` and ``docs/img/latent_diffusion_<data>.png``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from _common import save
from gan_sample_quality import floor
from gan_zoo import montage

import dulab
from dulab.metrics.sample_quality import sample_quality

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("fid", "kid", "precision", "recall")


def _train(name: str, out: Path, retrain: bool, data: str, **hparams):
    if (out / "summary.json").exists() and not retrain:
        return dulab.load(out), json.loads((out / "summary.json").read_text())["seconds"]
    train, test = dulab.load_dataset(data, "train"), dulab.load_dataset(data, "test")
    torch.manual_seed(0)
    run = dulab.train(name, data=train, eval_data=test, seed=0, out_dir=out, overwrite=True, progress=False,
                      verbose=False, sample_fn=None, **hparams)
    return dulab.load(out), run.summary["seconds"]


def _quality(x, data):
    q = sample_quality(x, data, generator=torch.Generator().manual_seed(0))
    return {k: float(q[k]) for k in KEYS}


def _timed(fn, n: int):
    t0 = time.perf_counter()
    with torch.inference_mode():
        x = fn()
    return x, (time.perf_counter() - t0) / n


@torch.inference_mode()
def _bpd(nll_fn, test, batch=256) -> float:
    total = sum(float(-nll_fn(test.x[i:i + batch]).double().sum()) for i in range(0, len(test), batch))
    return total / len(test) / (test.spec.num_dims * math.log(2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="digits")
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_latent_diffusion"))
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--retrain-diffusion", action="store_true", help="retrain the latent_ddpm runs only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dulab.viz import image_grid

    out, n, data = Path(args.out), args.num_samples, args.data
    test = dulab.load_dataset(data, "test")
    levels = test.spec.num_levels
    vae, t_vae = _train("vae", out / "vae", args.retrain, data)
    ae, t_ae = _train("autoencoder", out / "ae", args.retrain, data)
    again = args.retrain or args.retrain_diffusion
    ld_vae, t_ld_vae = _train("latent_ddpm", out / "ld_vae", again, data, latent_run=str(out / "vae"))
    ld_ae, t_ld_ae = _train("latent_ddpm", out / "ld_ae", again, data, latent_run=str(out / "ae"))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731

    with torch.inference_mode():
        codes = ae.encode(dulab.load_dataset(data, "train").x).double()
    mean, cov = codes.mean(0), torch.cov(codes.T) + 1e-6 * torch.eye(codes.shape[1], dtype=torch.float64)
    gauss = torch.distributions.MultivariateNormal(mean, cov)

    def ae_gauss():
        torch.manual_seed(1)
        return ae.decode(gauss.sample((n,)).to(torch.float32))

    rows, grids = [], []
    cases = [
        ("vae, N(0,I), decoder mode", "vae", t_vae, lambda: vae.sample(n, generator=g(), use_decoder_noise=False)),
        ("vae, N(0,I), decoder noise", "vae", t_vae, lambda: vae.sample(n, generator=g())),
        ("latent_ddpm(vae), DDPM 1000", "latent_ddpm", t_vae + t_ld_vae, lambda: ld_vae.sample(n, generator=g())),
        ("latent_ddpm(vae), DDIM 50", "latent_ddpm", t_vae + t_ld_vae,
         lambda: ld_vae.sample(n, generator=g(), sampler="ddim", num_steps=50)),
        ("autoencoder, Gaussian fit", "autoencoder", t_ae, ae_gauss),
        ("latent_ddpm(ae), DDPM 1000", "latent_ddpm", t_ae + t_ld_ae, lambda: ld_ae.sample(n, generator=g())),
        ("latent_ddpm(ae), DDIM 50", "latent_ddpm", t_ae + t_ld_ae,
         lambda: ld_ae.sample(n, generator=g(), sampler="ddim", num_steps=50)),
    ]
    for label, model, seconds, fn in cases:
        x, per_image = _timed(fn, n)
        row = {"setting": label, "model": model, "train_seconds": round(seconds, 1),
               "sample_ms_per_image": round(1000 * per_image, 3), **_quality(x, data)}
        rows.append(row)
        grids.append(image_grid(x[:64], levels, nrow=8))
        print(json.dumps(row), flush=True)
    torch.manual_seed(0)
    likelihood = {"vae_elbo_bpd": _bpd(vae.elbo, test),
                  "vae_iwae1000_bpd": _bpd(lambda x: vae.log_prob(x, num_samples=1000), test, batch=64),
                  "latent_ddpm_vae_bound_bpd": _bpd(lambda x: ld_vae.log_prob(x, num_bound_steps=0), test, batch=64)}
    with torch.inference_mode():
        metrics = ld_vae.evaluation_metrics(test)
    likelihood.update({"latent_nll_diffusion": metrics["latent_nll"], "prior_gain_nats": metrics["prior_kl_gain"]})
    print(json.dumps(likelihood), flush=True)
    fl = floor(data)
    print(json.dumps({"floor": fl}), flush=True)
    save(f"latent_diffusion_{data}", {"command": f"benchmarks/latent_diffusion.py --data {data}", "rows": rows,
                                      "likelihood": likelihood, "floor": fl, "num_samples": n})
    montage(grids, [f"{r['setting']}: FID {r['fid']:.1f}" for r in rows],
            ROOT / "docs" / "img" / f"latent_diffusion_{data}.png", max(1, 160 // (8 * test.spec.shape[-1])))


if __name__ == "__main__":
    main()
