"""Sample-quality reference numbers: real-data floors, the noise ladder on digits, extractor throughput.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sample_quality_floors.py [--datasets digits,shapes]

(a) Floors: FID/KID/IS/precision/recall of each dataset's test split against its train split with the shipped
extractor; a generative model's numbers are read against these (a model cannot be expected to beat held-out real
data). (b) The noise ladder: Gaussian noise of std ``s * (L - 1)`` for ``s`` in 0, 0.05, ..., 0.5 added to the
digits test images, rounded and clipped back to levels, scored against the train split; FID should rise and IS
fall monotonically. (c) Features per second of each extractor on 2 threads (and of InceptionV3 at 299x299 with
random weights, the cost of ``--feature-weights``). Writes ``benchmarks/results/sample_quality_floors.json`` and
``docs/img/fid_noise_ladder.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dulab
from dulab.metrics import sample_quality
from dulab.metrics.extractors import EXTRACTORS, FIDInceptionV3, extractor_for, read_metadata

ROOT = Path(__file__).resolve().parents[1]
SCALES = [round(0.05 * i, 2) for i in range(11)]


# every shipped extractor file by name: the datasets' defaults and their variants (sprites_32: sprites at size=32)
ENTRIES = {e.filename.removesuffix(".safetensors"): e for entry in EXTRACTORS.values() for e in entry.all_entries()}


def floors(names: list[str]) -> dict:
    out = {}
    for name in names:
        entry = ENTRIES[name]
        options = dict(entry.options)
        train = dulab.load_dataset(entry.dataset, split="train", **options)
        test = dulab.load_dataset(entry.dataset, split="test", **options)
        t0 = time.perf_counter()
        r = sample_quality(test.x, train, generator=torch.Generator().manual_seed(0))
        r["seconds"] = time.perf_counter() - t0
        r["extractor_test_accuracy"] = read_metadata(entry.path)["test_accuracy"]
        out[name] = r
        print(f"floor {name:12s} FID {r['fid']:.3f}  KID {r['kid']:.5f} ± {r['kid_std']:.5f}  "
              f"IS {r['inception_score']:.3f}  P {r['precision']:.3f}  R {r['recall']:.3f}", flush=True)
    return out


def noisy(x: torch.Tensor, scale: float, num_levels: int, generator: torch.Generator) -> torch.Tensor:
    """``x`` plus Gaussian noise of std ``scale * (L - 1)``, rounded and clipped to ``[0, L)``."""
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float64) * (scale * (num_levels - 1))
    return (x.double() + noise).round().clamp(0, num_levels - 1).long()


def noise_ladder(name: str = "digits") -> list[dict]:
    train, test = dulab.load_dataset(name, split="train"), dulab.load_dataset(name, split="test")
    rows = []
    for scale in SCALES:
        x = noisy(test.x, scale, test.spec.num_levels, torch.Generator().manual_seed(0))
        r = sample_quality(x, train, generator=torch.Generator().manual_seed(0))
        rows.append({"scale": scale, **r})
        print(f"ladder {name} scale {scale:.2f}  FID {r['fid']:8.3f}  IS {r['inception_score']:.3f}  "
              f"KID {r['kid']:.4f}  P {r['precision']:.3f}  R {r['recall']:.3f}", flush=True)
    return rows


@torch.no_grad()
def throughput(names: list[str], threads: int = 2) -> dict:
    torch.set_num_threads(threads)
    out = {}
    for name in names:
        model = extractor_for(name)
        x = dulab.load_dataset(name, split="train").x[:2000]
        model.features(x[:64])  # warm-up
        t0 = time.perf_counter()
        for i in range(0, len(x), 500):
            model.features(x[i:i + 500])
        out[name] = len(x) / (time.perf_counter() - t0)
    net = FIDInceptionV3().eval()
    x = torch.randint(0, 256, (8, 3, 32, 32))
    net.features(x[:2])
    t0 = time.perf_counter()
    net.features(x)
    out["inception_v3_299 (random weights)"] = len(x) / (time.perf_counter() - t0)
    for k, v in out.items():
        print(f"throughput {k:34s} {v:10.1f} images/s ({threads} threads)", flush=True)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [r["scale"] for r in rows]
    fig, ax = plt.subplots(figsize=(5.5, 3.5), dpi=120)
    ax.plot(s, [r["fid"] for r in rows], "o-", color="C0", label="FID (left)")
    ax.set_xlabel("noise std / level range")
    ax.set_ylabel("FID vs train split", color="C0")
    ax2 = ax.twinx()
    ax2.plot(s, [r["inception_score"] for r in rows], "s--", color="C3", label="IS (right)")
    ax2.set_ylabel("Inception Score", color="C3")
    ax.set_title("digits test split + Gaussian noise (shipped extractor)")
    fig.legend(loc="upper center", bbox_to_anchor=(0.5, 0.88), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(EXTRACTORS), help=f"of {', '.join(ENTRIES)}")
    p.add_argument("--floors-only", action="store_true",
                   help="only the floors of --datasets, merged into the existing JSON (no ladder, no throughput)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    names = [n for n in args.datasets.split(",") if n in ENTRIES]
    out = ROOT / "benchmarks/results/sample_quality_floors.json"
    if args.floors_only:
        results = json.loads(out.read_text())
        results["floors"].update(floors(names))
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")
        return
    names = [n for n in names if n in EXTRACTORS]
    results = {"command": "OMP_NUM_THREADS=2 .venv/bin/python benchmarks/sample_quality_floors.py",
               "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__,
               "floors": floors(names), "noise_ladder_digits": noise_ladder("digits"),
               "throughput_images_per_s_2_threads": throughput(names)}
    plot(results["noise_ladder_digits"], ROOT / "docs/img/fid_noise_ladder.png")
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
