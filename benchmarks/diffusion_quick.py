"""Quick diffusion / score / energy checks behind BENCHMARKS.md section 15 (the full grid is diffusion_toy.py).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusion_quick.py steps [key=value ...]   # ddpm on swiss_roll
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusion_quick.py toy MODEL DATA          # ncsn / ebm defaults

``steps``: ``dulab.train("ddpm", data="swiss_roll", **options)`` (``epochs=`` among them, default 10), then 2000
samples for N = 1, 10, 49, 512 steps, ancestral and DDIM (eta 0), each scored by the energy distance to 2000 test
points. ``toy``: the model with its CLI defaults on a 2-D toy, 2000 samples scored by ``sample_metrics`` (sample NLL
under the true density, energy distance, ...). Prints one line per result.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time

import torch

import dulab
from dulab.models.diffusion.sample_metrics import energy_distance, sample_metrics


def _parse(items):
    out = {}
    for item in items:
        k, v = item.split("=", 1)
        try:
            out[k] = float(v) if "." in v else int(v)
        except ValueError:
            out[k] = v
    return out


def steps(options):
    epochs = options.pop("epochs", 10)
    ref = dulab.load_dataset("swiss_roll", "test").x[:2000]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        run = dulab.train("ddpm", data="swiss_roll", out_dir=tmp + "/r", progress=False, sample_fn=None,
                          epochs=epochs, verbose=False, **options)
    model = run.model.eval()
    print(json.dumps({"options": options, "epochs": epochs, "train_s": round(time.time() - t0, 1),
                      "prediction": model.prediction}))
    for n in (1, 10, 49, 512):
        row = {"steps": n}
        for sampler in ("ddpm", "ddim"):
            s = model.sample(2000, generator=torch.Generator().manual_seed(0), num_steps=n, sampler=sampler, eta=0.0)
            row[sampler] = round(energy_distance(s, ref), 4)
        print(json.dumps(row))


def toy(name, data):
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        run = dulab.train(name, data=data, out_dir=tmp + "/r", progress=False, sample_fn=None, verbose=False)
    wall = time.time() - t0
    s = run.model.eval().sample(2000, generator=torch.Generator().manual_seed(0))
    r = sample_metrics(s, dulab.load_dataset(data, "test"))
    print(json.dumps({"model": name, "data": data, "train_s": round(wall, 1),
                      **{k: round(float(v), 4) for k, v in r.items()}}))


if __name__ == "__main__":
    torch.set_num_threads(1)
    if sys.argv[1] == "steps":
        steps(_parse(sys.argv[2:]))
    else:
        toy(sys.argv[2], sys.argv[3])
