"""Diffusion, score and energy models on the 2-D toys and on digits (issue 9), with the README pictures.

Parts (``--parts``, comma-separated; each run is one ``dulab.train`` with the model's CLI defaults unless said):

* ``steps``: ``ddpm`` on ``swiss_roll`` with the MLP denoiser and the continuous-time cosine schedule
  (``--set noise_schedule=continuous_cosine data_scale=2``); 2000 samples for N = 1, 2, 4, 10, 22, 49, 107, 234, 512
  ancestral (DDPM) and DDIM (eta 0) steps, each scored by the energy distance to 2000 test points
  (``sample_metrics.energy_distance``); ``docs/img/ddpm_swiss_roll_steps.png``. ``--steps-set prediction=eps
  --steps-set epochs=5`` trains a variant (stored under its own key, no picture).
* ``bound``: ``ddpm`` (defaults) on ``eight_gaussians`` and ``checkerboard``: the run's ``test_kl_to_truth`` (the
  negative bound with 50 strata, minus the true entropy, on the test split) and the exact bound over all T steps on
  ``--bound-examples`` test points with its standard error; the bound must never be below the true entropy.
  Also the same networks' exact gap with ``variance=large`` (the variance enters the bound, not the training).
* ``exact``: no training: the bound's gap to the entropy with the *exact* denoiser of N(0, 1) data (1-D, 4000
  points, all T = 1000 terms) for each schedule and reverse variance: what the fixed variance alone costs.
* ``toys``: ``ncsn`` and ``ebm`` (defaults) on ``eight_gaussians`` and ``checkerboard``: sample NLL under the true
  density, the fraction of samples where it is 0, the energy distance to the test set; pictures
  ``docs/img/ncsn_score_field.png`` (arrows of the learned score at several noise levels over the data) and
  ``docs/img/ebm_energy.png`` (data, samples, the learned ``exp(-E)`` and the true density).
* ``digits``: ``ncsn`` and ``ebm`` on ``digits`` (defaults, ``--digits-epochs`` to shorten): FID/KID of min(1000,
  test size) = 360 samples against the test split with the shipped extractor, next to the train-vs-test floor.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusion_toy.py --parts steps,bound,toys,digits

Writes ``benchmarks/results/diffusion_toy.json`` (after each part, so partial results survive).
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import dulab  # noqa: E402
from dulab.models.diffusion.sample_metrics import energy_distance, sample_metrics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results"
IMG = ROOT / "docs/img"
STEPS = [1, 2, 4, 10, 22, 49, 107, 234, 512]
LIM = 4.5


def _train(name, data, **kw):
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        run = dulab.train(name, data=data, out_dir=Path(tmp) / "run", progress=False, sample_fn=None, **kw)
        wall = time.time() - t0
    run.model.eval()
    return run, wall


def _square(ax, lim=LIM):
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def part_steps(args, results):
    test = dulab.load_dataset("swiss_roll", "test")
    ref = test.x[:2000]
    extra = dict(item.split("=", 1) for item in args.steps_set)  # e.g. prediction=eps, epochs=5
    if "epochs" in extra:
        extra["epochs"] = int(extra["epochs"])
    elif args.quick:
        extra["epochs"] = 2
    run, wall = _train("ddpm", "swiss_roll", noise_schedule="continuous_cosine", data_scale=2.0, **extra)
    model = run.model
    rows = {"ddpm": {}, "ddim": {}}
    samples = {}
    for sampler in ("ddpm", "ddim"):
        for n in STEPS:
            g = torch.Generator().manual_seed(0)
            t0 = time.time()
            s = model.sample(2000, generator=g, num_steps=n, sampler=sampler, eta=0.0)
            rows[sampler][n] = {"energy_distance": energy_distance(s, ref), "seconds": time.time() - t0}
            if sampler == "ddpm":
                samples[n] = s
    floor = energy_distance(dulab.load_dataset("swiss_roll", "train").x[:2000], ref)
    key = "steps" + "".join(f" {k}={v}" for k, v in extra.items() if not args.quick)
    print(f"{key}: floor {floor:.4f}; " + ", ".join(
        f"N={n}: {rows['ddpm'][n]['energy_distance']:.4f}/{rows['ddim'][n]['energy_distance']:.4f}"
        for n in STEPS), flush=True)
    results[key] = {"energy_distance": rows, "train_vs_test_floor": floor, "wall_seconds": wall,
                    "final": _final(run), "prediction": model.prediction,
                    "options": " ".join(["noise_schedule=continuous_cosine data_scale=2", *args.steps_set])}
    if key != "steps":
        return  # the README picture is of the default setting only
    fig, axes = plt.subplots(3, 3, figsize=(8.4, 8.4))
    for ax, n in zip(axes.flat, STEPS):
        s = samples[n]
        ax.scatter(s[:, 0], s[:, 1], s=1, alpha=0.4)
        ax.set_title(f"N = {n}: ED {rows['ddpm'][n]['energy_distance']:.3f}", fontsize=10)
        _square(ax)
    fig.suptitle(f"ddpm (ancestral) on swiss_roll, continuous cosine schedule; train-vs-test ED {floor:.4f}")
    fig.tight_layout()
    IMG.mkdir(parents=True, exist_ok=True)
    fig.savefig(IMG / "ddpm_swiss_roll_steps.png", dpi=70)
    plt.close(fig)


def _final(run):
    f = dict(run.final)
    return {k: v for k, v in f.items() if isinstance(v, (int, float))}


def part_bound(args, results):
    out = results.setdefault("bound", {})
    for data in ("eight_gaussians", "checkerboard"):
        test = dulab.load_dataset(data, "test")
        run, wall = _train("ddpm", data, **({"epochs": 2} if args.quick else {}))
        model = run.model
        x = test.x[:args.bound_examples]
        torch.manual_seed(0)
        with torch.no_grad():
            nll = torch.cat([-model.log_prob(b, num_bound_steps=0) for b in x.split(500)]).double()
        lp_true = test.true_log_prob(x.double())
        gap = nll + lp_true  # per example: -bound - (-log p): E = KL(p || bound model) >= 0
        entropy_all = float(-test.true_log_prob(test.x.double()).mean())
        f = _final(run)
        out[data] = {"test_kl_to_truth_run": f.get("test_kl_to_truth"), "test_nll_run": f.get("test_nll"),
                     "exact_bound_nll": float(nll.mean()), "exact_gap": float(gap.mean()),
                     "exact_gap_stderr": float(gap.std() / math.sqrt(len(gap))), "examples": len(x),
                     "true_entropy_examples": float(-lp_true.mean()), "true_entropy_test": entropy_all,
                     "wall_seconds": wall, "epochs": f.get("epoch")}
        # the reverse variance enters only the bound and sampling, not the training loss: the same network with
        # variance=large (beta_t, Ho et al.'s other extreme) instead of the default small (beta_tilde_t)
        model.config.variance = "large"
        torch.manual_seed(0)
        with torch.no_grad():
            nll_large = torch.cat([-model.log_prob(b, num_bound_steps=0) for b in x.split(500)]).double()
        model.config.variance = "small"
        gap_large = nll_large + lp_true
        out[data].update({"exact_gap_variance_large": float(gap_large.mean()),
                          "exact_gap_variance_large_stderr": float(gap_large.std() / math.sqrt(len(gap)))})
        r = out[data]
        print(f"bound {data}: run KL {r['test_kl_to_truth_run']:.4f}; exact gap {r['exact_gap']:.4f} "
              f"+- {r['exact_gap_stderr']:.4f} (variance large: {r['exact_gap_variance_large']:.4f}) ({len(x)} ex);"
              f" {wall:.0f} s", flush=True)
        _save(args, results)


def _score_panels(model, ds, axes, levels):
    x = ds.x[:2000]
    axis = torch.linspace(-LIM + 0.25, LIM - 0.25, 19)
    grid = torch.cartesian_prod(axis, axis)
    for ax, i in zip(axes, levels):
        with torch.no_grad():
            s = model.score(grid, int(i))
        sig = float(model.sigmas[i])
        # arrows of sigma * s (unit scale at every level, the network's raw output), capped for readability
        v = sig * s
        norm = v.norm(dim=1, keepdim=True).clamp(min=1.0)
        v = v / norm
        ax.scatter(x[:, 0], x[:, 1], s=0.5, alpha=0.25, c="tab:gray")
        ax.quiver(grid[:, 0], grid[:, 1], v[:, 0], v[:, 1], color="tab:red", angles="xy", scale_units="xy",
                  scale=2.2, width=0.006)
        ax.set_title(f"sigma {sig:.3g}: sigma*score", fontsize=9)
        _square(ax)


def _toy_scores(model, ds_test, n):
    g = torch.Generator().manual_seed(0)
    t0 = time.time()
    s = model.sample(n, generator=g)
    secs = time.time() - t0
    m = sample_metrics(s, ds_test)
    return s, {**m, "sample_seconds": secs}


def part_exact(args, results):
    from dulab.data.base import DataSpec

    out = results.setdefault("exact", {})
    x = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for schedule in ("linear", "cosine", "continuous_cosine"):
        for variance in ("small", "large"):
            model = dulab.build_model("ddpm", DataSpec((1,), "continuous"), prediction="x0", noise_schedule=schedule,
                                      variance=variance).double().eval()

            def exact(x_t, t, y=None, model=model):  # E[x0 | x_t] for x0 ~ N(0, 1) (alpha^2 + sigma^2 = 1)
                return model.schedule.coefficients(t, x_t)[0] * x_t

            model.denoise = exact
            with torch.no_grad():
                nll = -model.log_prob(x, num_bound_steps=0, generator=torch.Generator().manual_seed(1))
            per = nll + (-0.5 * (x.square() + math.log(2 * math.pi))).sum(1)  # -bound - (-log p(x)), per point
            gap = float(per.mean())
            out[f"{schedule}/{variance}"] = {"gap_nats": gap, "stderr": float(per.std() / math.sqrt(len(x)))}
            print(f"exact denoiser, N(0, 1): {schedule:17s} {variance:5s} gap {gap:.4f} +- "
                  f"{out[f'{schedule}/{variance}']['stderr']:.4f} nats", flush=True)
    _save(args, results)


def part_toys(args, results):
    out = results.setdefault("toys", {})
    datasets = ("eight_gaussians", "checkerboard")
    fig_n, axes_n = plt.subplots(2, 6, figsize=(15, 5.4))
    fig_e, axes_e = plt.subplots(2, 4, figsize=(10.5, 5.6))
    grid_axis = torch.linspace(-LIM, LIM, 150)
    grid = torch.cartesian_prod(grid_axis, grid_axis)
    for row, data in enumerate(datasets):
        test = dulab.load_dataset(data, "test")
        x = test.x[:2000]
        floor = sample_metrics(dulab.load_dataset(data, "train").x[:2000], test)
        out.setdefault(data, {})["train_vs_test"] = floor
        for name in ("ncsn", "ebm"):
            run, wall = _train(name, data, **({"epochs": 2} if args.quick else {}))
            model = run.model
            s, m = _toy_scores(model, test, 2000)
            out[data][name] = {**m, "wall_seconds": wall, "epochs": _final(run).get("epoch")}
            print(f"toys {data} {name}: sample NLL {m['sample_nll']:.3f} (entropy {m['true_entropy']:.3f}),"
                  f" outside {m['sample_outside']:.3f}, ED {m['energy_distance']:.4f}"
                  f" (floor {floor['energy_distance']:.4f}); {wall:.0f} s", flush=True)
            if name == "ncsn":
                ax = axes_n[row]
                ax[0].scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
                ax[0].set_title(f"{data}: data", fontsize=9)
                ax[1].scatter(s[:, 0], s[:, 1], s=1, alpha=0.4, c="tab:green")
                ax[1].set_title(f"samples: NLL {m['sample_nll']:.2f}, ED {m['energy_distance']:.3f}", fontsize=9)
                _square(ax[0])
                _square(ax[1])
                L = len(model.sigmas)
                _score_panels(model, test, ax[2:], [0, L // 3, (2 * L) // 3, L - 1])
            else:
                ax = axes_e[row]
                ax[0].scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
                ax[0].set_title(f"{data}: data", fontsize=9)
                ax[1].scatter(s[:, 0], s[:, 1], s=1, alpha=0.4, c="tab:green")
                ax[1].set_title(f"samples: NLL {m['sample_nll']:.2f}, ED {m['energy_distance']:.3f}", fontsize=9)
                with torch.no_grad():
                    e = model.energy(grid).view(150, 150).T
                dens = torch.exp(-(e - e.min()))
                ax[2].imshow(dens.numpy(), origin="lower", extent=(-LIM, LIM, -LIM, LIM), cmap="viridis")
                ax[2].set_title("model exp(-E) (unnormalised)", fontsize=9)
                true = test.true_log_prob(grid.double()).exp().float().view(150, 150).T
                ax[3].imshow(true.numpy(), origin="lower", extent=(-LIM, LIM, -LIM, LIM), cmap="viridis")
                ax[3].set_title("true density", fontsize=9)
                for a in ax:
                    _square(a)
            _save(args, results)
    fig_n.suptitle("ncsn (defaults): data, annealed Langevin samples, learned score at 4 of the 10 noise levels")
    fig_n.tight_layout()
    fig_n.savefig(IMG / "ncsn_score_field.png", dpi=60)
    fig_e.suptitle("ebm (defaults): data, Langevin samples from noise, energy landscape, truth")
    fig_e.tight_layout()
    fig_e.savefig(IMG / "ebm_energy.png", dpi=60)
    plt.close("all")


def part_digits(args, results):
    out = results.setdefault("digits", {})
    test = dulab.load_dataset("digits", "test")
    n = min(1000, len(test))
    out["train_vs_test"] = sample_metrics(dulab.load_dataset("digits", "train").x[:n], test)
    print(f"digits floor: FID {out['train_vs_test']['fid']:.3f}", flush=True)
    for name in ("ncsn", "ebm"):
        kw = {"epochs": 1 if args.quick else args.digits_epochs} if (args.quick or args.digits_epochs) else {}
        run, wall = _train(name, "digits", **kw)
        g = torch.Generator().manual_seed(0)
        t0 = time.time()
        s = run.model.sample(n, generator=g)
        secs = time.time() - t0
        m = sample_metrics(s, test)
        out[name] = {**m, "wall_seconds": wall, "sample_seconds": secs, "epochs": _final(run).get("epoch"),
                     "num_samples": n}
        print(f"digits {name}: FID {m['fid']:.3f} KID {m['kid']:.4f}; train {wall:.0f} s, sample {secs:.0f} s",
              flush=True)
        from dulab.viz import save_image_grid  # noqa: PLC0415

        save_image_grid(s[:64], IMG / f"{name}_digits_samples.png", num_levels=test.spec.num_levels)
        _save(args, results)


def _save(args, results):
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=float) + "\n")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="steps,bound,toys,digits")
    p.add_argument("--quick", action="store_true", help="1-2 epochs per run (a smoke test, not the benchmark)")
    p.add_argument("--steps-set", action="append", default=[], metavar="KEY=VALUE",
                   help="steps part: a ddpm option or epochs=N (repeatable); results go under their own key and "
                        "the picture is not redrawn")
    p.add_argument("--bound-examples", type=int, default=2000)
    p.add_argument("--digits-epochs", type=int, default=0, help="0: the model's default")
    p.add_argument("--out", default=str(RESULTS / "diffusion_toy.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.exists() and not args.quick else {}
    for part in args.parts.split(","):
        t0 = time.time()
        {"steps": part_steps, "bound": part_bound, "exact": part_exact, "toys": part_toys,
         "digits": part_digits}[part](args, results)
        results.setdefault("seconds", {})[part] = time.time() - t0
        _save(args, results)


if __name__ == "__main__":
    main()
