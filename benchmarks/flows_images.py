"""Flows on discrete images: test bits/dim (the dequantized bound, comparable with the autoregressive models' exact
bits/dim on the same data), and the MAF/IAF asymmetry (density vs sampling time).

    .venv/bin/python benchmarks/flows_images.py [--quick] [--models maf,real_nvp] [--datasets digits]

Each flow is trained with its ``dulab.train`` defaults (``--quick``: 2 epochs). Bits/dim with uniform dequantization
and, for Real NVP, also variational dequantization (Flow++). Writes ``benchmarks/results/flows_images.json`` and
``benchmarks/results/flows/<model>_<dataset>_samples.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

import dulab
from dulab.data.base import DataSpec
from dulab.viz import save_image_grid

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
# (registry key, extra hyperparameters, label)
RUNS = [("maf", {}, "maf"), ("nice", {}, "nice"), ("real_nvp", {}, "real_nvp"),
        ("real_nvp", {"dequantization": "variational"}, "real_nvp+vardeq"), ("glow", {}, "glow")]


@torch.no_grad()
def asymmetry(repeats: int = 3) -> dict:
    """Seconds for ``log_prob`` of 256 points and ``sample(256)`` for MAF and IAF on D = 64 (affine, 5 layers)."""
    out = {}
    spec = DataSpec((64,), "continuous")
    x = torch.randn(256, 64)
    for name in ("maf", "iaf"):
        torch.manual_seed(0)
        m = dulab.build_model(name, spec, transformer="affine").eval()
        dens, samp = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            m.log_prob(x)
            dens.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            m.sample(256)
            samp.append(time.perf_counter() - t0)
        out[name] = {"log_prob_ms": statistics.median(dens) * 1e3, "sample_ms": statistics.median(samp) * 1e3}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--models", default=",".join(label for _, _, label in RUNS))
    p.add_argument("--datasets", default="digits,shapes")
    p.add_argument("--out", default=str(RESULTS / "flows_images.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    wanted = set(args.models.split(","))
    results = {"bpd": {}, "asymmetry": asymmetry()}
    a = results["asymmetry"]
    print("| D = 64, batch 256 | log_prob (ms) | sample (ms) |\n| --- | ---: | ---: |")
    for name, r in a.items():
        print(f"| {name} | {r['log_prob_ms']:.1f} | {r['sample_ms']:.1f} |")
    out_path = Path(args.out)
    for data in args.datasets.split(","):
        for name, hp, label in RUNS:
            if label not in wanted:
                continue
            with tempfile.TemporaryDirectory() as tmp:
                run = dulab.train(name, data=data, out_dir=Path(tmp) / "run", progress=False, sample_fn=None,
                                  **({"epochs": 2} if args.quick else {}), **hp)
            f = run.final
            results["bpd"].setdefault(data, {})[label] = {
                "test_bpd": f.get("test_bpd"), "epochs": f.get("epoch"), "train_seconds": f.get("time"),
                "num_parameters": run.model.num_parameters, "quick": args.quick, "date": time.strftime("%Y-%m-%d")}
            print(f"{data:8s} {label:16s} {f.get('test_bpd'):.3f} bits/dim  {f.get('time'):.0f} s", flush=True)
            run.model.eval()
            s = run.model.sample(64, generator=torch.Generator().manual_seed(0))
            save_image_grid(s, RESULTS / "flows" / f"{label}_{data}_samples.png", run.model.spec.num_levels)
            out_path.parent.mkdir(parents=True, exist_ok=True)
            out_path.write_text(json.dumps(results, indent=2))
    print("\n| data | flow | test bits/dim | train s |\n| --- | --- | ---: | ---: |")
    for data, r in results["bpd"].items():
        for label, v in r.items():
            print(f"| {data} | {label} | {v['test_bpd']:.3f} | {v['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
