"""Refusals: another model or weights, a corrupt or truncated file, models that cannot code, bad data; CLI exit 2.

Never wrong output: even when the model check is bypassed, the data checksum refuses a decode that went wrong.
"""

import numpy as np
import pytest
import torch

import dulab
from dulab.cli import main
from dulab.compression import codec, compress, decompress
from dulab.data.base import DataSpec
from dulab.errors import UserError

SPEC = DataSpec((1, 4, 4), "discrete", 5, None)
X = np.random.default_rng(0).integers(0, 5, (6, 1, 4, 4))


def _pixel_cnn(seed=0, num_layers=1):
    torch.manual_seed(seed)
    return dulab.build_model("pixel_cnn", SPEC, num_filters=8, num_layers=num_layers, num_head_filters=8).eval()


def test_other_weights_are_refused():
    data = compress(_pixel_cnn(0), X)
    with pytest.raises(UserError, match="other weights"):
        decompress(_pixel_cnn(1), data)


def test_other_model_or_config_is_refused():
    data = compress(_pixel_cnn(0), X)
    with pytest.raises(UserError, match="different model"):
        decompress(dulab.build_model("made", SPEC).eval(), data)
    with pytest.raises(UserError, match="different model"):
        decompress(_pixel_cnn(0, num_layers=2), data)


@pytest.mark.parametrize("where", [20, -1, -9])
def test_corrupt_byte_is_refused(where):
    model = _pixel_cnn()
    data = bytearray(compress(model, X))
    data[where] ^= 0x10
    with pytest.raises(UserError, match="corrupt|magic"):
        decompress(model, bytes(data))


def test_truncated_and_foreign_files_are_refused():
    model = _pixel_cnn()
    data = compress(model, X)
    with pytest.raises(UserError, match="corrupt or truncated"):
        decompress(model, data[:-3])
    with pytest.raises(UserError, match="not a dulab compressed file"):
        decompress(model, b"\x89PNG\r\n\x1a\n" + data[8:])


def test_a_decode_that_goes_wrong_fails_the_checksum(monkeypatch):
    data = compress(_pixel_cnn(0), X)
    monkeypatch.setattr(codec, "check_model", lambda header, model: None)  # pretend the model check passed
    with pytest.raises(UserError, match="checksum"):
        decompress(_pixel_cnn(1), data)


def test_models_that_cannot_code_are_refused():
    flow = dulab.build_model("maf", DataSpec((2,), "continuous"))
    with pytest.raises(UserError, match="discrete"):
        compress(flow, np.zeros((2, 2), dtype=np.int64))
    labelled = DataSpec((1, 4, 4), "discrete", 5, 3)
    conditional = dulab.build_model("gated_pixel_cnn", labelled, use_context=True)
    with pytest.raises(UserError, match="class-conditional"):
        compress(conditional, X)


@pytest.mark.parametrize("bad, message", [(X + 1, r"levels must lie in \[0, 5\)"), (X.astype(float), "integer"),
                                          (X[:, :, :2], "shape")])
def test_bad_data_are_refused(bad, message):
    with pytest.raises(UserError, match=message):
        compress(_pixel_cnn(), bad)


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A trained run and a copy whose weights differ (as another training of the same config would)."""
    import shutil

    from safetensors.torch import load_file, save_file

    base = tmp_path_factory.mktemp("runs")
    run, other = base / "histogram", base / "histogram-other"
    argv = ["train", "histogram", "--data", "digits", "--epochs", "1", "--out", str(run), "--no-progress"]
    assert main(argv) == 0
    shutil.copytree(run, other)
    for name in ("model.safetensors", "ema.safetensors", "best.safetensors"):
        if (other / name).exists():
            weights = load_file(other / name)
            save_file({k: v + 0.01 if v.is_floating_point() else v for k, v in weights.items()}, other / name)
    return run, other


def test_cli_npy_roundtrip_and_mismatch_exit_2(runs, tmp_path, capsys):
    x = dulab.load_dataset("digits", "test").x[:20].numpy().astype(np.uint8)
    np.save(tmp_path / "x.npy", x)
    assert main(["compress", str(runs[0]), str(tmp_path / "x.npy"), str(tmp_path / "x.dlz")]) == 0
    assert "bits/dim" in capsys.readouterr().out
    assert main(["decompress", str(runs[0]), str(tmp_path / "x.dlz"), str(tmp_path / "y.npy")]) == 0
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.uint8 and np.array_equal(y, x)
    capsys.readouterr()
    assert main(["decompress", str(runs[1]), str(tmp_path / "x.dlz"), str(tmp_path / "z.npy")]) == 2
    err = capsys.readouterr().err
    assert "other weights" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "z.npy").exists()


def test_cli_png_folder_roundtrip(runs, tmp_path):
    from PIL import Image

    x = dulab.load_dataset("digits", "test").x[:5, 0].numpy()
    src = tmp_path / "pngs"
    src.mkdir()
    for i, image in enumerate(x):  # the 17 levels on the 8-bit grid round(l * 255 / 16)
        Image.fromarray(np.rint(image * 255 / 16).astype(np.uint8), "L").save(src / f"digit_{i}.png")
    assert main(["compress", str(runs[0]), str(src), str(tmp_path / "p.dlz")]) == 0
    assert main(["decompress", str(runs[0]), str(tmp_path / "p.dlz"), str(tmp_path / "out")]) == 0
    for i in range(5):
        a = np.asarray(Image.open(src / f"digit_{i}.png"))
        b = np.asarray(Image.open(tmp_path / "out" / f"digit_{i}.png"))
        assert np.array_equal(a, b)


def test_cli_corrupt_file_and_bad_input_exit_2(runs, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 8), dtype=np.int64))
    assert main(["compress", str(runs[0]), str(tmp_path / "x.npy"), str(tmp_path / "x.dlz")]) == 0
    data = bytearray((tmp_path / "x.dlz").read_bytes())
    data[-2] ^= 1
    (tmp_path / "x.dlz").write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["decompress", str(runs[0]), str(tmp_path / "x.dlz"), str(tmp_path / "y.npy")]) == 2
    assert "corrupt" in capsys.readouterr().err
    np.save(tmp_path / "wide.npy", np.full((2, 1, 8, 8), 17))
    assert main(["compress", str(runs[0]), str(tmp_path / "wide.npy"), str(tmp_path / "w.dlz")]) == 2
    assert "levels must lie in" in capsys.readouterr().err
    assert main(["compress", str(runs[0]), str(tmp_path / "missing.npy"), str(tmp_path / "w.dlz")]) == 2
