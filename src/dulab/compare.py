"""``dulab compare``: one table across run directories of any family.

Each run gives one row: model, family, data, parameters, epochs, train time, test bits/dim (discrete data) or test
NLL in nats (continuous data), KL to the true density, sample quality (FID, Heusel et al. 2017, arXiv:1706.08500;
KID, Binkowski et al. 2018, arXiv:1801.01401; IS, Salimans et al. 2016, arXiv:1606.03498; precision/recall,
Kynkaanniemi et al. 2019, arXiv:1904.06991) and probe accuracies, whichever apply. Values come from the run's
``eval.json`` (written by ``dulab eval``: the named split, with sample quality) when there is one, and otherwise from
the last evaluation logged during training (``summary.json``). A likelihood that is only a bound (dequantized flows
on discrete data, latent-variable and diffusion models report a variational bound: an upper bound on bits/dim or
NLL) is marked with ``*``. Columns blank for every run are dropped.

The report is printed and written as ``compare.json``, ``compare.md`` and a self-contained ``compare.html`` whose
sample grids are embedded as base64 PNG data URIs, so the page still works when the folder is moved or mailed.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from dulab.errors import UserError
from dulab.files import atomic_write_text, read_json, read_jsonl, write_json

__all__ = ["compare_runs", "COLUMNS", "BOUND_FAMILIES"]

# Families whose reported likelihood is a variational bound; flows only on discrete data (dequantization).
BOUND_FAMILIES = {"latent", "diffusion"}

# (row key, label, key in eval.json); a training metrics record holds the same metric as "test_" + that key.
COLUMNS = [
    ("run", "run", None),
    ("model", "model", None),
    ("family", "family", None),
    ("data", "data", None),
    ("status", "status", None),
    ("parameters", "parameters", None),
    ("epochs", "epochs", None),
    ("train_seconds", "train time (s)", None),
    ("source", "metrics from", None),
    ("test_bpd", "test bpd", "bpd"),
    ("test_nll", "test nll (nats)", "nll"),
    ("test_kl_to_truth", "test KL to truth (nats)", "kl_to_truth"),
    ("fid", "FID", "fid"),
    ("kid", "KID", "kid"),
    ("inception_score", "IS", "inception_score"),
    ("precision", "precision", "precision"),
    ("recall", "recall", "recall"),
    ("linear_probe", "linear probe", "linear_probe"),
    ("knn_accuracy", "kNN accuracy", "knn_accuracy"),
    ("raw_pixels/linear_probe", "linear probe (raw pixels)", "raw_pixels/linear_probe"),
    ("raw_pixels/knn_accuracy", "kNN (raw pixels)", "raw_pixels/knn_accuracy"),
    ("random_init/linear_probe", "linear probe (random init)", "random_init/linear_probe"),
    ("random_init/knn_accuracy", "kNN (random init)", "random_init/knn_accuracy"),
]
_STD = {"kid": "kid_std", "inception_score": "inception_score_std"}  # shown as "mean ± std"
_LIKELIHOOD = ("test_bpd", "test_nll")
_PNG = b"\x89PNG\r\n\x1a\n"


def compare_runs(runs, *, out_dir="compare", evaluate_missing: bool = False) -> dict:
    """Compare run directories in one table and write ``compare.json``, ``compare.md`` and ``compare.html``.

    Args:
        runs: run directories (paths), at least one; each must hold a ``config.json``.
        out_dir: folder the three reports are written to (created if needed).
        evaluate_missing: for runs without ``eval.json``, run ``dulab.evaluate(run_dir)`` and write its ``eval.json``.
    Returns:
        ``{"rows": [...], "columns": [...], "table": str}``: one dict per run (the kept columns' values, ``None``
        where blank, plus ``kid_std``, ``inception_score_std``, ``bound`` (the likelihood is a bound) and
        ``samples`` (path of the run's sample grid or ``None``)); the kept columns as ``{"key", "label"}``; the
        table as plain text.
    Raises:
        UserError: no runs, a path that is not a run directory, or a corrupt JSON file in one.
    """
    runs = [Path(r) for r in runs]
    if not runs:
        raise UserError("compare needs at least one run directory")
    for run in runs:
        if not (run / "config.json").is_file():
            raise UserError(f"{run} is not a run directory (no config.json); pass folders written by `dulab train`")
    rows = [_row(run, evaluate_missing) for run in runs]
    kept = [c for c in COLUMNS if any(r.get(c[0]) is not None for r in rows)]
    keep = {c[0] for c in kept} | {"kid_std", "inception_score_std", "bound", "samples"}
    rows = [{k: v for k, v in r.items() if k in keep} for r in rows]
    columns = [{"key": key, "label": label} for key, label, *_ in kept]
    cells = [[_cell(r, c["key"]) for c in columns] for r in rows]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = {"rows": rows, "columns": columns, "table": _text_table(columns, cells) + _footnote(rows)}
    write_json(out / "compare.json", report)
    atomic_write_text(out / "compare.md", _markdown(columns, cells) + _footnote(rows) + "\n")
    atomic_write_text(out / "compare.html", _html(columns, cells, rows))
    return report


def _row(run: Path, evaluate_missing: bool) -> dict:
    from dulab.registry import MODELS

    config = read_json(run / "config.json")
    summary = read_json(run / "summary.json") if (run / "summary.json").exists() else {}
    eval_path = run / "eval.json"
    if evaluate_missing and not eval_path.exists():
        import dulab

        write_json(eval_path, dulab.evaluate(run))
    evaluation = read_json(eval_path) if eval_path.exists() else None
    final = summary.get("final") or (read_jsonl(run / "metrics.jsonl") or [{}])[-1]

    name = config.get("model", {}).get("name")
    family = MODELS[name].family if name in MODELS else None
    data = config.get("data", {})
    options = ", ".join(f"{k}={v}" for k, v in sorted((data.get("options") or {}).items()))
    kind = config.get("spec", {}).get("kind")
    status = summary.get("status", "no summary")
    row = {"run": str(run), "model": name, "family": family,
           "data": f"{data.get('name')} ({options})" if options else data.get("name"),
           "status": None if status == "completed" else status,
           "parameters": summary.get("num_parameters"),
           "epochs": summary.get("epochs_completed"), "train_seconds": summary.get("seconds")}
    if evaluation is not None:
        row["source"] = f"eval.json ({evaluation.get('split', '?')})"
        values = {k: evaluation.get(e) for k, _, e in COLUMNS if e}
        values.update({s: evaluation.get(s) for s in _STD.values()})
    else:
        row["source"] = f"training (epoch {final['epoch']})" if "epoch" in final else None
        values = {k: final.get(f"test_{e}") for k, _, e in COLUMNS if e}
        values.update({s: final.get(f"test_{s}") for s in _STD.values()})
    # bits/dim for discrete data, NLL in nats for continuous data (bits/dim of a density is not a code length)
    values["test_bpd" if kind == "continuous" else "test_nll"] = None
    row.update({k: (v if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
                for k, v in values.items()})
    row["bound"] = bool(family in BOUND_FAMILIES or (family == "flow" and kind == "discrete"))
    row["samples"] = _samples_path(run, summary)
    return row


def _samples_path(run: Path, summary: dict) -> str | None:
    """The run's sample grid: the one its summary names (looked up inside ``run``, so moved runs work), else the
    newest ``samples_*.png``."""
    if summary.get("samples"):
        named = run / Path(summary["samples"]).name
        if named.is_file():
            return str(named)
    found = sorted(run.glob("samples_*.png"), key=lambda p: p.stat().st_mtime)
    return str(found[-1]) if found else None


def _cell(row: dict, key: str) -> str:
    v = row.get(key)
    if v is None:
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        text = f"{v:.2f}" if key in ("train_seconds", "fid") or abs(v) >= 100 else f"{v:.4f}"
        if row.get(_STD.get(key, "")) is not None:
            text += f" ± {row[_STD[key]]:.4f}"
        return text + ("*" if key in _LIKELIHOOD and row["bound"] else "")
    return str(v)


def _footnote(rows) -> str:
    if not any(r["bound"] and any(r.get(k) is not None for k in _LIKELIHOOD) for r in rows):
        return ""
    return ("\n\n* a bound, not the exact likelihood: an upper bound on bits/dim or NLL (dequantized flow on"
            " discrete data, variational or diffusion bound)")


def _text_table(columns, cells) -> str:
    widths = [max([len(c["label"])] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c["label"].ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _markdown(columns, cells) -> str:
    def esc(s):
        return s.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(c["label"]) for c in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(esc(v) for v in r) + " |" for r in cells]
    return "\n".join(lines)


def _image_uri(path: str | None) -> str | None:
    if path is None:
        return None
    data = Path(path).read_bytes()
    if not data.startswith(_PNG):
        return None  # not a PNG: leave the cell empty rather than embed something a browser cannot show
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:middle}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
td.num{text-align:right;font-variant-numeric:tabular-nums}
img{image-rendering:pixelated;width:160px;height:auto}p.note{color:#555;font-size:90%}"""


def _html(columns, cells, rows) -> str:
    e = html.escape
    numeric = {"parameters", "epochs", "train_seconds"} | {k for k, _, e in COLUMNS if e}
    head = "".join(f"<th>{e(c['label'])}</th>" for c in columns) + "<th>samples</th>"
    body = []
    for row, values in zip(rows, cells):
        tds = "".join(f'<td class="num">{e(v)}</td>' if c["key"] in numeric else f"<td>{e(v)}</td>"
                      for c, v in zip(columns, values))
        uri = _image_uri(row["samples"])
        img = f'<img src="{uri}" alt="{e("samples of " + row["run"])}">' if uri else ""
        body.append(f'<tr data-run="{e(row["run"])}">{tds}<td>{img}</td></tr>')
    note = _footnote(rows).strip()
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dulab compare</title>"
            f"<style>{_CSS}</style></head><body>\n<h1>dulab compare</h1>\n<table><thead><tr>{head}</tr></thead>\n"
            "<tbody>\n" + "\n".join(body) + "\n</tbody></table>\n"
            + (f'<p class="note">{e(note)}</p>\n' if note else "") + "</body></html>\n")
