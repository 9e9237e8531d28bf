"""Explicit tables of what dulab can build: ``MODELS`` and ``DATASETS``.

Each entry names the module and attribute to import (lazily, so ``dulab list`` stays quick). A new model is
one module plus one line here; nothing else changes.

Models: a ``dulab.models.base.Model`` subclass with a ``Config`` dataclass; ``build_model(name, spec, **hparams)``
does ``cls(spec, cls.Config(**hparams))``.
Datasets: a builder ``build(split, root, **options) -> TensorDataset``; its keyword options (with type
annotations) are the dataset's options.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

from dulab.errors import UserError, closest

__all__ = ["MODELS", "DATASETS", "ModelEntry", "DatasetEntry", "get_model_class", "get_dataset_builder",
           "dataset_options"]


@dataclass(frozen=True)
class ModelEntry:
    target: str  # "module:Class"
    family: str


@dataclass(frozen=True)
class DatasetEntry:
    target: str  # "module:function"
    summary: str  # shape and levels, shown by `dulab list` without loading anything
    files: str = ""  # for file-backed datasets: what --data-dir must hold, shown by `dulab list --dataset`


MODELS: dict[str, ModelEntry] = {
    # --- autoregressive (foundation) ---
    "histogram": ModelEntry("dulab.models.autoregressive.histogram:Histogram", "autoregressive"),
    "logistic_mixture": ModelEntry("dulab.models.autoregressive.logistic_mixture:LogisticMixture", "autoregressive"),
    # --- autoregressive (sequence models) ---
    "made": ModelEntry("dulab.models.autoregressive.made:MADE", "autoregressive"),
    "rnn": ModelEntry("dulab.models.autoregressive.rnn:RNN", "autoregressive"),
    "wavenet": ModelEntry("dulab.models.autoregressive.wavenet:WaveNet", "autoregressive"),
    "transformer": ModelEntry("dulab.models.autoregressive.transformer:Transformer", "autoregressive"),
    # --- autoregressive (image models) ---
    "pixel_cnn": ModelEntry("dulab.models.autoregressive.pixel_cnn:PixelCNN", "autoregressive"),
    "gated_pixel_cnn": ModelEntry("dulab.models.autoregressive.gated_pixel_cnn:GatedPixelCNN", "autoregressive"),
    "pixel_cnn_pp": ModelEntry("dulab.models.autoregressive.pixel_cnn_pp:PixelCNNpp", "autoregressive"),
    "pixel_snail": ModelEntry("dulab.models.autoregressive.pixel_snail:PixelSNAIL", "autoregressive"),
    "multiscale_pixel_cnn": ModelEntry("dulab.models.autoregressive.multiscale:MultiscalePixelCNN", "autoregressive"),
    # --- flows ---
    "cdf_flow": ModelEntry("dulab.models.flows.cdf_flow:CDFFlow", "flow"),
    "maf": ModelEntry("dulab.models.flows.maf:MAF", "flow"),
    "iaf": ModelEntry("dulab.models.flows.maf:IAF", "flow"),
    "nice": ModelEntry("dulab.models.flows.nice:NICE", "flow"),
    "real_nvp": ModelEntry("dulab.models.flows.real_nvp:RealNVP", "flow"),
    "glow": ModelEntry("dulab.models.flows.glow:Glow", "flow"),
    "ffjord": ModelEntry("dulab.models.flows.ffjord:FFJORD", "flow"),
    # --- GANs ---
    "gan": ModelEntry("dulab.models.gan.gan:GAN", "gan"),
    "dcgan": ModelEntry("dulab.models.gan.dcgan:DCGAN", "gan"),
    "wgan": ModelEntry("dulab.models.gan.wgan:WGAN", "gan"),
    "wgan_gp": ModelEntry("dulab.models.gan.wgan_gp:WGANGP", "gan"),
    "sngan": ModelEntry("dulab.models.gan.sngan:SNGAN", "gan"),
    "sagan": ModelEntry("dulab.models.gan.sagan:SAGAN", "gan"),
    "biggan": ModelEntry("dulab.models.gan.biggan:BigGAN", "gan"),
    "stylegan": ModelEntry("dulab.models.gan.stylegan:StyleGAN", "gan"),
    # --- latent-variable models and autoencoders ---
    "autoencoder": ModelEntry("dulab.models.latent.autoencoder:Autoencoder", "latent"),
    "vae": ModelEntry("dulab.models.latent.vae:VAE", "latent"),
    "iwae": ModelEntry("dulab.models.latent.vae:IWAE", "latent"),
    "hierarchical_vae": ModelEntry("dulab.models.latent.hierarchical_vae:HierarchicalVAE", "latent"),
    "pixel_vae": ModelEntry("dulab.models.latent.pixel_vae:PixelVAE", "latent"),
    "vq_vae": ModelEntry("dulab.models.latent.vq_vae:VQVAE", "latent"),
    "vq_vae2": ModelEntry("dulab.models.latent.vq_vae:VQVAE2", "latent"),
    "vq_prior": ModelEntry("dulab.models.latent.vq_prior:VQPrior", "latent"),
    # --- score-based and energy-based models ---
    "ddpm": ModelEntry("dulab.models.diffusion.ddpm:DDPM", "diffusion"),
    "latent_ddpm": ModelEntry("dulab.models.diffusion.latent_ddpm:LatentDDPM", "diffusion"),
    "ncsn": ModelEntry("dulab.models.diffusion.ncsn:NCSN", "diffusion"),
    "ebm": ModelEntry("dulab.models.diffusion.ebm:EBM", "energy"),
}

DATASETS: dict[str, DatasetEntry] = {
    # continuous 2-D toys
    "moons": DatasetEntry("dulab.data.toy2d:moons", "2 continuous"),
    "circles": DatasetEntry("dulab.data.toy2d:circles", "2 continuous"),
    "eight_gaussians": DatasetEntry("dulab.data.toy2d:eight_gaussians", "2 continuous, true density"),
    "checkerboard": DatasetEntry("dulab.data.toy2d:checkerboard", "2 continuous, true density"),
    "spirals": DatasetEntry("dulab.data.toy2d:spirals", "2 continuous"),
    "swiss_roll": DatasetEntry("dulab.data.toy2d:swiss_roll", "2 continuous"),
    "face": DatasetEntry("dulab.data.toy2d:face", "2 continuous"),
    "gaussians2d": DatasetEntry("dulab.data.toy2d:gaussians2d", "2 continuous, true density"),
    "ring8": DatasetEntry("dulab.data.toy2d:ring8", "2 continuous, true density"),
    "grid25": DatasetEntry("dulab.data.toy2d:grid25", "2 continuous, true density"),
    # discrete toys
    "discrete1d": DatasetEntry("dulab.data.discrete:discrete1d", "1 discrete, bins levels (20), true pmf"),
    "discrete2d": DatasetEntry("dulab.data.discrete:discrete2d", "2 discrete, bins levels (25), true pmf"),
    # images and text, embedded
    "shapes": DatasetEntry("dulab.data.shapes:shapes", "1x20x20, 2 levels, 4 classes"),
    "digits": DatasetEntry("dulab.data.digits:digits", "1x8x8, 17 levels, 10 classes"),
    "digits_binary": DatasetEntry("dulab.data.digits:digits_binary", "1x8x8, 2 levels, 10 classes"),
    "digits_color": DatasetEntry("dulab.data.digits:digits_color", "3x8x8, 4 levels, 10 classes"),
    "sprites": DatasetEntry("dulab.data.sprites:sprites", "1x64x64, 2 levels, 3 classes, 5 factors (dSprites-style)"),
    "photos": DatasetEntry("dulab.data.photos:photos", "3x32x32, 256 levels, held-out photos (needs scikit-image)"),
    "text": DatasetEntry("dulab.data.text:text", "seq_len chars (64), vocab levels"),
    "digits_ood": DatasetEntry("dulab.data.ood:digits_ood", "1x8x8, 17 levels: blank, constant, shapes or noise (OOD)"),
    # from files (--data-dir / root=)
    "mnist": DatasetEntry("dulab.data.files:mnist", "1x28x28, 256 levels, 10 classes (IDX files)",
                          "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                          "t10k-labels-idx1-ubyte (plain or .gz; also in raw/ or MNIST/raw/)"),
    "fashion_mnist": DatasetEntry("dulab.data.files:fashion_mnist", "1x28x28, 256 levels, 10 classes (IDX files)",
                                  "the four IDX files named as for mnist (plain or .gz; also in raw/ or "
                                  "FashionMNIST/raw/)"),
    "cifar10": DatasetEntry("dulab.data.files:cifar10", "3x32x32, 256 levels, 10 classes (python batches)",
                            "cifar-10-batches-py/ with data_batch_1..data_batch_5 and test_batch"),
    "image_folder": DatasetEntry("dulab.data.files:image_folder", "CxHxW, 2^bits levels, classes = subfolders",
                                 "CLASS/*.png|jpg|jpeg (one subfolder per class) or *.png|jpg|jpeg (no labels)"),
    "npz": DatasetEntry("dulab.data.files:npz", "any, from x (and y) arrays in an .npz file",
                        "one .npz with x (or arr_0) and optional y, or x_train/x_test (and y_train/y_test); "
                        "or --data-option path=FILE.npz"),
}


def _import(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def get_model_class(name: str):
    """The model class registered as ``name``; unknown names raise ``UserError`` with the closest ones."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: {closest(name, MODELS)}")
    return _import(MODELS[name].target)


def get_dataset_builder(name: str):
    """The builder registered as ``name``; unknown names raise ``UserError`` with the closest ones."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: {closest(name, DATASETS)}")
    return _import(DATASETS[name].target)


def dataset_options(builder) -> dict:
    """``{option: (annotation, default)}`` of a dataset builder (its keyword-only parameters)."""
    import typing

    hints = typing.get_type_hints(builder)
    out = {}
    for p in inspect.signature(builder).parameters.values():
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            out[p.name] = (hints.get(p.name), p.default)
    return out
