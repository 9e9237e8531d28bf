"""Fast sampling of the autoregressive image models: seconds per 28x28 image (naive, cached, grouped), and the
likelihood and sample-quality cost of grouped (parallel multiscale) sampling against raster order on digits.

Run ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ar_sampling.py [--parts timing quality] [--epochs N]``.
Prints markdown tables and writes ``benchmarks/results/ar_sampling.json``.

* timing: random weights, default configs, 1x28x28 with 256 levels, batch 4, 1 thread. ``naive_sample`` (one full
  forward pass per sub-pixel) is timed on the first ``--naive-rows`` rows (the rest given, hence skipped: the
  naive cost is the same for every sub-pixel) and scaled to 28 rows; ``sample`` (per-layer caches, a key/value
  cache, or the group schedule) is timed on the whole image; both samplers are also run on the same partial
  problem and their draws compared.
* quality: ``pixel_cnn`` (raster order, 64 sub-pixel steps) and ``multiscale_pixel_cnn`` (10 groups) trained
  on ``digits`` with the same epochs and seed; test bits/dim, training time, and FID / KID / precision / recall
  of 1000 samples against the test split with the shipped digits extractor (``dulab.metrics.sample_quality``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dulab
from dulab.data.base import DataSpec

RESULTS = Path(__file__).resolve().parent / "results"
TIMED = [("pixel_cnn", {}), ("gated_pixel_cnn", {}), ("pixel_cnn_pp", {}), ("pixel_snail", {}),
         ("transformer", {}), ("transformer", {"ordering": "zigzag"}), ("multiscale_pixel_cnn", {})]


def bench_timing(num_images: int, naive_rows: int, only=None) -> list[dict]:
    rows = []
    spec = DataSpec((1, 28, 28), "discrete", 256)
    given = torch.zeros(num_images, *spec.shape, dtype=torch.long)
    given_mask = torch.zeros_like(given, dtype=torch.bool)
    given_mask[:, :, naive_rows:] = True
    for name, extra in [m for m in TIMED if only is None or m[0] in only]:
        torch.manual_seed(0)
        model = dulab.build_model(name, spec, **extra).eval()
        g = torch.Generator
        t = time.perf_counter()
        b = model.naive_sample(num_images, generator=g().manual_seed(0), given=given, given_mask=given_mask)
        naive = (time.perf_counter() - t) / num_images * 28 / naive_rows
        a = model.sample(num_images, generator=g().manual_seed(0), given=given, given_mask=given_mask)
        t = time.perf_counter()
        model.sample(num_images, generator=g().manual_seed(0))
        fast = (time.perf_counter() - t) / num_images
        label = name + "".join(f" {k}={v}" for k, v in extra.items())
        rows.append({"model": label, "naive_s_per_image": naive, "fast_s_per_image": fast, "speedup": naive / fast,
                     "identical_first_rows": bool(torch.equal(a, b)), "batch": num_images,
                     "naive_rows_timed": naive_rows,
                     "network_calls": getattr(model, "num_groups", spec.num_dims)})
        print(f"  {label:28s} naive {naive:8.2f}s  fast {fast:7.3f}s  x{naive / fast:6.1f}  "
              f"same draws {torch.equal(a, b)}", flush=True)
    return rows


def bench_quality(epochs: int, num_samples: int, out_dir: Path) -> list[dict]:
    rows = []
    for name in ["pixel_cnn", "multiscale_pixel_cnn"]:
        t = time.perf_counter()
        run = dulab.train(name, data="digits", epochs=epochs, out_dir=out_dir / name, progress=False, overwrite=True,
                          sample_fn=None, seed=0)
        train_s = time.perf_counter() - t
        model = run.model.eval()
        t = time.perf_counter()
        x = model.sample(num_samples, generator=torch.Generator().manual_seed(0))
        sample_s = time.perf_counter() - t
        q = dulab.metrics.sample_quality(x, "digits")
        rec = {"model": name, "epochs": epochs, "test_bpd": run.final.get("test_bpd"), "train_s": train_s,
               "sample_s_per_image": sample_s / num_samples, "num_samples": num_samples,
               **{k: q[k] for k in ("fid", "kid", "precision", "recall")}}
        rows.append(rec)
        from dulab.viz import image_grid

        image_grid(x[:64], model.spec.num_levels, nrow=8).save(RESULTS / f"ar_sampling_{name}_digits.png")
        print(f"  {name:22s} bpd {rec['test_bpd']:.3f}  fid {rec['fid']:.2f}  train {train_s:.0f}s", flush=True)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["timing", "quality"], choices=["timing", "quality"])
    p.add_argument("--num-images", type=int, default=4)
    p.add_argument("--naive-rows", type=int, default=2)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", nargs="+", default=None, help="time only these registry keys (others kept from the json)")
    p.add_argument("--out", type=Path, default=Path("/tmp/dulab-ar-sampling"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "ar_sampling.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    if "timing" in args.parts:
        rows = bench_timing(args.num_images, args.naive_rows, args.only)
        done = {r["model"] for r in rows}
        results["timing"] = [r for r in results.get("timing", []) if r["model"] not in done] + rows
        print("\n| model | network calls | naive s/image | cached or grouped s/image | speed-up | same draws |")
        print("|---|---|---|---|---|---|")
        for r in results["timing"]:
            print(f"| `{r['model']}` | {r['network_calls']} | {r['naive_s_per_image']:.2f} | "
                  f"{r['fast_s_per_image']:.3f} | {r['speedup']:.1f}x | {r['identical_first_rows']} |")
    if "quality" in args.parts:
        results["quality"] = bench_quality(args.epochs, args.num_samples, args.out)
        print("\n| model | epochs | test bpd | FID | KID | precision | recall | train s | sample s/image |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in results["quality"]:
            print(f"| `{r['model']}` | {r['epochs']} | {r['test_bpd']:.3f} | {r['fid']:.2f} | {r['kid']:.4f} | "
                  f"{r['precision']:.3f} | {r['recall']:.3f} | {r['train_s']:.0f} | {r['sample_s_per_image']:.4f} |")
    path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
