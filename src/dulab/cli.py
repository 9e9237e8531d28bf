"""The ``dulab`` command: ``list``, ``train``, ``sample``, ``eval``, ``resume``, ``compare``, ``compress``,
``decompress``, ``score``.

User mistakes (unknown model or dataset, bad value, missing file, wrong shape, corrupt checkpoint) print one line
and exit with status 2; a NaN/inf loss exits with status 1 and a message; Ctrl-C saves the run and exits 130.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from pathlib import Path

__all__ = ["main", "build_parser"]

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


_FMT = argparse.RawDescriptionHelpFormatter

TRAIN_EXAMPLES = """examples:
  dulab train histogram --data discrete1d
  dulab train logistic_mixture --data discrete1d --data-option bins=100 --set num_components=6
  dulab train pixel_cnn --data digits --epochs 20 --lr 3e-3 --ema 0.999
  dulab train pixel_cnn --data mnist --data-dir ~/data/mnist --data-option bits=1
  dulab train real_nvp --data moons --device cuda --precision bf16-mixed
  dulab train pixel_cnn --data digits --devices 2 --strategy ddp --device cpu

--set key=value sets a model hyperparameter (type-checked; `dulab list --model NAME` shows them);
training options (e.g. warmup_steps, min_lr_ratio) are accepted too.
The run directory (default runs/<model>-<data>) holds config.json, model.safetensors, state.pt,
metrics.jsonl, samples_final.png, curves.png and summary.json. Ctrl-C saves (exit status 130);
`dulab resume RUN` continues.

Many processes or nodes: `torchrun --nproc-per-node 2 -m dulab train ... --devices 2 --strategy ddp`
(SLURM: `srun python -m dulab train ... --devices N --strategy ddp`); only rank 0 writes the run directory."""


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dulab", formatter_class=_FMT,
                description="Train, sample from, evaluate and compare deep unsupervised models.",
                epilog="examples:\n  dulab list\n  dulab train histogram --data discrete1d\n"
                       "  dulab sample runs/histogram-discrete1d -n 1000\n  dulab eval runs/histogram-discrete1d\n"
                       "  dulab resume runs/histogram-discrete1d --epochs 40\n"
                       "  dulab compare runs/histogram-discrete1d runs/pixel_cnn-digits\n\n"
                       "`dulab COMMAND --help` shows each command's options.")
    from dulab._version import __version__

    p.add_argument("--version", action="version", version=f"dulab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    q = sub.add_parser("list", help="list models and datasets", formatter_class=_FMT,
                       description="List the registered models (with family) and datasets (with shape and levels).",
                       epilog="examples:\n  dulab list\n  dulab list --model pixel_cnn     # its hyperparameters\n"
                              "  dulab list --dataset discrete1d  # its options")
    q.add_argument("--model", help="show one model's hyperparameters and defaults")
    q.add_argument("--dataset", help="show one dataset's options")

    t = sub.add_parser("train", help="train a model", formatter_class=_FMT, epilog=TRAIN_EXAMPLES,
                       description="Train MODEL on a dataset and write a run directory.")
    t.add_argument("model", help="registered model name (see `dulab list`)")
    t.add_argument("--data", default=None, help="dataset name (default: the model's embedded default, digits or moons)")
    t.add_argument("--data-dir", default=None, help="directory with the files of file-backed datasets")
    t.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE", help="dataset option")
    t.add_argument("--epochs", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="run directory (default runs/<model>-<data>, made unique)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    t.add_argument("--devices", type=int, help="number of devices/processes per node")
    t.add_argument("--num-nodes", type=int, help="number of machines (torchrun/SLURM launches)")
    t.add_argument("--strategy", choices=["auto", "ddp"])
    t.add_argument("--precision", choices=["32", "bf16-mixed"])
    t.add_argument("--ema", type=float, dest="ema_decay", metavar="DECAY", help="EMA of weights, e.g. 0.999")
    t.add_argument("--grad-clip", type=float)
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    t.add_argument("--max-steps", type=int, help="stop (resumably) after this many steps")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.add_argument("--overwrite", action="store_true", help="reuse a run directory that already holds files")
    t.add_argument("--logger", choices=["none", "csv", "tensorboard"], help="also log metrics under RUN/logs")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                   help="model hyperparameter (or training option)")

    s = sub.add_parser("sample", help="draw samples from a trained run", formatter_class=_FMT,
                       description="Draw samples from a run and save the picture that suits the data.",
                       epilog="examples:\n  dulab sample runs/pixel_cnn-digits -n 64 --out samples.png\n"
                              "  dulab sample runs/real_nvp-moons -n 2000 --which best")
    s.add_argument("run", help="run directory")
    s.add_argument("-n", "--num-samples", type=int, default=64)
    s.add_argument("--out", default=None, help="output PNG (default RUN/samples.png)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--which", choices=["auto", "last", "best", "ema"], default="auto", help="which weights")
    s.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    s.add_argument("--data-dir", default=None, help="where the run's data files are now (only for 1-D/2-D plots)")

    e = sub.add_parser("eval", help="evaluate a trained run", formatter_class=_FMT,
                       description="Evaluate a run on a split with every metric that applies (test loss, bits/dim,"
                                   " FID/KID/IS/precision/recall of samples where a feature extractor exists,"
                                   " probe accuracy for representation models); prints a table and writes"
                                   " RUN/eval.json.",
                       epilog="examples:\n  dulab eval runs/pixel_cnn-digits\n"
                              "  dulab eval runs/pixel_cnn-digits --split train --no-sample-quality\n"
                              "  dulab eval runs/real_nvp-photos --feature-weights pt_inception-2015-12-05.pth")
    e.add_argument("run", help="run directory")
    e.add_argument("--split", choices=["train", "test"], default="test")
    e.add_argument("--which", choices=["auto", "last", "best", "ema"], default="auto")
    e.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    e.add_argument("--batch-size", type=int, default=256)
    e.add_argument("--data-dir", default=None, help="where the run's data files are now (if moved)")
    e.add_argument("--num-samples", type=int, default=None,
                   help="samples for sample quality (default: the split's size, at most 1000)")
    e.add_argument("--no-sample-quality", action="store_true", help="skip FID/KID/IS/precision/recall")
    e.add_argument("--feature-weights", default=None, metavar="PATH",
                   help="local InceptionV3 FID weights (pytorch-fid format) for data without a shipped extractor")
    e.add_argument("--probe-labels-per-class", type=int, default=None, metavar="N",
                   help="fit representation probes on N labels per class (few-label probing)")
    e.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("resume", help="continue an interrupted or finished run", formatter_class=_FMT,
                       description="Continue a run exactly where its last checkpoint stopped.",
                       epilog="examples:\n  dulab resume runs/pixel_cnn-digits\n"
                              "  dulab resume runs/pixel_cnn-digits --epochs 40   # 40 epochs in total\n\n"
                              "An interrupted run continues bit for bit. Extending a finished run (--epochs past its\n"
                              "total) continues the learning rate from where it ended: --schedule restart (default)\n"
                              "warms it up again and decays it by cosine over the added epochs; --schedule final\n"
                              "holds the final learning rate.")
    r.add_argument("run", help="run directory")
    r.add_argument("--epochs", type=int, help="total epochs (default: the run's configured total)")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"])
    r.add_argument("--schedule", choices=["restart", "final"], default="restart",
                   help="learning rate when extending a finished run (default restart)")
    r.add_argument("--data-dir", default=None, help="where the run's data files are now (if moved)")

    c = sub.add_parser("compare", help="one table across runs of any family", formatter_class=_FMT,
                       description="Compare runs: model, family, data, parameters, train time, test bits/dim or"
                                   " bound, FID/KID/IS, probe accuracy (whichever apply). Prints the table and writes"
                                   " compare.json, compare.md and a self-contained compare.html with each run's"
                                   " samples.",
                       epilog="examples:\n  dulab compare runs/pixel_cnn-digits runs/made-digits\n"
                              "  dulab compare runs/* --out report --evaluate")
    c.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    c.add_argument("--out", default="compare", help="output folder (default ./compare)")
    c.add_argument("--evaluate", action="store_true",
                   help="run `dulab eval` (and write eval.json) for runs that have none")
    _add_coding_parsers(sub)
    return p


def _add_coding_parsers(sub) -> None:
    """``compress``, ``decompress`` and ``score``: likelihood models put to work (dulab.compression, dulab.scores)."""
    for name, verb in (("compress", "Compress"), ("decompress", "Restore")):
        k = sub.add_parser(name, help=f"{verb.lower()} data losslessly with a discrete likelihood model",
                           formatter_class=_FMT,
                           description=f"{verb} data with RUN's model (entropy coding with its conditionals). "
                                       "INPUT of compress: a .npy array of integer levels (N, *event) or a folder "
                                       "of PNG images; decompress restores them exactly (a .npy file or a PNG "
                                       "folder). Decode with the same run, weights, machine and thread count.",
                           epilog="examples:\n  dulab compress runs/pixel_cnn-digits digits.npy digits.dlz\n"
                                  "  dulab decompress runs/pixel_cnn-digits digits.dlz restored.npy\n"
                                  "  dulab compress runs/pixel_cnn-shapes pngs/ pngs.dlz")
        k.add_argument("run", help="run directory")
        k.add_argument("input", help="input file or folder")
        k.add_argument("output", help="output file or folder")
        k.add_argument("--which", choices=["auto", "last", "best", "ema"], default="auto", help="which weights")
        if name == "compress":
            k.add_argument("--batch-size", type=int, default=256, help="examples coded together")

    o = sub.add_parser("score", help="per-example log-likelihood and bits/dim (anomaly scores) to a CSV",
                       formatter_class=_FMT,
                       description="Score every example of a dataset split with RUN's model: log-likelihood in "
                                   "nats and bits/dim, written to a CSV (index, label, log_prob, bpd). Low "
                                   "likelihood flags anomalies, but see `dulab.scores` on why simpler "
                                   "out-of-distribution data can score higher (and the typicality test).",
                       epilog="examples:\n  dulab score runs/pixel_cnn-digits --data digits --out in.csv\n"
                              "  dulab score runs/pixel_cnn-digits --data digits_ood --data-option kind=blank")
    o.add_argument("run", help="run directory")
    o.add_argument("--data", default=None, help="dataset name (default: the run's own dataset)")
    o.add_argument("--data-dir", default=None, help="directory with the files of file-backed datasets")
    o.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE", help="dataset option")
    o.add_argument("--split", choices=["train", "test"], default="test")
    o.add_argument("--out", default="scores.csv", help="output CSV (default scores.csv)")
    o.add_argument("--which", choices=["auto", "last", "best", "ema"], default="auto", help="which weights")
    o.add_argument("--batch-size", type=int, default=256)
    o.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")


def _device(name: str) -> str:
    import torch

    from dulab.errors import UserError

    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available")
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _default_data(model_name: str) -> str:
    from dulab.registry import get_model_class

    cls = get_model_class(model_name)
    return getattr(cls, "default_data", None) or ("moons" if getattr(cls, "family", "") == "flow" else "digits")


def _type_name(tp) -> str:
    """A readable type for `dulab list`: ``int``, ``one of a|b``, ``ints, comma-separated``."""
    import typing

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + "|".join(map(str, args))
    if origin in (tuple, list):
        inner = args[0] if args else str
        return f"{getattr(inner, '__name__', inner)}s, comma-separated"
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_type_name(a) for a in rest) + " or none"
    return getattr(tp, "__name__", str(tp))


def cmd_list(args) -> int:
    from dulab.config import config_fields
    from dulab.registry import DATASETS, MODELS, dataset_options, get_dataset_builder, get_model_class

    if args.model:
        import dataclasses

        cls = get_model_class(args.model)
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        print(f"{args.model} ({cls.__name__}, {MODELS[args.model].family}): {summary}")
        defaults = {f.name: f.default for f in dataclasses.fields(cls.Config)}
        for k, tp in config_fields(cls.Config).items():
            default = ",".join(map(str, defaults[k])) if isinstance(defaults[k], tuple) else defaults[k]
            print(f"  --set {k}={default!s:<14} {_type_name(tp)}")
        if getattr(cls, "train_defaults", None):
            print("  training defaults: " + ", ".join(f"{k}={v}" for k, v in cls.train_defaults.items()))
        return 0
    if args.dataset:
        builder = get_dataset_builder(args.dataset)
        print(f"{args.dataset}: {DATASETS[args.dataset].summary}")
        if DATASETS[args.dataset].files:
            print(f"  files (from --data-dir DIR): {DATASETS[args.dataset].files}")
        for k, (tp, default) in dataset_options(builder).items():
            print(f"  --data-option {k}={default!s:<10} {_type_name(tp)}")
        return 0
    print("models:")
    for name, entry in MODELS.items():
        print(f"  {name:<20} {entry.family}")
    print("\ndatasets:")
    for name, entry in DATASETS.items():
        print(f"  {name:<20} {entry.summary}")
    print("\n`dulab list --model NAME` / `--dataset NAME` show options; `dulab train --help` shows how to train.")
    return 0


def cmd_train(args) -> int:
    import dulab
    from dulab.config import parse_assignments

    data = args.data or _default_data(args.model)
    dulab.registry.get_model_class(args.model)  # unknown model: fail before loading any data
    hparams = parse_assignments(args.sets, "--set")
    train_kw = {k: v for k, v in {
        "batch_size": args.batch_size, "lr": args.lr, "device": args.device, "devices": args.devices,
        "num_nodes": args.num_nodes,
        "strategy": args.strategy, "precision": args.precision, "ema_decay": args.ema_decay,
        "grad_clip": args.grad_clip, "compile": args.compile, "max_steps": args.max_steps,
        "logger": args.logger}.items() if v is not None}
    if args.no_progress:
        train_kw["progress"] = False
    run = dulab.train(args.model, data=data, epochs=args.epochs, out_dir=args.out, seed=args.seed,
                      data_options=parse_assignments(args.data_option, "--data-option"), root=args.data_dir,
                      overwrite=args.overwrite, verbose=True, **hparams, **train_kw)
    return _report(run)


def _report(run) -> int:
    """Print the outcome of a run (main process only); the exit status: 0, or 130 after Ctrl-C."""
    if not run.is_main:
        return 0
    s = run.summary
    final = s.get("final") or {}
    if s.get("status") != "completed":
        print(f"stopped at step {s.get('step')} ({s.get('status')}); continue with: dulab resume {run.dir}")
        return 130 if s.get("status") == "interrupted" else 0
    parts = [f"{s['epochs']} epoch{'s' if s['epochs'] != 1 else ''} in {s['seconds']:.1f} s"]
    metric = s.get("best_metric", "loss")
    if metric != "loss" and f"test_{metric}" in final:  # e.g. GANs: FID picks the best weights
        best = f" (best {s['best']:.4f})" if isinstance(s.get("best"), float) else ""
        parts.append(f"test {metric} {final[f'test_{metric}']:.4f}{best}")
    elif "test_bpd" in final:
        parts.append(f"test {final['test_bpd']:.4f} bits/dim (nll {final['test_nll']:.4f} nats)")
    elif "test_nll" in final:
        parts.append(f"test nll {final['test_nll']:.4f} nats")
    elif "test_loss" in final:
        parts.append(f"test loss {final['test_loss']:.4f}")
    if "test_iwae_bpd" in final:  # latent models: "bits/dim" above is the ELBO bound
        parts.append(f"importance-sampled {final['test_iwae_bpd']:.4f} bits/dim")
    if "test_kl_to_truth" in final:
        parts.append(f"KL to the true density {final['test_kl_to_truth']:.4f} nats")
    if s.get("eval_weights") == "ema":
        parts.append("EMA weights")
    print("done: " + "; ".join(parts))
    if s.get("note"):
        print(f"note: {s['note']}")
    print(f"run: {run.dir}")
    if s.get("samples"):
        print(f"samples: {s['samples']}")
    return 0


def cmd_resume(args) -> int:
    import dulab

    kw = {}
    if args.no_progress:
        kw["progress"] = False
    if args.device:
        kw["device"] = args.device
    run = dulab.resume(args.run, epochs=args.epochs, schedule=args.schedule, root=args.data_dir, verbose=True, **kw)
    return _report(run)


def _picture_data(run_dir, root):
    """The run's training data for the context panels of 1-D/2-D pictures, or a stand-in without examples.

    Sampling never needs the data (the spec and what pictures need are in config.json).
    """
    import torch

    from dulab.data.base import TensorDataset
    from dulab.errors import UserError
    from dulab.evaluation import run_dataset
    from dulab.training.checkpoint import read_json
    from dulab.training.run import read_run_config

    config, spec = read_run_config(run_dir)
    if spec.num_dims <= 2:  # only these pictures show the data
        try:
            return run_dataset(run_dir, "train", root=root)
        except UserError:
            pass
    info = read_json(Path(run_dir) / "config.json").get("data_info", {})
    return TensorDataset(torch.empty((0, *spec.shape)), None, spec, name=config.data.name, info=info)


def cmd_sample(args) -> int:
    import torch

    import dulab
    from dulab import viz
    from dulab.errors import UserError

    if args.num_samples < 1:
        raise UserError("-n must be >= 1")
    device = _device(args.device)
    model = dulab.load(args.run, which=args.which, device=device)
    if not hasattr(model, "sample"):
        raise UserError(f"{type(model).__name__} cannot draw samples")
    data = _picture_data(args.run, args.data_dir)
    out = Path(args.out) if args.out else Path(args.run) / "samples.png"
    g = torch.Generator(device=device).manual_seed(args.seed)
    path = viz.save_samples(model, data, out, num_samples=args.num_samples, generator=g, exact=True)
    print(f"samples: {path}")
    return 0


def cmd_eval(args) -> int:
    import dulab
    from dulab.files import write_json
    from dulab.training.run import resolve_weights

    device = _device(args.device)
    which = resolve_weights(args.run, args.which)
    result = dulab.evaluate(args.run, split=args.split, which=which, root=args.data_dir, device=device,
                            batch_size=args.batch_size, num_samples=args.num_samples, seed=args.seed,
                            sample_quality=False if args.no_sample_quality else None,
                            feature_weights=args.feature_weights, probe_labels_per_class=args.probe_labels_per_class,
                            progress=True)
    if args.which == "auto":
        result["weights"] = f"{which} (auto)"
    print(format_table(result))
    write_json(Path(args.run) / "eval.json", result)
    print(f"wrote {Path(args.run) / 'eval.json'}")
    return 0


def format_table(result: dict) -> str:
    """Two columns, metric and value (floats to 4 decimals)."""
    width = max(len(k) for k in result)
    lines = [f"{'metric':<{width}}  value"]
    for k, v in result.items():
        shown = f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else str(v)
        lines.append(f"{k:<{width}}  {shown}")
    return "\n".join(lines)


def cmd_compare(args) -> int:
    from dulab.compare import compare_runs

    report = compare_runs(args.runs, out_dir=args.out, evaluate_missing=args.evaluate)
    print(report["table"])
    for name in ("compare.json", "compare.md", "compare.html"):
        print(f"wrote {Path(args.out) / name}")
    return 0


def cmd_compress(args) -> int:
    from dulab.compression import compress_file

    out = compress_file(args.run, args.input, args.output, batch_size=args.batch_size, which=args.which)
    print(f"compressed {out['examples']} examples ({out['dims']} dimensions) to {out['bytes']} bytes: "
          f"{out['bits_per_dim']:.4f} bits/dim, {out['dims'] / max(out['seconds'], 1e-9):.0f} dims/s")
    print(f"wrote {args.output}")
    return 0


def cmd_decompress(args) -> int:
    from dulab.compression import decompress_file

    out = decompress_file(args.run, args.input, args.output, which=args.which)
    print(f"restored {out['examples']} examples ({out['dims']} dimensions), "
          f"{out['dims'] / max(out['seconds'], 1e-9):.0f} dims/s")
    print(f"wrote {args.output}")
    return 0


def cmd_score(args) -> int:
    from dulab.config import parse_assignments
    from dulab.scores import score_to_csv

    out = score_to_csv(args.run, args.out, data=args.data, split=args.split, which=args.which,
                       root=args.data_dir, data_options=parse_assignments(args.data_option, "--data-option") or None,
                       batch_size=args.batch_size, device=_device(args.device))
    print(f"scored {out['num_examples']} examples of {out['data']} ({args.split}): mean log-likelihood "
          f"{out['mean_log_prob']:.4f} nats, {out['mean_bpd']:.4f} bits/dim")
    print(f"wrote {args.out}")
    return 0


COMMANDS = {"list": cmd_list, "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval, "resume": cmd_resume,
            "compare": cmd_compare, "compress": cmd_compress, "decompress": cmd_decompress, "score": cmd_score}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dulab`` command; returns the exit status."""
    warnings.filterwarnings("ignore", module="lightning_fabric")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    from dulab.errors import NonFiniteLossError, UserError

    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"dulab {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except FileNotFoundError as e:
        print(f"dulab {args.command}: error: file not found: {e.filename or e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except NonFiniteLossError as e:
        print(f"dulab {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ndulab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `dulab list | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _json(obj) -> str:
    return json.dumps(obj, indent=2)


if __name__ == "__main__":
    sys.exit(main())
