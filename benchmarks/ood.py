"""Out-of-distribution detection with likelihoods on embedded pairs: the failure and two remedies (issue 10).

A PixelCNN is trained on `digits` (the train split minus 200 held-out images: the typicality test's reference,
never the test split) and scores the digits test split (in-distribution) against `digits_ood` sets: blank
images, constant images, `shapes` reduced to 8x8 with 17 levels, and uniform noise. For each pair, AUROC of
three anomaly scores (higher = more anomalous):

* raw likelihood, ``-log p(x)``: fails on the simple sets (Nalisnick et al. 2019a);
* typicality, ``|-log p(x) - H|`` with H the mean NLL of the 200 held-out images (Nalisnick et al. 2019b), for
  single inputs (M = 1) and for groups of M = 10 inputs of one set (their mean NLL; 36 groups per set);
* likelihood ratio, ``-(log p(x) - log p_bg(x))`` with a background PixelCNN trained on the same images with
  each pixel replaced by a uniform level with probability 0.2 (Ren et al. 2019).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/ood.py
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, markdown_table, save  # noqa: E402

SETS = ["blank", "constant", "shapes", "noise"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--model", default="pixel_cnn")
    p.add_argument("--rate", type=float, default=0.2, help="perturbation rate of the background model's data")
    p.add_argument("--out", default=str(RESULTS / "ood_runs"))
    p.add_argument("--picture", default=str(ROOT / "docs" / "img" / "ood_digits_bpd.png"))
    args = p.parse_args()
    torch.set_num_threads(1)

    import dulab
    from dulab.metrics import auroc
    from dulab.scores import likelihood_ratio_scores, perturb, score, typicality_scores

    full = dulab.load_dataset("digits", "train")
    order = torch.randperm(len(full), generator=torch.Generator().manual_seed(0))
    train, held_out = full.subset(order[200:]), full.subset(order[:200])
    test = dulab.load_dataset("digits", "test")
    noisy = dulab.datasets.from_array(perturb(train.x, 17, args.rate, generator=torch.Generator().manual_seed(1)),
                                      num_levels=17)
    runs = {}
    for tag, data in (("model", train), ("background", noisy)):
        run = dulab.train(args.model, data=data, eval_data=held_out, epochs=args.epochs,
                          out_dir=Path(args.out) / f"{args.model}-{tag}", overwrite=True, seed=0, progress=False)
        runs[tag] = dulab.load(run.dir)
        print(f"{tag}: held-out bpd {run.metrics[-1].get('test_bpd'):.4f}", flush=True)
    model, background = runs["model"], runs["background"]

    sets = {"digits (test)": test}
    sets.update({k: dulab.load_dataset("digits_ood", "test", kind=k) for k in SETS})
    D = test.spec.num_dims
    lp = {k: score(model, ds) for k, ds in sets.items()}
    lp_bg = {k: score(background, ds) for k, ds in sets.items()}
    reference = score(model, held_out)

    def anomaly(kind, k):
        if kind == "raw":
            return -lp[k]
        if kind == "typicality":
            return typicality_scores(lp[k], reference)
        if kind == "typicality_m10":
            return typicality_scores(lp[k], reference, group_size=10)
        return likelihood_ratio_scores(lp[k], lp_bg[k])

    rows = []
    for k in sets:
        row = {"set": k, "mean_bpd": float((-lp[k] / (D * math.log(2))).mean())}
        if k != "digits (test)":
            for kind in ("raw", "typicality", "typicality_m10", "ratio"):
                row[f"auroc_{kind}"] = auroc(anomaly(kind, "digits (test)"), anomaly(kind, k))
        rows.append(row)
    cols = ["set", "mean_bpd", "auroc_raw", "auroc_typicality", "auroc_typicality_m10", "auroc_ratio"]
    print(markdown_table(rows, cols))
    held = float((-reference / (D * math.log(2))).mean())
    print(f"held-out (typicality reference) mean bpd {held:.4f}")
    save("ood", {"rows": rows, "epochs": args.epochs, "model": args.model, "rate": args.rate, "held_out_bpd": held})

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    for k in sets:
        bpd = (-lp[k] / (D * math.log(2))).numpy()
        ax.hist(bpd, bins=60, range=(0, 9), alpha=0.6, label=k, density=True)
    ax.axvline(held, color="k", ls="--", lw=1, label="typical set (held-out mean)")
    ax.set_xlabel(f"bits/dim under {args.model} trained on digits")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(args.picture).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.picture)
    print(f"wrote {args.picture}")


if __name__ == "__main__":
    main()
