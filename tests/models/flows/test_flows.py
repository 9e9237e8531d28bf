"""Every registered flow (family "flow"): the property tests of DESIGN.md 6.3, 6.1 (grid integration), 6.4 and 6.7,
in float64 on tiny shapes. A model is checked on every tiny spec it accepts (``check_spec``)."""

import pytest
import torch

import dulab
from dulab.bijectors import Coupling, MaskedAutoregressive
from dulab.config import config_fields
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.registry import MODELS, get_model_class
from properties import (
    assert_bijector_inverse,
    assert_checkpoint_roundtrip,
    assert_density_integrates,
    assert_dequantized_density_integrates,
    assert_dequantized_mass,
    assert_discrete_flow_sample_frequencies,
    assert_entropy_consistent,
    assert_grads_finite,
    assert_identity,
    assert_log_det_matches_jacobian,
    assert_same_seed_same_samples,
    perturb_parameters,
)

FLOWS = [name for name, entry in MODELS.items() if entry.family == "flow"]

# Small sizes for whichever of these fields a flow's config has (no per-model special cases).
TINY = {"hidden_sizes": (8,), "hidden_channels": 4, "num_blocks": 0, "num_layers": 2, "num_steps": 2,
        "num_components": 4, "num_scales": 2, "num_squeezes": 1, "num_dequant_layers": 2, "dequant_hidden": 4,
        "rtol": 1e-10, "atol": 1e-10}  # ODE flows: solve to float64 precision where the checks compare to 1e-6

SPECS = {
    "vec1": DataSpec((1,), "continuous"),
    "vec2": DataSpec((2,), "continuous"),
    "img": DataSpec((1, 4, 4), "continuous"),
    "disc_vec": DataSpec((2,), "discrete", 3),
    "disc_img": DataSpec((1, 2, 2), "discrete", 3),
}


def _supports(name, spec, **hparams):
    cls = get_model_class(name)
    try:
        cls.check_spec(spec, cls.Config(**_tiny(name, **hparams)))
    except UserError:
        return False
    return True


def _tiny(name, **hparams):
    fields = config_fields(get_model_class(name).Config)
    return {**{k: v for k, v in TINY.items() if k in fields}, **hparams}


def _model(name, spec_name, perturb=0.05, seed=0, **hparams):
    torch.manual_seed(seed)
    model = dulab.build_model(name, SPECS[spec_name], **_tiny(name, **hparams)).double().eval()
    if perturb:
        perturb_parameters(model, perturb, seed)
    return model


def _cases(*spec_names, **hparams):
    return [(n, s) for s in spec_names for n in FLOWS if _supports(n, SPECS[s], **hparams)]


def _points(spec_name, batch=4, seed=1):
    spec = SPECS[spec_name]
    g = torch.Generator().manual_seed(seed)
    if spec.is_discrete:
        return torch.randint(0, spec.num_levels, (batch, *spec.shape), generator=g)
    return torch.randn(batch, *spec.shape, generator=g, dtype=torch.float64)


class _TransformAsBijector(torch.nn.Module):
    """A flow model's ``transform``/``inverse_and_log_det`` seen through the bijector checkers."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, context=None):
        return self.model.transform(x, context)

    def inverse(self, z, context=None):
        return self.model.inverse_and_log_det(z, context)


@pytest.mark.parametrize("name,spec_name", _cases("vec1", "vec2", "img"))
def test_transform_inverse_round_trip(name, spec_name):
    model = _model(name, spec_name)
    assert_bijector_inverse(_TransformAsBijector(model), _points(spec_name))


@pytest.mark.parametrize("name,spec_name", _cases("vec1", "vec2", "img"))
def test_log_det_matches_autograd_jacobian(name, spec_name):
    model = _model(name, spec_name)
    assert_log_det_matches_jacobian(model.transform, _points(spec_name, batch=2))


@pytest.mark.parametrize("name,spec_name", _cases("vec2", "img"))
def test_zero_initialised_conditioners_are_identities(name, spec_name):
    # Every coupling and autoregressive layer of a freshly built flow starts as the identity with log-det 0.
    model = _model(name, spec_name, perturb=0)
    inputs = []
    hooks = [m.register_forward_pre_hook(lambda mod, args: inputs.append((mod, args[0])))
             for m in model.modules() if isinstance(m, (Coupling, MaskedAutoregressive))]
    with torch.no_grad():
        model.transform(_points(spec_name))
    for h in hooks:
        h.remove()
    for module, x in inputs:
        assert_identity(module, x, None if not model.is_conditional else torch.zeros(len(x), 0))


@pytest.mark.parametrize("name,spec_name", _cases("vec1", "vec2"))
def test_density_integrates_to_one_on_a_grid(name, spec_name):
    # A wide box: a CDF flow's logistic base and input-dependent scales give heavy tails.
    assert_density_integrates(_model(name, spec_name, perturb=0.1), half_width=1000.0,
                              num_points=8000 if spec_name == "vec1" else 500)


@pytest.mark.parametrize("name", [n for n, _ in _cases("vec2")])
def test_samples_log_prob_matches_the_sampling_path(name):
    assert_entropy_consistent(_model(name, "vec2"))


@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
@pytest.mark.parametrize("name,spec_name", _cases("disc_vec", "disc_img"))
def test_dequantized_bound_mass_over_a_tiny_domain(name, spec_name, dequantization):
    # Two-sided: log_prob = log p - log q draw by draw, q is the noise's density, and (D = 2) the importance
    # identity of the bound against quadrature (properties.assert_dequantized_mass).
    model = _model(name, spec_name, perturb=0, dequantization=dequantization)
    perturb_parameters(model.flow, 0.1)
    if model.dequantizer is not None:
        # larger perturbations of the image dequantizer make q(u|x) so peaked inside the box that f / q, though
        # bounded, is too heavy-tailed for a few hundred draws (checked: 0.1 needs ~40000 draws for 5% error)
        perturb_parameters(model.dequantizer, 0.1 if spec_name == "disc_vec" else 0.03, seed=1)
    assert_dequantized_mass(model, num_noise=400 if spec_name == "disc_vec" else 200)


@pytest.mark.parametrize("name", [n for n, _ in _cases("disc_vec")])
def test_dequantized_density_is_normalised_without_logit_margin(name):
    # With logit_alpha = 0 the preprocessing maps [0, K)^D onto all of R^D, so the continuous density carries all
    # the mass: it integrates to 1 over [0, K)^2 (every log-det of transform counted, the preprocessing's too).
    # Every flow, cdf_flow's logistic base included (the logit coordinates resolve its edge spikes). A small
    # perturbation: cdf_flow's input-dependent scales put mass beyond |t| = 30 (0.96% at 0.1, 0.02% at 0.03),
    # which y = K sigmoid(t) cannot reach in float64.
    assert_dequantized_density_integrates(_model(name, "disc_vec", perturb=0.03, logit_alpha=0.0))


@pytest.mark.parametrize("name", [n for n, _ in _cases("disc_vec")])
def test_discrete_sample_frequencies_match_the_dequantized_pmf(name):
    # logit_alpha = 0: every latent draw lands in [0, K)^2, so floored samples follow P(x) = the density's mass
    # on each cell (logit-coordinate quadrature); chi-square over the 9 cells.
    assert_discrete_flow_sample_frequencies(_model(name, "disc_vec", perturb=0.1, logit_alpha=0.0), 6000)


@pytest.mark.parametrize("name,spec_name,hparams", [(n, s, {}) for n, s in _cases("vec2", "img")]
                         + [(n, s, {"dequantization": "variational"}) for n, s in _cases("disc_img")])
def test_gradients_checkpoint_and_seed(name, spec_name, hparams, tmp_path):
    model = _model(name, spec_name, **hparams)
    x = _points(spec_name, batch=8)
    assert_grads_finite(model, x)
    model.eval()
    assert_checkpoint_roundtrip(name, model, x, tmp_path)
    assert_same_seed_same_samples(model)


@pytest.mark.parametrize("name", [n for n, _ in _cases("vec2")])
def test_temperature_scales_the_latent(name):
    model = _model(name, "vec2")
    x = model.sample(5, generator=torch.Generator().manual_seed(3), temperature=0.5)
    z = model.base_sample((5, 2), torch.Generator().manual_seed(3), 0.5)
    assert torch.allclose(x, model.inverse(z), atol=1e-10)
    with pytest.raises(UserError):
        model.sample(2, temperature=0.0)


@pytest.mark.parametrize("name", [n for n, _ in _cases("vec2")])
def test_interpolation_ends_at_the_inputs(name):
    model = _model(name, "vec2")
    x0, x1 = _points("vec2", 3, seed=1), _points("vec2", 3, seed=2)
    path = model.interpolate(x0, x1, num_steps=5)
    assert path.shape == (5, 3, 2)
    assert torch.allclose(path[0], x0, atol=1e-6) and torch.allclose(path[-1], x1, atol=1e-6)


@pytest.mark.parametrize("name", [n for n, _ in _cases("vec2")])
def test_class_context_changes_the_density(name):
    spec = DataSpec((2,), "continuous", None, 3)
    torch.manual_seed(0)
    model = perturb_parameters(dulab.build_model(name, spec, **_tiny(name, use_context=True)).double().eval(), 0.2)
    x = _points("vec2", 3)
    a = model.log_prob(x, context=torch.zeros(3, dtype=torch.long))
    b = model.log_prob(x, context=torch.full((3,), 2))
    assert not torch.allclose(a, b)
    s = model.sample(4, generator=torch.Generator().manual_seed(0), context=torch.tensor([0, 1, 2, 0]))
    assert s.shape == (4, 2)
    with pytest.raises(UserError):
        model.log_prob(x)


def test_discrete_samples_are_levels_in_range():
    for name, spec_name in _cases("disc_img"):
        s = _model(name, spec_name).sample(16, generator=torch.Generator().manual_seed(0))
        assert s.dtype == torch.long and s.shape == (16, 1, 2, 2) and s.min() >= 0 and s.max() < 3


def test_unsupported_data_is_a_user_error():
    with pytest.raises(UserError):
        dulab.build_model("real_nvp", SPECS["vec1"])
    with pytest.raises(UserError):
        dulab.build_model("glow", DataSpec((1, 6, 6), "continuous"), num_squeezes=2)
    with pytest.raises(UserError):
        dulab.build_model("maf", SPECS["vec2"], use_context=True)  # no labels
    with pytest.raises(ValueError):
        dulab.build_model("maf", SPECS["vec2"], transformer="cubic")


def test_glow_actnorm_initialises_during_training_and_survives_reload(tmp_path):
    # Data-dependent actnorm init happens on the first training step, inside the unchanged engine.
    torch.manual_seed(0)
    ds = dulab.datasets.from_array((torch.randn(256, 2) * 3 + 1).numpy())
    run = dulab.train("glow", data=ds, eval_data=ds, epochs=1, out_dir=tmp_path / "run", progress=False,
                      batch_size=64, num_steps=2, hidden_sizes=(8,))
    flags = [int(b) for n, b in run.model.named_buffers() if n.endswith("initialized")]
    assert flags and all(flags)
    loaded = dulab.load(tmp_path / "run").eval()
    x = ds.x[:16]
    assert torch.allclose(loaded.log_prob(x), run.model.eval().log_prob(x))


@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
def test_dequantized_log_prob_takes_a_generator(dequantization):
    # The bound is stochastic (one noise draw); like every stochastic call it takes generator= (DESIGN.md 2).
    spec = DataSpec((1, 2, 2), "discrete", 3)
    model = dulab.build_model("real_nvp", spec, dequantization=dequantization).double()
    x = torch.randint(0, 3, (5, 1, 2, 2), generator=torch.Generator().manual_seed(0))
    a = model.log_prob(x, generator=torch.Generator().manual_seed(7))
    b = model.log_prob(x, generator=torch.Generator().manual_seed(7))
    c = model.log_prob(x, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_glow_multiscale_factor_out():
    # num_squeezes = 2: squeeze, steps, factor out half the channels, squeeze again (the multi-scale path that
    # TINY's num_squeezes = 1 never builds). The flow contract holds across the factored-out latents.
    torch.manual_seed(0)
    spec = DataSpec((1, 4, 4), "continuous")
    model = perturb_parameters(dulab.build_model("glow", spec, **_tiny("glow", num_squeezes=2)).double().eval(), 0.05)
    x = torch.randn(3, 1, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert_bijector_inverse(_TransformAsBijector(model), x)
    assert_log_det_matches_jacobian(model.transform, x[:2])
    assert_entropy_consistent(model, num_samples=64)
