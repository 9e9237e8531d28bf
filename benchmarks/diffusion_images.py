"""Class-conditional DDPM on ``digits`` (issue 9): sample quality vs sampling steps and sampler, EMA vs raw weights,
the classifier-free guidance sweep, the test bound, and two README pictures.

One model is trained once (part ``train``) through ``dulab.train`` and kept in ``--run-dir``; every other part loads
it from there (``dulab.load``), so parts can run in separate commands. Parts (``--parts``, comma-separated):

* ``train``: ``ddpm`` on ``digits`` with ``conditional=true`` (default ``p_uncond`` 0.1) and the CLI training
  defaults (40 epochs, EMA 0.995), ``eval_every`` = the epochs (evaluations at the start and the end only, to save
  time). ``--train-chunk S`` stops after S more steps (a resumable checkpoint); rerunning the part continues the
  run (``dulab.resume``) until it is complete.
* ``steps``: FID/KID (shipped digits extractor, ``dulab.metrics.sample_quality``) of ``--num-samples`` samples
  against the whole test split, for DDPM ancestral (``variance=small``), DDIM eta 0 and DDIM eta 1 at N sampling
  steps, with the wall time per image. Samples are class-conditional at guidance scale 1 (the conditional network
  alone, one pass per step) for labels drawn uniformly (seeded); the EMA weights. The samples of a point are
  drawn in chunks of ``--chunk`` (x_T seeded by the chunk's index), each stored in the run directory as it
  finishes, and scored when all its chunks exist; finished points and chunks are skipped when rerun (``--redo``
  recomputes), so a long sweep can be split over several commands (``--max-seconds``: start no chunk that would end
  past this long, by the last chunk's time per pass). Also the shipped classifier's accuracy of the samples w.r.t.
  their requested labels. DDIM with eta 1 is the DDPM sampler with ``small`` variance, respaced or not (Song et al.
  eq. 16): the two rows are identical draw for draw, so eta 1 is run at fewer N as a check.
* ``ema``: EMA vs raw (``model.safetensors``) weights at DDIM eta 0, 50 steps, same seeds.
* ``guidance``: classifier-free guidance scales (``--scales``, default 0, 1, 3, 5, 7.5) at DDIM eta 0, 50 steps
  (scale 0 is the unconditional model, 1 the conditional one; > 1 costs two network passes per step): FID/KID and
  the accuracy.
* ``bound``: test bits/dim of the variational bound (``DDPM.bound_terms``, ``--bound-strata`` strata over t, every
  test example) for the null label (a bound on ``log p(x)``, the likelihood table's quantity) and for the true labels
  (a bound on ``log p(x | y)``; adding ``log 10`` nats gives another bound on ``-log p(x)``, since
  ``p(x) >= p(x | y) p(y)`` with ``p(y) = 1/10``); optionally the exact sum over all T on ``--bound-exact``
  examples.
* ``pictures``: ``docs/img/ddpm_digits_steps.png`` (rows: samplers; columns: N; the first 10 samples of each point,
  the same x_T and labels everywhere) and ``docs/img/ddpm_digits_guidance.png`` (one row per scale, labels 0-9 twice,
  the same x_T in every row), from the samples the other parts stored in the run directory (guidance row samples
  are drawn here).

The real-data floor: ``--num-samples`` random training examples scored the same way against the test split.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusion_images.py --parts train
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusion_images.py --parts steps --max-seconds 300  (repeat)
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusion_images.py --parts ema,guidance,bound,pictures

``--quick`` (2 epochs, 100 samples, N in {10, 25}, a separate run directory and JSON) is a smoke test. Writes
``benchmarks/results/diffusion_images_digits.json`` after every point.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dulab
from dulab.metrics.extractors import extractor_for
from dulab.metrics.sample_quality import sample_quality

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
IMG = ROOT / "docs/img"
SAMPLERS = {"ddpm": ("ddpm", 0.0), "ddim_eta0": ("ddim", 0.0), "ddim_eta1": ("ddim", 1.0)}
STEPS = [10, 25, 50, 100, 250, 1000]
SCALES = [0.0, 1.0, 3.0, 5.0, 7.5]
X_SEED, LABEL_SEED = 0, 1


def _save(args, results):
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")


def _load(args, which="ema"):
    return dulab.load(args.run_dir, which=which)


def _labels(n):
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(LABEL_SEED))


def score(samples, labels, test, extractor) -> dict:
    """FID/KID/precision/recall against the whole test split, and the classifier's accuracy w.r.t. ``labels``."""
    q = sample_quality(samples, test, extractor=extractor, generator=torch.Generator().manual_seed(0),
                       kid_subset_size=len(test) // 2)
    with torch.no_grad():
        pred = extractor(samples.long()).argmax(1)
    out = {k: float(q[k]) for k in ("fid", "kid", "kid_std", "inception_score", "precision", "recall")}
    out["accuracy"] = float((pred == labels).double().mean())
    return out


def draw(model, n, *, sampler, eta, steps, scale, labels):
    t0 = time.perf_counter()
    x = model.sample(n, generator=torch.Generator().manual_seed(X_SEED), context=labels, num_steps=steps,
                     sampler=sampler, eta=eta, guidance_scale=scale)
    return x, time.perf_counter() - t0


def part_train(args, results):
    run_dir = Path(args.run_dir)
    summary = run_dir / "summary.json"
    status = json.loads(summary.read_text()).get("status") if summary.exists() else None
    if status == "completed" and not args.redo:
        print(f"train: {run_dir} is complete", flush=True)
        return
    chunk = {"max_steps": args.train_chunk} if args.train_chunk else {}
    t0 = time.perf_counter()
    if (run_dir / "state.pt").exists() and not args.redo:
        done = json.loads(summary.read_text())["step"] if summary.exists() else 0
        if chunk:
            chunk["max_steps"] = done + args.train_chunk
        run = dulab.resume(run_dir, sample_fn=None, progress=False, verbose=False, **chunk)
    else:
        run = dulab.train("ddpm", data="digits", epochs=args.epochs, out_dir=run_dir, overwrite=True, seed=0,
                          conditional=True, eval_every=args.epochs, progress=False, verbose=False, sample_fn=None,
                          **chunk)
    wall = time.perf_counter() - t0
    tr = results.setdefault("train", {"chunks_seconds": []})
    tr["chunks_seconds"].append(round(wall, 1))
    tr.update({"run_dir": str(run_dir), "status": run.summary["status"], "steps": run.summary["step"],
               "epochs": run.summary["epochs"], "engine_seconds": run.summary["seconds"],
               "eval_weights": run.summary.get("eval_weights"),
               "final": {k: v for k, v in (run.summary.get("final") or {}).items() if isinstance(v, (int, float))},
               "options": "conditional=true (p_uncond 0.1), training defaults, eval_every=epochs"})
    print(f"train: {run.summary['status']} at step {run.summary['step']}, {wall:.0f} s this call; "
          f"final {tr['final']}", flush=True)


def part_floor(args, results, test, extractor):
    if "floor" in results and not args.redo:
        return
    train = dulab.load_dataset("digits", "train")
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:args.num_samples]
    f = score(train.x[idx], train.labels_or_default()[idx], test, extractor)
    with torch.no_grad():
        f["classifier_test_accuracy"] = float(
            (extractor(test.x).argmax(1) == test.labels_or_default()).double().mean())
    results["floor"] = {**f, "num_examples": len(idx)}
    print(f"floor: {results['floor']}", flush=True)


def part_steps(args, results, test, extractor):
    model = _load(args, "ema")
    n, chunk = args.num_samples, args.chunk
    labels = _labels(n)
    out = results.setdefault("steps", {})
    run_dir = Path(args.run_dir)
    t_start = time.perf_counter()
    per_step = args.step_estimate  # seconds per network pass on one chunk, updated as chunks finish
    for key, (sampler, eta) in SAMPLERS.items():
        if key not in args.samplers.split(","):
            continue
        for N in args.steps_list:
            if str(N) in out.get(key, {}) and not args.redo:
                continue
            xs, secs = [], 0.0
            for c in range((n + chunk - 1) // chunk):
                path = run_dir / f"chunk_{key}_{N}_{c}.pt"
                lab = labels[c * chunk:(c + 1) * chunk]
                if path.exists() and not args.redo:
                    saved = torch.load(path)
                    xs.append(saved["x"])
                    secs += saved["seconds"]
                    continue
                if time.perf_counter() - t_start + N * per_step > args.max_seconds:
                    print(f"steps: --max-seconds would be passed by {key} N={N} chunk {c}; rerun to continue",
                          flush=True)
                    return
                t0 = time.perf_counter()
                x = model.sample(len(lab), generator=torch.Generator().manual_seed(X_SEED + c), context=lab,
                                 num_steps=N, sampler=sampler, eta=eta, guidance_scale=1.0)
                dt = time.perf_counter() - t0
                per_step = dt / N
                torch.save({"x": x, "seconds": dt}, path)
                xs.append(x)
                secs += dt
            x = torch.cat(xs)
            row = {**score(x, labels, test, extractor), "seconds": secs, "ms_per_image": 1000 * secs / n,
                   "num_samples": n, "chunk": chunk}
            out.setdefault(key, {})[str(N)] = row
            torch.save({"x": x[:10], "labels": labels[:10]}, run_dir / f"samples_{key}_{N}.pt")
            print(f"steps {key} N={N}: FID {row['fid']:.2f} KID {row['kid']:.4f} acc {row['accuracy']:.3f} "
                  f"{row['ms_per_image']:.2f} ms/image", flush=True)
            _save(args, results)


def part_ema(args, results, test, extractor):
    out = results.setdefault("ema", {})
    n, labels = args.num_samples, _labels(args.num_samples)
    for which in ("ema", "last"):
        if which in out and not args.redo:
            continue
        x, secs = draw(_load(args, which), n, sampler="ddim", eta=0.0, steps=args.fixed_steps, scale=1.0,
                       labels=labels)
        out[which] = {**score(x, labels, test, extractor), "seconds": secs, "num_samples": n,
                      "setting": f"ddim eta 0, {args.fixed_steps} steps, guidance 1"}
        print(f"ema {which}: FID {out[which]['fid']:.2f} KID {out[which]['kid']:.4f}", flush=True)
        _save(args, results)


def part_guidance(args, results, test, extractor):
    model = _load(args, "ema")
    out = results.setdefault("guidance", {})
    n, labels = args.num_samples, _labels(args.num_samples)
    for s in args.scales:
        if str(s) in out and not args.redo:
            continue
        x, secs = draw(model, n, sampler="ddim", eta=0.0, steps=args.fixed_steps, scale=s, labels=labels)
        out[str(s)] = {**score(x, labels, test, extractor), "seconds": secs, "ms_per_image": 1000 * secs / n,
                       "num_samples": n}
        print(f"guidance {s}: FID {out[str(s)]['fid']:.2f} KID {out[str(s)]['kid']:.4f} "
              f"acc {out[str(s)]['accuracy']:.3f}", flush=True)
        _save(args, results)


def part_bound(args, results, test, extractor):
    model = _load(args, "ema")
    out = results.setdefault("bound", {})
    x, y = test.x, test.labels_or_default()
    D = test.spec.num_dims
    import math

    def bpd(nats):
        return float(nats / (D * math.log(2)))

    for kind in ("null_label", "true_label"):
        if kind in out and not args.redo:
            continue
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        parts = {"total": [], "prior": [], "decoder": [], "diffusion": []}
        with torch.no_grad():
            for xb, yb in zip(x.split(180), y.split(180)):
                ctx = torch.full_like(yb, 10) if kind == "null_label" else yb
                terms = model.bound_terms(xb, ctx, num_bound_steps=args.bound_strata, generator=g)
                parts["total"].append(terms["total"].double())
                parts["prior"].append(terms["prior"].double())
                parts["decoder"].append(terms["decoder"].double())
                parts["diffusion"].append(terms["diffusion"].double().sum(1))
        tot = torch.cat(parts["total"])
        row = {"nll_nats": float(tot.mean()), "bpd": bpd(tot.mean()),
               "bpd_stderr": bpd(tot.std() / math.sqrt(len(tot))),
               **{f"{k}_nats": float(torch.cat(v).mean()) for k, v in parts.items() if k != "total"},
               "strata": args.bound_strata, "examples": len(tot), "seconds": time.perf_counter() - t0}
        if kind == "true_label":
            row["bpd_plus_log10"] = bpd(tot.mean() + math.log(10))
        out[kind] = row
        print(f"bound {kind}: {row['bpd']:.4f} +- {row['bpd_stderr']:.4f} bits/dim ({row['seconds']:.0f} s)",
              flush=True)
        _save(args, results)
    if args.bound_exact and ("exact_null_label" not in out or args.redo):
        t0 = time.perf_counter()
        xb = x[:args.bound_exact]
        with torch.no_grad():
            tot = model.bound_terms(xb, torch.full((len(xb),), 10), num_bound_steps=0,
                                    generator=torch.Generator().manual_seed(0))["total"].double()
            strat = model.bound_terms(xb, torch.full((len(xb),), 10), num_bound_steps=args.bound_strata,
                                      generator=torch.Generator().manual_seed(1))["total"].double()
        out["exact_null_label"] = {"bpd": bpd(tot.mean()), "bpd_stderr": bpd(tot.std() / math.sqrt(len(tot))),
                                   "stratified_same_examples_bpd": bpd(strat.mean()), "examples": len(xb),
                                   "seconds": time.perf_counter() - t0}
        print(f"bound exact (first {len(xb)}): {out['exact_null_label']}", flush=True)
        _save(args, results)


def _tile(x, nrow):
    """(N, 1, 8, 8) levels -> one (rows*9-1, nrow*9-1) float array in [0, 1], grey gaps."""
    import numpy as np

    x = x[:, 0].float().numpy() / 16.0
    N, H, W = x.shape
    rows = (N + nrow - 1) // nrow
    canvas = np.full((rows * (H + 1) - 1, nrow * (W + 1) - 1), 0.5)
    for i in range(N):
        r, c = divmod(i, nrow)
        canvas[r * (H + 1): r * (H + 1) + H, c * (W + 1): c * (W + 1) + W] = x[i]
    return canvas


def part_pictures(args, results, test, extractor):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(args.run_dir)
    steps = results.get("steps", {})
    keys = [k for k in SAMPLERS if k in steps]
    Ns = [N for N in args.steps_list if any(str(N) in steps[k] for k in keys)]  # columns with at least one run
    fig, axes = plt.subplots(len(keys), len(Ns), figsize=(1.6 * len(Ns), 1.05 * len(keys) + 0.5), squeeze=False)
    for i, key in enumerate(keys):
        for j, N in enumerate(Ns):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            path = run_dir / f"samples_{key}_{N}.pt"
            if path.exists():
                ax.imshow(_tile(torch.load(path)["x"], 5), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                ax.set_title(f"N={N}: FID {steps[key][str(N)]['fid']:.1f}", fontsize=7)
            else:  # DDIM eta 1 is the DDPM sampler draw for draw (Song et al. eq. 16): run at a few N only
                note = "= ddpm row\n(identical draws)" if key == "ddim_eta1" else "not run"
                ax.text(0.5, 0.5, note, ha="center", va="center", fontsize=7, transform=ax.transAxes)
                ax.set_title(f"N={N}", fontsize=7)
                for side in ax.spines.values():
                    side.set_visible(False)
            if j == 0:
                ax.set_ylabel(key.replace("_", " "), fontsize=8)
    fig.suptitle("conditional ddpm on digits (EMA, guidance 1): same x_T and labels in every cell", fontsize=8)
    fig.tight_layout()
    args.img_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.img_dir / args.picture_prefix.format("steps"), dpi=90)
    plt.close(fig)

    model = _load(args, "ema")
    labels = torch.arange(10).repeat(2)
    g_rows = []
    for s in SCALES:
        x, _ = draw(model, len(labels), sampler="ddim", eta=0.0, steps=args.fixed_steps, scale=s, labels=labels)
        order = torch.argsort(labels, stable=True)
        g_rows.append((s, x[order]))
    guid = results.get("guidance", {})
    fig, axes = plt.subplots(len(SCALES), 1, figsize=(7.0, 0.55 * len(SCALES) + 0.6), squeeze=False)
    for ax, (s, x) in zip(axes[:, 0], g_rows):
        ax.imshow(_tile(x, 20), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        r = guid.get(str(s))
        extra = f"  FID {r['fid']:.1f}, acc {r['accuracy']:.2f}" if r else ""
        ax.set_ylabel(f"s={s:g}", fontsize=7, rotation=0, labelpad=16)
        ax.set_title(f"guidance {s:g}{extra}", fontsize=7, loc="left", pad=2)
    fig.suptitle(f"DDIM eta 0, {args.fixed_steps} steps; labels 0,0,1,1,...,9,9; same x_T in every row", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.img_dir / args.picture_prefix.format("guidance"), dpi=90)
    plt.close(fig)
    print("pictures written", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="train,steps,ema,guidance,bound,pictures")
    p.add_argument("--quick", action="store_true", help="a smoke test: 2 epochs, 100 samples, N in {10, 25}")
    p.add_argument("--run-dir", default=str(ROOT / "runs/bench_diffusion_images/ddpm-digits-conditional"))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--train-chunk", type=int, default=0, help="stop training after this many more steps (0: all)")
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--samplers", default=",".join(SAMPLERS))
    p.add_argument("--steps-list", default=",".join(map(str, STEPS)))
    p.add_argument("--fixed-steps", type=int, default=50, help="DDIM steps of the ema and guidance parts")
    p.add_argument("--max-seconds", type=float, default=1e9,
                   help="steps part: start no chunk that would end past this many seconds (estimated)")
    p.add_argument("--chunk", type=int, default=250, help="steps part: samples per stored chunk (own seed each)")
    p.add_argument("--step-estimate", type=float, default=0.25, help="steps part: first guess of s per pass")
    p.add_argument("--scales", default=",".join(map(str, SCALES)), help="guidance part: the scales")
    p.add_argument("--bound-strata", type=int, default=100)
    p.add_argument("--bound-exact", type=int, default=0, help="examples for the exact bound over all T (0: none)")
    p.add_argument("--redo", action="store_true", help="recompute points already in the JSON")
    p.add_argument("--out", default=str(RESULTS / "diffusion_images_digits.json"))
    args = p.parse_args(argv)
    args.picture_prefix, args.img_dir = "ddpm_digits_{}.png", IMG
    if args.quick:
        args.epochs, args.num_samples, args.fixed_steps, args.bound_strata, args.chunk = 2, 100, 10, 5, 50
        args.steps_list = "10,25"
        args.run_dir = str(Path(args.run_dir).with_name("ddpm-digits-conditional-quick"))
        args.out = str(RESULTS / "diffusion_images_quick.json")
        args.picture_prefix = "quick_ddpm_digits_{}.png"
        args.img_dir = Path(args.run_dir)  # the smoke test's pictures stay out of docs/img
    args.steps_list = [int(s) for s in str(args.steps_list).split(",")]
    args.scales = [float(s) for s in str(args.scales).split(",")]
    torch.set_num_threads(1)
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() else {}
    results.setdefault("machine", "2-core Intel Xeon, shared with other jobs, torch "
                       f"{torch.__version__}, 1 thread")
    test = dulab.load_dataset("digits", "test")
    extractor = extractor_for("digits")
    parts = {"steps": part_steps, "ema": part_ema, "guidance": part_guidance,
             "bound": part_bound, "pictures": part_pictures}
    for part in args.parts.split(","):
        t0 = time.time()
        if part == "train":
            part_train(args, results)
        else:
            part_floor(args, results, test, extractor)
            parts[part](args, results, test, extractor)
        results.setdefault("seconds", {})[part] = round(time.time() - t0, 1)
        _save(args, results)


if __name__ == "__main__":
    main()
