"""Lossless compression with trained likelihood models against general-purpose codecs (issue 10).

For each dataset: train a model briefly with the CLI (`dulab train`), then code the test split with
`dulab.compression` and report bits per dimension of the whole file (header included) and of the payload, the
model's own test bpd (the ideal), gzip / bz2 / lzma (standard library, strongest presets) on the same bytes
(one byte per dimension), PNG (Pillow, compress_level 9) for images: each image its own file (as a folder of
PNGs would hold them) and all images in one mosaic, and coding speed in dimensions per second.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/compression.py --only digits
"""

from __future__ import annotations

import argparse
import bz2
import gzip
import io
import lzma
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, markdown_table, run_cli, save  # noqa: E402

#: dataset -> (model, training arguments, test examples coded): short trainings (a minute or two on one thread);
#: shapes codes the first 200 of its 1000 test images (400 dimensions each) to keep the run under six minutes
PLAN = {
    "digits": ("pixel_cnn", ["--epochs", "20"], None),
    "digits_color": ("pixel_cnn", ["--epochs", "20"], None),
    "shapes": ("pixel_cnn", ["--epochs", "1"], 200),
    "text": ("transformer", ["--epochs", "8"], None),
}


def png_bytes(images: np.ndarray, num_levels: int) -> tuple[int, int]:
    """(sum of per-image PNG sizes, size of one mosaic PNG) for ``(N, C, H, W)`` levels on the 8-bit grid."""
    from PIL import Image

    grid = np.rint(np.arange(num_levels) * (255.0 / (num_levels - 1))).astype(np.uint8)
    pixels = grid[images]  # (N, C, H, W) uint8

    def encode(a):  # (C, H, W) -> PNG bytes
        im = Image.fromarray(a[0], "L") if a.shape[0] == 1 else Image.fromarray(a.transpose(1, 2, 0))
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True, compress_level=9)
        return len(buf.getvalue())

    each = sum(encode(a) for a in pixels)
    N, C, H, W = pixels.shape
    cols = int(math.ceil(math.sqrt(N)))
    rows = int(math.ceil(N / cols))
    mosaic = np.zeros((C, rows * H, cols * W), dtype=np.uint8)
    for i, a in enumerate(pixels):
        r, c = divmod(i, cols)
        mosaic[:, r * H:(r + 1) * H, c * W:(c + 1) * W] = a
    return each, encode(mosaic)


def bench(name: str, base: Path, reuse: bool = False) -> dict:
    import dulab
    from dulab.compression import compress, decompress, inspect
    from dulab.metrics import dataset_nll

    model_name, train_args, limit = PLAN[name]
    run_dir = base / f"{model_name}-{name}"
    if reuse and (run_dir / "summary.json").exists():  # the same command trained it before (seeded)
        import json

        final = {"train_seconds": json.loads((run_dir / "summary.json").read_text())["seconds"]}
    else:
        final, _ = run_cli([model_name, "--data", name, *train_args], run_dir)
    model = dulab.load(run_dir)
    ds = dulab.load_dataset(name, "test")
    if limit is not None:
        ds = ds.subset(torch.arange(limit))
    x = ds.x
    N, D = len(x), ds.spec.num_dims
    dims = N * D
    ideal = dataset_nll(model, ds)["bpd"]

    t0 = time.perf_counter()
    data = compress(model, x.numpy().astype(np.uint8))
    t_enc = time.perf_counter() - t0
    t0 = time.perf_counter()
    y = decompress(model, data)
    t_dec = time.perf_counter() - t0
    assert np.array_equal(y, x.numpy()), "round trip failed"
    info = inspect(data)

    raw = x.numpy().astype(np.uint8).tobytes()  # one byte per dimension
    row = {"data": name, "model": model_name, "examples": N, "dims": dims,
           "train_s": round(final["train_seconds"], 1), "model_test_bpd": ideal,
           "dulab_bpd": 8 * len(data) / dims, "payload_bpd": info["payload_bits"] / dims,
           "header_bytes": info["overhead_bytes"],
           "gzip_bpd": 8 * len(gzip.compress(raw, compresslevel=9)) / dims,
           "bz2_bpd": 8 * len(bz2.compress(raw, compresslevel=9)) / dims,
           "lzma_bpd": 8 * len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)) / dims,
           "encode_dims_per_s": dims / t_enc, "decode_dims_per_s": dims / t_dec}
    if ds.spec.is_image:
        each, mosaic = png_bytes(x.numpy(), ds.spec.num_levels)
        row["png_each_bpd"], row["png_mosaic_bpd"] = 8 * each / dims, 8 * mosaic / dims
    return row


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--only", default=",".join(PLAN), help="comma-separated datasets")
    p.add_argument("--out", default=str(RESULTS / "compression_runs"))
    p.add_argument("--reuse", action="store_true", help="code with runs this script trained before")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.only.split(","):
        row = bench(name, Path(args.out), args.reuse)
        rows.append(row)
        print(markdown_table([row], list(row)), flush=True)
    cols = ["data", "model", "model_test_bpd", "dulab_bpd", "payload_bpd", "gzip_bpd", "bz2_bpd", "lzma_bpd",
            "png_each_bpd", "png_mosaic_bpd", "encode_dims_per_s", "decode_dims_per_s", "train_s"]
    print(markdown_table(rows, cols))
    save(f"compression_{'_'.join(r['data'] for r in rows)}", {"rows": rows})


if __name__ == "__main__":
    main()
