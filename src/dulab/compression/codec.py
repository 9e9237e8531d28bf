"""Lossless compression of discrete data with a likelihood model: range coding driven by its conditionals.

``compress`` walks the model's coding order (``Conditionals``) exactly as the decoder will: for each step it
computes the conditional of every example of a batch, quantises it to a 24-bit integer table
(``dulab.compression.quantize``) and range-codes the step's symbols with constriction's queue (range) coder.
``decompress`` repeats the same computation, decoding each step's symbols and feeding them back, so decoding
costs one model evaluation per dimension (batched over examples). A symbol costs ``-log2 q/2^24`` bits, so the
payload is within a fraction of a percent of ``sum -log2 p(x)``; the range coder adds at most 64 bits per file.

File layout (all integers little-endian)::

    MAGIC (8 bytes)  "DULABZIP"
    version          uint16
    header length    uint32 (bytes)
    header           zlib-compressed UTF-8 JSON: model name, config hash, weights hash, coding-order hash, data
                     container (numpy / torch / png), original shape and dtype, count, batch size, precision,
                     checksum of the data, platform notes (hashes: SHA-256 cut to 128 bits)
    digest           16 bytes: SHA-256 (first 128 bits) of header + payload; a corrupt or truncated file is refused
    payload          the range coder's uint32 words

``overhead_bytes`` in ``inspect`` is everything but the payload: ``8 + 2 + 4 + len(header) + 16`` bytes, about
300 bytes (more for PNG folders, whose file names are kept).

References:
    Witten, Neal, Cleary. "Arithmetic coding for data compression", Communications of the ACM, 1987.
    Bamler. "Understanding Entropy Coding With Asymmetric Numeral Systems (ANS): a Statistician's Perspective",
    2022, arXiv:2201.01741 (the constriction library).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from dulab.compression.conditionals import conditionals_for
from dulab.compression.quantize import PRECISION, quantize
from dulab.errors import UserError

__all__ = ["compress", "decompress", "inspect", "model_fingerprint", "MAGIC", "FORMAT_VERSION"]

MAGIC = b"DULABZIP"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHI")  # magic, version, header length
_DIGEST = 16  # SHA-256 truncated to 128 bits: integrity, not security


def _constriction():
    try:
        import constriction
    except ImportError:  # pragma: no cover - a declared dependency
        raise UserError("compression needs the constriction package: pip install constriction") from None
    return constriction


# ---------------------------------------------------------------------------------------------- model identity
def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]  # 128 bits tell models and data apart


def model_fingerprint(model) -> dict:
    """What a file must match to be decoded by ``model``: hashes of its config, weights and coding order."""
    from dulab.api import model_hparams
    from dulab.registry import MODELS

    target = f"{type(model).__module__}:{type(model).__qualname__}"
    name = next((n for n, e in MODELS.items() if e.target == target), target)
    hparams = model_hparams(model) if dataclasses.is_dataclass(model.config) else {}
    config = json.dumps({"model": name, "spec": model.spec.to_dict(), "hparams": hparams}, sort_keys=True,
                        default=str)
    weights = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        weights.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        weights.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    order = model.generation_order() if hasattr(model, "generation_order") else torch.arange(model.spec.num_dims)
    return {"name": name, "config_sha256": _sha(config.encode()), "weights_sha256": weights.hexdigest()[:32],
            "order_sha256": _sha(np.asarray(order, dtype=np.int64).tobytes())}


def _resolve_model(model_or_run, which: str, device: str):
    if isinstance(model_or_run, (str, Path)):
        from dulab.training.run import load

        return load(model_or_run, which=which, device=device)
    if isinstance(model_or_run, torch.nn.Module):
        return model_or_run
    raise UserError(f"expected a model or a run directory, got {type(model_or_run).__name__}")


@contextmanager
def _evaluating(model):
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was)


# ---------------------------------------------------------------------------------------------- data
def _levels(model, x) -> tuple[torch.Tensor, dict]:
    """User data -> ``(N, *event)`` int64 levels and a description that restores the original container."""
    spec = model.spec
    if isinstance(x, torch.Tensor):
        container, dtype, arr = "torch", str(x.dtype).removeprefix("torch."), x.detach().cpu()
        if arr.is_floating_point() or arr.is_complex():
            raise UserError(f"compress needs integer levels, got a {x.dtype} tensor")
        levels = arr.long()
    else:
        arr = np.asarray(x)
        container, dtype = "numpy", arr.dtype.str
        if arr.dtype.kind not in "iub":
            raise UserError(f"compress needs integer levels, got an array of dtype {arr.dtype}")
        levels = torch.from_numpy(arr.astype(np.int64))
    shape = tuple(levels.shape)
    if shape == spec.shape:
        levels = levels[None]
    elif shape[1:] != spec.shape:
        event = ", ".join(map(str, spec.shape))
        raise UserError(f"the model codes examples of shape ({event}); got data of shape {shape}: "
                        f"pass (N, {event}) or one example ({event})")
    if levels.numel() and (int(levels.min()) < 0 or int(levels.max()) >= spec.num_levels):
        raise UserError(f"levels must lie in [0, {spec.num_levels}) for this model; got values in "
                        f"[{int(levels.min())}, {int(levels.max())}]")
    return levels.contiguous(), {"container": container, "dtype": dtype, "shape": list(shape)}


def _restore(levels: torch.Tensor, data: dict):
    shape = tuple(data["shape"])
    if data["container"] == "torch":
        return levels.reshape(shape).to(getattr(torch, data["dtype"]))
    return levels.reshape(shape).numpy().astype(np.dtype(data["dtype"]))


def _data_digest(levels: torch.Tensor) -> str:
    return _sha(levels.reshape(-1).cpu().numpy().astype("<i8").tobytes())


# ---------------------------------------------------------------------------------------------- coding
def _code(model, count: int, batch_size: int, step):
    """Drive ``step(cond, t, start, tables) -> symbols`` over batches and coding steps; returns the batches' results."""
    out = []
    for start in range(0, count, batch_size):
        cond = conditionals_for(model, min(batch_size, count - start))
        for t in range(cond.num_steps):
            tables = quantize(cond.log_probs(t).cpu().numpy())  # (B, K) int64, rows sum to 2^24
            cond.feed(t, torch.from_numpy(step(cond, t, start, tables)).long())
        out.append(cond.result().cpu())
    return out


def compress(model_or_run, x, *, batch_size: int = 256, which: str = "auto", device: str = "cpu",
             extra: dict | None = None) -> bytes:
    """Compress discrete data losslessly with a model's conditionals.

    Args:
        model_or_run: a discrete autoregressive dulab model (or histogram / logistic mixture), or a run directory
            (loaded with ``which`` weights on ``device``).
        x: integer levels in ``[0, K)``: ``(N, *event)`` or one example ``(*event)``, a numpy array or a tensor.
        batch_size: examples coded together (one model call per dimension and batch). The decoder uses the
            same batches (stored in the header), so floating-point results cannot depend on the batch shape.
        which, device: for run directories.
        extra: JSON-ready fields kept in the header (file helpers store PNG names here).
    Returns:
        The compressed bytes (header + range-coded payload). ``decompress`` restores ``x`` exactly.
    Raises:
        UserError: a model that cannot code (continuous, class-conditional, no conditionals), or bad data.
    """
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    model = _resolve_model(model_or_run, which, device)
    conditionals_for(model, 1)  # refuse models that cannot code before touching the data
    levels, data = _levels(model, x)
    c = _constriction()
    encoder, family = c.stream.queue.RangeEncoder(), c.stream.model.Categorical(perfect=False)
    device_ = model._param_device()

    def step(cond, t, start, tables):
        symbols = targets[start][:, t].numpy().astype(np.int32)
        # constriction's fast quantiser assigns 1 + floor(w_i * scale) with scale = (2^24 - K) / sum(w) = 1
        # for these integer weights (exact in float): it codes with exactly the table ``tables``.
        encoder.encode(symbols, family, (tables - 1).astype(np.float64))
        return symbols

    targets = {}
    with _evaluating(model):
        for start in range(0, len(levels), batch_size):
            chunk = levels[start:start + batch_size].to(device_)
            targets[start] = conditionals_for(model, len(chunk)).targets(chunk).cpu()
        _code(model, len(levels), batch_size, step)
    payload = encoder.get_compressed().astype("<u4").tobytes()
    header = {
        "format": "dulab-compressed", "model": model_fingerprint(model), "data": {**data, "count": len(levels),
                                                                               "sha256": _data_digest(levels)},
        "coder": {"kind": "constriction.RangeEncoder", "precision": PRECISION, "batch_size": batch_size},
        "platform": {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device_)},
    }
    if extra:
        header["extra"] = extra
    head = zlib.compress(json.dumps(header, sort_keys=True, separators=(",", ":")).encode(), 9)
    digest = hashlib.sha256(head + payload).digest()[:_DIGEST]
    return _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head + digest + payload


def _parse(data: bytes) -> tuple[dict, bytes]:
    data = bytes(data)
    if len(data) < _PREFIX.size or data[:8] != MAGIC:
        raise UserError("not a dulab compressed file (wrong magic bytes)")
    _, version, n = _PREFIX.unpack_from(data)
    if version != FORMAT_VERSION:
        raise UserError(f"compressed with format version {version}; this dulab reads version {FORMAT_VERSION}")
    head = data[_PREFIX.size:_PREFIX.size + n]
    digest = data[_PREFIX.size + n:_PREFIX.size + n + _DIGEST]
    payload = data[_PREFIX.size + n + _DIGEST:]
    if len(head) != n or len(digest) != _DIGEST or hashlib.sha256(head + payload).digest()[:_DIGEST] != digest:
        raise UserError("the compressed file is corrupt or truncated (its checksum does not match)")
    try:
        header = json.loads(zlib.decompress(head))
    except (ValueError, zlib.error):
        raise UserError("the compressed file is corrupt (unreadable header)") from None
    if len(payload) % 4 or header.get("format") != "dulab-compressed":
        raise UserError("the compressed file is corrupt (bad payload)")
    return header, payload


def inspect(data: bytes) -> dict:
    """The header of a compressed file plus sizes: ``header_bytes`` (all overhead) and ``payload_bits``."""
    header, payload = _parse(data)
    return {**header, "total_bytes": len(data), "payload_bits": 8 * len(payload),
            "overhead_bytes": len(data) - len(payload)}


def check_model(header: dict, model) -> None:
    """``UserError`` unless ``model`` is the model the file was compressed with."""
    want, have = header["model"], model_fingerprint(model)
    if want["name"] != have["name"] or want["config_sha256"] != have["config_sha256"]:
        raise UserError(f"the file was compressed with a different model ({want['name']}, config "
                        f"{want['config_sha256'][:12]}); this one is {have['name']}, config "
                        f"{have['config_sha256'][:12]}")
    if want["weights_sha256"] != have["weights_sha256"]:
        raise UserError(f"the file was compressed with other weights of {want['name']} (weights "
                        f"{want['weights_sha256'][:12]}, these are {have['weights_sha256'][:12]}): decode with the "
                        "run (and --which weights) that compressed it")
    if want["order_sha256"] != have["order_sha256"]:
        raise UserError("the model's coding order differs from the one the file was compressed with")


def decompress(model_or_run, data: bytes, *, which: str = "auto", device: str = "cpu", return_header: bool = False):
    """Restore what ``compress`` compressed, exactly (same values, shape, dtype and container).

    Args:
        model_or_run: the model (or run directory) that compressed the data.
        data: the compressed bytes.
        which, device: for run directories.
        return_header: also return the file's header.
    Returns:
        The data (a numpy array or a tensor, as given to ``compress``), or ``(data, header)``.
    Raises:
        UserError: not a dulab file, a corrupt or truncated file, a different model (config, weights or order),
            or decoded data that fail the stored checksum (the model's floating-point results differ from the
            encoder's: another machine, thread count or library version; see ``dulab.compression``).
    """
    header, payload = _parse(data)
    model = _resolve_model(model_or_run, which, device)
    check_model(header, model)
    c = _constriction()
    decoder = c.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    family = c.stream.model.Categorical(perfect=False)
    count, batch_size = int(header["data"]["count"]), int(header["coder"]["batch_size"])

    def step(cond, t, start, tables):
        return np.asarray(decoder.decode(family, (tables - 1).astype(np.float64)), dtype=np.int64)

    with _evaluating(model):
        try:
            parts = _code(model, count, batch_size, step)
        except (ValueError, RuntimeError, AssertionError) as e:  # constriction reports bad streams as errors
            raise UserError(f"the compressed data could not be decoded ({e})") from None
    levels = torch.cat(parts) if parts else torch.zeros(0, *model.spec.shape, dtype=torch.long)
    if _data_digest(levels) != header["data"]["sha256"]:
        p = header.get("platform", {})
        raise UserError("the decoded data fail the stored checksum: this model's floating-point conditionals differ "
                        f"from the encoder's (encoded with torch {p.get('torch')}, {p.get('threads')} threads on "
                        f"{p.get('device')}; here torch {torch.__version__}, {torch.get_num_threads()} threads)")
    out = _restore(levels, header["data"])
    return (out, header) if return_header else out
