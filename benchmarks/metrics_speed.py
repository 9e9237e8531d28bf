"""Time of dulab's sample-quality metrics on 10k x 10k feature sets, and of ``sample_quality`` on 10k samples.

``.venv/bin/python benchmarks/metrics_speed.py [--threads 2] [--dims 64 2048]``

Features are float32 (what an extractor returns), ReLU activations of a random linear map; IS runs on 10k softmax
rows over 10 classes. The full ``sample_quality`` call uses a tiny stand-in extractor (an MLP on the flattened
8x8 image, 64 features, 10 logits) on 10k samples against a 10k-example reference shaped like ``digits``, so its
time is the metric part plus a cheap extractor; the shipped extractors' own throughput is measured separately.
KID uses its defaults (100 subsets of 1000), precision/recall k = 3.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import save  # noqa: E402

import dulab.metrics as dm  # noqa: E402
from dulab.data.base import DataSpec, TensorDataset  # noqa: E402

N = 10_000


def feats(n: int, f: int, seed: int, shift: float) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(f, f, generator=torch.Generator().manual_seed(99)) / f ** 0.5
    return (torch.randn(n, f, generator=g) + shift) @ w + 0.1


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


class StandIn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                                        torch.nn.ReLU())
        self.head = torch.nn.Linear(64, 10)

    def features(self, x):
        return self.body(x.flatten(1).float() / 16)

    def forward(self, x):
        return self.head(self.features(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 2048])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for f in args.dims:
        a, b = feats(N, f, 1, 0.0).relu(), feats(N, f, 2, 0.1).relu()
        row = {"N": N, "F": f}
        row["fid"], row["fid_seconds"] = timed(dm.fid, a, b)
        (row["kid"], _), row["kid_seconds"] = timed(dm.kid, a, b)
        (row["precision"], row["recall"]), row["precision_recall_seconds"] = timed(dm.precision_recall, a, b)
        rows.append(row)
        print(json.dumps(row), flush=True)
    probs = torch.randn(N, 10, generator=torch.Generator().manual_seed(3)).softmax(1)
    _, is_seconds = timed(dm.inception_score, probs)
    print(json.dumps({"inception_score_seconds": is_seconds}), flush=True)

    g = torch.Generator().manual_seed(4)
    spec = DataSpec((1, 8, 8), "discrete", 17)
    reference = TensorDataset(torch.randint(0, 17, (N, 1, 8, 8), generator=g), None, spec, name="digits_like")
    samples = torch.randint(0, 17, (N, 1, 8, 8), generator=g)
    result, total = timed(dm.sample_quality, samples, reference, extractor=StandIn())
    full = {"num_samples": N, "num_reference": N, "seconds": total, "target_seconds": 30, **result}
    print(json.dumps(full), flush=True)
    path = save("metrics_speed", {"command": f"python benchmarks/metrics_speed.py --threads {args.threads}",
                                  "threads": args.threads, "rows": rows, "inception_score_seconds": is_seconds,
                                  "sample_quality": full})
    print("wrote", path)


if __name__ == "__main__":
    main()
