"""GAN sample quality with CLI defaults, beside the real-data floor measured the same way.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/gan_sample_quality.py [--runs gan:moons,dcgan:digits]

Each run is ``dulab train MODEL --data DATA`` with the model's defaults (``dulab.train(MODEL, data=DATA)``); its
numbers are the last evaluation of ``AdversarialTask.evaluate`` on the test split (min(N_test, 500) samples against
as many test examples, seeded; digits: the shipped extractor; moons: raw 2-D points) and the epoch
``best.safetensors`` comes from (lowest FID). The floor is the same protocol with the samples replaced by as many
random *training* examples: held-out real data score about this, not 0. Writes
``benchmarks/results/gan_sample_quality.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dulab
from dulab.evaluation import has_extractor
from dulab.metrics.sample_quality import fid, kid, sample_quality

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("fid", "kid", "inception_score", "precision", "recall")


def floor(data: str, seed: int = 0, options: dict | None = None) -> dict:
    """``AdversarialTask.evaluate``'s protocol with real training examples in place of samples (``options``: the
    dataset's options, e.g. ``{"size": 32}`` for sprites)."""
    options = options or {}
    train, test = dulab.load_dataset(data, "train", **options), dulab.load_dataset(data, "test", **options)
    n = min(len(test), 500)
    reference = test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:n])
    fake = train.x[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))[:n]]
    g = torch.Generator().manual_seed(seed)
    if has_extractor(data, test.spec):
        q = sample_quality(fake, reference, generator=g, kid_subset_size=n // 2)
        return {k: float(q[k]) for k in KEYS}
    a, b = reference.x.reshape(n, -1).double(), fake.reshape(n, -1).double()
    return {"fid": fid(a, b), "kid": kid(a, b, subset_size=n // 2, generator=g)[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", default="gan:moons,dcgan:digits,wgan_gp:digits,sngan:digits")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_gan"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = {}
    for item in args.runs.split(","):
        name, data = item.split(":")
        t0 = time.perf_counter()
        run = dulab.train(name, data=data, out_dir=Path(args.out) / f"{name}-{data}", overwrite=True, progress=False,
                          verbose=False)
        seconds = time.perf_counter() - t0
        last = run.metrics[-1]
        best_epoch = min(run.metrics, key=lambda r: r["test_fid"])["epoch"]
        row = {"model": name, "data": data, "seconds": round(seconds, 1), "epochs": last["epoch"],
               "best_epoch": best_epoch, "best_fid": run.summary["best"],
               **{k: last[f"test_{k}"] for k in KEYS if f"test_{k}" in last}, "floor": floor(data)}
        results[item] = row
        print(json.dumps(row), flush=True)
    out = ROOT / "benchmarks" / "results" / "gan_sample_quality.json"
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
