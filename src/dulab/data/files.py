"""Datasets read from files under ``root``: MNIST and Fashion-MNIST (IDX files), CIFAR-10 (the python
batches), folders of images, and ``.npz`` arrays.

Nothing is downloaded unless ``download=True`` is given; then the standard public files are fetched into
``root`` and checked against their published SHA-256 digests before use. Pickled CIFAR-10 batches are read
with an unpickler that only rebuilds numpy arrays, never arbitrary objects; ``.npz`` files are read with
``allow_pickle=False``.

Formats: IDX as described on Yann LeCun's MNIST page (LeCun, Cortes and Burges, "The MNIST database", 1998);
Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017, arXiv:1708.07747) uses the same format; CIFAR-10 (Krizhevsky,
"Learning Multiple Layers of Features from Tiny Images", 2009) python batches are pickled dicts with ``data``
``(10000, 3072)`` uint8 (channel-major rows of 32x32 pixels) and ``labels``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.client
import math
import os
import pickle
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from dulab.data import preprocess
from dulab.data._util import check_split, keep_labels_per_class, require, shuffled_split
from dulab.data.base import DataSpec, TensorDataset, from_array
from dulab.errors import UserError

__all__ = ["mnist", "fashion_mnist", "cifar10", "image_folder", "npz", "read_idx", "load_cifar_batch",
           "RestrictedUnpickler", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

# ---------------------------------------------------------------------------------------- public file digests
# SHA-256 of the standard archives, as published in TensorFlow Datasets' url_checksums (mnist.txt,
# fashion_mnist.txt, cifar10.csv) and Keras' dataset loaders, and matching each other.
_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
                  "https://storage.googleapis.com/cvdf-datasets/mnist/")
_FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
_FASHION_MIRRORS = ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
                    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/")
_CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR10_SHA256 = {_CIFAR10_ARCHIVE: "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"}
_CIFAR10_MIRRORS = ("https://www.cs.toronto.edu/~kriz/",)
_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}

_DOWNLOAD_TIMEOUT_S = 60


def _need_root(root, name: str, expected: str) -> Path:
    if root is None:
        raise UserError(f"{name} is read from files: pass root=DIR (CLI: --data-dir DIR) holding {expected}")
    return Path(root).expanduser()


def _check_bits(bits: int, name: str) -> None:
    require(1 <= bits <= 8, f"{name}: bits must be in 1..8, got {bits}")


# -------------------------------------------------------------------------------------------------- download

def _fetch(mirrors, filename: str, sha256: str, dest_dir: Path, name: str) -> Path:
    """Download ``filename`` from the first mirror that serves it with the right SHA-256 into ``dest_dir``.

    The file is written to a ``.part`` file and renamed only once its digest matches.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / filename
    partial = dest_dir / (filename + ".part")
    problems = []
    for base in mirrors:
        url = base + filename
        digest = hashlib.sha256()
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "dulab"})
            with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                with open(partial, "wb") as f:
                    while chunk := response.read(1 << 20):
                        digest.update(chunk)
                        f.write(chunk)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            partial.unlink(missing_ok=True)
            problems.append(f"{url}: {e}")
            continue
        if digest.hexdigest() != sha256:
            partial.unlink(missing_ok=True)
            problems.append(f"{url}: SHA-256 {digest.hexdigest()} is not the published {sha256}")
            continue
        os.replace(partial, dest)
        return dest
    raise UserError(f"{name}: could not download {filename} ({'; '.join(problems)}); "
                    f"place the file in {dest_dir} by hand")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------------------- IDX

_IDX_DTYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_IMAGES_MAGIC = 0x0803  # 2051: unsigned bytes, 3 dimensions (N, H, W)
_IDX_LABELS_MAGIC = 0x0801  # 2049: unsigned bytes, 1 dimension (N,)


def _read_bytes(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when the file starts with the gzip signature."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path}: {e} (corrupt or truncated file?)") from None
    return data


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Read an IDX file (plain or gzipped).

    The header is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), then each
    dimension as a big-endian uint32, then the values in row-major order.

    Args:
        path: the file.
        magic: the expected magic number (2051 for MNIST images, 2049 for labels), or ``None`` to accept any.
    Returns:
        An array of the stored dtype and shape (read-only view of the file's bytes).
    Raises:
        UserError: the file is not IDX, has another magic number, or its size does not match its header.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise UserError(f"{path} is not an IDX file (bad magic number {data[:4].hex() or 'none'})")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise UserError(f"{path}: magic number {found} where {magic} was expected (wrong or corrupt file)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise UserError(f"{path}: truncated IDX header")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[data[2]]
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise UserError(f"{path}: the header promises shape {dims} ({expected} bytes) but the file has"
                        f" {len(data)} bytes (truncated or corrupt)")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _find_idx(root: Path, filename: str, folder: str) -> Path | None:
    """``filename`` (plain or ``.gz``, ``-idx`` or ``.idx``) in ``root``, ``root/raw`` or
    ``root/<folder>/raw``."""
    stem = filename.removesuffix(".gz")
    names = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
    for directory in (root, root / "raw", root / folder / "raw"):
        for n in names:
            if (directory / n).is_file():
                return directory / n
    return None


def _idx_dataset(name: str, split: str, root, bits: int, binarize: bool, download: bool, digests: dict,
                 mirrors: tuple, folder: str, labels_per_class: int | None, label_seed: int) -> TensorDataset:
    check_split(split, name)
    _check_bits(bits, name)
    require(not (binarize and bits != 8), f"{name}: give either bits or binarize, not both")
    expected = ", ".join(n.removesuffix(".gz") for n in digests) + " (plain or .gz)"
    root = _need_root(root, name, expected)
    prefix = "train" if split == "train" else "t10k"
    wanted = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
    paths = []
    for filename in wanted:
        path = _find_idx(root, filename, folder)
        if path is None and download:
            path = _fetch(mirrors, filename, digests[filename], root, name)
        if path is None:
            raise UserError(f"{name}: {filename.removesuffix('.gz')} (or .gz) not found in {root}; it needs "
                            f"{expected}, or pass download=true")
        paths.append(path)
    images = read_idx(paths[0], _IDX_IMAGES_MAGIC)
    labels = read_idx(paths[1], _IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise UserError(f"{name}: {paths[0].name} holds {len(images)} images but {paths[1].name}"
                        f" {len(labels)} labels")
    if len(labels) and labels.max() > 9:
        raise UserError(f"{name}: {paths[1].name} holds labels above 9 (not a 10-class IDX label file)")
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # (N, 1, H, W) uint8
    if binarize:
        x, levels = preprocess.binarize(x, 256, threshold=0.5), 2
    else:
        x, levels = preprocess.quantize(x, 256, bits), 2**bits
    spec = DataSpec(tuple(x.shape[1:]), "discrete", levels, 10)
    ds = TensorDataset(x, torch.from_numpy(labels.astype(np.int64)), spec, name=name)
    return keep_labels_per_class(ds, labels_per_class, split, label_seed)


def mnist(split: str = "train", root: str | None = None, *, bits: int = 8, binarize: bool = False,
          download: bool = False, labels_per_class: int | None = None, label_seed: int = 0) -> TensorDataset:
    """MNIST handwritten digits from the four IDX files in ``root``.

    ``root`` holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each plain or gzipped (``.gz``); ``root/raw`` and ``root/MNIST/raw`` are
    searched too.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: the folder with the files.
        bits: keep ``2**bits`` grey levels (1..8).
        binarize: 1 where the grey level is >= 128, else 0 (2 levels; leave ``bits`` at 8).
        download: fetch missing files into ``root`` and check their SHA-256 (needs network access).
        labels_per_class: keep this many labels per class in the train split, the others -1 (semi-supervised;
            the test split keeps every label).
        label_seed: seed of the choice of kept labels.
    Returns:
        ``(N, 1, 28, 28)`` int64 in ``[0, 2**bits)``; labels ``(N,)`` in {0..9}.
    """
    return _idx_dataset("mnist", split, root, bits, binarize, download, _MNIST_SHA256, _MNIST_MIRRORS,
                        "MNIST", labels_per_class, label_seed)


def fashion_mnist(split: str = "train", root: str | None = None, *, bits: int = 8, binarize: bool = False,
                  download: bool = False, labels_per_class: int | None = None, label_seed: int = 0) -> TensorDataset:
    """Fashion-MNIST (Zalando article images) from the four IDX files in ``root``, laid out as for ``mnist``
    (``root/FashionMNIST/raw`` is searched too).

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        root: the folder with the files.
        bits: keep ``2**bits`` grey levels (1..8).
        binarize: 1 where the grey level is >= 128, else 0 (2 levels; leave ``bits`` at 8).
        download: fetch missing files into ``root`` and check their SHA-256 (needs network access).
        labels_per_class: keep this many labels per class in the train split, the others -1 (semi-supervised;
            the test split keeps every label).
        label_seed: seed of the choice of kept labels.
    Returns:
        ``(N, 1, 28, 28)`` int64 in ``[0, 2**bits)``; labels ``(N,)`` in {0..9}.
    """
    return _idx_dataset("fashion_mnist", split, root, bits, binarize, download, _FASHION_SHA256,
                        _FASHION_MIRRORS, "FashionMNIST", labels_per_class, label_seed)


# --------------------------------------------------------------------------------------------------- CIFAR-10

def _numpy_attr(module_names: tuple, attr: str):
    for module_name in module_names:
        try:
            module = __import__(module_name, fromlist=[attr])
        except ImportError:
            continue
        if hasattr(module, attr):
            return getattr(module, attr)
    raise ImportError(f"numpy has no {attr} in {module_names}")  # pragma: no cover - every numpy has one


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` restricted to latin-1: how Python 3 pickles ``bytes`` under protocol 2."""
    if encoding.lower().replace("-", "") != "latin1":
        raise UserError(f"refusing to decode a pickled string with codec {encoding!r}")
    return text.encode("latin1")


@functools.lru_cache(maxsize=1)
def _allowed_globals() -> dict:
    core = ("numpy._core.multiarray", "numpy.core.multiarray")  # numpy >= 2 and numpy 1 module names
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    reconstruct = _numpy_attr(core, "_reconstruct")
    scalar = _numpy_attr(core, "scalar")
    frombuffer = _numpy_attr(numeric, "_frombuffer")
    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
               ("_codecs", "encode"): _latin1_encode}
    for module_name in core:
        allowed[(module_name, "_reconstruct")] = reconstruct
        allowed[(module_name, "scalar")] = scalar
    for module_name in numeric:
        allowed[(module_name, "_frombuffer")] = frombuffer
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only numpy arrays, dtypes and scalars (plus builtin containers and strings).

    Any other global a pickle names (``os.system``, ``builtins.eval``, a class, ...) raises ``UserError``
    instead of being imported, so that reading a user's file cannot run code.
    """

    def find_class(self, module: str, name: str):
        allowed = _allowed_globals()
        if (module, name) in allowed:
            return allowed[(module, name)]
        raise UserError(f"refusing to load {module}.{name} from a pickle: only numpy arrays are allowed here")


def load_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 python batch with ``RestrictedUnpickler`` (``encoding="bytes"``).

    Args:
        path: a ``data_batch_*`` or ``test_batch`` file.
    Returns:
        images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 in {0..9}.
    Raises:
        UserError: the file is missing, not a pickle, refers to anything but numpy arrays, or is malformed.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = RestrictedUnpickler(f, encoding="bytes").load()
    except UserError as e:
        raise UserError(f"{path}: {e}") from None
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError) as e:
        raise UserError(f"cannot read {path} as a CIFAR-10 batch: {type(e).__name__}: {e}") from None
    if not isinstance(batch, dict):
        raise UserError(f"{path}: a CIFAR-10 batch is a dict, found {type(batch).__name__}")
    # Python 2 pickles (the official files) have bytes keys under encoding="bytes"; Python 3 ones have str
    # keys.
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    data, labels = batch.get("data"), batch.get("labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        raise UserError(f"{path}: 'data' must be a uint8 array of shape (N, 3072)")
    try:
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f"{path}: 'labels' must be a list of integers") from None
    if len(labels) != len(data):
        raise UserError(f"{path}: {len(data)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise UserError(f"{path}: labels must lie in 0..9")
    return data.reshape(-1, 3, 32, 32), labels  # rows are channel-major: R plane, G plane, B plane


def _extract_cifar(archive: Path, dest: Path) -> None:
    """Extract the ``cifar-10-batches-py`` regular files of ``archive`` into ``dest``, refusing unsafe
    paths."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                parts = PurePosixPath(m.name).parts
                if not parts or parts[0] != _CIFAR10_FOLDER:
                    continue
                if PurePosixPath(m.name).is_absolute() or ".." in parts or not (m.isfile() or m.isdir()):
                    raise UserError(f"{archive}: unsafe member {m.name!r}; not extracting")
                members.append(m)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.10.12 / 3.11.4; members were checked above
                tar.extractall(dest, members=members)
    except (OSError, tarfile.TarError, EOFError, zlib.error) as e:
        raise UserError(f"cannot extract {archive}: {e}") from None


def _cifar_folder(root: Path) -> Path | None:
    for folder in (root / _CIFAR10_FOLDER, root):
        if all((folder / f).is_file() for files in _CIFAR10_FILES.values() for f in files):
            return folder
    return None


def cifar10(split: str = "train", root: str | None = None, *, bits: int = 8,
            download: bool = False, labels_per_class: int | None = None, label_seed: int = 0) -> TensorDataset:
    """CIFAR-10 from its python batches: ``root/cifar-10-batches-py/{data_batch_1..5, test_batch}`` (or
    ``root`` itself being that folder).

    Args:
        split: ``"train"`` (50,000 images, data_batch_1..5) or ``"test"`` (10,000, test_batch).
        root: the folder.
        bits: keep ``2**bits`` levels per channel (1..8).
        download: fetch and unpack ``cifar-10-python.tar.gz`` into ``root`` (SHA-256 checked) when files are
            missing.
        labels_per_class: keep this many labels per class in the train split, the others -1 (semi-supervised;
            the test split keeps every label).
        label_seed: seed of the choice of kept labels.
    Returns:
        ``(N, 3, 32, 32)`` int64 in ``[0, 2**bits)``; labels ``(N,)`` in {0..9}.
    """
    name = "cifar10"
    check_split(split, name)
    _check_bits(bits, name)
    expected = f"{_CIFAR10_FOLDER}/ with data_batch_1..data_batch_5 and test_batch"
    root = _need_root(root, name, expected)
    folder = _cifar_folder(root)
    if folder is None and download:
        archive, digest = root / _CIFAR10_ARCHIVE, _CIFAR10_SHA256[_CIFAR10_ARCHIVE]
        if not (archive.is_file() and _sha256(archive) == digest):  # an archive already there is reused
            archive = _fetch(_CIFAR10_MIRRORS, _CIFAR10_ARCHIVE, digest, root, name)
        _extract_cifar(archive, root)
        archive.unlink()
        folder = _cifar_folder(root)
    if folder is None:
        raise UserError(f"{name}: {root} does not hold {expected}; unpack {_CIFAR10_ARCHIVE} there "
                        f"or pass download=true")
    batches = [load_cifar_batch(folder / f) for f in _CIFAR10_FILES[split]]
    images = np.concatenate([b[0] for b in batches])
    labels = np.concatenate([b[1] for b in batches])
    x = preprocess.quantize(torch.from_numpy(images), 256, bits)
    spec = DataSpec((3, 32, 32), "discrete", 2**bits, 10)
    ds = TensorDataset(x, torch.from_numpy(labels), spec, name=name)
    return keep_labels_per_class(ds, labels_per_class, split, label_seed)


# ------------------------------------------------------------------------------------------------ image
# folder

def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def _image_header(path: Path) -> tuple[tuple[int, int], str]:
    """``((height, width), PIL mode)`` of an image, read from its header without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return (im.size[1], im.size[0]), im.mode
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"image_folder: cannot read image {path}: {e}") from None


def _read_image(path: Path, hw: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image

    resample = getattr(Image, "Resampling", Image).BILINEAR
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if im.size != (hw[1], hw[0]):
                im = im.resize((hw[1], hw[0]), resample)
            a = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UserError(f"image_folder: cannot read image {path}: {e}") from None
    return a[None] if channels == 1 else a.transpose(2, 0, 1)  # (C, H, W)


@functools.lru_cache(maxsize=1)
def _load_folder(files: tuple, hw: tuple[int, int], channels: int) -> np.ndarray:
    """All images of the listing as ``(N, C, H, W)`` uint8 (cached; the key holds paths and mtimes)."""
    arrays = np.stack([_read_image(Path(f), hw, channels) for f, _mtime, _bytes in files])
    arrays.setflags(write=False)
    return arrays


def image_folder(split: str = "train", root: str | None = None, *, size: int | None = None,
                 channels: int | None = None, bits: int = 8, test_fraction: float = 0.1,
                 labels_per_class: int | None = None, label_seed: int = 0) -> TensorDataset:
    """Images from ``root/<class>/*.png|jpg|jpeg`` (class labels = sorted subfolder names), or directly from
    ``root/*.png|jpg|jpeg`` (no labels); resized to ``size x size`` with bilinear filtering when ``size`` is
    given, else kept at their own size (which must then be the same for all).

    What was inferred from the images (``size`` and ``channels`` left at ``None``) is in ``info["inferred"]``,
    e.g. ``{"size": (16, 16), "channels": 1}``.

    Args:
        split: ``"train"`` or ``"test"``: a deterministic shuffle (seed 0) cut at ``test_fraction``.
        root: the folder.
        size: output height and width in pixels; ``None``: the images' own height and width.
        channels: 3 (RGB) or 1 (greyscale); ``None``: 1 when every image is greyscale, else 3.
        bits: keep ``2**bits`` levels per channel (1..8).
        test_fraction: share of the images in the test split (at least one image in each split).
        labels_per_class: keep this many labels per class in the train split, the others -1 (needs class
            subfolders; the test split keeps every label).
        label_seed: seed of the choice of kept labels.
    Returns:
        ``(N, channels, H, W)`` int64 in ``[0, 2**bits)`` (``H = W = size`` when given); labels ``(N,)``
        (the class folder's index in ``info["classes"]``) or ``None``.
    """
    name = "image_folder"
    check_split(split, name)
    _check_bits(bits, name)
    require(channels in (1, 3, None), f"{name}: channels must be 1 or 3, got {channels}")
    require(size is None or 1 <= size <= 1024, f"{name}: size must be in 1..1024, got {size}")
    root = _need_root(root, name, "class subfolders of .png/.jpg images (or the images themselves)")
    if not root.is_dir():
        raise UserError(f"{name}: {root} is not a folder")
    classes = [d for d in sorted(root.iterdir())
               if d.is_dir() and not d.name.startswith(".") and _images_in(d)]
    loose = _images_in(root)
    if classes and loose:
        raise UserError(f"{name}: {root} holds both images and class subfolders; put every image in a class"
                        f" subfolder or all of them directly in {root}")
    if classes:
        listing = [(p, i) for i, d in enumerate(classes) for p in _images_in(d)]
    else:
        listing = [(p, -1) for p in loose]
    if not listing:
        raise UserError(f"{name}: no .png/.jpg/.jpeg images in {root} or its subfolders")
    inferred = {}
    if size is None or channels is None:
        headers = [_image_header(p) for p, _ in listing]
        if size is None:
            (h, w), first = headers[0][0], listing[0][0]
            other = next(((hw, p) for (hw, _), (p, _) in zip(headers, listing) if hw != (h, w)), None)
            if other is not None:
                (h2, w2), path = other
                raise UserError(f"{name}: the images have different sizes ({h}x{w} in {first}, {h2}x{w2} in {path});"
                                f" pass size=N (CLI: --data-option size=N) to resize all of them to NxN")
            inferred["size"] = headers[0][0]
        if channels is None:
            channels = 1 if all(mode in _GREY_MODES for _, mode in headers) else 3
            inferred["channels"] = channels
    hw = (size, size) if size is not None else inferred["size"]
    stats = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p, _ in listing)
    images = _load_folder(stats, hw, channels)
    x = preprocess.quantize(torch.from_numpy(images.copy()), 256, bits)
    y = torch.tensor([i for _, i in listing], dtype=torch.long) if classes else None
    spec = DataSpec((channels, *hw), "discrete", 2**bits, len(classes) if classes else None)
    ds = TensorDataset(x, y, spec, name=name, info={"classes": [d.name for d in classes], "inferred": inferred})
    return keep_labels_per_class(shuffled_split(ds, split, test_fraction, seed=0), labels_per_class, split,
                                 label_seed)


# -------------------------------------------------------------------------------------------------------- npz

def _npz_path(root, path: str | None, file: str | None) -> Path:
    if path:
        return Path(path).expanduser()
    if root is None:
        raise UserError("npz: pass path=FILE.npz (CLI: --data-option path=FILE.npz) or root=DIR")
    root = Path(root).expanduser()
    if root.is_file():
        return root
    if file:
        return root / file
    candidates = sorted(root.glob("*.npz")) if root.is_dir() else []
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) or "none"
        raise UserError(f"npz: pass file=NAME.npz to choose the file in {root} (.npz files found: {found})")
    return candidates[0]


def npz(split: str = "train", root: str | None = None, *, path: str | None = None, file: str | None = None,
        num_levels: int | None = None, test_fraction: float = 0.1, labels_per_class: int | None = None,
        label_seed: int = 0) -> TensorDataset:
    """Arrays from a numpy ``.npz`` file, interpreted as by ``from_array``.

    The file holds ``x`` (or ``arr_0``, as written by ``np.savez(f, array)``) ``(N, *event)`` and optionally
    ``y`` ``(N,)`` integer labels; then the split is a deterministic shuffle (seed 0) cut at
    ``test_fraction``. A file with ``x_train`` and ``x_test`` (and optionally ``y_train``, ``y_test``) keeps
    its own split. Integer arrays are discrete (``num_levels`` defaults to max + 1 over both splits), float
    arrays continuous.

    Args:
        split: ``"train"`` or ``"test"``.
        root: a folder holding the file (or the file itself).
        path: the ``.npz`` file (takes precedence over ``root``).
        file: the file name inside ``root`` (needed when ``root`` holds several ``.npz`` files).
        num_levels: number of levels of discrete data.
        test_fraction: share of the examples in the test split when the file has no split of its own.
        labels_per_class: keep this many labels per class in the train split, the others -1 (needs ``y``;
            the test split keeps every label).
        label_seed: seed of the choice of kept labels.
    Returns:
        A ``TensorDataset`` with the file's event shape.
    """
    name = "npz"
    check_split(split, name)
    source = _npz_path(root, path, file)
    if not source.is_file():
        raise UserError(f"npz: file {source} not found")
    try:
        with open(source, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise UserError(f"npz: cannot read {source}: {e}") from None
    if magic == b"\x93NUMPY":
        raise UserError(f"npz: {source} holds a single .npy array, not an .npz archive; use np.savez")
    if magic[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):  # local file header / empty archive
        raise UserError(f"npz: {source} is not an .npz file (an .npz is a zip archive, as np.savez writes)")
    try:
        loaded = np.load(source, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            raise UserError(f"npz: {source} holds a single .npy array, not an .npz archive; use np.savez")
        with loaded as f:
            arrays = {k: f[k] for k in f.files}
    except UserError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"npz: cannot read {source}: {e}") from None
    keys = ", ".join(arrays) or "none"
    if "x_train" in arrays and "x_test" in arrays:
        x_parts = [arrays["x_train"], arrays["x_test"]]
        has_y = "y_train" in arrays and "y_test" in arrays
        y_parts = [arrays["y_train"], arrays["y_test"]] if has_y else None
        try:
            x = np.concatenate(x_parts)
            y = np.concatenate(y_parts) if has_y else None
        except ValueError as e:
            raise UserError(f"npz: x_train and x_test in {source} do not fit together: {e}") from None
        ds = from_array(x, y, num_levels, name=name)
        n_train = len(x_parts[0])
        require(n_train > 0 and len(x_parts[1]) > 0, f"npz: x_train and x_test in {source} must be non-empty")
        index = torch.arange(n_train) if split == "train" else torch.arange(n_train, len(x))
        return keep_labels_per_class(ds.subset(index), labels_per_class, split, label_seed)
    key = "x" if "x" in arrays else "arr_0" if "arr_0" in arrays else None
    if key is None:
        raise UserError(f"npz: {source} has no array 'x' (or 'arr_0'); it holds: {keys}")
    ds = from_array(arrays[key], arrays.get("y"), num_levels, name=name)
    return keep_labels_per_class(shuffled_split(ds, split, test_fraction, seed=0), labels_per_class, split,
                                 label_seed)
