"""Every GAN on one image dataset with the same number of training steps (capped by a wall-clock budget):
FID/KID/IS/precision/recall beside the real-data floor, with the training time, and one picture of samples from
every model.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/gan_zoo.py --data digits --steps 2000 --budget 180
    (also --data shapes; --data sprites --data-option size=32 --steps 1500 --budget 150)

Each model (``--models``, default the eight image GANs) gets ``--steps`` engine steps (one D step each; a G step
after every ``n_critic``-th), rounded down to whole epochs of the training split, unless its measured step time
(one batch, after a warm-up step, on a throwaway copy) says that would take longer than ``--budget`` seconds: then
it gets ``budget / step_time`` steps (whole epochs when that is at least one epoch, otherwise one epoch over the
first ``steps x batch`` training examples) and the row says ``"capped": true``. A fixed step count keeps the rows
reproducible; an earlier version gave every model ``budget / step_time`` steps, and on a heavily loaded machine
(0.77 s per DCGAN step on shapes instead of 0.02) that left the shapes models at 1-4 epochs, where G's near-zero
``tanh`` outputs round to salt noise (FID ~1500 with the shapes extractor, which scores uniform random bits at 1724
and an all-black image at 155). Everything else is the model's CLI defaults (``--set`` style overrides with
``--hparams key=value,...``, applied to every model that has the field; dataset options with ``--data-option
key=value``, repeatable, e.g. ``size=32`` for sprites; rows of the JSON from other options are dropped, and
``--tag`` names the outputs ``gan_zoo_<tag>.*`` instead of ``gan_zoo_<data>.*``). The numbers are the last evaluation of
``AdversarialTask.evaluate`` on the test split (min(N_test, 500) seeded samples against as many test examples, the
shipped extractor; class-conditional ``biggan`` samples for those examples' labels) and the floor is the same
protocol with random training examples in place of samples (``gan_sample_quality.floor``). Writes
``benchmarks/results/gan_zoo_<data>.json`` and ``docs/img/gan_zoo_<data>.png`` (64 samples per model, from the
weights of the row's last evaluation: the raw ones, or the EMA when the model trains with one and it scored better).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch
from gan_sample_quality import floor

import dulab
from dulab.config import TrainConfig, config_fields
from dulab.registry import get_model_class
from dulab.training.batch import Batch
from dulab.training.tasks import AdversarialTask

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("fid", "kid", "inception_score", "precision", "recall")
MODELS = "dcgan,wgan,wgan_gp,sngan,sagan,biggan,stylegan,gan"


def _parse_hparams(text: str) -> dict:
    out = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        out[key] = int(value) if value.isdigit() else value
    return out


def step_seconds(model, train, batch_size: int) -> float:
    """Seconds of one training step (D step + G step) on one batch, after a warm-up step, on a copy."""
    from lightning_fabric import Fabric

    model = copy.deepcopy(model)
    defaults = {k: v for k, v in model.train_defaults.items() if k in ("lr", "betas")}
    task = AdversarialTask(model, TrainConfig(**defaults), seed=0)
    fabric = Fabric(accelerator="cpu", devices=1)
    opts, scheds = task.configure_optimizers(lambda s: 1.0)
    module, *opts = fabric.setup(model, *opts)
    task.setup(fabric, module, opts, scheds)
    n = model.config.n_critic
    x, y = train.x[:batch_size], train.labels_or_default()[:batch_size]
    task.training_step(Batch(x, y), n - 1)  # warm-up (with a G step)
    t0 = time.perf_counter()
    for s in range(n):
        task.training_step(Batch(x, y), s)
    return (time.perf_counter() - t0) / n  # per engine step (n_critic D steps share one G step)


def montage(images: list, labels: list[str], path: Path, scale: int) -> None:
    from PIL import Image, ImageDraw

    images = [im.convert("RGB").resize((im.width * scale, im.height * scale), Image.NEAREST) for im in images]
    w, h = max(im.width for im in images), max(im.height for im in images)
    cols = min(4, len(images))
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (w + 8), rows * (h + 22)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (im, label) in enumerate(zip(images, labels)):
        x0, y0 = (i % cols) * (w + 8), (i // cols) * (h + 22)
        sheet.paste(im, (x0 + 4, y0 + 18))
        draw.text((x0 + 4, y0 + 3), label, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default="digits")
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--steps", type=int, default=2000, help="training steps per model (whole epochs)")
    parser.add_argument("--budget", type=float, default=180.0, help="cap on training seconds per model (approximate)")
    parser.add_argument("--hparams", default="", help="key=value,... for every model with that field")
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                        help="dataset option (repeatable), e.g. size=32 for sprites")
    parser.add_argument("--tag", default=None,
                        help="name of the outputs gan_zoo_<tag>.json/.png (default: the data name)")
    parser.add_argument("--scale", type=int, default=0, help="picture upscaling (0: from the image size)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_gan_zoo"))
    parser.add_argument("--picture-only", action="store_true",
                        help="no training: redraw the picture from the runs under --out and the JSON rows "
                             "(to merge model subsets trained by separate calls)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dulab.viz import draw_samples, image_grid

    options = dict(item.split("=", 1) for item in args.data_option)
    train = dulab.load_dataset(args.data, "train", **options)
    test = dulab.load_dataset(args.data, "test", **options)
    tag = args.tag or args.data
    extra = _parse_hparams(args.hparams)
    fl = floor(args.data, options=options)
    print(json.dumps({"data": args.data, "data_options": options, "floor": fl}), flush=True)
    out_json = ROOT / "benchmarks" / "results" / f"gan_zoo_{tag}.json"
    results = json.loads(out_json.read_text()) if out_json.exists() else {}
    # rows measured with other dataset options (e.g. sprites at 64x64) do not belong beside these
    results = {k: r for k, r in results.items() if r.get("data_options", {}) == options}
    grids, names = [], []
    if args.picture_only:
        for name in args.models.split(","):
            model = dulab.load(Path(args.out) / f"{name}-{tag}", which=results[name].get("weights", "last"))
            with torch.inference_mode():
                x = draw_samples(model, 64, torch.Generator().manual_seed(0)).cpu()
            grids.append(image_grid(x, train.spec.num_levels if train.spec.is_discrete else None, nrow=8))
            row = results[name]
            names.append(f"{name}: FID {row['fid']:.1f}, {row['seconds']:.0f} s")
        scale = args.scale or max(1, 160 // (8 * train.spec.shape[-1]))
        montage(grids, names, ROOT / "docs" / "img" / f"gan_zoo_{tag}.png", scale)
        return
    for name in args.models.split(","):
        cls = get_model_class(name)
        hp = {k: v for k, v in extra.items() if k in config_fields(cls.Config)}
        batch_size = cls.train_defaults.get("batch_size", 64)
        torch.manual_seed(0)
        t = step_seconds(dulab.build_model(name, train.spec, **hp), train, batch_size)
        per_epoch = len(train) // batch_size
        capped = args.steps * t > args.budget
        steps = max(1, int(args.budget / t)) if capped else max(per_epoch, args.steps)
        if steps >= per_epoch:
            data, epochs = train, steps // per_epoch
        else:
            data, epochs = train.subset(range(min(len(train), steps * batch_size))), 1
        t0 = time.perf_counter()
        run = dulab.train(name, data=data, eval_data=test, epochs=epochs, batch_size=batch_size, seed=0,
                          eval_every=max(1, epochs // 4), out_dir=Path(args.out) / f"{name}-{tag}",
                          overwrite=True, progress=False, verbose=False, sample_fn=None, **hp)
        seconds = time.perf_counter() - t0
        last = run.metrics[-1]
        weights = last.get("weights", "last")  # with EMA on: the weights (raw or averaged) that the row scores
        row = {"model": name, "data": args.data, "data_options": options, "hparams": hp, "step_s": round(t, 4),
               "capped": capped, "train_examples": len(data), "weights": weights,
               "epochs": epochs, "steps": run.summary["step"], "seconds": round(seconds, 1),
               **{k: last.get(f"test_{k}") for k in KEYS}, "best_fid": run.summary["best"], "floor": fl}
        results[name] = row
        print(json.dumps(row), flush=True)
        out_json.write_text(json.dumps(results, indent=2) + "\n")
        model = dulab.load(run.dir, which=weights)
        with torch.inference_mode():
            x = draw_samples(model, 64, torch.Generator().manual_seed(0)).cpu()
        grids.append(image_grid(x, train.spec.num_levels if train.spec.is_discrete else None, nrow=8))
        names.append(f"{name}: FID {last.get('test_fid', float('nan')):.1f}, {seconds:.0f} s")
    scale = args.scale or max(1, 160 // (8 * train.spec.shape[-1]))
    montage(grids, names, ROOT / "docs" / "img" / f"gan_zoo_{tag}.png", scale)


if __name__ == "__main__":
    main()
