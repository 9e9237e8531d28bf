"""Per-example scores: ``score`` is the model's ``log_prob``; the CSV of ``dulab score``; typicality and the
likelihood ratio against worked examples."""

import csv
import math

import pytest
import torch

import dulab
from dulab.cli import main
from dulab.errors import UserError
from dulab.scores import likelihood_ratio_scores, perturb, score, score_to_csv, typicality_scores


@pytest.mark.parametrize("name, hparams", [("pixel_cnn", {"num_filters": 8, "num_layers": 1, "num_head_filters": 8}),
                                           ("histogram", {})])
def test_score_equals_log_prob(name, hparams):
    ds = dulab.load_dataset("digits", "test")
    torch.manual_seed(0)
    model = dulab.build_model(name, ds.spec, **hparams).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.train()  # score evaluates in eval mode and restores the mode
    got = score(model, ds, batch_size=100)
    model.eval()
    with torch.no_grad():
        want = model.log_prob(ds.x).double()
    assert got.dtype == torch.float64 and got.shape == (len(ds),)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_csv_rows_hold_log_prob_and_bits_per_dim(tmp_path):
    ds = dulab.load_dataset("digits_ood", "test", kind="shapes", num_samples=30)
    model = dulab.build_model("histogram", ds.spec, mode="independent").double().eval()
    out = score_to_csv(model, tmp_path / "s.csv", data=ds)
    rows = list(csv.DictReader(open(tmp_path / "s.csv")))
    assert len(rows) == 30 == out["num_examples"] and list(rows[0]) == ["index", "label", "log_prob", "bpd"]
    lp = float(rows[3]["log_prob"])
    assert lp == pytest.approx(float(model.log_prob(ds.x[3:4]).detach()[0]), abs=1e-12)
    assert float(rows[3]["bpd"]) == pytest.approx(-lp / (64 * math.log(2)), rel=1e-12)
    assert math.isclose(float(rows[0]["bpd"]), math.log2(17), rel_tol=1e-9)  # uniform table: log2 K bits/dim


def test_mismatched_data_and_models_without_likelihood_are_refused():
    model = dulab.build_model("histogram", dulab.load_dataset("digits_binary").spec)
    with pytest.raises(UserError, match="built for"):
        score(model, "digits")


def test_typicality_is_the_distance_of_the_nll_from_the_entropy_estimate():
    reference = torch.tensor([-10.0, -12.0, -14.0])  # entropy estimate H = 12 nats
    lp = torch.tensor([-12.0, -2.0, -30.0, -11.0])
    torch.testing.assert_close(typicality_scores(lp, reference), torch.tensor([0.0, 10.0, 18.0, 1.0],
                                                                               dtype=torch.float64))
    # groups of two: mean NLLs 7 and 20.5
    torch.testing.assert_close(typicality_scores(lp, reference, group_size=2),
                               torch.tensor([5.0, 8.5], dtype=torch.float64))


def test_likelihood_ratio_and_perturbation():
    torch.testing.assert_close(likelihood_ratio_scores(torch.tensor([-5.0]), torch.tensor([-8.0])),
                               torch.tensor([-3.0], dtype=torch.float64))
    x = torch.randint(17, (200, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(perturb(x, 17, 0.0), x)
    changed = (perturb(x, 17, 0.5, generator=torch.Generator().manual_seed(1)) != x).float().mean()
    assert abs(float(changed) - 0.5 * 16 / 17) < 0.02  # replaced by a uniform level, 1/17 of them the same


def test_cli_score_writes_one_row_per_example(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "histogram", "--data", "digits", "--epochs", "1", "--out", str(run), "--no-progress"]) == 0
    out = tmp_path / "blank.csv"
    assert main(["score", str(run), "--data", "digits_ood", "--data-option", "kind=blank", "--out", str(out)]) == 0
    assert "bits/dim" in capsys.readouterr().out
    assert len(list(csv.DictReader(open(out)))) == 360
    assert main(["score", str(run), "--out", str(tmp_path / "own.csv")]) == 0  # default: the run's own test split
    assert len(list(csv.DictReader(open(tmp_path / "own.csv")))) == 360
    capsys.readouterr()
    assert main(["score", str(run), "--data", "digits_binary", "--out", str(out)]) == 2
    assert "built for" in capsys.readouterr().err
