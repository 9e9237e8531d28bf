"""Parity of dulab's Fréchet distance with pytorch-fid's and torch-fidelity's on identical float64 feature arrays.

The peers are never dulab dependencies. Install them in a throwaway virtualenv without torch::

    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install numpy scipy
    /tmp/peer/bin/pip install --no-deps pytorch-fid torch-fidelity
    .venv/bin/python benchmarks/metrics_parity.py --peer-python /tmp/peer/bin/python

Both packages import torch (and pytorch-fid torchvision) at the top of the module that holds their Fréchet distance,
so the peer process does not import those modules: it parses the installed source file and executes only the one
function (pytorch-fid's ``calculate_frechet_distance``, torch-fidelity's ``fid_statistics_to_metric``) with numpy
and scipy in its namespace, unchanged. This script writes the feature arrays as ``.npy``, computes dulab's value,
runs itself under the peer Python to compute the peers' values from the same files (means and covariances with
``np.mean``/``np.cov``, as both peers do), and compares; a third value, from the nuclear norm of the n x m product of
the centred feature matrices, is exact-rank when the covariances are singular (F > N).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CASES = [(n, f) for n in (500, 5000) for f in (64, 256, 2048)]


def features(n: int, f: int, seed: int, shift: float) -> np.ndarray:
    """ReLU activations of a random linear map: non-negative, correlated, like a network's penultimate layer."""
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(1234).standard_normal((f, f)) / np.sqrt(f)  # shared map: the sets differ in z only
    z = rng.standard_normal((n, f)) * (1 + shift) + shift
    return np.maximum(z @ w + 0.1, 0)


def nuclear_norm_fid(a: np.ndarray, b: np.ndarray) -> float:
    """A third reference that never forms an F x F square root: with centred data A, B and S1 = A'A/(n-1),
    S2 = B'B/(m-1), tr((S1^(1/2) S2 S1^(1/2))^(1/2)) = ||S1^(1/2) S2^(1/2)||_* = ||A B'||_* / sqrt((n-1)(m-1)).
    The n x m matrix A B' has no null space of size F - n to carry round-off, so it is exact-rank when F > n."""
    ac, bc = a - a.mean(0), b - b.mean(0)
    tr_covmean = np.linalg.svd(ac @ bc.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + (ac * ac).sum() / (len(a) - 1) + (bc * bc).sum() / (len(b) - 1) - 2 * tr_covmean)


# ---- peer side: numpy and scipy only ---------------------------------------------------------------------------


def _load_function(module: str, name: str, namespace: dict):
    import importlib.util

    spec = importlib.util.find_spec(module.split(".")[0])
    path = Path(spec.submodule_search_locations[0]) / (module.split(".", 1)[1].replace(".", "/") + ".py")
    tree = ast.parse(path.read_text())
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
    exec(compile(ast.Module([node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def peer_main(folder: Path) -> None:
    from scipy import linalg

    pfid = _load_function("pytorch_fid.fid_score", "calculate_frechet_distance", {"np": np, "linalg": linalg})
    tfid = _load_function("torch_fidelity.metric_fid", "fid_statistics_to_metric",
                          {"np": np, "vprint": lambda *a: None, "KEY_METRIC_FID": "frechet_inception_distance"})
    out = {}
    for n, f in CASES:
        a, b = np.load(folder / f"a_{n}_{f}.npy"), np.load(folder / f"b_{n}_{f}.npy")
        stats = [{"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)} for x in (a, b)]
        row = {}
        t0 = time.perf_counter()
        try:
            row["pytorch_fid"] = float(pfid(stats[0]["mu"], stats[0]["sigma"], stats[1]["mu"], stats[1]["sigma"]))
        except ValueError as e:  # its "Imaginary component" check on singular products
            row["pytorch_fid_error"] = str(e)
        row["pytorch_fid_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        row["torch_fidelity"] = float(tfid(stats[0], stats[1], False)["frechet_inception_distance"])
        row["torch_fidelity_seconds"] = time.perf_counter() - t0
        out[f"{n}_{f}"] = row
        print(n, f, row, file=sys.stderr, flush=True)
    (folder / "peer.json").write_text(json.dumps(out))


# ---- dulab side ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer-python", default="/tmp/peer/bin/python")
    parser.add_argument("--peer", type=Path, help=argparse.SUPPRESS)  # internal: run the peer side on this folder
    args = parser.parse_args()
    if args.peer is not None:
        peer_main(args.peer)
        return

    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "src"))
    from _common import save

    import dulab.metrics as dm

    torch.set_num_threads(2)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dulab_values = {}
        for n, f in CASES:
            a, b = features(n, f, seed=1, shift=0.0), features(n, f, seed=2, shift=0.05)
            np.save(folder / f"a_{n}_{f}.npy", a)
            np.save(folder / f"b_{n}_{f}.npy", b)
            t0 = time.perf_counter()
            value = dm.fid(torch.from_numpy(np.load(folder / f"a_{n}_{f}.npy")),
                           torch.from_numpy(np.load(folder / f"b_{n}_{f}.npy")))
            dulab_values[(n, f)] = (value, time.perf_counter() - t0, nuclear_norm_fid(a, b))
        env = {**os.environ, "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"}
        subprocess.run([args.peer_python, __file__, "--peer", str(folder)], check=True, env=env)
        peer = json.loads((folder / "peer.json").read_text())
    for n, f in CASES:
        value, seconds, exact = dulab_values[(n, f)]
        row = {"N": n, "F": f, "singular": f > n - 1, "dulab": value, "dulab_seconds": seconds,
               "nuclear_norm_reference": exact, **peer[f"{n}_{f}"]}
        for name in ("pytorch_fid", "torch_fidelity", "nuclear_norm_reference"):
            if name in row:
                row[f"rel_diff_{name}"] = abs(value - row[name]) / abs(row[name])
        rows.append(row)
        print(json.dumps(row))
    path = save("metrics_parity", {"command": "python benchmarks/metrics_parity.py --peer-python /tmp/peer/bin/python",
                                   "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
