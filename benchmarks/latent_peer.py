"""Training-step time of dulab's `vae` against pythae's `VAE` with the same networks and batch (issue 7).

pythae (Chadebec et al. 2022) is installed in a throwaway virtualenv, never in the project's .venv; it imports
without torchvision. One way to set it up (no CUDA or torchvision wheels; torch and the scientific stack come from
the project's .venv through a .pth file, so both libraries run on the very same torch build):

    python -m venv /tmp/pythae_venv
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \
        > /tmp/pythae_venv/lib/python3.11/site-packages/dulab_venv_base.pth
    /tmp/pythae_venv/bin/pip install --no-deps pythae==0.1.2 && /tmp/pythae_venv/bin/pip install "pydantic>=2"
    OMP_NUM_THREADS=1 /tmp/pythae_venv/bin/python benchmarks/latent_peer.py

Both models get the *same* encoder and decoder modules (deep copies of the dulab `vae`'s networks, so the same
layers and the same initial weights): pythae's wrappers only map {0, 1} pixels to [-1, 1] on the way in (as dulab
does) and apply a sigmoid on the way out (pythae's "bce" loss takes probabilities, dulab's Bernoulli takes logits).
One step = forward (one reparameterised sample, analytic KL), backward, Adam step, on one fixed batch. The two
models alternate in blocks (ABBA...) so drifts of the shared machine hit both; the table gives the median block
of each and the median over blocks of the ratio of adjacent dulab / pythae blocks.
Before timing, the two negative ELBOs are computed on one batch with the same noise: they must agree.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine  # noqa: E402


def _pythae_vae(dulab_model, spec):
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    Z = dulab_model.config.latent_dim

    class Enc(BaseEncoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            h = self.net(2.0 * x - 1.0)
            return ModelOutput(embedding=h[:, :Z], log_covariance=h[:, Z:])

    class Dec(BaseDecoder):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)[:, 0]))  # (N, 1, *event) -> (N, *event)

    config = VAEConfig(input_dim=tuple(spec.shape), latent_dim=Z, reconstruction_loss="bce")
    return VAE(config, encoder=Enc(copy.deepcopy(dulab_model.encoder)), decoder=Dec(copy.deepcopy(dulab_model.decoder)))


def main(argv=None) -> None:
    import dulab

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits_binary")
    p.add_argument("--architectures", default="mlp,conv")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="steps per timed block")
    p.add_argument("--blocks", type=int, default=5, help="timed blocks per library (alternating)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    import pythae

    ds = dulab.load_dataset(args.data, split="train")
    xb = ds.x[: args.batch_size]  # int64 levels {0, 1}
    xf = xb.float()
    rows = []
    for arch in args.architectures.split(","):
        torch.manual_seed(0)
        ours = dulab.build_model("vae", ds.spec, architecture=arch)  # defaults: 16 latents, (256, 256), 32 ch
        assert ours.observation.kind == "bernoulli"
        theirs = _pythae_vae(ours, ds.spec)
        # the same noise, the same weights: the same negative ELBO (dulab's "nll" is per example, batch mean)
        torch.manual_seed(1)
        a = float(ours.loss(xb)["nll"].detach())
        torch.manual_seed(1)
        b = float(theirs({"data": xf}).loss)
        assert abs(a - b) < 1e-3 * abs(a), (a, b)

        def step_ours(opt, ours=ours, xb=xb):
            opt.zero_grad(set_to_none=True)
            ours.loss(xb)["loss"].backward()
            opt.step()

        def step_theirs(opt, theirs=theirs, xf=xf):
            opt.zero_grad(set_to_none=True)
            theirs({"data": xf}).loss.backward()
            opt.step()

        opts = {"dulab": torch.optim.Adam(ours.parameters(), 2e-3),
                "pythae": torch.optim.Adam(theirs.parameters(), 2e-3)}
        fns = {"dulab": step_ours, "pythae": step_theirs}
        ours.train(), theirs.train()
        for lib in fns:  # warm-up
            for _ in range(20):
                fns[lib](opts[lib])
        times = {lib: [] for lib in fns}
        for block in range(args.blocks):
            for lib in (list(fns) if block % 2 == 0 else list(fns)[::-1]):  # ABBA: neither library always first
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    fns[lib](opts[lib])
                times[lib].append((time.perf_counter() - t0) / args.steps * 1e3)
        med = {lib: statistics.median(v) for lib, v in times.items()}
        paired = statistics.median(a / b for a, b in zip(times["dulab"], times["pythae"]))
        rows.append({"architecture": arch, "data": args.data, "batch_size": args.batch_size,
                     "params": sum(q.numel() for q in ours.parameters()), "neg_elbo_check": [a, b],
                     "ms_per_step": med, "blocks_ms": times, "ratio": med["dulab"] / med["pythae"],
                     "paired_ratio": paired})
        print(rows[-1], flush=True)
    version = getattr(pythae, "__version__", "0.1.2")
    print(f"\nmachine: {machine()}, {args.threads} thread(s); pythae {version}; "
          f"{args.blocks} alternating blocks of {args.steps} steps, median block\n")
    print("| architecture | params | batch | dulab ms/step | pythae ms/step | ratio dulab/pythae | "
          "median paired ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['architecture']} | {r['params']:,} | {r['batch_size']} | {r['ms_per_step']['dulab']:.2f} | "
              f"{r['ms_per_step']['pythae']:.2f} | {r['ratio']:.3f} | {r['paired_ratio']:.3f} |")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latent_peer.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
