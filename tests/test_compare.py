"""``dulab compare``: rows read from the runs' own files, blank columns dropped, bounds marked, an HTML page whose
every run and sample grid is present, clear errors for paths that are not runs."""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

import dulab
from dulab.cli import main
from dulab.compare import compare_runs
from dulab.errors import CheckpointError, UserError
from dulab.files import read_json, write_json

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three tiny runs of two families: autoregressive (discrete digits, with an eval.json carrying sample
    quality, and binary digits without one), a dequantized flow on binary digits (a bound) and a flow on a
    continuous 2-D density with a closed form (NLL and KL, no bits/dim)."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("runs")
    hist = dulab.train("histogram", data="digits", epochs=1, out_dir=base / "hist", progress=False).dir
    write_json(Path(hist) / "eval.json", dulab.evaluate(hist))
    made = dulab.train("made", data="digits_binary", epochs=1, out_dir=base / "made", progress=False,
                       hidden_sizes=[16]).dir
    flow = dulab.train("real_nvp", data="digits_binary", epochs=1, out_dir=base / "flow", progress=False,
                       num_scales=1, hidden_channels=4, num_blocks=1).dir
    toy = dulab.train("real_nvp", data="eight_gaussians", epochs=1, out_dir=base / "toy", progress=False,
                      num_layers=2, hidden_sizes=[8]).dir
    return {"hist": Path(hist), "made": Path(made), "flow": Path(flow), "toy": Path(toy)}


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.row_runs, self.img_srcs, self.cells = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-run" in attrs:
            self.row_runs.append(attrs["data-run"])
        if tag == "img":
            self.img_srcs.append(attrs["src"])

    def handle_data(self, data):
        self.cells.append(data)


def test_html_has_every_run_and_its_sample_grid(runs, tmp_path):
    names = [runs["hist"], runs["made"], runs["flow"]]
    compare_runs(names, out_dir=tmp_path / "report")
    page = _Collector()
    page.feed((tmp_path / "report" / "compare.html").read_text())
    assert page.row_runs == [str(r) for r in names]
    assert len(page.img_srcs) == len(names)
    for run, src in zip(names, page.img_srcs):
        if src.startswith("data:"):
            header, payload = src.split(",", 1)
            assert header == "data:image/png;base64"
            data = base64.b64decode(payload, validate=True)
            assert data.startswith(PNG) and data == (run / "samples_final.png").read_bytes()
        else:  # a file next to the page
            assert (tmp_path / "report" / src).is_file()
    assert "histogram" in page.cells and "real_nvp" in page.cells


def test_json_rows_match_summary_and_eval(runs, tmp_path):
    report = compare_runs([runs["hist"], runs["made"]], out_dir=tmp_path)
    assert report == json.loads((tmp_path / "compare.json").read_text())
    hist, made = report["rows"]
    evaluation = read_json(runs["hist"] / "eval.json")
    for key, eval_key in [("test_bpd", "bpd"), ("fid", "fid"), ("kid", "kid"), ("inception_score", "inception_score"),
                          ("precision", "precision"), ("recall", "recall"), ("kid_std", "kid_std")]:
        assert hist[key] == evaluation[eval_key], key
    assert hist["source"] == "eval.json (test)"
    summary = read_json(runs["made"] / "summary.json")
    assert made["test_bpd"] == summary["final"]["test_bpd"]
    assert made["parameters"] == summary["num_parameters"]
    assert made["epochs"] == summary["epochs_completed"] == 1
    assert made["train_seconds"] == summary["seconds"]
    assert (made["model"], made["family"], made["data"]) == ("made", "autoregressive", "digits_binary")
    assert made["fid"] is None and made["source"] == "training (epoch 1)"
    assert "made" in report["table"] and "histogram" in report["table"]


def test_columns_blank_for_every_run_are_dropped(runs, tmp_path):
    report = compare_runs([runs["made"]], out_dir=tmp_path)
    keys = [c["key"] for c in report["columns"]]
    assert "test_bpd" in keys
    # no eval.json: no sample quality; discrete data: no NLL column; no true density: no KL; not a representation
    for dropped in ("fid", "kid", "inception_score", "precision", "recall", "test_nll", "test_kl_to_truth",
                    "linear_probe",
                    "status"):
        assert dropped not in keys and dropped not in report["rows"][0]
    header = (tmp_path / "compare.md").read_text().splitlines()[0]
    assert [h.strip() for h in header.strip("|").split("|")] == [c["label"] for c in report["columns"]]


def test_dequantized_flow_likelihood_is_marked_as_bound(runs, tmp_path):
    report = compare_runs([runs["flow"], runs["made"]], out_dir=tmp_path)
    flow, made = report["rows"]
    assert flow["family"] == "flow" and flow["bound"] and not made["bound"]
    assert f"{flow['test_bpd']:.4f}*" in report["table"]
    assert f"{made['test_bpd']:.4f}*" not in report["table"]
    assert "a bound" in report["table"] and "a bound" in (tmp_path / "compare.md").read_text()


def test_continuous_data_report_nll_in_nats_and_kl(runs, tmp_path):
    report = compare_runs([runs["toy"], runs["made"]], out_dir=tmp_path)
    toy, made = report["rows"]
    final = read_json(runs["toy"] / "summary.json")["final"]
    assert toy["test_nll"] == final["test_nll"] and toy["test_kl_to_truth"] == final["test_kl_to_truth"]
    assert toy["test_bpd"] is None and made["test_nll"] is None  # one likelihood column per kind of data
    assert not toy["bound"]  # a flow on continuous data reports the exact density
    assert "test nll (nats)" in [c["label"] for c in report["columns"]]


def test_not_a_run_directory_is_a_user_error(tmp_path, capsys):
    with pytest.raises(UserError, match="not a run directory"):
        compare_runs([tmp_path], out_dir=tmp_path / "out")
    assert main(["compare", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_corrupt_summary_is_a_checkpoint_error(runs, tmp_path):
    run = tmp_path / "made"
    shutil.copytree(runs["made"], run)
    (run / "summary.json").write_text('{"status": "compl')
    with pytest.raises(CheckpointError, match="corrupt"):
        compare_runs([run], out_dir=tmp_path / "out")
    assert main(["compare", str(run), "--out", str(tmp_path / "out")]) == 2


def test_evaluate_missing_writes_eval_json(runs, tmp_path):
    run = tmp_path / "made"
    shutil.copytree(runs["made"], run)
    assert not (run / "eval.json").exists()
    report = compare_runs([run], out_dir=tmp_path / "out", evaluate_missing=True)
    evaluation = read_json(run / "eval.json")
    assert evaluation["split"] == "test"
    assert report["rows"][0]["source"] == "eval.json (test)"
    assert report["rows"][0]["test_bpd"] == evaluation["bpd"]
