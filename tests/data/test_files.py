"""File loaders on small files written here in each real format; corrupt files and unsafe pickles; downloads
with a fake network (nothing here touches the real one)."""

import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from dulab.data import files, load_dataset


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


# ------------------------------------------------------------------------------------------------------ IDX

_IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
              np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding: 0, 0, type code, ndim, big-endian uint32 dims, big-endian values."""
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, _IDX_CODES[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx_set(folder, n_train=6, n_test=4, size=28, gz=False, seed=0):
    """The four MNIST files with random images and labels; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for kind, a in (("images-idx3", images), ("labels-idx1", labels)):
            data = idx_bytes(a)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / (name + ".gz")).write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_datasets_read_plain_and_gzipped_files(tmp_path, gz, name):
    arrays = write_idx_set(tmp_path, gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        ds = load_dataset(name, split=split, root=str(tmp_path))
        images, labels = arrays[prefix]
        assert ds.spec.shape == (1, 28, 28) and ds.spec.num_levels == 256 and ds.spec.num_classes == 10
        assert torch.equal(ds.x[:, 0], torch.from_numpy(images.astype(np.int64)))
        assert torch.equal(ds.y, torch.from_numpy(labels.astype(np.int64)))


def test_idx_bits_and_binarize_options_as_cli_strings(tmp_path):
    images = write_idx_set(tmp_path)["train"][0].astype(np.int64)
    ds = load_dataset("mnist", root=str(tmp_path), bits="4")
    assert ds.spec.num_levels == 16 and torch.equal(ds.x[:, 0], torch.from_numpy(images // 16))
    ds = load_dataset("mnist", root=str(tmp_path), binarize="true")
    assert ds.spec.num_levels == 2
    assert torch.equal(ds.x[:, 0], torch.from_numpy((images >= 128).astype(np.int64)))
    with pytest.raises(ValueError, match="either bits or binarize"):
        load_dataset("mnist", root=str(tmp_path), bits=4, binarize=True)
    with pytest.raises(ValueError, match="bits"):
        load_dataset("mnist", root=str(tmp_path), bits=9)


def test_idx_files_are_found_in_torchvision_layout_and_with_dotted_names(tmp_path):
    write_idx_set(tmp_path / "MNIST" / "raw", gz=True)
    assert len(files.mnist(root=str(tmp_path))) == 6
    dotted = tmp_path / "dotted"
    write_idx_set(dotted)
    for p in dotted.iterdir():
        p.rename(p.with_name(p.name.replace("-idx", ".idx")))
    assert len(files.mnist("test", root=str(dotted))) == 4


def test_read_idx_handles_other_value_types(tmp_path):
    a = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "a.idx").write_bytes(idx_bytes(a))
    assert np.array_equal(files.read_idx(tmp_path / "a.idx"), a)
    f = np.linspace(-1, 1, 6).reshape(6)
    (tmp_path / "f.idx").write_bytes(idx_bytes(f))
    assert np.array_equal(files.read_idx(tmp_path / "f.idx"), f)


def test_missing_idx_file_names_the_expected_files(tmp_path):
    write_idx_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    assert len(files.mnist(root=str(tmp_path))) == 6  # the train split does not need it
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.*not found.*download=true"):
        files.mnist("test", root=str(tmp_path))


@pytest.mark.parametrize("damage", ["truncate", "magic", "swap", "gzip", "count", "labels"])
def test_corrupt_idx_files_raise_user_errors(tmp_path, damage):
    write_idx_set(tmp_path)
    images, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:-10])
    elif damage == "magic":
        images.write_bytes(b"\x12\x34" + images.read_bytes()[2:])
    elif damage == "swap":  # a label file where the images should be: magic 2049, not 2051
        images.write_bytes(labels.read_bytes())
    elif damage == "gzip":
        images.unlink()
        (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x" * 1000)[:30])
    elif damage == "count":
        labels.write_bytes(idx_bytes(np.zeros(5, dtype=np.uint8)))
    elif damage == "labels":
        labels.write_bytes(idx_bytes(np.full(6, 11, dtype=np.uint8)))
    with pytest.raises(ValueError) as info:
        files.mnist(root=str(tmp_path))
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------------------------------- CIFAR-10


def cifar_batch(n, seed, str_keys=False):
    """A batch dict shaped like the official ones (bytes keys under Python 2)."""
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"testing batch", b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    if str_keys:
        batch = {k.decode(): v for k, v in batch.items()}
    return batch


def write_cifar(folder, n=3, str_keys=False):
    folder.mkdir(parents=True, exist_ok=True)
    batches = {}
    for i, name in enumerate([f"data_batch_{j}" for j in range(1, 6)] + ["test_batch"]):
        batches[name] = cifar_batch(n, i, str_keys)
        with open(folder / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)
    return batches


@pytest.mark.parametrize("str_keys", [False, True])
def test_cifar10_reads_protocol_2_batches(tmp_path, str_keys):
    batches = write_cifar(tmp_path / "cifar-10-batches-py", str_keys=str_keys)
    key = (lambda k: k) if str_keys else (lambda k: k.encode())
    train = files.cifar10(root=str(tmp_path))
    test = files.cifar10("test", root=str(tmp_path / "cifar-10-batches-py"))  # root may be the folder itself
    assert len(train) == 15 and len(test) == 3
    assert train.spec.shape == (3, 32, 32) and train.spec.num_levels == 256 and train.spec.num_classes == 10
    first = batches["data_batch_1"][key("data")][0]
    assert torch.equal(train.x[0, 0].flatten(), torch.from_numpy(first[:1024].astype(np.int64)))  # red plane
    assert torch.equal(train.x[0, 2, 31, 31], torch.tensor(int(first[3071])))
    assert test.y.tolist() == batches["test_batch"][key("labels")]


def py2_batch_pickle(data: np.ndarray, labels: list) -> bytes:
    """A batch pickled the way Python 2's cPickle wrote the official files (protocol 2, ``str`` opcodes and
    ``numpy.core.multiarray._reconstruct``), assembled opcode by opcode."""

    def short(b):  # SHORT_BINSTRING: a Python 2 str
        return b"U" + bytes([len(b)]) + b

    def binint(v):
        return b"J" + struct.pack("<i", v)

    dtype = (b"cnumpy\ndtype\n" + short(b"u1") + b"K\x00K\x01\x87R"  # dtype('u1', 0, 1)
             + b"(K\x03" + short(b"|") + b"NNN" + binint(-1) + binint(-1) + b"K\x00tb")  # __setstate__
    raw = data.tobytes()
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short(b"b") + b"\x87R"
             + b"(K\x01(" + binint(data.shape[0]) + binint(data.shape[1]) + b"t" + dtype + b"\x89"
             + b"T" + struct.pack("<I", len(raw)) + raw + b"tb")  # BUILD with (1, shape, dtype, False, raw)
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return b"\x80\x02}(" + short(b"data") + array + short(b"labels") + label_list + b"u."


def test_cifar10_reads_python2_pickles_like_the_official_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    data = np.random.default_rng(5).integers(0, 256, (2, 3072), dtype=np.uint8)
    (folder / "test_batch").write_bytes(py2_batch_pickle(data, [7, 2]))
    ds = files.cifar10("test", root=str(tmp_path))
    assert ds.y.tolist() == [7, 2]
    assert torch.equal(ds.x, torch.from_numpy(data.reshape(2, 3, 32, 32).astype(np.int64)))


def test_cifar10_bits_option(tmp_path):
    write_cifar(tmp_path)
    full, low = files.cifar10(root=str(tmp_path)), load_dataset("cifar10", root=str(tmp_path), bits="3")
    assert low.spec.num_levels == 8 and torch.equal(low.x, full.x // 32)


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_os_system(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _RunsCommand(f"touch {marker}"), b"labels": []}, f, protocol=2)
    with pytest.raises(ValueError, match="refusing to load .*system"):
        files.cifar10(root=str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps({"data": eval}, protocol=2),  # builtins.eval
    pickle.dumps({"x": io.BytesIO}, protocol=2),  # any class
    pickle.dumps({"x": np.load}, protocol=4),  # numpy, but not an array constructor
])
def test_restricted_unpickler_refuses_other_globals(payload):
    with pytest.raises(ValueError, match="refusing to load"):
        files.RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()


def test_restricted_unpickler_allows_arrays_of_newer_protocols():
    a = np.arange(12, dtype=np.int16).reshape(3, 4)
    for protocol in (2, 4, 5):
        payload = pickle.dumps({"a": a, "s": np.int64(3)}, protocol=protocol)
        out = files.RestrictedUnpickler(io.BytesIO(payload), encoding="bytes").load()
        assert np.array_equal(out["a"], a) and out["s"] == 3


@pytest.mark.parametrize("damage", ["garbage", "truncated", "shape", "labels", "not_a_dict", "missing"])
def test_corrupt_cifar_batches_raise_user_errors(tmp_path, damage):
    batches = write_cifar(tmp_path)
    path = tmp_path / "data_batch_3"
    if damage == "garbage":
        path.write_bytes(b"this is not a pickle at all")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "shape":
        path.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    elif damage == "labels":
        b = batches["data_batch_3"]
        path.write_bytes(pickle.dumps({b"data": b[b"data"], b"labels": [0]}, protocol=2))
    elif damage == "not_a_dict":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    elif damage == "missing":
        path.unlink()
    with pytest.raises(ValueError) as info:
        files.cifar10(root=str(tmp_path))
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------- downloads


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _serve(monkeypatch, payloads: dict):
    """Make urlopen return payloads[file name]; anything else is a network error."""
    seen = []

    def fake_urlopen(request, timeout=None):
        url = request.full_url
        seen.append(url)
        name = url.rsplit("/", 1)[-1]
        if name not in payloads:
            raise urllib.error.URLError("unreachable")
        return _FakeResponse(payloads[name])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    return seen


def test_download_fetches_missing_idx_files_and_checks_sha256(tmp_path, monkeypatch):
    source = tmp_path / "source"
    write_idx_set(source, gz=True)
    payloads = {p.name: p.read_bytes() for p in source.iterdir()}
    for name, data in payloads.items():
        monkeypatch.setitem(files._MNIST_SHA256, name, hashlib.sha256(data).hexdigest())
    seen = _serve(monkeypatch, payloads)
    root = tmp_path / "root"
    ds = files.mnist(root=str(root), download=True)
    assert len(ds) == 6 and sorted(p.name for p in root.iterdir()) == [
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
    assert all(url.startswith(files._MNIST_MIRRORS[0]) for url in seen)
    n_calls = len(seen)
    files.mnist(root=str(root), download=True)  # present files are not fetched again
    assert len(seen) == n_calls


def test_download_with_a_wrong_digest_keeps_nothing(tmp_path, monkeypatch):
    _serve(monkeypatch, {"train-images-idx3-ubyte.gz": b"not the real file"})
    with pytest.raises(ValueError, match="SHA-256.*by hand"):
        files.mnist(root=str(tmp_path), download=True)
    assert list(tmp_path.iterdir()) == []


def test_download_tries_the_next_mirror_then_gives_a_clear_error(tmp_path, monkeypatch):
    seen = _serve(monkeypatch, {})
    with pytest.raises(ValueError, match="could not download train-images-idx3-ubyte.gz"):
        files.fashion_mnist(root=str(tmp_path), download=True)
    assert len(seen) == len(files._FASHION_MIRRORS)


def test_published_digests_are_sha256_hex():
    for table in (files._MNIST_SHA256, files._FASHION_SHA256, files._CIFAR10_SHA256):
        for digest in table.values():
            assert len(digest) == 64 and int(digest, 16) >= 0


def _cifar_archive(tmp_path, extra_member=None) -> bytes:
    src = tmp_path / "src"
    write_cifar(src / "cifar-10-batches-py", n=2)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        if extra_member:
            info = tarfile.TarInfo(extra_member)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
    return buffer.getvalue()


def test_cifar_download_unpacks_the_checked_archive(tmp_path, monkeypatch):
    archive = _cifar_archive(tmp_path)
    monkeypatch.setitem(files._CIFAR10_SHA256, "cifar-10-python.tar.gz", hashlib.sha256(archive).hexdigest())
    _serve(monkeypatch, {"cifar-10-python.tar.gz": archive})
    root = tmp_path / "root"
    assert len(files.cifar10("test", root=str(root), download=True)) == 2
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]


def test_cifar_download_reuses_a_checked_archive_already_in_root(tmp_path, monkeypatch):
    archive = _cifar_archive(tmp_path)
    monkeypatch.setitem(files._CIFAR10_SHA256, "cifar-10-python.tar.gz", hashlib.sha256(archive).hexdigest())
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(archive)
    with pytest.raises(ValueError, match="unpack cifar-10-python.tar.gz"):
        files.cifar10(root=str(root))  # download=False never writes into root
    assert len(files.cifar10(root=str(root), download=True)) == 10  # no network: urlopen refuses (fixture)


def test_cifar_download_refuses_archives_that_escape_root(tmp_path, monkeypatch):
    archive = _cifar_archive(tmp_path, extra_member="cifar-10-batches-py/../../escaped")
    monkeypatch.setitem(files._CIFAR10_SHA256, "cifar-10-python.tar.gz", hashlib.sha256(archive).hexdigest())
    _serve(monkeypatch, {"cifar-10-python.tar.gz": archive})
    with pytest.raises(ValueError, match="unsafe member"):
        files.cifar10(root=str(tmp_path / "root"), download=True)
    assert not (tmp_path / "escaped").exists()


# ----------------------------------------------------------------------------------------------- image folder


def _write_png(path, colour, size=(10, 12), mode="RGB"):
    from PIL import Image

    Image.new(mode, size, colour).save(path)


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "images"
    for cls, colour in (("blue", (0, 0, 255)), ("red", (255, 0, 0))):
        (root / cls).mkdir(parents=True)
        for i in range(5):
            _write_png(root / cls / f"{i}.png", colour)
    from PIL import Image

    Image.new("RGB", (16, 16), (255, 0, 0)).save(root / "red" / "extra.jpg", quality=95)
    (root / "red" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_labels_are_sorted_class_folders(image_tree):
    train = files.image_folder(root=str(image_tree), size=8)
    test = files.image_folder("test", root=str(image_tree), size=8)
    assert len(train) + len(test) == 11 and len(test) == 1
    assert train.spec.shape == (3, 8, 8) and train.spec.num_levels == 256 and train.spec.num_classes == 2
    assert train.info["classes"] == ["blue", "red"]
    x, y = torch.cat([train.x, test.x]), torch.cat([train.y, test.y])
    blue = x[y == 0]
    assert (blue[:, 2] == 255).all() and (blue[:, :2] == 0).all()  # a solid colour survives the resize
    assert (x[y == 1][:, 0] > 240).all()  # red (the JPEG may be off by a few levels)
    assert torch.equal(train.x, files.image_folder(root=str(image_tree), size=8).x)  # deterministic


def test_image_folder_grey_bits_and_fraction_options(image_tree):
    ds = load_dataset("image_folder", root=str(image_tree), size="6", channels="1", bits="2",
                      test_fraction="0.5")
    assert ds.spec.shape == (1, 6, 6) and ds.spec.num_levels == 4 and int(ds.x.max()) <= 3
    assert len(ds) == 5 and len(load_dataset("image_folder", split="test", root=str(image_tree), size=6,
                                             test_fraction=0.5)) == 6


def test_image_folder_without_subfolders_has_no_labels(tmp_path):
    for i in range(4):
        _write_png(tmp_path / f"{i}.png", i * 60, mode="L")
    ds = files.image_folder(root=str(tmp_path), size=4, channels=1)
    assert ds.y is None and ds.spec.num_classes is None and len(ds) == 3


@pytest.mark.parametrize("problem", ["empty", "mixed", "corrupt", "channels", "missing"])
def test_image_folder_problems_raise_user_errors(tmp_path, problem):
    root = tmp_path / "r"
    root.mkdir()
    if problem in ("mixed", "corrupt", "channels"):
        (root / "a").mkdir()
        _write_png(root / "a" / "0.png", (1, 2, 3))
        _write_png(root / "a" / "1.png", (1, 2, 3))
    if problem == "mixed":
        _write_png(root / "loose.png", (1, 2, 3))
    if problem == "corrupt":
        (root / "a" / "2.png").write_bytes(b"\x89PNG broken")
    if problem == "missing":
        root = tmp_path / "does-not-exist"
    with pytest.raises(ValueError) as info:
        files.image_folder(root=str(root), channels=2 if problem == "channels" else 3)
    assert "\n" not in str(info.value)


def test_image_folder_infers_grey_channels_and_size_from_the_images(tmp_path):
    for i in range(4):
        _write_png(tmp_path / f"{i}.png", i * 60, size=(16, 16), mode="L")
    ds = files.image_folder(root=str(tmp_path))
    assert ds.spec.shape == (1, 16, 16) and ds.x.shape[1:] == (1, 16, 16)
    assert ds.spec.describe() == "1x16x16 discrete, 256 levels"
    assert ds.info["inferred"] == {"size": (16, 16), "channels": 1}
    assert sorted(torch.cat([ds.x, files.image_folder("test", root=str(tmp_path)).x])[:, 0, 0, 0].tolist()) == [
        0, 60, 120, 180]  # the grey levels written, unresized
    given = files.image_folder(root=str(tmp_path), size=8, channels=3)
    assert given.spec.shape == (3, 8, 8) and given.info["inferred"] == {}


def test_image_folder_keeps_a_common_non_square_size_and_infers_colour(image_tree):
    (image_tree / "red" / "extra.jpg").unlink()  # the one 16x16 image; the PNGs are 10 wide, 12 high
    ds = files.image_folder(root=str(image_tree))
    assert ds.spec.shape == (3, 12, 10) and ds.info["inferred"] == {"size": (12, 10), "channels": 3}


def test_image_folder_with_mixed_sizes_says_which_option_to_set(image_tree):
    with pytest.raises(ValueError, match=r"different sizes .*size=N") as info:
        files.image_folder(root=str(image_tree))  # 12x10 PNGs and one 16x16 JPEG
    assert "\n" not in str(info.value) and "12x10" in str(info.value) and "16x16" in str(info.value)
    assert files.image_folder(root=str(image_tree), size=8).spec.shape == (3, 8, 8)  # the option fixes it


# -------------------------------------------------------------------------------------------------------- npz


def test_a_file_that_is_not_a_zip_archive_is_called_not_an_npz_file(tmp_path):
    path = tmp_path / "data.npz"
    for content in (b"PK not really", b"x,y\n1,2\n", b""):
        path.write_bytes(content)
        with pytest.raises(ValueError, match="is not an .npz file") as info:
            files.npz(path=str(path))
        assert "pickle" not in str(info.value)


def test_npz_with_x_and_y_is_split_deterministically(tmp_path):
    x = np.arange(40 * 3).reshape(40, 3) % 7
    y = np.arange(40) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    train = load_dataset("npz", path=str(tmp_path / "d.npz"))
    test = load_dataset("npz", split="test", root=str(tmp_path))  # the only .npz in root
    assert len(train) == 36 and len(test) == 4
    assert train.spec.kind == "discrete" and train.spec.num_levels == 7 and train.spec.num_classes == 4
    rows = sorted(map(tuple, torch.cat([train.x, test.x]).tolist()))
    assert rows == sorted(map(tuple, x.tolist()))
    assert torch.equal(train.x, load_dataset("npz", path=str(tmp_path / "d.npz")).x)


def test_npz_arr_0_num_levels_and_floats(tmp_path):
    np.savez(tmp_path / "ints.npz", np.zeros((10, 2, 2), dtype=np.int64))
    np.savez(tmp_path / "floats.npz", x=np.random.default_rng(0).normal(size=(10, 5)).astype(np.float32))
    ds = files.npz(root=str(tmp_path), file="ints.npz", num_levels=4)
    assert ds.spec.shape == (2, 2) and ds.spec.num_levels == 4 and ds.y is None
    ds = files.npz(root=str(tmp_path / "floats.npz"))
    assert ds.spec.kind == "continuous" and ds.x.dtype == torch.float32
    with pytest.raises(ValueError, match="file=NAME.npz"):
        files.npz(root=str(tmp_path))  # two candidates


def test_npz_keeps_a_split_stored_in_the_file(tmp_path):
    np.savez(tmp_path / "s.npz", x_train=np.ones((6, 2), np.int64), x_test=np.zeros((3, 2), np.int64),
             y_train=np.arange(6), y_test=np.arange(3))
    train, test = files.npz(path=str(tmp_path / "s.npz")), files.npz("test", path=str(tmp_path / "s.npz"))
    assert (train.x == 1).all() and (test.x == 0).all() and test.y.tolist() == [0, 1, 2]
    assert train.spec.num_levels == 2 and train.spec.num_classes == 6


@pytest.mark.parametrize("problem", ["no_x", "object", "not_zip", "npy", "missing", "levels"])
def test_npz_problems_raise_user_errors(tmp_path, problem):
    path = tmp_path / "bad.npz"
    if problem == "no_x":
        np.savez(path, features=np.zeros(3))
    elif problem == "object":
        np.savez(path, x=np.array([{"a": 1}, None], dtype=object))
    elif problem == "not_zip":
        path.write_bytes(b"PK not really")
    elif problem == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(3))
    elif problem == "levels":
        np.savez(path, x=np.arange(10))
    with pytest.raises(ValueError) as info:
        files.npz(path=str(path), num_levels=5 if problem == "levels" else None)
    assert "\n" not in str(info.value)
    if problem == "no_x":
        assert "features" in str(info.value)


@pytest.mark.parametrize(("name", "expected"), [("mnist", "train-images-idx3-ubyte"), ("cifar10", "data_batch_1"),
                                                ("image_folder", "subfolder per class"), ("npz", "x_train"),
                                                ("fashion_mnist", "IDX files")])
def test_dulab_list_says_which_files_data_dir_must_hold(capsys, name, expected):
    from dulab.cli import main

    assert main(["list", "--dataset", name]) == 0
    out = capsys.readouterr().out
    assert "--data-dir" in out and expected in out
