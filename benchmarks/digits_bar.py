"""The digits bits/dim bar (issue 10, item 5): what the field does against overfitting on small data, measured on
`digits` (1437 training images, 360 test images, 17 levels).

Every run trains on 85% of the training split and is early-stopped on the other 15% (a seeded split of the
*training* split; the test split is only used for the final numbers): the engine evaluates the held-out part after
each epoch and keeps ``best.safetensors``, whose test bpd is reported. Then mixtures of the runs
(``dulab.models.mixture``: a convex combination of normalised densities is normalised), uniform and with EM-fitted
weights on the same held-out 15%.

    .venv/bin/python benchmarks/digits_bar.py [--runs a,b,c] [--epochs N]

Writes ``benchmarks/results/digits_bar.json`` after every run (partial results survive); run dirs are kept under
``benchmarks/results/digits_bar_runs/`` so mixtures can be re-scored without retraining.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

import dulab
from dulab.models.mixture import Mixture
from dulab.training.run import _holdout

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
RUNS = {
    "pp_default": ("pixel_cnn_pp", {}, 0),
    "pp_drop05_wd1e-3": ("pixel_cnn_pp", {"dropout": 0.5, "weight_decay": 1e-3}, 0),
    "gated_default": ("gated_pixel_cnn", {}, 0),
    "pp_default_seed1": ("pixel_cnn_pp", {}, 1),
    "pp_drop05_f48": ("pixel_cnn_pp", {"dropout": 0.5, "num_filters": 48}, 0),
}
FRACTION, SPLIT_SEED = 0.15, 0


@torch.no_grad()
def bpd(model, x, batch=120) -> float:
    model.eval()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        nll = -torch.cat([model.log_prob(c).double() for c in x.split(batch)]).mean()
    return float(nll) / (x[0].numel() * math.log(2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default=",".join(RUNS))
    p.add_argument("--epochs", type=int, default=None, help="override every run's epochs (default: model defaults)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out_path = RESULTS / "digits_bar.json"
    results = json.loads(out_path.read_text()) if out_path.exists() else {"runs": {}, "mixtures": {}}
    train = dulab.load_dataset("digits", "train")
    test = dulab.load_dataset("digits", "test")
    fit, val = _holdout(train, FRACTION, SPLIT_SEED)
    run_root = RESULTS / "digits_bar_runs"
    for key in args.runs.split(","):
        name, hp, seed = RUNS[key]
        t0 = time.time()
        # one fixed held-out split for every run (and for the mixture weights); seed varies the initialisation
        run = dulab.train(name, data=fit, eval_data=val, seed=seed, out_dir=run_root / key, overwrite=True,
                          progress=False, sample_fn=None, epochs=args.epochs, **hp)
        wall = time.time() - t0
        best = dulab.load(run.dir, which="best")
        last = dulab.load(run.dir, which="last")
        results["runs"][key] = {"model": name, "hparams": RUNS[key][1], "seed": seed, "dir": str(run.dir),
                                "val_bpd_best": bpd(best, val.x), "test_bpd_best": bpd(best, test.x),
                                "test_bpd_last": bpd(last, test.x), "epochs": run.final.get("epoch"),
                                "best": run.summary.get("best"), "wall_seconds": wall,
                                "date": time.strftime("%Y-%m-%d")}
        print(key, json.dumps(results["runs"][key]), flush=True)
        out_path.write_text(json.dumps(results, indent=2))
    done = [k for k in RUNS if k in results["runs"]]
    members = {k: dulab.load(results["runs"][k]["dir"], which="best") for k in done}
    combos = {"all": done, **({"pp_seeds": ["pp_default", "pp_default_seed1"]}
                              if {"pp_default", "pp_default_seed1"} <= set(done) else {})}
    for cname, keys in combos.items():
        if len(keys) < 2:
            continue
        m = Mixture([members[k] for k in keys])
        uniform = bpd(m, test.x)
        history = m.fit_weights(val.x)
        results["mixtures"][cname] = {"members": keys, "test_bpd_uniform": uniform,
                                      "weights_em": [round(float(w), 4) for w in m.weights],
                                      "val_loglik_em": history[-1], "test_bpd_em": bpd(m, test.x)}
        print(cname, json.dumps(results["mixtures"][cname]), flush=True)
        out_path.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
