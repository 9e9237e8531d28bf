"""Latent-variable benchmarks of issue 7 (second part): the course's 2-D Gaussian VAE question, IWAE bits/dim of
vae / iwae / hierarchical_vae / pixel_vae, posterior collapse with a PixelCNN decoder and free bits, beta-VAE
MIG on sprites, and the pictures of the README (reconstructions, interpolations, samples, traversals, a 2-D
autoencoder latent space).

Usage (each section prints a markdown table, writes benchmarks/results/latent_more_<section>.json and, where it
draws pictures, PNGs under docs/img/):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_more.py gauss2d
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_more.py bpd --data digits_binary [--num-samples 1000]
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_more.py collapse
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_more.py mig
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_more.py pictures
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/latent_more.py ae --data digits
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, machine  # noqa: E402

from dulab.config import parse_assignments  # noqa: E402

IMG = ROOT / "docs" / "img"


def _save(section: str, payload) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"latent_more_{section}.json").write_text(json.dumps(payload, indent=1))


def _train(name, data, eval_data, out, **kw):
    import dulab

    kw.setdefault("eval_every", 1000)  # evaluate at the start and the end only: the benchmark evaluates itself
    return dulab.train(name, data=data, eval_data=eval_data, out_dir=out, progress=False, sample_fn=None,
                       verbose=False, **kw)


# ============================================================================================ 2-D Gaussians
def course_gaussians(part: str, count: int) -> np.ndarray:
    """The data of the course's VAE question (deepul hw3 q1, dataset 1): N([1, 2], diag(25, 1)) points, rotated
    by 45 degrees for part ``a`` (full covariance), as they are for part ``b`` (diagonal). Drawn here with the
    same generator and seed (numpy RandomState(0)), so train (10000) and test (2500) are the course's points; as
    in the course, both splits start from the same seed, so the test points are the first 2500 training points."""
    rand = np.random.RandomState(0)
    x = rand.randn(count, 2) * [[5.0, 1.0]]
    if part == "a":
        c = math.sqrt(2) / 2
        x = x.dot([[c, c], [-c, c]])
    return (np.array([[1.0, 2.0]]) + x).astype("float32")


def gauss2d(args) -> None:
    import dulab
    from dulab.viz.plots import _save as save_fig

    torch.set_num_threads(1)
    reference = {"a": (4.4388, 2.7630, 1.6758), "b": (4.4213, None, 0.0119)}
    rows, samples = [], {}
    for part, label in (("a", "full covariance (rotated 45 degrees)"), ("b", "diagonal covariance")):
        train = dulab.datasets.from_array(course_gaussians(part, 10000))
        test = dulab.datasets.from_array(course_gaussians(part, 2500))
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            run = _train("vae", train, test, Path(tmp) / part, epochs=args.epochs, batch_size=128, lr=1e-3,
                         seed=args.seed, latent_dim=2, hidden_sizes=(128, 128), architecture="mlp",
                         learned_std=True)
        model = run.model.eval()
        secs = time.time() - t0
        with torch.inference_mode():
            g = torch.Generator().manual_seed(0)
            x = test.x
            recon, kl = [], []
            for _ in range(20):  # 20 reparameterised draws per point: the Monte Carlo error is far below 1e-3
                r, k = model._terms(x, g)
                recon.append(-r)
                kl.append(k.sum(1))
            recon, kl = float(torch.stack(recon).mean()), float(torch.stack(kl).mean())
            iwae = -float(model.log_prob(x, num_samples=1000, generator=g).mean())
            au = model.posterior_diagnostics(x)["active_units"]
            samples[part] = (x, model.sample(1000, generator=g), model.sample(1000, generator=g,
                                                                              use_decoder_noise=False))
        ref = reference[part]
        rows.append({"data": label, "neg_elbo": recon + kl, "recon": recon, "kl": kl, "iwae_nll": iwae,
                     "active_units": au, "ref_neg_elbo": ref[0], "ref_recon": ref[1], "ref_kl": ref[2],
                     "rel_diff": (recon + kl - ref[0]) / ref[0], "train_s": secs})
    print(f"machine: {machine()}; vae latent_dim=2, MLP (128, 128), Gaussian decoder with learned std, "
          f"{args.epochs} epochs, batch 128, lr 1e-3, seed {args.seed}\n")
    print("| data | test -ELBO (nats) | recon | KL | course -ELBO / recon / KL | diff | active units | "
          "IWAE_1000 NLL | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = f"{r['ref_neg_elbo']:.4f} / {r['ref_recon'] if r['ref_recon'] is not None else '-'} / {r['ref_kl']}"
        print(f"| {r['data']} | {r['neg_elbo']:.4f} | {r['recon']:.4f} | {r['kl']:.4f} | {ref} | "
              f"{100 * r['rel_diff']:+.2f}% | {r['active_units']} / 2 | {r['iwae_nll']:.4f} | {r['train_s']:.0f} |")
    _save("gauss2d", rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(9, 6), sharex=True, sharey=True)
    for row, part in enumerate("ab"):
        for col, (pts, title) in enumerate(zip(samples[part], ("test data", "samples with decoder noise",
                                                               "samples without decoder noise (means)"))):
            ax = axes[row, col]
            ax.scatter(pts[:, 0].numpy(), pts[:, 1].numpy(), s=2, alpha=0.5)
            ax.set_title(f"{'full' if part == 'a' else 'diagonal'}: {title}", fontsize=8)
            ax.set_xlim(-15, 17)
            ax.set_ylim(-14, 18)
            ax.set_aspect("equal")
    save_fig(fig, IMG / "vae_gaussians2d.png")


# ============================================================================================ bits/dim
BPD_MODELS = {
    "vae": {},
    "iwae": {"num_importance_samples": 5},
    "hierarchical_vae": {},
    "pixel_vae": {},
}


def _data_kw(data: str, num_sprites: int = 6000) -> dict:
    return {"data_options": {"size": 32, "num_samples": num_sprites}} if data == "sprites" else {}


def _iwae_eval(model, x, num_samples: int, seed: int, batch_size: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    neg_elbo, lp = [], []
    with torch.inference_mode():
        for chunk in x.split(batch_size):
            neg_elbo.append(-model.elbo(chunk, generator=g))
            lp.append(model.log_prob(chunk, num_samples=num_samples, generator=g))
        diag = model.posterior_diagnostics(x)
        kl = float(sum(model.loss(c)["kl"] * len(c) for c in x.split(256))) / len(x)
    D = x[0].numel()
    to_bpd = 1 / (D * math.log(2))
    return {"elbo_bpd": float(torch.cat(neg_elbo).mean()) * to_bpd, "iwae_bpd": -float(torch.cat(lp).mean()) * to_bpd,
            "kl": kl, "active_units": diag["active_units"], "num_latents": len(diag["kl_per_dim"])}


def bpd(args) -> None:
    import dulab

    torch.set_num_threads(1)
    data = args.data
    data_kw = _data_kw(data, args.num_sprites)
    test = dulab.load_dataset(data, split="test", **data_kw.get("data_options", {}))
    x = test.x[: args.num_test] if args.num_test else test.x
    rows = []
    names = args.models.split(",") if args.models else list(BPD_MODELS)
    for name in names:
        hp = {**BPD_MODELS[name], **parse_assignments(args.set, "--set")}
        if args.lr:
            hp.update(lr=args.lr)
        if data == "sprites":
            hp.update(epochs=args.epochs or 10)
        elif args.epochs:
            hp.update(epochs=args.epochs)
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            # sprites: the engine's own evaluations (K = 100 at the start and the end) on 16 test images only (speed)
            eval_data = test.subset(range(16)) if data == "sprites" else None
            run = _train(name, data, eval_data, Path(tmp) / name, seed=args.seed, **data_kw, **hp)
        train_s = time.time() - t0
        model = run.model.eval()
        if args.pictures:
            save_pictures(name, model, test)
        t0 = time.time()
        k = args.num_samples
        res = _iwae_eval(model, x, k, args.seed, args.batch_size)
        epochs = hp.get("epochs") or type(model).train_defaults.get("epochs")
        res.update(model=name, hp=hp, data=data, epochs=epochs, train_s=train_s, eval_s=time.time() - t0, K=k,
                   num_test=len(x), params=sum(p.numel() for p in model.parameters()))
        rows.append(res)
        print(res, flush=True)
    print(f"\nmachine: {machine()}; data {data}, {len(x)} test images, K = {args.num_samples}\n")
    print("| model | test -ELBO bpd | test IWAE bpd (K) | KL (nats) | active units | params | train s | eval s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['model']}` | {r['elbo_bpd']:.4f} | {r['iwae_bpd']:.4f} ({r['K']}) | {r['kl']:.2f} | "
              f"{r['active_units']} / {r['num_latents']} | {r['params']:,} | {r['train_s']:.0f} | {r['eval_s']:.0f} |")
    _save(f"bpd_{data}" + (f"_{args.models.replace(',', '_')}" if args.models else "") + args.tag, rows)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("section", choices=["gauss2d", "bpd", "collapse", "mig", "pictures", "ae"])
    p.add_argument("--data", default="digits_binary")
    p.add_argument("--models", default="")
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--num-test", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.0, help="bpd: learning rate (0: the model's default)")
    p.add_argument("--num-sprites", type=int, default=6000)
    p.add_argument("--betas", default="1,4,8")
    p.add_argument("--pictures", action="store_true", help="bpd: also save pictures of each model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="bpd, mig: extra hyperparameters of every model trained (e.g. kl_warmup_steps=300)")
    p.add_argument("--img-dir", default="", help="mig: folder of the traversal pictures (default docs/img)")
    p.add_argument("--tag", default="", help="bpd, mig: suffix of the results json name")
    p.add_argument("--run-dir", default="", help="mig: keep the runs under this folder (resumable across calls)")
    args = p.parse_args(argv)
    if args.section == "gauss2d" and not args.epochs:
        args.epochs = 20
    {"gauss2d": gauss2d, "bpd": bpd, "collapse": collapse, "mig": mig_section, "pictures": pictures,
     "ae": ae_section}[args.section](args)


# ============================================================================================ posterior collapse
COLLAPSE = [
    ("pixel_vae, no pixel context (factorised decoder)", {"num_layers": 0, "first_kernel_size": 1}),
    ("pixel_vae (PixelCNN decoder)", {}),
    ("pixel_vae + free_bits=0.25", {"free_bits": 0.25}),
    ("pixel_vae + free_bits=0.5", {"free_bits": 0.5}),
]


def collapse(args) -> None:
    """Posterior collapse with a strong autoregressive decoder, and free bits against it (defaults otherwise)."""
    import dulab

    torch.set_num_threads(1)
    data = args.data
    test = dulab.load_dataset(data, split="test")
    x = test.x[: args.num_test] if args.num_test else test.x
    rows = []
    chosen = [COLLAPSE[int(i)] for i in args.models.split(",")] if args.models else COLLAPSE
    for label, hp in chosen:
        if args.epochs:
            hp = {**hp, "epochs": args.epochs}
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            run = _train("pixel_vae", data, None, Path(tmp) / "run", seed=args.seed, **hp)
        train_s = time.time() - t0
        res = _iwae_eval(run.model.eval(), x, args.num_samples, args.seed, args.batch_size)
        res.update(label=label, hp=hp, train_s=train_s)
        rows.append(res)
        print(res, flush=True)
    print(f"\nmachine: {machine()}; data {data}, {len(x)} test images, K = {args.num_samples}\n")
    print("| model | test KL (nats) | active units | test -ELBO bpd | test IWAE bpd (K) | train s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['kl']:.2f} | {r['active_units']} / {r['num_latents']} | {r['elbo_bpd']:.4f} | "
              f"{r['iwae_bpd']:.4f} ({args.num_samples}) | {r['train_s']:.0f} |")
    _save(f"collapse_{data}" + (f"_{args.models.replace(',', '_')}" if args.models else ""), rows)


# ============================================================================================ beta-VAE, MIG
def mig_section(args) -> None:
    """beta-VAE on sprites (32x32): MIG of the posterior means against ds.factors, latent traversals."""
    import dulab
    from dulab.metrics.disentanglement import mig
    from dulab.viz import save_image_grid

    torch.set_num_threads(1)
    opts = {"size": 32, "num_samples": args.num_sprites}
    test = dulab.load_dataset("sprites", split="test", **opts)
    extra = parse_assignments(args.set, "--set")
    rows = []
    for beta in [float(b) for b in args.betas.split(",")]:
        t0 = time.time()
        if args.run_dir:  # a kept run directory: stop with SIGINT (e.g. timeout -s INT) and rerun to continue it
            rd = Path(args.run_dir) / f"beta{beta:g}"
            summary = json.loads((rd / "summary.json").read_text()) if (rd / "summary.json").exists() else {}
            if summary.get("status") == "completed":
                model = dulab.load(rd, which="last")
            elif (rd / "state.pt").exists():
                model = dulab.resume(rd, eval_data=test.subset(range(64)), sample_fn=None, verbose=False).model
            else:
                model = _train("vae", "sprites", test.subset(range(64)), rd, seed=args.seed, data_options=opts,
                               epochs=args.epochs or 20, beta=beta, latent_dim=10, **extra).model
            summary = json.loads((rd / "summary.json").read_text())
            if summary.get("status") != "completed":
                print(f"beta {beta:g}: stopped at step {summary.get('step')}; rerun to continue", flush=True)
                return
            train_s = summary["seconds"]
        else:
            with tempfile.TemporaryDirectory() as tmp:  # the engine's own evaluations on 64 test images (speed)
                model = _train("vae", "sprites", test.subset(range(64)), Path(tmp) / "run", seed=args.seed,
                               data_options=opts, epochs=args.epochs or 20, beta=beta, latent_dim=10, **extra).model
            train_s = time.time() - t0
        model = model.eval()
        with torch.inference_mode():
            codes = torch.cat([model.encode(c) for c in test.x.split(256)])
            diag = model.posterior_diagnostics(test.x)
            out = model.loss(test.x[:500])
        score, gaps = mig(codes, test.factors, per_factor=True)
        names = test.info["factor_names"]
        rows.append({"beta": beta, "mig": score, "per_factor": {names[k]: v for k, v in gaps.items()},
                     "kl": float(out["kl"]), "recon": float(out["recon"]), "active_units": diag["active_units"],
                     "train_s": train_s, "epochs": args.epochs or 20, "hp": extra})
        print(rows[-1], flush=True)
        # traversal: one test image, each latent (most informative first) from -2.5 to 2.5, others at the mean
        order = diag["kl_per_dim"].argsort(descending=True)
        with torch.inference_mode():
            z0 = model.encode(test.x[:1])[0]
            steps = torch.linspace(-2.5, 2.5, 9)
            z = z0.repeat(len(order), len(steps), 1)  # (Z, S, Z)
            for row, dim in enumerate(order):
                z[row, :, dim] = steps
            imgs = model.decode(z.reshape(-1, z.shape[-1]))
        img_dir = Path(args.img_dir) if args.img_dir else IMG
        save_image_grid(imgs, img_dir / f"beta_vae_sprites_traversal_beta{int(beta)}.png", num_levels=2,
                        nrow=len(steps))
    print(f"\nmachine: {machine()}; vae on sprites 32x32 ({args.num_sprites} images, test = last sixth), 10 latents, "
          f"{args.epochs or 20} epochs, MIG with 20 bins on the test posterior means\n")
    names = list(rows[0]["per_factor"])
    print(f"| beta | MIG | {' | '.join(names)} | test KL (nats) | test recon (nats) | active units | train s |")
    print("|---|---|" + "---|" * len(names) + "---|---|---|---|")
    for r in rows:
        per = " | ".join(f"{r['per_factor'][n]:.3f}" for n in names)
        print(f"| {r['beta']:g} | {r['mig']:.3f} | {per} | {r['kl']:.2f} | {r['recon']:.2f} | "
              f"{r['active_units']} / 10 | {r['train_s']:.0f} |")
    _save("mig_" + args.betas.replace(",", "_") + args.tag, rows)


# ============================================================================================ pictures
def save_pictures(name, model, test) -> None:
    """docs/img/{name}_{data}_{reconstructions,interpolations,samples}.png: 16 test images over their
    reconstructions; 8 interpolations between pairs of test images (10 steps); 32 samples with decoder noise
    over the same 32 latents decoded without it (the decoder's mode)."""
    from dulab.viz import save_image_grid

    L, data = test.spec.num_levels, test.name if hasattr(test, "name") else "data"
    with torch.inference_mode():
        x = test.x[:16]
        save_image_grid(torch.cat([x, model.reconstruct(x)]), IMG / f"{name}_{data}_reconstructions.png",
                        num_levels=L, nrow=16)
        path = model.interpolate(test.x[16:24], test.x[24:32], steps=10)  # (8, 10, *event)
        save_image_grid(path.reshape(-1, *test.spec.shape), IMG / f"{name}_{data}_interpolations.png",
                        num_levels=L, nrow=10)
        noisy = model.sample(32, generator=torch.Generator().manual_seed(1))
        clean = model.sample(32, generator=torch.Generator().manual_seed(1), use_decoder_noise=False)
        save_image_grid(torch.cat([noisy, clean]), IMG / f"{name}_{data}_samples.png", num_levels=L, nrow=16)


def pictures(args) -> None:
    """The 2-D code of an autoencoder on digits (the other pictures come with ``bpd --pictures``)."""
    import dulab

    torch.set_num_threads(1)
    test = dulab.load_dataset("digits", split="test")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dulab.viz.plots import _save as save_fig

    with tempfile.TemporaryDirectory() as tmp:
        run = _train("autoencoder", "digits", None, Path(tmp) / "ae", seed=args.seed, code_dim=2)
    model = run.model.eval()
    with torch.inference_mode():
        codes = model.encode(test.x).numpy()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    sc = ax.scatter(codes[:, 0], codes[:, 1], c=test.y.numpy(), cmap="tab10", s=8)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="digit")
    ax.set_title("autoencoder on digits: 2-D codes of the test split")
    save_fig(fig, IMG / "autoencoder_digits_latent2d.png")


# ============================================================================================ autoencoders
AE_VARIANTS = [
    ("plain (linear code)", {}),
    ("denoising, masking 0.25", {"noise": "masking", "noise_level": 0.25}),
    ("denoising, salt-and-pepper 0.25", {"noise": "salt_and_pepper", "noise_level": 0.25}),
    ("sparse, L1 weight 0.1 (linear code)", {"use_sparsity": True, "sparsity": "l1", "sparsity_weight": 0.1}),
    ("plain (sigmoid code)", {"code_activation": "sigmoid"}),
    ("sparse, KL rho 0.05 weight 0.1 (sigmoid code)", {"use_sparsity": True, "sparsity": "kl",
                                                        "sparsity_weight": 0.1, "sparsity_target": 0.05}),
]
AE_CORRUPTIONS = [("masking", 0.25), ("salt_and_pepper", 0.25)]


def ae_section(args) -> None:
    """Denoising and sparse autoencoders on digits (CLI defaults otherwise): test reconstruction error of the
    clean image from clean and from corrupted inputs (seeded corruption, the same for every model), mean code
    activation, and a logistic-regression probe of the codes."""
    import dulab
    from dulab.metrics.probe import probe_suite
    from dulab.models.latent.autoencoder import corrupt
    from dulab.models.latent.networks import input_features

    torch.set_num_threads(1)
    train = dulab.load_dataset(args.data, split="train")
    test = dulab.load_dataset(args.data, split="test")
    rows = []
    for label, hp in AE_VARIANTS:
        if args.epochs:
            hp = {**hp, "epochs": args.epochs}
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            run = _train("autoencoder", args.data, None, Path(tmp) / "run", seed=args.seed, **hp)
        train_s = time.time() - t0
        model = run.model.eval()
        res = {"label": label, "hp": hp, "train_s": train_s}
        with torch.inference_mode():
            feats = input_features(test.x, model.spec, torch.float32)
            res["recon_clean"] = float(model.reconstruction_error(test.x, model._code(feats)).mean())
            for kind, level in AE_CORRUPTIONS:
                errs = []
                for r in range(5):  # five seeded corruptions of the test split
                    noisy = corrupt(feats, kind, level, torch.Generator().manual_seed(100 + r))
                    errs.append(float(model.reconstruction_error(test.x, model._code(noisy)).mean()))
                res[f"recon_{kind}"] = sum(errs) / len(errs)
            code = model._code(feats)
            res["mean_abs_code"] = float(code.abs().mean())
            res["frac_small"] = float((code.abs() < 0.05).float().mean())
        # the probes of `dulab eval` (evaluation._probes): raw pixels and an untrained copy of the same model
        with torch.random.fork_rng():
            torch.manual_seed(args.seed)
            fresh = type(model)(model.spec, model.config).eval()
        probes = probe_suite(model.encode, train, test, baseline_encoders={"random_init": fresh.encode})
        res.update(probe_acc=probes["linear_probe"], knn_acc=probes["knn_accuracy"],
                   random_probe_acc=probes["random_init/linear_probe"],
                   random_knn_acc=probes["random_init/knn_accuracy"],
                   raw_probe_acc=probes["raw_pixels/linear_probe"], raw_knn_acc=probes["raw_pixels/knn_accuracy"])
        rows.append(res)
        print(res, flush=True)
    print(f"\nmachine: {machine()}; autoencoder on {args.data}, CLI defaults (32-d code, 30 epochs unless said), "
          f"test split; errors in nats per image (cross-entropy of the clean image)\n")
    print("| autoencoder | recon, clean input | recon, masked 25% | recon, salt-and-pepper 25% | mean abs code | "
          "codes < 0.05 | linear probe (random encoder) | k-NN (random encoder) | train s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['recon_clean']:.2f} | {r['recon_masking']:.2f} | "
              f"{r['recon_salt_and_pepper']:.2f} | {r['mean_abs_code']:.3f} | {r['frac_small']:.2f} | "
              f"{r['probe_acc']:.3f} ({r['random_probe_acc']:.3f}) | "
              f"{r['knn_acc']:.3f} ({r['random_knn_acc']:.3f}) | {r['train_s']:.0f} |")
    print(f"| raw pixels | - | - | - | - | - | {rows[0]['raw_probe_acc']:.3f} | {rows[0]['raw_knn_acc']:.3f} | - |")
    _save(f"ae_{args.data}", rows)


if __name__ == "__main__":
    main()
