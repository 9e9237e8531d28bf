"""Autoregressive sequence models (MADE, RNN, WaveNet, Transformer): test bits/dim, sampling speed, text, Fisher.

Usage: ``.venv/bin/python benchmarks/ar_sequence.py [--quick] [--only bpd,sampling,text,fisher] [--threads N]``

1. Test bits/dim on ``digits``, ``digits_binary``, ``digits_color`` and ``shapes`` for each model with its
   default hyperparameters and a fixed epoch budget per dataset, with training time.
2. Sampling time per image, cached (``sample``) vs naive (``naive_sample``, one full pass per dimension), at
   28x28 with random weights (no 28x28 data is embedded), for the Transformer (KV cache), RNN and WaveNet.
3. Character-level ``text``: test bits/char of RNN and Transformer, and a sample.
4. Fisher-score interpolation: nearest training digits to points between two digits' Fisher features.

Prints markdown tables and writes ``benchmarks/results/ar_sequence[_quick].json``.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

import torch

import dulab
from dulab.data.base import DataSpec

MODELS = ["made", "rnn", "wavenet", "transformer"]
#: epochs per dataset (full, quick); shapes has 5000 images of 400 pixels: one epoch cut at SHAPES_STEPS steps
EPOCHS = {"digits": (15, 1), "digits_binary": (15, 1), "digits_color": (8, 1), "shapes": (1, 1)}
SHAPES_STEPS = 60
RESULTS = Path(__file__).parent / "results"


def bpd_table(quick: bool, out_root: Path, datasets) -> list[dict]:
    rows = []
    for data in datasets:
        full, short = EPOCHS[data]
        for name in MODELS:
            epochs = short if quick else full
            kw = {"max_steps": 20} if quick else ({"max_steps": SHAPES_STEPS} if data == "shapes" else {})
            t0 = time.perf_counter()
            run = dulab.train(name, data=data, epochs=epochs, out_dir=out_root / f"{name}-{data}", progress=False,
                              overwrite=True, **kw)
            seconds = time.perf_counter() - t0
            final = run.metrics[-1]
            best = min(m["test_bpd"] for m in run.metrics if "test_bpd" in m)
            row = {"model": name, "data": data, "epochs": epochs, "test_bpd": final["test_bpd"], "best_bpd": best,
                   "train_seconds": seconds, "num_parameters": run.model.num_parameters,
                   "samples": run.summary.get("samples") if run.summary else None}
            rows.append(row)
            print(f"  {name:12s} {data:14s} bpd {final['test_bpd']:.3f} (best {best:.3f}) {seconds:6.1f}s",
                  flush=True)
    return rows


@torch.no_grad()
def sampling_table(quick: bool) -> list[dict]:
    side = 14 if quick else 28
    spec = DataSpec((1, side, side), "discrete", 256)
    rows = []
    for name in ["transformer", "rnn", "wavenet"]:
        torch.manual_seed(0)
        model = dulab.build_model(name, spec).eval()
        n = 4
        t0 = time.perf_counter()
        a = model.sample(n, generator=torch.Generator().manual_seed(0))
        cached = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        b = model.naive_sample(n, generator=torch.Generator().manual_seed(0))
        naive = (time.perf_counter() - t0) / n
        rows.append({"model": name, "size": f"{side}x{side}", "levels": 256, "batch": n,
                     "cached_s_per_image": cached, "naive_s_per_image": naive, "speedup": naive / cached,
                     "identical": bool(torch.equal(a, b))})
        print(f"  {name:12s} cached {cached:.3f}s naive {naive:.3f}s per image -> {naive / cached:.1f}x, "
              f"identical samples: {torch.equal(a, b)}", flush=True)
    return rows


def text_table(quick: bool, out_root: Path) -> list[dict]:
    from dulab.data.text import decode

    rows = []
    for name in ["rnn", "transformer"]:
        kw = {"max_steps": 20} if quick else {}
        t0 = time.perf_counter()
        run = dulab.train(name, data="text", epochs=1 if quick else 2, out_dir=out_root / f"{name}-text",
                          progress=False, overwrite=True, sample_fn=None, **kw)
        seconds = time.perf_counter() - t0
        vocab = dulab.load_dataset("text", "test").info["vocab"]
        with torch.no_grad():
            s = run.model.eval().sample(2, generator=torch.Generator().manual_seed(0))
        texts = [decode(row, vocab) for row in s]
        rows.append({"model": name, "test_bpc": run.metrics[-1]["test_bpd"], "train_seconds": seconds,
                     "samples": texts})
        print(f"  {name:12s} text bits/char {run.metrics[-1]['test_bpd']:.3f} {seconds:6.1f}s", flush=True)
        for t in texts:
            print("    sample:", repr(t))
    return rows


def fisher_demo(quick: bool, out_root: Path) -> dict:
    from dulab.models.autoregressive.fisher import fisher_interpolate

    train = dulab.load_dataset("digits", "train")
    run = dulab.train("transformer", data="digits", epochs=1 if quick else 5, out_dir=out_root / "fisher",
                      progress=False, overwrite=True, sample_fn=None, **({"max_steps": 20} if quick else {}))
    model = run.model.eval()
    bank_n = 100 if quick else 400
    bank, labels = train.x[:bank_n], train.y[:bank_n]
    i0 = int((labels == 0).nonzero()[0])
    i1 = int((labels == 1).nonzero()[0])
    t0 = time.perf_counter()
    out = fisher_interpolate(model, bank[i0], bank[i1], bank, steps=7, num_features=128)
    seconds = time.perf_counter() - t0
    nearest = out["nearest"].tolist()
    res = {"from": i0, "to": i1, "nearest": nearest, "nearest_labels": labels[out["nearest"]].tolist(),
           "seconds": seconds, "bank": bank_n}
    print(f"  interpolating Fisher features of a 0 (#{i0}) and a 1 (#{i1}); nearest of {bank_n} training digits:"
          f" indices {nearest}, labels {res['nearest_labels']} ({seconds:.1f}s)")
    try:
        from dulab.viz import save_image_grid  # optional picture, when the viz helper exists

        save_image_grid(bank[out["nearest"]], out_root / "fisher_interpolation.png", num_levels=17)
        res["picture"] = str(out_root / "fisher_interpolation.png")
    except (ImportError, TypeError):
        pass
    return res


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budgets (smoke test)")
    parser.add_argument("--only", default="bpd,sampling,text,fisher")
    parser.add_argument("--data", default=",".join(EPOCHS), help="datasets of the bits/dim table")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    parts = set(args.only.split(","))
    out_root = Path("runs") / ("bench_ar_sequence_quick" if args.quick else "bench_ar_sequence")
    result = {"date": str(date.today()), "quick": args.quick, "threads": args.threads,
              "torch": torch.__version__}
    if "bpd" in parts:
        print("## test bits/dim", flush=True)
        result["bpd"] = bpd_table(args.quick, out_root, args.data.split(","))
    if "sampling" in parts:
        print("## sampling time, cached vs naive", flush=True)
        result["sampling"] = sampling_table(args.quick)
    if "text" in parts:
        print("## text", flush=True)
        result["text"] = text_table(args.quick, out_root)
    if "fisher" in parts:
        print("## Fisher interpolation", flush=True)
        result["fisher"] = fisher_demo(args.quick, out_root)

    print()
    if "bpd" in result:
        print("| model | data | epochs | test bpd | best bpd | train time (s) | params |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
        for r in result["bpd"]:
            print(f"| {r['model']} | {r['data']} | {r['epochs']} | {r['test_bpd']:.3f} | {r['best_bpd']:.3f} | "
                  f"{r['train_seconds']:.0f} | {r['num_parameters']:,} |")
        print()
    if "sampling" in result:
        print("| model | size | cached s/image | naive s/image | speed-up | identical |")
        print("| --- | --- | ---: | ---: | ---: | --- |")
        for r in result["sampling"]:
            print(f"| {r['model']} | {r['size']}x256 | {r['cached_s_per_image']:.3f} | "
                  f"{r['naive_s_per_image']:.3f} | {r['speedup']:.1f}x | {r['identical']} |")
        print()
    if "text" in result:
        print("| model | text bits/char | train time (s) |")
        print("| --- | ---: | ---: |")
        for r in result["text"]:
            print(f"| {r['model']} | {r['test_bpc']:.3f} | {r['train_seconds']:.0f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = "_".join(sorted(parts)) if parts != {"bpd", "sampling", "text", "fisher"} else "all"
    if "bpd" in parts and args.data != ",".join(EPOCHS):
        tag += "_" + args.data.replace(",", "_")  # one file per dataset selection, so runs can go side by side
    path = RESULTS / f"ar_sequence{'_quick' if args.quick else ''}_{tag}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(path)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
