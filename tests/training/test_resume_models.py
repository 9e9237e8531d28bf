"""Bitwise resume for every registered model (DESIGN.md 6.8), through the public API only.

``dulab.train(..., max_steps=k)`` then ``dulab.resume(...)`` must end with exactly the weights of one straight run
(CPU, same seed): every random stream a model draws from while training (MADE's mask draws, dropout, dequantization
noise, data-dependent ActNorm initialisation on the first batch) has to be saved in and restored from the run
directory. Tiny configurations; 8 steps in 2 epochs, stopped after 3 (mid-epoch).
"""

from __future__ import annotations

import numpy as np
import pytest

import dulab
from dulab.config import config_fields
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.registry import MODELS, get_model_class
from properties import assert_resume_equals_straight_run

#: small sizes for whichever of these fields a model's config has, plus the options that exercise its random streams
TINY = {"hidden_sizes": (16,), "hidden_size": 8, "embed_dim": 8, "num_filters": 6, "num_layers": 2,
        "num_head_filters": 6, "first_kernel_size": 3, "num_blocks": 1, "num_res_layers": 1, "attention_dim": 4,
        "num_scales": 1, "num_components": 2, "residual_channels": 4, "skip_channels": 4, "dilation_cycle": 2,
        "num_heads": 2, "hidden_channels": 4, "num_steps": 2, "num_levels": 1, "num_dequant_layers": 1,
        "dequant_hidden": 4}
#: per-model options that turn on a random stream worth guarding (connectivity-agnostic MADE, variational noise)
EXTRA = {"made": {"num_masks": 3, "ordering": "random"}}
# VQ-VAEs: dead-code restarts (random draws) every 2 steps, and the EMA codebook
EXTRA.update({"vq_vae": {"restart_every": 2, "use_ema": True}, "vq_vae2": {"restart_every": 2}})
# VAEs: a KL warm-up still under way at the stop (its step counter is a saved buffer)
EXTRA.update({name: {"kl_warmup_steps": 6} for name in ("vae", "pixel_vae", "hierarchical_vae")})
#: models that cannot be built from hyperparameters alone (they need another run), and where their resume is tested
NEEDS_A_RUN = {"vq_prior": "needs a trained vq_vae run (vq_run=): its bitwise resume is tested in "
                           "tests/models/latent/test_vq_prior.py::test_resume_is_bitwise, which trains one first",
              "latent_ddpm": "needs a trained vae/autoencoder run (latent_run=): its bitwise resume is tested in "
                             "tests/models/diffusion/test_latent_ddpm.py::test_resume_is_bitwise"}
VECTOR, IMAGE = DataSpec((4,), "discrete", 3), DataSpec((1, 4, 4), "discrete", 2)
LABELLED = DataSpec((1, 4, 4), "discrete", 2, 2)  # for models that need labels (class-conditional BigGAN)


def _hparams(name):
    cls = get_model_class(name)
    fields = config_fields(cls.Config)
    hp = {k: v for k, v in TINY.items() if k in fields}
    if "dequantization" in fields:
        hp["dequantization"] = "variational"  # learned noise: the noise stream and q's parameters both matter
    if "dropout" in fields:
        hp["dropout"] = 0.3
    return {**hp, **EXTRA.get(name, {})}


def _spec_for(name):
    cls = get_model_class(name)
    for spec in (VECTOR, IMAGE, LABELLED):
        try:
            cls.check_spec(spec, cls.Config(**_hparams(name)))
        except UserError:
            continue
        return spec
    return None


def _data(spec, n, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, spec.num_levels, size=(n, *spec.shape))
    x[: n // 2, ..., 0] = 0  # some structure, so the gradients are not all noise
    y = np.arange(n) % spec.num_classes if spec.num_classes else None
    return dulab.datasets.from_array(x, y=y, num_levels=spec.num_levels)


CASES = [n for n in MODELS if _spec_for(n) is not None]


def test_every_family_with_a_discrete_model_is_covered():
    assert {"made", "pixel_cnn", "gated_pixel_cnn", "real_nvp", "glow", "cdf_flow"} <= set(CASES)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.skip(reason=NEEDS_A_RUN[n]))
                                  if n in NEEDS_A_RUN else n for n in CASES])
def test_resume_after_k_steps_equals_straight_run(name, tmp_path):
    spec = _spec_for(name)
    assert_resume_equals_straight_run(name, _data(spec, 32, 0), _data(spec, 8, 1), tmp_path, lr=1e-2,
                                      **_hparams(name))
