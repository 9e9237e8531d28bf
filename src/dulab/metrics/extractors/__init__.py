"""Offline feature networks for the sample-quality metrics (FID, KID, Inception Score, precision/recall).

``extractor_for(name)`` returns the small classifier shipped for an embedded labelled image set (``EXTRACTORS``;
weights in ``weights/<name>.safetensors``, trained by ``benchmarks/train_extractors.py``), or, given
``feature_weights=PATH``, the standard FID InceptionV3 (Heusel et al. 2017, arXiv:1706.08500) with the weights of a
local pytorch-fid / torch-fidelity file. Every returned module takes images exactly as the dataset holds them
(int64 levels), is in eval mode on CPU with gradients off, and has

- ``forward(x) -> (B, K)`` class logits (softmax of them: the Inception Score's class probabilities),
- ``features(x) -> (B, F)`` penultimate-layer features (FID, KID, precision/recall),
- ``features_and_logits(x)``: both from one pass (the logits are a linear map of the features),
- ``feature_dim`` (F) and ``num_classes`` (K).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from dulab.errors import UserError, closest
from dulab.metrics.extractors.classifier import SmallClassifier
from dulab.metrics.extractors.inception import FIDInceptionV3, load_fid_weights

__all__ = ["extractor_for", "EXTRACTORS", "ExtractorEntry", "load_classifier", "save_classifier", "read_metadata",
           "WEIGHTS_DIR", "SmallClassifier", "FIDInceptionV3", "load_fid_weights"]

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_FORMAT = "dulab.SmallClassifier/1"


@dataclass(frozen=True)
class ExtractorEntry:
    """A shipped extractor: the dataset it was trained on (its default options unless ``options``), its weights
    file, and ``variants``: entries of the same dataset rendered at other shapes (``{(C, H, W): entry}``)."""

    dataset: str
    filename: str
    options: tuple = ()  # (name, value) pairs of the dataset options it was trained with
    variants: tuple = ()  # ((shape, ExtractorEntry), ...)

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / self.filename

    def for_shape(self, shape) -> ExtractorEntry:
        """The variant trained at ``shape`` ``(C, H, W)`` if one ships, else this entry."""
        return dict(self.variants).get(tuple(shape) if shape is not None else None, self)

    def all_entries(self) -> list[ExtractorEntry]:
        """This entry and its variants."""
        return [self] + [entry for _, entry in self.variants]


EXTRACTORS: dict[str, ExtractorEntry] = {
    name: ExtractorEntry(name, f"{name}.safetensors") for name in ("digits", "digits_color", "shapes")
}
EXTRACTORS["sprites"] = ExtractorEntry("sprites", "sprites.safetensors", variants=(
    ((1, 32, 32), ExtractorEntry("sprites", "sprites_32.safetensors", options=(("size", 32),))),))


def save_classifier(model: SmallClassifier, path, **metadata) -> None:
    """Write ``model``'s weights to ``path`` (safetensors) with its hyperparameters and ``metadata`` (JSON values)."""
    from safetensors.torch import save_file

    meta = {"format": _FORMAT, "hparams": json.dumps(model.hparams, sort_keys=True)}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata=meta)


def read_metadata(path) -> dict:
    """The metadata of a classifier weights file, JSON values decoded (``hparams``, ``test_accuracy``, ...)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != _FORMAT:
        raise UserError(f"{str(path)!r} is not a dulab classifier weights file (format {meta.get('format')!r})")
    return {k: (v if k == "format" else json.loads(v)) for k, v in meta.items()}


@functools.lru_cache(maxsize=16)
def _read_classifier(path: str) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    meta = read_metadata(path)
    return meta, load_file(path)


def load_classifier(path) -> SmallClassifier:
    """A ``SmallClassifier`` rebuilt from a weights file written by ``save_classifier``, in eval mode on CPU.

    Args:
        path: the ``.safetensors`` file.
    Returns:
        a fresh module (its own parameters; gradients off); ``.metadata`` holds the file's metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no extractor weights file {str(path)!r}")
    try:
        meta, tensors = _read_classifier(str(path.resolve()))
    except UserError:
        raise
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"cannot read extractor weights {str(path)!r} ({type(e).__name__}: {e})") from None
    model = SmallClassifier(**meta["hparams"])
    model.load_state_dict({k: v.clone() for k, v in tensors.items()}, strict=True)
    model.metadata = meta
    return model.eval().requires_grad_(False)


def extractor_for(dataset_name: str, *, feature_weights: str | None = None, num_levels: int | None = None,
                  shape=None) -> nn.Module:
    """The feature network for samples of ``dataset_name``.

    Args:
        dataset_name: a registered dataset name (``dulab list``).
        feature_weights: path to a local FID InceptionV3 weights file (pytorch-fid's
            ``pt_inception-2015-12-05-6726825d.pth`` or torch-fidelity's ``weights-inception-2015-12-05-*.pth``),
            or to a ``.safetensors`` classifier written by ``benchmarks/train_extractors.py``. When given it is used
            for any dataset, also one with a shipped extractor.
        num_levels: levels of the integer images fed to InceptionV3 (default 256, 8-bit images); ignored by the
            shipped classifiers, which know theirs.
        shape: ``(C, H, W)`` of the images to score: the shipped variant trained at that shape where one exists
            (``sprites`` at ``size=32``), else the dataset's default extractor (``sample_quality`` enlarges
            smaller images by an integer factor to fit it).
    Returns:
        a module in eval mode on CPU: ``forward(x) -> (B, K)`` logits, ``features(x) -> (B, F)``.
    Raises:
        UserError: unknown dataset; no shipped extractor and no ``feature_weights``; a bad weights file.
    """
    if feature_weights is not None:
        if str(feature_weights).endswith(".safetensors"):
            return load_classifier(feature_weights)
        return load_fid_weights(feature_weights, num_levels=256 if num_levels is None else num_levels)
    if dataset_name in EXTRACTORS:
        return load_classifier(EXTRACTORS[dataset_name].for_shape(shape).path)
    from dulab.registry import DATASETS

    shipped = ", ".join(EXTRACTORS)
    if dataset_name not in DATASETS:
        raise UserError(f"unknown dataset {dataset_name!r}: {closest(dataset_name, DATASETS)}")
    raise UserError(f"no shipped feature extractor for {dataset_name!r} (shipped: {shipped}); pass a local "
                    f"InceptionV3 FID weights file (pt_inception-2015-12-05-*.pth) with --feature-weights PATH "
                    f"(Python: feature_weights=PATH)")

