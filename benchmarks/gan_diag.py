"""One short GAN run for diagnosis: the evaluations (FID, precision, recall, D's loss), D's training loss along
the way, G's raw output range and a picture of 64 samples.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/gan_diag.py sngan --data sprites --data-option size=32 \\
        --epochs 4 --set minibatch_kernels=16

``dulab.train(MODEL, data=DATA, epochs=EPOCHS, seed=SEED, eval_every=max(1, EPOCHS // 4))`` (``--seed``, default 0)
with the model's CLI defaults and the ``--set`` overrides (model or training fields, e.g. ``lr=2e-4``); writes the
run to ``--out`` (default ``/tmp/gan_diag/<model>``) and the samples to ``<out>/samples.png``. Used for BENCHMARKS
sections 21 and 24 (why dcgan/wgan/sngan/sagan did or did not train on sprites and shapes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import dulab
from dulab.config import parse_assignments


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--data", default="sprites")
    parser.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    from dulab.viz import draw_samples, image_grid

    # strings, typed by dulab.train as on the command line
    options = parse_assignments(args.data_option, "--data-option")
    hp = parse_assignments(args.overrides, "--set")
    out = Path(args.out or f"/tmp/gan_diag/{args.model}")
    t0 = time.perf_counter()
    run = dulab.train(args.model, data=args.data, data_options=options, epochs=args.epochs, seed=args.seed,
                      eval_every=max(1, args.epochs // 4), out_dir=out, overwrite=True, progress=False,
                      verbose=False, sample_fn=None, **hp)
    print(json.dumps({"model": args.model, "data": args.data, "options": options, "set": hp, "seed": args.seed,
                      "seconds": round(time.perf_counter() - t0, 1)}))
    for r in run.metrics:
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()
                          if k in ("epoch", "step", "train_loss", "test_loss", "test_fid", "test_precision",
                                   "test_recall", "test_fid_last", "test_fid_ema", "weights")}))
    steps = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    print("D loss every ~1/12 of the run:", [round(s["loss"], 3) for s in steps[::max(1, len(steps) // 12)]])
    model = run.model.eval()
    with torch.inference_mode():
        raw = model.generate(model.sample_latent(64, generator=torch.Generator().manual_seed(0)))
        x = draw_samples(model, 64, torch.Generator().manual_seed(0)).cpu()
    print(f"G output range [{raw.min():.3f}, {raw.max():.3f}], mean {raw.mean():.3f}")
    spec = run.model.spec
    grid = image_grid(x, spec.num_levels if spec.is_discrete else None, nrow=8)
    grid.convert("RGB").resize((grid.width * 3, grid.height * 3)).save(out / "samples.png")


if __name__ == "__main__":
    main()
