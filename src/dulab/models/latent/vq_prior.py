"""The second stage of VQ-VAE: an autoregressive prior over the code grid of a frozen, trained VQ-VAE.

``dulab train vq_vae ...`` trains the autoencoder under a uniform prior; ``dulab train vq_prior --set vq_run=RUN``
then fits an existing autoregressive model (``transformer`` or ``pixel_cnn`` from ``dulab.models.autoregressive``,
built unchanged on the codes' ``DataSpec``) to the codes of the training images. The model trains on the images
themselves: ``loss(x)`` encodes them with the frozen VQ-VAE (its parameters have ``requires_grad`` off, so the
training task leaves them out of the optimiser) and returns the prior's negative log-likelihood of the codes, so
the training engine needs no change. After training, ``sample()`` draws codes from the prior and decodes them:
images end to end. With a VQ-VAE-2 run the codes are one sequence, the top grid first, so the autoregressive prior
is ``p(top) p(bottom | top)`` (the bottom prior conditioned on the whole top grid); that needs
``prior=transformer`` (a PixelCNN models one image-shaped grid).

Where the frozen VQ-VAE lives: its weights travel with the prior run (they are part of this module's state dict,
so ``model.safetensors`` holds them) and its architecture is copied into the ``vq_model`` field of the prior's
config (filled automatically). ``vq_run`` is stored as an absolute path for provenance only: loading, evaluating or
resuming the prior run never reads it, so the VQ-VAE run may be moved or deleted afterwards.

Reported (nats): ``nats_per_code`` = ``-log p(codes) / n`` (``n`` code positions; for VQ-VAE-2 also per level),
and ``nll`` = ``-log p(codes) - log p(x | codes)``: with the VQ-VAE's deterministic (one-hot) posterior this is the
negative ELBO, an upper bound on ``-log p(x)``, so its bits/dim compare with other likelihood models.

References:
    van den Oord, Vinyals, Kavukcuoglu. "Neural Discrete Representation Learning", NeurIPS 2017, arXiv:1711.00937
    (section 3.2: the prior fitted after training, sampled with ancestral sampling, then decoded).
    Razavi, van den Oord, Vinyals. "Generating Diverse High-Fidelity Images with VQ-VAE-2", NeurIPS 2019,
    arXiv:1906.00446 (a top prior and a bottom prior conditioned on the top codes).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from dulab.config import check_choices, require_at_least, require_fraction
from dulab.data.base import DataSpec
from dulab.distributions import categorical_log_prob
from dulab.errors import UserError
from dulab.models.base import DensityModel
from dulab.models.latent.vq_vae import VQVAE2, _VQModel

__all__ = ["VQPrior", "VQPriorConfig"]


@dataclass
class VQPriorConfig:
    """Hyperparameters of ``VQPrior``.

    Attributes:
        vq_run: the run directory of a trained ``vq_vae`` or ``vq_vae2`` (stored as an absolute path).
        prior: the autoregressive model of the codes, ``transformer`` (embeddings of the code indices; the default,
            and the only choice for VQ-VAE-2) or ``pixel_cnn``.
        num_layers: transformer blocks, or PixelCNN residual blocks.
        embed_dim, num_heads: transformer width and heads.
        num_filters: PixelCNN feature maps (and its head's width).
        dropout: dropout of the prior.
        vq_model: filled in automatically (the frozen VQ-VAE's registry name, hyperparameters and data spec as
            JSON, so the prior run rebuilds it without ``vq_run``); leave it empty.
    """

    vq_run: str = ""
    prior: Literal["transformer", "pixel_cnn"] = "transformer"
    num_layers: int = 4
    embed_dim: int = 64
    num_heads: int = 4
    num_filters: int = 64
    dropout: float = 0.1
    vq_model: str = ""

    def __post_init__(self):
        check_choices(self)
        require_at_least(self, 1, "num_layers", "embed_dim", "num_heads", "num_filters")
        require_fraction(self, "dropout")


def _vq_from_config(config: VQPriorConfig):
    """The frozen VQ-VAE: from ``vq_model`` (architecture only; the weights come from the prior's checkpoint) or
    loaded from the ``vq_run`` directory (architecture and weights)."""
    from dulab.api import build_model

    if config.vq_model:
        try:
            info = json.loads(config.vq_model)
            return build_model(info["name"], DataSpec.from_dict(info["spec"]), **info["hparams"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise UserError(f"vq_model is not what vq_prior writes there ({e}); leave it empty") from None
    if not config.vq_run:
        raise UserError("vq_prior needs a trained VQ-VAE: --set vq_run=RUN, the run directory of"
                        " `dulab train vq_vae ...` (or vq_vae2)")
    path = Path(config.vq_run).expanduser().resolve()
    if not (path / "config.json").is_file():
        raise UserError(f"vq_run={config.vq_run!r} is not a run directory (no config.json); train one with"
                        " `dulab train vq_vae --data DATA --out RUN`")
    from dulab.training.run import load  # reading a run is the training layer's job; imported late (one way)

    config.vq_run = str(path)
    return load(path)


class VQPrior(DensityModel):
    """A ``transformer`` or ``pixel_cnn`` over the codes of a frozen VQ-VAE (or VQ-VAE-2); samples images.

    Args:
        spec: the images (the same data the VQ-VAE was trained on).
        config: ``VQPriorConfig``.
        vq: a trained ``VQVAE``/``VQVAE2`` to use instead of ``config.vq_run`` (copied and frozen).
    """

    Config = VQPriorConfig
    family = "latent"
    train_defaults = {"epochs": 30, "lr": 2e-3, "batch_size": 64, "warmup_steps": 50, "grad_clip": 1.0}

    @classmethod
    def check_spec(cls, spec, config):
        if not spec.is_image:
            raise UserError(f"vq_prior models the codes of images; the data are {spec.describe()}")

    def __init__(self, spec, config=None, *, vq: _VQModel | None = None):
        super().__init__(spec, config)
        from dulab.api import build_model, model_hparams, model_name_of

        c = self.config = dataclasses.replace(self.config)  # filled in below: never the caller's object
        vq = copy.deepcopy(vq) if vq is not None else _vq_from_config(c)
        if not isinstance(vq, _VQModel):
            raise UserError(f"vq_run must hold a vq_vae or vq_vae2 run, it holds a {type(vq).__name__}")
        if (vq.spec.shape, vq.spec.kind, vq.spec.num_levels) != (spec.shape, spec.kind, spec.num_levels):
            raise UserError(f"the VQ-VAE was trained on {vq.spec.describe()} data, these are {spec.describe()}:"
                            " train the prior on the VQ-VAE's dataset")
        c.vq_model = json.dumps({"name": model_name_of(vq), "hparams": model_hparams(vq),
                                 "spec": vq.spec.to_dict()}, sort_keys=True)
        for p in vq.parameters():
            p.requires_grad_(False)
        self.vq = vq.eval()
        self.is_two_level = isinstance(vq, VQVAE2)
        code_spec = vq.prior_spec()
        if c.prior == "pixel_cnn":
            if not code_spec.is_image:
                raise UserError("a VQ-VAE-2 prior models the top and bottom codes as one sequence (the bottom"
                                " conditioned on the top): use prior=transformer")
            hp = {"num_filters": c.num_filters, "num_head_filters": c.num_filters, "num_layers": c.num_layers,
                  "dropout": c.dropout}
        else:
            hp = {"embed_dim": c.embed_dim, "num_heads": c.num_heads, "num_layers": c.num_layers,
                  "dropout": c.dropout}
        self.prior = build_model(c.prior, code_spec, **hp)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vq.eval()  # frozen: never in training mode (no codebook updates, no restarts)
        return self

    # ------------------------------------------------------------------ codes
    @property
    def code_spec(self) -> DataSpec:
        return self.prior.spec

    @torch.no_grad()
    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen VQ-VAE's codes of ``x`` laid out for the prior: ``(B, *code_spec.shape)`` int64."""
        self.check_input(x)
        return self.vq.codes_to_tensor(self.vq.encode(x))

    def encode(self, x: torch.Tensor):
        """The VQ-VAE's code indices (``(B, h, w)``; VQ-VAE-2: ``(top, bottom)``)."""
        return self.vq.encode(x)

    def decode(self, codes, **kwargs):
        """The VQ-VAE's decoder (``VQVAE.decode``)."""
        return self.vq.decode(codes, **kwargs)

    def code_log_prob(self, codes: torch.Tensor) -> torch.Tensor:
        """``log p(codes)`` under the prior, ``codes`` laid out as ``codes(x)`` returns them: ``(B,)`` nats."""
        return self.prior.log_prob(codes)

    def _per_position(self, codes: torch.Tensor) -> torch.Tensor:
        """``log p(c_i | c_<i)`` for every code position: ``(B, n)`` nats (flat code layout)."""
        self.prior.check_input(codes)
        logits = self.prior.conditionals(codes)  # (B, K, *code_shape)
        return categorical_log_prob(logits, codes, dim=1).reshape(codes.shape[0], -1)

    # ------------------------------------------------------------------ likelihood
    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """``log p(codes(x)) + log p(x | codes(x))``: the ELBO with the VQ-VAE's one-hot posterior, a lower bound on
        log p(x): ``(B,)`` nats."""
        c = self.codes(x)
        with torch.no_grad():
            recon = self.vq.log_likelihood_given_codes(x, self.vq.tensor_to_codes(c))
        return self.code_log_prob(c) + recon

    def loss(self, x: torch.Tensor, context=None) -> dict:
        """The prior's NLL of the codes of ``x``, in nats per code, as ``"loss"``.

        Returns:
            ``"loss"`` and ``"nats_per_code"``: ``-log p(codes) / n``; ``"prior_nll"``: ``-log p(codes)`` (nats per
            example); VQ-VAE-2 also ``"nats_per_code_top"`` / ``"nats_per_code_bottom"`` (the bottom's given the
            top). Outside training mode also ``"recon"`` (``-log p(x | codes)``, the frozen decoder's, constant in
            training and so skipped there) and ``"nll"`` = ``prior_nll + recon`` (nats per example, the negative
            ELBO, an upper bound on the NLL of the images).
        """
        c = self.codes(x)
        per = self._per_position(c)  # (B, n)
        n = per.shape[1]
        prior_nll = -per.sum(1).mean()
        out = {"loss": prior_nll / n, "nats_per_code": (prior_nll / n).detach(), "prior_nll": prior_nll.detach()}
        if self.is_two_level:
            (ht, wt), _ = self.vq.grid_shapes
            out["nats_per_code_top"] = -per[:, :ht * wt].mean().detach()
            out["nats_per_code_bottom"] = -per[:, ht * wt:].mean().detach()
        if not self.training:
            with torch.no_grad():
                recon = -self.vq.log_likelihood_given_codes(x, self.vq.tensor_to_codes(c)).mean()
            out["recon"], out["nll"] = recon, prior_nll.detach() + recon
        return out

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def sample_codes(self, num_samples: int, *, generator: torch.Generator | None = None,
                     temperature: float = 1.0) -> torch.Tensor:
        """Codes drawn from the prior: ``(N, *code_spec.shape)`` int64."""
        return self.prior.sample(num_samples, generator=generator, temperature=temperature)

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
               temperature: float = 1.0, use_decoder_noise: bool = False) -> torch.Tensor:
        """Images end to end: codes from the prior, then the frozen decoder (its mode by default, as in the paper;
        a draw from p(x | codes) with ``use_decoder_noise``). Returns ``(N, *event)``."""
        codes = self.vq.tensor_to_codes(self.sample_codes(num_samples, generator=generator, temperature=temperature))
        return self.vq.decode(codes, use_decoder_noise=use_decoder_noise, generator=generator)
