"""Training-step time of dulab's MAF and Real NVP against zuko and normflows, same architecture and batch.

The peers are never dulab dependencies: run this script with the Python of a throwaway virtualenv that has them,
e.g. ``python3 -m venv /tmp/peers && /tmp/peers/bin/pip install <the CPU torch wheel> && /tmp/peers/bin/pip
install zuko normflows safetensors``, then ``/tmp/peers/bin/python benchmarks/flows_peers.py [--quick]`` (dulab is
imported from ``src/``). One process, one thread, the frameworks interleaved round by round so that load from other
jobs affects them alike; the median step time over all rounds is reported.

Architectures (vectors of D = 64 dims, batch 256, Adam lr 1e-3):
* MAF: 5 affine MADE layers with hidden widths (128, 128), order reversed between layers (normflows: its
  ``MaskedAffineAutoregressive`` with one residual block of width 128, the closest it offers, used in the density
  direction — as shipped, normflows runs the sequential D-pass direction for ``forward_kld``).
* Real NVP: 8 affine couplings with alternating masks, MLP conditioners (128, 128), no normalization (normflows:
  ``MaskedAffineFlow`` with separate scale and shift MLPs, as in its examples).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
try:
    import dulab
except ImportError:  # running under the peers' virtualenv
    sys.path.insert(0, str(ROOT / "src"))
    import dulab
from dulab.data.base import DataSpec  # noqa: E402

D, BATCH, HIDDEN = 64, 256, 128


def dulab_maf():
    m = dulab.build_model("maf", DataSpec((D,), "continuous"), num_layers=5, hidden_sizes=(HIDDEN, HIDDEN),
                          transformer="affine")
    return m, lambda x: m.loss(x)["nll"]


def dulab_real_nvp():
    m = dulab.build_model("real_nvp", DataSpec((D,), "continuous"), num_layers=8, hidden_sizes=(HIDDEN, HIDDEN),
                          norm="none")
    return m, lambda x: m.loss(x)["nll"]


def zuko_maf():
    import zuko

    f = zuko.flows.MAF(D, transforms=5, hidden_features=(HIDDEN, HIDDEN))
    return f, lambda x: -f().log_prob(x).mean()


def zuko_real_nvp():
    import zuko

    f = zuko.flows.RealNVP(D, transforms=8, hidden_features=(HIDDEN, HIDDEN))
    return f, lambda x: -f().log_prob(x).mean()


def normflows_maf():
    import normflows as nf

    class DensityDirection(nf.flows.Flow):
        """normflows' autoregressive layers are sampling-direction (IAF-like: their density pass is sequential);
        swap the directions so the density is one pass, as in MAF."""

        def __init__(self, layer):
            super().__init__()
            self.layer = layer

        def forward(self, z):
            return self.layer.inverse(z)

        def inverse(self, x):
            return self.layer(x)

    flows = []
    for i in range(5):
        if i:
            flows.append(nf.flows.Permute(D, mode="swap"))
        flows.append(DensityDirection(nf.flows.MaskedAffineAutoregressive(D, HIDDEN, num_blocks=1)))
    m = nf.NormalizingFlow(nf.distributions.DiagGaussian(D, trainable=False), flows)
    return m, lambda x: m.forward_kld(x)


def normflows_real_nvp():
    import normflows as nf

    flows = []
    for i in range(8):
        b = torch.tensor([(j + i) % 2 for j in range(D)], dtype=torch.float32)
        s = nf.nets.MLP([D, HIDDEN, HIDDEN, D], init_zeros=True)
        t = nf.nets.MLP([D, HIDDEN, HIDDEN, D], init_zeros=True)
        flows.append(nf.flows.MaskedAffineFlow(b, t, s))
    m = nf.NormalizingFlow(nf.distributions.DiagGaussian(D, trainable=False), flows)
    return m, lambda x: m.forward_kld(x)


CASES = {
    "MAF": {"dulab": dulab_maf, "zuko": zuko_maf, "normflows": normflows_maf},
    "RealNVP": {"dulab": dulab_real_nvp, "zuko": zuko_real_nvp, "normflows": normflows_real_nvp},
}


def time_steps(setup, x, steps: int) -> list[float]:
    module, loss_fn = setup
    opt = torch.optim.Adam(module.parameters(), lr=1e-3)
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        loss = loss_fn(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/flows_peers.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rounds, steps = (3, 10) if args.quick else (8, 20)
    x = torch.randn(BATCH, D, generator=torch.Generator().manual_seed(0))
    results = {}
    for arch, impls in CASES.items():
        setups = {}
        for name, make in impls.items():
            torch.manual_seed(0)
            try:
                setups[name] = make()
            except ImportError:
                continue
        times = {name: [] for name in setups}
        for s in setups.values():
            time_steps(s, x, 3)  # warm-up (allocator, actnorm-style lazy init)
        for _ in range(rounds):
            for name, s in setups.items():
                times[name] += time_steps(s, x, steps)
        med = {name: statistics.median(t) * 1e3 for name, t in times.items()}
        params = {name: sum(q.numel() for q in s[0].parameters()) for name, s in setups.items()}
        results[arch] = {name: {"ms_per_step": med[name], "num_parameters": params[name],
                                "ratio_dulab_over_peer": med["dulab"] / med[name]} for name in setups}
    print(f"Training step time, D={D}, batch {BATCH}, 1 thread (median of {rounds}x{steps} steps)\n")
    print("| flow | library | parameters | ms/step | dulab / library |")
    print("| --- | --- | ---: | ---: | ---: |")
    for arch, r in results.items():
        for name, v in r.items():
            print(f"| {arch} | {name} | {v['num_parameters']:,} | {v['ms_per_step']:.2f} |"
                  f" {v['ratio_dulab_over_peer']:.2f}x |")
    versions = {"torch": torch.__version__}
    for mod in ("zuko", "normflows"):
        try:
            versions[mod] = __import__(mod).__version__
        except (ImportError, AttributeError):
            pass
    out = {"results": results, "D": D, "batch": BATCH, "threads": 1, "versions": versions,
           "machine": platform.processor() or platform.machine(), "rounds": rounds, "steps": steps}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
