"""Autoregressive image models: test bits/dim with training time, cached vs naive sampling, PixelCNN step speed.

Run ``.venv/bin/python benchmarks/ar_images.py [--quick]``. Prints markdown tables and writes
``benchmarks/results/ar_images.json`` plus one sample grid per model trained on ``digits``
(``benchmarks/results/ar_images_<model>_digits.png``).

* bits/dim: each model trained with its ``train_defaults`` (``--epochs`` overrides; ``--quick`` trains 2 epochs)
  on ``digits``, ``digits_binary``, ``digits_color`` and ``shapes``; test bits/dim at the end and wall time.
* sampling: seconds per 28x28 image, random weights, default configs: ``sample`` (per-layer caches for PixelCNN
  and Gated PixelCNN, receptive-field crops or scheduled caches for PixelCNN++, conv + KV caches for PixelSNAIL;
  a model whose ``sample`` is still the naive one is reported as such) against
  ``naive_sample`` (one full pass per pixel, timed on the first rows and scaled), and whether both drew the same
  values on those rows.
* step: one PixelCNN training step (forward + backward + AdamW) on a digits batch; achieved GFLOP/s (FLOPs
  counted by ``torch.utils.flop_counter``) against the peak measured with a large float32 matmul.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dulab
from dulab.data.base import DataSpec
from dulab.models.autoregressive.pixel_cnn import ImageAutoregressiveModel
from dulab.viz import image_grid

MODELS = ["pixel_cnn", "gated_pixel_cnn", "pixel_cnn_pp", "pixel_snail"]
DATASETS = ["digits", "digits_binary", "digits_color", "shapes"]
RESULTS = Path(__file__).resolve().parent / "results"


def bench_bpd(models, datasets, epochs, out_dir: Path) -> list[dict]:
    rows = []
    for data in datasets:
        for name in models:
            t = time.perf_counter()
            kw = {} if epochs is None else {"epochs": epochs}
            if data == "shapes" and epochs is None:
                kw["epochs"] = 8  # 5000 images of 20x20: fewer passes fit the same time budget
            run = dulab.train(name, data=data, out_dir=out_dir / f"{name}-{data}", progress=False, overwrite=True,
                              sample_fn=None, seed=0, **kw)
            seconds = time.perf_counter() - t
            rec = run.final
            rows.append({"model": name, "data": data, "epochs": rec.get("epoch"), "test_bpd": rec.get("test_bpd"),
                         "best_test_bpd": min(r["test_bpd"] for r in run.metrics if r.get("test_bpd") is not None),
                         "train_seconds": seconds, "num_parameters": run.model.num_parameters})
            print(f"  {name:16s} {data:14s} bpd {rec.get('test_bpd'):.3f}  {seconds:.0f}s", flush=True)
            if data == "digits":
                model = run.model.eval()
                x = model.sample(64, generator=torch.Generator().manual_seed(0))
                image_grid(x, model.spec.num_levels, nrow=8).save(RESULTS / f"ar_images_{name}_digits.png")
    return rows


def bench_sampling(models, num_images: int, naive_rows: int) -> list[dict]:
    """Seconds per 28x28 image. The naive sampler costs one full forward pass per pixel whatever the pixel, so
    it is timed on the first ``naive_rows`` rows (the rest given, hence skipped) and scaled to 28 rows; the
    cached sampler runs the same partial problem (to compare the draws) and the whole image (to time it)."""
    rows = []
    spec = DataSpec((1, 28, 28), "discrete", 256)
    given = torch.zeros(num_images, *spec.shape, dtype=torch.long)
    given_mask = torch.zeros_like(given, dtype=torch.bool)
    given_mask[:, :, naive_rows:] = True
    for name in models:
        torch.manual_seed(0)
        model = dulab.build_model(name, spec).eval()
        t = time.perf_counter()
        b = model.naive_sample(num_images, generator=torch.Generator().manual_seed(0), given=given,
                               given_mask=given_mask)
        naive = (time.perf_counter() - t) / num_images * 28 / naive_rows
        uses_naive = type(model).sample is ImageAutoregressiveModel.sample and model.receptive_field() is None
        if uses_naive:  # attention: sample() is the naive sampler, no need to wait for a full 28x28 run
            cached = naive
        else:
            t = time.perf_counter()
            model.sample(num_images, generator=torch.Generator().manual_seed(0))
            cached = (time.perf_counter() - t) / num_images
        a = model.sample(num_images, generator=torch.Generator().manual_seed(0), given=given, given_mask=given_mask)
        crops = type(model).sample is ImageAutoregressiveModel.sample
        method = "naive" if uses_naive else ("receptive-field crops" if crops else "per-layer caches")
        rows.append({"model": name, "shape": "1x28x28", "batch": num_images, "cached_s_per_image": cached,
                     "naive_s_per_image": naive, "naive_rows_timed": naive_rows, "speedup": naive / cached,
                     "identical_first_rows": bool(torch.equal(a, b)), "method": method})
        print(f"  {name:16s} cached {cached:.2f}s naive {naive:.2f}s per image", flush=True)
    return rows


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def bench_step(batch_size: int, repeats: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    ds = dulab.load_dataset("digits")
    torch.manual_seed(0)
    model = dulab.build_model("pixel_cnn", ds.spec).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = ds.x[:batch_size]

    def step():
        loss = model.loss(x)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(2):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    sec = sorted(times)[len(times) // 2]
    peak = matmul_peak_gflops()
    return {"model": "pixel_cnn (defaults)", "batch": batch_size, "step_ms": sec * 1e3, "gflop_per_step": flops / 1e9,
            "achieved_gflops": flops / sec / 1e9, "matmul_peak_gflops": peak,
            "fraction_of_peak": flops / sec / 1e9 / peak, "threads": torch.get_num_threads()}


def print_tables(results: dict) -> None:
    if results.get("bpd"):
        print("\n| model | data | epochs | test bpd (final) | best | train time (s) | params |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in results["bpd"]:
            print(f"| {r['model']} | {r['data']} | {r['epochs']} | {r['test_bpd']:.3f} | {r['best_test_bpd']:.3f} | "
                  f"{r['train_seconds']:.0f} | {r['num_parameters']:,} |")
    if results.get("sampling"):
        print("\n| model | sampler | cached s/image | naive s/image | speed-up | same draws as naive |")
        print("| --- | --- | --- | --- | --- | --- |")
        for r in results["sampling"]:
            print(f"| {r['model']} | {r['method']} | {r['cached_s_per_image']:.2f} | {r['naive_s_per_image']:.2f} | "
                  f"{r['speedup']:.1f}x | {r['identical_first_rows']} |")
    if results.get("step"):
        r = results["step"]
        print("\n| model | batch | threads | step (ms) | GFLOP/step | achieved GFLOP/s | matmul peak GFLOP/s "
              "| fraction |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print(f"| {r['model']} | {r['batch']} | {r['threads']} | {r['step_ms']:.1f} | {r['gflop_per_step']:.3f} | "
              f"{r['achieved_gflops']:.1f} | {r['matmul_peak_gflops']:.1f} | {r['fraction_of_peak']:.0%} |")


def merge_results() -> dict:
    """Combine ``ar_images_*.json`` (runs split over processes with ``--json``) into ``ar_images.json``."""
    merged = {"bpd": []}
    for f in sorted(RESULTS.glob("ar_images*.json")):
        part = json.loads(f.read_text())
        seen = {(r["model"], r["data"]) for r in part.get("bpd", [])}
        merged["bpd"] = [r for r in merged["bpd"] if (r["model"], r["data"]) not in seen] + part.get("bpd", [])
        for key in ("sampling", "step", "date"):
            if key in part:
                merged[key] = part[key]
    return merged


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs, digits only, 2 images per sampling row")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--datasets", default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--parts", default="bpd,sampling,step")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="/tmp/dulab_bench_ar_images")
    parser.add_argument("--json", default="ar_images.json", help="results file under benchmarks/results/ (merged)")
    parser.add_argument("--merge", action="store_true", help="only combine ar_images*.json and print the tables")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.merge:
        results = merge_results()
        print_tables(results)
        (RESULTS / "ar_images.json").write_text(json.dumps(results, indent=1))
        return
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    datasets = (args.datasets or ("digits" if args.quick else ",".join(DATASETS))).split(",")
    epochs = args.epochs if args.epochs is not None else (2 if args.quick else None)
    parts = args.parts.split(",")
    path = RESULTS / args.json
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update({"date": time.strftime("%Y-%m-%d"), "quick": args.quick, "threads": args.threads})

    if "bpd" in parts:
        print("training ...", flush=True)
        rows = bench_bpd(models, datasets, epochs, Path(args.out))
        done = {(s["model"], s["data"]) for s in rows}
        old = [r for r in results.get("bpd", []) if (r["model"], r["data"]) not in done]
        results["bpd"] = old + rows
    if "sampling" in parts:
        print("\nsampling 28x28 ...", flush=True)
        sampling_models = [m for m in models if m in ("pixel_cnn", "gated_pixel_cnn")] if args.quick else models
        results["sampling"] = bench_sampling(sampling_models, 2 if args.quick else 4, 1 if args.quick else 3)
    if "step" in parts:
        results["step"] = bench_step(64, 5 if args.quick else 20)
    print_tables(results)
    path.write_text(json.dumps(results, indent=1))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
