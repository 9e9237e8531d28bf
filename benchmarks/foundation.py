"""Foundation models on the discrete toys: test NLL (nats), bits/dim and the KL to the true pmf.

Run: .venv/bin/python benchmarks/foundation.py
Every row is one `dulab train` command (CLI defaults unless shown); the true entropy comes from the dataset's
closed-form pmf, so ``KL = test NLL - H(true)`` (up to test-set sampling noise, which can make it slightly negative).
"""

from __future__ import annotations

import argparse
import math
import shlex

from _common import ROOT, machine, markdown_table, run_cli, save

RUNS = [
    ["histogram", "--data", "discrete1d"],
    ["logistic_mixture", "--data", "discrete1d"],
    ["histogram", "--data", "discrete1d", "--data-option", "bins=100"],
    ["logistic_mixture", "--data", "discrete1d", "--data-option", "bins=100"],
    ["histogram", "--data", "discrete2d"],
    ["histogram", "--data", "digits"],
    ["logistic_mixture", "--data", "digits"],
]


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.parse_args()
    rows = []
    for args in RUNS:
        out = ROOT / "runs" / "bench" / "-".join(a.replace("=", "") for a in args if not a.startswith("--"))
        final, wall = run_cli(args, out)
        rows.append({"command": "dulab train " + shlex.join(args), "test nll (nats)": final["test_nll"],
                     "test bpd": final["test_bpd"], "KL to truth (nats)": final.get("test_kl_to_truth", math.nan),
                     "train s": final["train_seconds"], "wall s": round(wall, 1)})
        print(rows[-1], flush=True)
    table = markdown_table(rows, list(rows[0]))
    print(f"\nmachine: {machine()}\n\n{table}")
    save("foundation", {"rows": rows})


if __name__ == "__main__":
    main()
