"""Training step time of dulab's ``ddpm`` against diffusers' ``UNet2DModel`` + ``DDPMScheduler``, in one process.

    # a throwaway environment: diffusers without its optional torch extras, on the project's torch
    python -m venv /tmp/diffvenv && /tmp/diffvenv/bin/pip install diffusers==0.31.0 huggingface_hub regex requests \
        filelock importlib_metadata
    echo /work/main/.venv/lib/python3.11/site-packages > /tmp/diffvenv/lib/python3.11/site-packages/project.pth
    OMP_NUM_THREADS=1 /tmp/diffvenv/bin/python benchmarks/diffusion_peer.py --blocks 12 --steps 20

The same recipe on both sides: ``digits`` (1x8x8, 17 levels scaled to [-1, 1]), batch 64, ``t`` uniform, Gaussian
noise, the epsilon-MSE (dulab: ``prediction=eps``), AdamW lr 2e-4, one thread. The networks have the same widths:
dulab's default digits U-Net (32 then 64 channels, one residual block per resolution on the way down and two on the
way up, self-attention at 8x8 and 4x4, a middle block with attention, GroupNorm 32, dropout 0.1) and diffusers'
``UNet2DModel(block_out_channels=(32, 64), layers_per_block=1, AttnDownBlock2D / AttnUpBlock2D, norm_num_groups=32,
dropout=0.1)``; their parameter counts are printed (768k dulab, 714k diffusers: the blocks differ in detail, e.g. the
time-embedding widths and where the skip projections sit). A step is forward, backward and the optimiser step. Timing:
``--blocks`` alternating blocks (ABBA order) of ``--steps`` steps each after warm-up; the ratio is the median over
pairs of dulab / diffusers seconds per step. Writes ``benchmarks/results/diffusion_peer.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import save

import dulab


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--blocks", type=int, default=12)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    torch.set_num_threads(1)
    from diffusers import DDPMScheduler, UNet2DModel

    train = dulab.load_dataset("digits", "train")
    torch.manual_seed(0)
    ours = dulab.build_model("ddpm", train.spec, prediction="eps", noise_schedule="linear")
    theirs = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                         block_out_channels=(32, 64), down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
                         up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"), norm_num_groups=32, dropout=0.1)
    scheduler = DDPMScheduler(num_train_timesteps=1000)
    opt_a = torch.optim.AdamW(ours.parameters(), lr=2e-4)
    opt_b = torch.optim.AdamW(theirs.parameters(), lr=2e-4)
    ours.train()
    theirs.train()
    g = torch.Generator().manual_seed(0)
    batches = [train.x[torch.randint(0, len(train), (args.batch,), generator=g)] for _ in range(8)]

    def step_ours(i):
        loss = ours.loss(batches[i % 8])["loss"]
        loss.backward()
        opt_a.step()
        opt_a.zero_grad(set_to_none=True)

    def step_theirs(i):
        x0 = batches[i % 8].float() * (2.0 / 16) - 1.0
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (x0.shape[0],))
        pred = theirs(scheduler.add_noise(x0, noise, t), t).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        loss.backward()
        opt_b.step()
        opt_b.zero_grad(set_to_none=True)

    def block(fn):
        t0 = time.perf_counter()
        for i in range(args.steps):
            fn(i)
        return (time.perf_counter() - t0) / args.steps

    for fn in (step_ours, step_theirs):
        for i in range(5):
            fn(i)
    a, b = [], []
    for k in range(args.blocks):
        order = (step_ours, step_theirs) if k % 4 in (0, 3) else (step_theirs, step_ours)
        for fn in order:
            (a if fn is step_ours else b).append(block(fn))
    ratios = [x / y for x, y in zip(a, b)]
    row = {"dulab_s_per_step": statistics.median(a), "diffusers_s_per_step": statistics.median(b),
           "ratio_median_paired": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
           "dulab_params": sum(q.numel() for q in ours.parameters()),
           "diffusers_params": sum(q.numel() for q in theirs.parameters()),
           "batch": args.batch, "blocks": args.blocks, "steps_per_block": args.steps,
           "diffusers_version": __import__("diffusers").__version__}
    print(row, flush=True)
    save("diffusion_peer", {"command": f"benchmarks/diffusion_peer.py --blocks {args.blocks} --steps {args.steps}",
                            **row})


if __name__ == "__main__":
    main()
