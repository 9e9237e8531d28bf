"""Seeds and random-number-generator state, so runs are repeatable and resumable bit for bit."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

__all__ = ["seed_everything", "rng_state", "set_rng_state", "epoch_permutation", "isolated_rng"]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """torch's CPU and CUDA generator states (tensors only, so ``torch.load(weights_only=True)`` reads them)."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a function of (seed, epoch) only, so a resumed run sees the same order."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


@contextlib.contextmanager
def isolated_rng(seed: int, device: torch.device | None = None):
    """Run a block (evaluation, sampling) with its own seeded RNG, leaving the training stream untouched."""
    devices = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
