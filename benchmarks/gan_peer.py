"""Training step time of dulab's DCGAN against a peer implementation: Lightning Bolts' ``DCGAN``, in one run.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/python benchmarks/gan_peer.py --peer-python /tmp/peervenv/bin/python

The peer is ``pl_bolts.models.gans.DCGAN`` of ``lightning-bolts`` 0.7.0 (the PyTorch-examples DCGAN as a
``LightningModule``: two Adam optimisers, BCE on sigmoid outputs, one D step then one G step per batch) trained by
its own loop, ``pytorch_lightning`` 1.9.5 ``Trainer.fit`` (bolts 0.7.0 needs Lightning < 2: its ``training_step``
takes ``optimizer_idx``). It lives in a throwaway virtual environment that reuses the project's torch (the same
CPU wheel) and never installs torchvision:

    python3.11 -m venv /tmp/peervenv
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \\
        > /tmp/peervenv/lib/python3.11/site-packages/zz_project.pth
    /tmp/peervenv/bin/pip install --no-deps lightning-bolts==0.7.0 pytorch-lightning==1.9.5 pyyaml tqdm

``pl_bolts`` imports torchvision unconditionally when the package loads (``pl_bolts/transforms/self_supervised/
amdim_transforms.py``: ``from torchvision.transforms import InterpolationMode`` -> ``ModuleNotFoundError: No module
named 'torchvision'``), although its DCGAN's networks and training step use none of it. The peer worker therefore
puts an import stub in front of a missing torchvision (``_stub_torchvision``: empty modules whose attributes are
placeholder classes that raise when called); with a real torchvision installed the stub is not used.

Same architecture and batch on both sides: 64 x 64 x 3 images (bolts' DCGAN is built for 64 x 64), latent 100,
``feature_maps`` = dulab ``base_channels`` = ``--width`` (16 by default, a quarter of DCGAN's 64, so that one step
takes well under a second on one CPU thread), G: z -> 8w x 4 x 4 -> 4w -> 2w -> w -> 3 with batch norm and ReLU,
``tanh`` output; D: 3 -> w -> 2w -> 4w -> 8w (batch norm after the first) with LeakyReLU(0.2) -> one logit; Adam
lr 2e-4, betas (0.5, 0.999); batch 64 of the same random images. (dulab's G starts with a linear layer to the
4 x 4 map where bolts has a 4 x 4 transposed convolution of the 1 x 1 latent: the same map; dulab's layers carry
biases, bolts' do not.) dulab runs ``dulab.train("dcgan", ...)`` (the engine: Fabric, ``AdversarialTask``, step
logging) with evaluation off and, as bolts, without the R1 penalty and the weight EMA of dcgan's defaults.

Each side's *step time* is measured inside its own full training loop: the worker records the clock at the
start of every training step (dulab: entry of ``AdversarialTask.training_step``, wrapped; Lightning: a
``Callback.on_train_batch_start``), so an interval between two starts is one whole iteration of that library's
loop (batch fetch, D step, G step, logging, bookkeeping). The first ``--warmup`` intervals are dropped and the
median of the rest is the run's step time; start-up (imports, building, the run folder) is outside it. The two
sides run in alternating ``A B B A`` blocks (A = dulab, B = peer; each letter one fresh process), which cancels a
linear drift of the machine's speed within a block; the *paired ratio* of a block is (A1 + A2) / (B1 + B2), and the
result is the median of the block ratios with their min and max (below 1: dulab faster). ``--append`` adds the
blocks to those already in the JSON for the same settings (so a long measurement can be split over commands).
Writes ``benchmarks/results/gan_peer.json`` (width 16) or ``gan_peer_w{width}.json`` (``--tag T``: ``...T.json``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LATENT, IMAGE, CHANNELS = 100, 64, 3


def _images(n: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, CHANNELS, IMAGE, IMAGE), generator=g)  # uint8-like levels


def time_dulab(steps: int, batch: int, width: int) -> list[float]:
    """Clock at the start of each of ``steps`` training steps of ``dulab.train("dcgan")`` (one epoch, no eval)."""
    import torch

    import dulab
    from dulab.data.base import from_array
    from dulab.training.tasks import AdversarialTask

    torch.set_num_threads(1)
    data = from_array(_images(steps * batch), num_levels=256)
    starts: list[float] = []
    step_fn = AdversarialTask.training_step

    def timed_step(self, *args, **kwargs):
        starts.append(time.perf_counter())
        return step_fn(self, *args, **kwargs)

    AdversarialTask.training_step = timed_step
    with tempfile.TemporaryDirectory() as out:
        dulab.train("dcgan", data=data, epochs=1, batch_size=batch, seed=0, out_dir=Path(out) / "run",
                    overwrite=True, progress=False, verbose=False, sample_fn=None, latent_dim=LATENT,
                    base_channels=width, lr=2e-4, betas=(0.5, 0.999), r1_gamma=0.0, ema_decay=0.0)
    return starts


def _stub_torchvision() -> None:
    """Make ``import torchvision[.x]`` give empty placeholder modules when torchvision is not installed."""
    import importlib.abc
    import importlib.machinery
    import importlib.util
    import types

    if importlib.util.find_spec("torchvision") is not None:
        return

    class Placeholder:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision is a stub here")

    class Stub(types.ModuleType):
        __path__: list = []

        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return type(name, (Placeholder,), {})

    class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        def find_spec(self, name, path=None, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            module = Stub(spec.name)
            module.__version__ = "0.0.0+stub"
            return module

        def exec_module(self, module):
            pass

    sys.meta_path.insert(0, Finder())


def time_peer(steps: int, batch: int, width: int) -> list[float]:
    """Clock at the start of each of ``steps`` batches of ``Trainer.fit`` of bolts' ``DCGAN``; runs in the peer venv."""
    import warnings

    warnings.filterwarnings("ignore")
    _stub_torchvision()
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    torch.set_num_threads(1)
    import pytorch_lightning as pl
    from pl_bolts.models.gans import DCGAN

    starts: list[float] = []

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            starts.append(time.perf_counter())

    pl.seed_everything(0, workers=False)
    x = _images(steps * batch).float() / 127.5 - 1.0  # the same levels mapped to [-1, 1], as dulab does
    loader = DataLoader(TensorDataset(x, torch.zeros(len(x))), batch_size=batch, shuffle=True)
    with tempfile.TemporaryDirectory() as out:
        model = DCGAN(feature_maps_gen=width, feature_maps_disc=width, image_channels=CHANNELS, latent_dim=LATENT)
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=out,
                             callbacks=[Clock()])
        trainer.fit(model, loader)
    return starts


def _versions(python: str) -> dict:
    code = ("import torch, pytorch_lightning as pl, importlib.metadata as m; "
            "print(torch.__version__, pl.__version__, m.version('lightning-bolts'))")
    torch_v, pl_v, bolts_v = subprocess.run([python, "-c", code], capture_output=True, text=True,
                                            check=True).stdout.split()
    return {"torch": torch_v, "pytorch_lightning": pl_v, "lightning_bolts": bolts_v}


def _run(python: str, side: str, args) -> float:
    """One fresh worker process: the median step interval after the warm-up."""
    cmd = [python, __file__, "--worker", side, "--n", str(args.steps), "--batch-size", str(args.batch_size),
           "--width", str(args.width)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{res.stderr[-3000:]}")
    starts = json.loads(res.stdout.strip().splitlines()[-1])["starts"]
    if len(starts) != args.steps:
        raise SystemExit(f"{side}: {len(starts)} step starts recorded, expected {args.steps}")
    intervals = [b - a for a, b in zip(starts, starts[1:])][args.warmup:]
    return statistics.median(intervals)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer-python", default="/tmp/peervenv/bin/python")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="feature maps (DCGAN: 64)")
    parser.add_argument("--steps", type=int, default=12, help="training steps of each timed run")
    parser.add_argument("--warmup", type=int, default=2, help="first step intervals of a run left out")
    parser.add_argument("--blocks", type=int, default=3, help="ABBA blocks (4 runs each)")
    parser.add_argument("--append", action="store_true", help="add to the blocks already in the JSON")
    parser.add_argument("--tag", default="", help="suffix of the JSON's name (keeps earlier measurements)")
    parser.add_argument("--worker", choices=["dulab", "peer"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # one timed training run in a fresh process
        fn = time_dulab if args.worker == "dulab" else time_peer
        print(json.dumps({"starts": fn(args.n, args.batch_size, args.width)}))
        return
    if args.steps < args.warmup + 3:
        parser.error("--steps must leave at least 2 intervals after --warmup")
    name = ("gan_peer" if args.width == 16 else f"gan_peer_w{args.width}") + args.tag + ".json"
    out = ROOT / "benchmarks" / "results" / name
    settings = {"image": [CHANNELS, IMAGE, IMAGE], "batch_size": args.batch_size, "width": args.width,
                "latent_dim": LATENT, "steps_per_run": args.steps, "warmup": args.warmup, "threads": 1}
    blocks: list[dict] = []
    if args.append and out.exists():
        old = json.loads(out.read_text())
        if all(old.get(k) == v for k, v in settings.items()):
            blocks = old.get("blocks", [])
        else:
            print("settings differ from the saved JSON: starting afresh", flush=True)
    pythons = {"dulab": sys.executable, "peer": args.peer_python}
    for _ in range(args.blocks):
        k = len(blocks)
        times = {"dulab": [], "peer": []}
        for side in ("dulab", "peer", "peer", "dulab"):  # A B B A
            times[side].append(_run(pythons[side], side, args))
        ratio = sum(times["dulab"]) / sum(times["peer"])
        blocks.append({"dulab_s": times["dulab"], "peer_s": times["peer"], "ratio": ratio})
        print(f"block {k}: dulab {times['dulab'][0]:.4f} {times['dulab'][1]:.4f}  peer {times['peer'][0]:.4f}"
              f" {times['peer'][1]:.4f} s/step  ratio {ratio:.3f}", flush=True)
    ratios = [b["ratio"] for b in blocks]
    dulab_all = [t for b in blocks for t in b["dulab_s"]]
    peer_all = [t for b in blocks for t in b["peer_s"]]
    result = {**settings, "blocks": blocks,
              "median_step_s": {"dulab": statistics.median(dulab_all), "peer": statistics.median(peer_all)},
              "ratio_dulab_over_peer": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                                        "blocks": len(ratios)},
              "peer": _versions(args.peer_python)}
    print(json.dumps({k: v for k, v in result.items() if k != "blocks"}, indent=1))
    out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
