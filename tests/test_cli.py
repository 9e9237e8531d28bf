"""The command line, in process: every command, and every user mistake exits 2 with one line."""

import json

import numpy as np
import pytest

from dulab.cli import main


@pytest.fixture
def trained_run(tmp_path):
    out = tmp_path / "run"
    argv = ["train", "histogram", "--data", "discrete1d", "--epochs", "2", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    return out


def test_help_for_every_command(capsys):
    for argv in (["--help"], ["train", "--help"], ["sample", "--help"], ["eval", "--help"], ["resume", "--help"],
                 ["list", "--help"]):
        assert main(argv) == 0
        assert "examples:" in capsys.readouterr().out


def test_list_shows_models_and_datasets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "histogram" in out and "autoregressive" in out and "digits" in out and "17 levels" in out
    assert main(["list", "--model", "histogram"]) == 0
    assert "--set mode=auto" in capsys.readouterr().out
    assert main(["list", "--dataset", "discrete1d"]) == 0
    assert "bins" in capsys.readouterr().out


def test_train_reports_bits_per_dim_and_samples(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "histogram", "--data", "discrete1d", "--epochs", "2", "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    final = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    # the printed report is the last evaluation's test bits/dim (4 decimals), and bpd = nll / (D ln 2), D = 1
    assert f"test {final['test_bpd']:.4f} bits/dim" in text, text
    assert final["test_bpd"] == pytest.approx(final["test_nll"] / np.log(2))
    trained_run = out
    assert (trained_run / "samples_final.png").exists()
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["name"] == "histogram" and config["data"]["name"] == "discrete1d"
    assert config["train"]["epochs"] == 2 and config["spec"]["num_levels"] == 20


def test_train_prints_summary(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "logistic_mixture", "--data", "discrete1d", "--data-option", "bins=30", "--epochs", "1",
                 "--set", "num_components=3", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "bits/dim" in text and "samples:" in text and str(out) in text
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["hparams"]["num_components"] == 3 and config["data"]["options"] == {"bins": 30}


def test_sample_eval_resume(trained_run, tmp_path, capsys):
    png = tmp_path / "s.png"
    assert main(["sample", str(trained_run), "-n", "100", "--out", str(png)]) == 0
    assert png.exists() and png.stat().st_size > 1000
    assert main(["eval", str(trained_run)]) == 0
    result = json.loads((trained_run / "eval.json").read_text())
    assert result["split"] == "test" and result["bpd"] == pytest.approx(result["nll"] / np.log(2))
    assert main(["resume", str(trained_run), "--epochs", "3", "--no-progress"]) == 0
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [0, 1, 2, 3]


MISTAKES = [
    (["train", "pixel_cnnn"], "unknown model"),
    (["train", "histogram", "--data", "digitz"], "unknown dataset"),
    (["train", "histogram", "--data", "discrete1d", "--set", "nope=1"], "valid keys"),
    (["train", "histogram", "--data", "discrete1d", "--set", "max_joint_size=abc"], "must be an integer"),
    (["train", "histogram", "--data", "discrete1d", "--set", "mode=weird"], "must be one of"),
    (["train", "histogram", "--data", "discrete1d", "--set", "novalue"], "key=value"),
    (["train", "histogram", "--data", "discrete1d", "--data-option", "binz=3"], "valid options"),
    (["train", "histogram", "--data", "discrete1d", "--epochs", "0"], "epochs must be >= 1"),
    (["train", "histogram", "--data", "discrete1d", "--epochs", "many"], "invalid int value"),
    (["train", "histogram", "--data", "moons"], "needs discrete data"),
    (["train", "histogram", "--data", "mnist", "--data-dir", "/nonexistent"], "mnist"),
    (["train", "histogram", "--device", "tpu"], "invalid choice"),
    (["sample", "/nonexistent/run"], "not a run directory"),
    (["eval", "/nonexistent/run"], "not a run directory"),
    (["resume", "/nonexistent/run"], "not a run directory"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("argv,message", MISTAKES, ids=[" ".join(a) for a, _ in MISTAKES])
def test_user_mistakes_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, f"expected one line, got:\n{err}"
    assert message in err
    assert "Traceback" not in err


def test_corrupt_checkpoint_is_a_user_error(trained_run, capsys):
    (trained_run / "model.safetensors").write_bytes(b"garbage")
    assert main(["sample", str(trained_run), "--which", "last"]) == 2
    assert "corrupt" in capsys.readouterr().err
    (trained_run / "config.json").write_text("{not json")
    assert main(["eval", str(trained_run)]) == 2
    assert "corrupt" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_corrupt_state_is_a_user_error(trained_run, capsys):
    (trained_run / "state.pt").write_bytes(b"\x80\x04garbage")
    assert main(["resume", str(trained_run), "--epochs", "3", "--no-progress"]) == 2
    assert "corrupt" in capsys.readouterr().err


def test_existing_run_directory_is_not_overwritten(trained_run, capsys):
    assert main(["train", "histogram", "--data", "discrete1d", "--out", str(trained_run), "--no-progress"]) == 2
    assert "dulab resume" in capsys.readouterr().err
