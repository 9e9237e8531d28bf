"""Files in and out of the codec: ``.npy`` arrays of levels, and folders of PNG images.

A PNG folder is read in sorted name order; each image must have the model's height, width and channels
(grey ``L`` for 1 channel, ``RGB`` for 3). Pixel values become levels in one of two ways, chosen per folder and
stored in the header so ``decompress_file`` writes the same pixel values back: ``scaled`` when every value lies
on the grid ``round(l * 255 / (K - 1))`` (what ``dulab`` writes for K-level images, e.g. 0/255 for binary),
else ``raw`` when every value is below K (the value is the level). The restored PNG files hold the same
pixels under the same names (the PNG bytes themselves may differ: zlib settings, metadata).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from dulab.compression.codec import _resolve_model, compress, decompress
from dulab.errors import UserError
from dulab.files import atomic_write_bytes

__all__ = ["compress_file", "decompress_file", "read_png_folder", "write_png_folder"]


def _grid(num_levels: int) -> np.ndarray:
    return np.rint(np.arange(num_levels) * (255.0 / (num_levels - 1))).astype(np.int64)  # level -> 8-bit value


def read_png_folder(folder, spec) -> tuple[np.ndarray, dict]:
    """PNG images of ``folder`` -> ``(N, C, H, W)`` int64 levels and ``{"names", "png_mode"}``."""
    from PIL import Image

    folder = Path(folder)
    if len(spec.shape) != 3 or spec.shape[0] not in (1, 3):
        raise UserError(f"PNG folders need a model of 1- or 3-channel images; this one codes {spec.describe()}")
    if spec.num_levels > 256:
        raise UserError(f"PNG holds 8-bit values; the model has {spec.num_levels} levels")
    C, H, W = spec.shape
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not names:
        raise UserError(f"{folder} holds no .png files")
    images = []
    for name in names:
        with Image.open(folder / name) as im:
            mode = im.mode
            if C == 1 and mode in ("1", "L"):
                im = im.convert("L")
            elif not (C == 3 and mode == "RGB"):
                raise UserError(f"{name}: mode {mode}; the model codes {'grey (L)' if C == 1 else 'RGB'} images")
            if im.size != (W, H):
                raise UserError(f"{name}: {im.size[0]}x{im.size[1]} pixels; the model codes {W}x{H}")
            a = np.asarray(im, dtype=np.int64)
        images.append(a[None] if C == 1 else a.transpose(2, 0, 1))  # (H, W[, C]) -> (C, H, W)
    pixels = np.stack(images)
    grid = _grid(spec.num_levels)
    levels = np.rint(pixels * ((spec.num_levels - 1) / 255.0)).astype(np.int64)
    if (grid[levels] == pixels).all():
        mode = "scaled"
    elif pixels.max() < spec.num_levels:
        mode, levels = "raw", pixels
    else:
        raise UserError(f"the PNG values are neither levels below {spec.num_levels} nor on the model's "
                        f"{spec.num_levels}-level grid (0, {grid[1]}, ..., 255): compression would not be lossless")
    return levels, {"names": names, "png_mode": mode}


def write_png_folder(folder, levels: np.ndarray, names: list[str], png_mode: str, num_levels: int) -> None:
    """Write ``(N, C, H, W)`` levels as PNG files ``folder/names[i]`` (``png_mode`` as ``read_png_folder``)."""
    import io

    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = _grid(num_levels)[levels] if png_mode == "scaled" else levels
    for name, image in zip(names, pixels.astype(np.uint8)):
        im = Image.fromarray(image[0], "L") if image.shape[0] == 1 else Image.fromarray(image.transpose(1, 2, 0))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        atomic_write_bytes(folder / Path(name).name, buf.getvalue())


def compress_file(model_or_run, input_path, output_path, *, batch_size: int = 256, which: str = "auto",
                  device: str = "cpu") -> dict:
    """Compress a ``.npy`` array of levels or a folder of PNG images into ``output_path``.

    Returns:
        ``{"examples", "dims", "bytes", "bits_per_dim", "seconds"}`` (bits/dim of the whole file, header included).
    """
    model = _resolve_model(model_or_run, which, device)
    path = Path(input_path)
    start = time.perf_counter()
    if path.is_dir():
        levels, extra = read_png_folder(path, model.spec)
        data = compress(model, levels, batch_size=batch_size, extra=extra)
    elif path.suffix.lower() == ".npy":
        if not path.exists():
            raise UserError(f"{path} does not exist")
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise UserError(f"{path} is not a readable .npy array ({e})") from None
        levels = array
        data = compress(model, array, batch_size=batch_size)
    else:
        raise UserError(f"{path}: give a .npy array of levels or a folder of .png images")
    seconds = time.perf_counter() - start
    atomic_write_bytes(output_path, data)
    n = int(np.prod(np.shape(levels)))
    return {"examples": n // model.spec.num_dims, "dims": n, "bytes": len(data),
            "bits_per_dim": 8 * len(data) / max(n, 1), "seconds": seconds}


def decompress_file(model_or_run, input_path, output_path, *, which: str = "auto", device: str = "cpu") -> dict:
    """Restore ``input_path`` (from ``compress_file``) to a ``.npy`` file or a PNG folder at ``output_path``."""
    path = Path(input_path)
    if not path.is_file():
        raise UserError(f"{path} is not a file")
    model = _resolve_model(model_or_run, which, device)
    start = time.perf_counter()
    out, header = decompress(model, path.read_bytes(), return_header=True)
    seconds = time.perf_counter() - start
    extra = header.get("extra") or {}
    if "names" in extra:
        write_png_folder(output_path, out, extra["names"], extra["png_mode"], model.spec.num_levels)
    else:
        import io

        buf = io.BytesIO()
        np.save(buf, np.asarray(out), allow_pickle=False)
        atomic_write_bytes(output_path, buf.getvalue())
    return {"examples": int(header["data"]["count"]), "dims": int(np.size(out)), "seconds": seconds,
            "format": "png" if "names" in extra else "npy"}
