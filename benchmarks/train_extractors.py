"""Train the shipped feature extractors (small classifiers) for the sample-quality metrics.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_extractors.py [--datasets digits,shapes] [--epochs N]

Deterministic: fixed seeds, one thread, ``torch.use_deterministic_algorithms(True)``. Trains on the train split
only, with random shifts of up to ``max_shift`` pixels (edge-replicated padding) as augmentation, and writes
``src/dulab/metrics/extractors/weights/<name>.safetensors`` (``sprites_32``: sprites at ``size=32``) with the
architecture and the train/test accuracy in the file's metadata, and ``benchmarks/results/extractors.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import dulab
from dulab.metrics.extractors import WEIGHTS_DIR, SmallClassifier, save_classifier

ROOT = Path(__file__).resolve().parents[1]
# width, feature_dim: architecture; max_shift: pixels of random shift; recolour: random channel permutations and
# per-channel level flips v -> L - 1 - v, symmetries of digits_color's colour draw (foreground and background
# colours are uniform over {0..3}^3, so permuting or flipping channels gives another equally likely colouring).
RECIPES = {
    "digits": dict(width=32, feature_dim=128, epochs=40, max_shift=1, batch_size=64),
    "digits_color": dict(width=32, feature_dim=128, epochs=60, max_shift=1, batch_size=64, recolour=True),
    "shapes": dict(width=24, feature_dim=128, epochs=12, max_shift=2, batch_size=64),
    "sprites": dict(width=12, feature_dim=64, epochs=8, max_shift=2, batch_size=64),
    # the variant for sprites rendered at 32x32 (`--data-option size=32`): the 64x64 one scores them only enlarged
    # 2x, where it classifies 65% of the test split right
    "sprites_32": dict(dataset="sprites", options={"size": 32}, width=12, feature_dim=64, epochs=12, max_shift=1,
                       batch_size=64),
}
SEED = 0


def shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by a random (dy, dx) in ``[-max_shift, max_shift]``, borders repeated (B, C, H, W)."""
    if max_shift == 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x.float(), (max_shift,) * 4, mode="replicate")  # (B, C, H + 2s, W + 2s)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator)
    rows = offsets[:, 0, None] + torch.arange(h)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(w)  # (B, W)
    out = padded[torch.arange(b)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    return out.to(x.dtype)


def recolour(x: torch.Tensor, num_levels: int, generator: torch.Generator) -> torch.Tensor:
    """Per image: a random permutation of the channels and a random flip ``v -> L - 1 - v`` of each (B, C, H, W)."""
    b, c = x.shape[:2]
    perm = torch.argsort(torch.rand(b, c, generator=generator), dim=1)  # (B, C): a random permutation per image
    x = x[torch.arange(b)[:, None], perm]
    flip = torch.rand(b, c, 1, 1, generator=generator) < 0.5
    return torch.where(flip, num_levels - 1 - x, x)


@torch.no_grad()
def accuracy(model: SmallClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def train_one(name: str, epochs: int | None = None) -> dict:
    recipe = dict(RECIPES[name])
    if epochs is not None:
        recipe["epochs"] = epochs
    dataset, options = recipe.pop("dataset", name), recipe.pop("options", {})
    train, test = dulab.load_dataset(dataset, "train", **options), dulab.load_dataset(dataset, "test", **options)
    spec = train.spec
    torch.manual_seed(SEED)
    model = SmallClassifier(in_channels=spec.shape[0], size=spec.shape[1], num_levels=spec.num_levels,
                            num_classes=spec.num_classes, width=recipe["width"], feature_dim=recipe["feature_dim"])
    g = torch.Generator().manual_seed(SEED)
    n, bs = len(train), recipe["batch_size"]
    steps = recipe["epochs"] * math.ceil(n / bs)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    t0 = time.perf_counter()
    for epoch in range(recipe["epochs"]):
        model.train()
        order = torch.randperm(n, generator=g)
        total = 0.0
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            xb = shift(train.x[idx], recipe["max_shift"], g)
            if recipe.get("recolour"):
                xb = recolour(xb, spec.num_levels, g)
            loss = F.cross_entropy(model(xb), train.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        print(f"{name} epoch {epoch + 1}/{recipe['epochs']} loss {total / n:.4f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    seconds = time.perf_counter() - t0
    train_acc, test_acc = accuracy(model, train.x, train.y), accuracy(model, test.x, test.y)
    model.eval()
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    path = WEIGHTS_DIR / f"{name}.safetensors"
    info = {"dataset": dataset, "options": options, "train_accuracy": train_acc, "test_accuracy": test_acc,
            "num_train": n,
            "num_test": len(test), "seed": SEED, "recipe": recipe, "train_seconds": seconds,
            "num_parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__}
    # The wall time stays out of the file (the JSON keeps it): a rerun writes the same tensors and metadata values
    # (safetensors may order the metadata keys differently in the header).
    save_classifier(model, path, **{k: v for k, v in info.items() if k != "train_seconds"})
    path.chmod(0o644)  # safetensors writes 0600; an installed package must be readable by every user
    info["file_bytes"] = path.stat().st_size
    print(f"{name}: train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f}, {info['num_parameters']} "
          f"parameters, {info['file_bytes'] / 1024:.0f} KiB, {seconds:.0f} s", flush=True)
    return info


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(RECIPES))
    p.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (for a quick check)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = ROOT / "benchmarks/results/extractors.json"
    results = json.loads(out.read_text()).get("extractors", {}) if out.exists() else {}
    for name in args.datasets.split(","):
        results[name] = train_one(name, args.epochs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_extractors.py",
                               "extractors": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
