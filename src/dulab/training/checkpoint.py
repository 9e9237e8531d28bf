"""Run-directory files, written atomically (temp file + rename): weights as safetensors, the rest as ``state.pt``.

``state.pt`` holds only tensors and plain containers and is read with ``torch.load(weights_only=True)``, so a
checkpoint cannot execute code.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from dulab.errors import CheckpointError
from dulab.files import (  # noqa: F401  (re-exported: the run directory's file helpers)
    _atomic,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_text,
    read_json,
    read_jsonl,
    truncate_jsonl,
    write_json,
)

__all__ = ["atomic_write_bytes", "atomic_write_text", "write_json", "read_json", "save_weights", "load_weights",
           "save_state", "load_state", "append_jsonl", "read_jsonl", "truncate_jsonl"]


def _state_for_saving(state: dict) -> dict:
    # safetensors refuses tensors that share storage (tied weights); store each once, contiguous.
    out, seen = {}, {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()))
        out[k] = v.detach().clone().contiguous() if key in seen else v.detach().contiguous()
        seen[key] = k
    return {k: v.cpu() for k, v in out.items()}


def save_weights(path, state_dict: dict) -> None:
    """Write a state dict (tensors only) as safetensors, atomically."""
    _atomic(path, lambda tmp: save_file(_state_for_saving(state_dict), tmp))


def load_weights(path, device="cpu") -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"missing weights file {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt or not a safetensors file ({e})") from None


def save_state(path, state: dict) -> None:
    _atomic(path, lambda tmp: torch.save(state, tmp))


def load_state(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"missing {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not a valid state file"
        raise CheckpointError(f"{path} is corrupt or not a dulab state file ({type(e).__name__}: {e})") from None


