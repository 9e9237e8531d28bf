"""Every bijector: inverse round trip, log-det against the autograd Jacobian, cancelling log-dets, identity at zero
initialisation, gradients (DESIGN.md 6.3). float64, tiny shapes, seeded."""

import pytest
import torch

from dulab.bijectors import (
    ActNorm,
    AffineScalar,
    BatchNorm,
    Chain,
    Coupling,
    ElementwiseScale,
    FactorOut,
    Inverse,
    InvertibleConv1x1,
    Logit,
    MaskedAutoregressive,
    MixtureCDF,
    Permutation,
    Reshape,
    Reverse,
    Sigmoid,
    Squeeze,
    alternating_mask,
    channel_mask,
    checkerboard_mask,
    make_transformer,
    rational_quadratic_spline,
)
from dulab.nn.coupling_nets import MLP, ConvNet
from properties import assert_bijector_inverse, assert_identity, assert_log_det_matches_jacobian, perturb_parameters

CTX = 2  # conditioning features given to the conditioned bijectors


def _vec_coupling(kind, context=0):
    t = make_transformer(kind, bound=2.0)
    return Coupling(alternating_mask(4), MLP(4, 4 * t.num_params, (8,), context_features=context), t)


def _img_coupling(kind, mask, context=0):
    t = make_transformer(kind, bound=2.0)
    return Coupling(mask, ConvNet(2, 2 * t.num_params, 4, 1, context_channels=context), t)


# name -> (factory, event shape, zero-initialised-is-identity, uses context, input domain)
CASES = {
    "affine_scalar": (lambda: AffineScalar(0.5, 1.0), (3,), False, False, "real"),
    "logit": (lambda: Logit(0.05), (3,), False, False, "unit"),
    "sigmoid": (Sigmoid, (3,), False, False, "real"),
    "elementwise_scale": (lambda: ElementwiseScale((3,)), (3,), True, False, "real"),
    "permutation": (lambda: Permutation(torch.tensor([2, 0, 3, 1])), (4,), False, False, "real"),
    "reverse_channels": (lambda: Reverse(2), (2, 2, 2), False, False, "real"),
    "squeeze": (Squeeze, (2, 4, 4), False, False, "real"),
    "reshape": (lambda: Reshape((2, 2), (4,)), (2, 2), False, False, "real"),
    "actnorm_vector": (lambda: ActNorm(3), (3,), True, False, "real"),
    "actnorm_image": (lambda: ActNorm(2), (2, 3, 3), True, False, "real"),
    "batchnorm_image": (lambda: BatchNorm(2), (2, 3, 3), False, False, "real"),
    "conv1x1_vector": (lambda: InvertibleConv1x1(3), (3,), False, False, "real"),
    "conv1x1_image": (lambda: InvertibleConv1x1(2), (2, 3, 3), False, False, "real"),
    "conv1x1_identity_init": (lambda: InvertibleConv1x1(3, random_init=False), (3,), True, False, "real"),
    "coupling_additive": (lambda: _vec_coupling("additive"), (4,), True, False, "real"),
    "coupling_affine": (lambda: _vec_coupling("affine"), (4,), True, False, "real"),
    "coupling_spline": (lambda: _vec_coupling("spline"), (4,), True, False, "real"),
    "coupling_affine_context": (lambda: _vec_coupling("affine", CTX), (4,), True, True, "real"),
    "coupling_checkerboard": (lambda: _img_coupling("affine", checkerboard_mask(2, 3, 3)), (2, 3, 3), True, False,
                              "real"),
    "coupling_channel_spline": (lambda: _img_coupling("spline", channel_mask(2, 3, 3), CTX), (2, 3, 3), True, True,
                                "real"),
    "maf_affine": (lambda: MaskedAutoregressive(3, (8, 8), make_transformer("affine")), (3,), True, False, "real"),
    "maf_spline_context": (lambda: MaskedAutoregressive(3, (8,), make_transformer("spline", bound=2.0),
                                                        context_features=CTX), (3,), True, True, "real"),
    "iaf_affine": (lambda: Inverse(MaskedAutoregressive(3, (8,), make_transformer("affine"))), (3,), True, False,
                   "real"),
    "mixture_cdf_1d": (lambda: MixtureCDF(1, 3, (8,)), (1,), False, False, "real"),
    "mixture_cdf_2d_gaussian": (lambda: MixtureCDF(2, 3, (8,), component="gaussian", context_features=CTX), (2,),
                                False, True, "real"),
    "factor_out": (lambda: FactorOut(_img_coupling("affine", checkerboard_mask(2, 2, 2))), (4, 2, 2), True, False,
                   "real"),
    "chain": (lambda: Chain([ActNorm(3), InvertibleConv1x1(3), Reverse(3)]), (3,), False, False, "real"),
}


def _inputs(shape, domain, batch=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    if domain == "unit":
        return 0.05 + 0.9 * torch.rand(batch, *shape, generator=g, dtype=torch.float64)
    return 1.5 * torch.randn(batch, *shape, generator=g, dtype=torch.float64)


def _context(uses, batch=3):
    if not uses:
        return None
    return torch.randn(batch, CTX, generator=torch.Generator().manual_seed(5), dtype=torch.float64)


def _build(name, perturb=True):
    torch.manual_seed(0)
    factory, shape, _, uses_context, domain = CASES[name]
    b = factory().double().eval()
    if perturb:
        perturb_parameters(b, 0.3)
    return b, _inputs(shape, domain), _context(uses_context)


@pytest.mark.parametrize("name", list(CASES))
def test_inverse_round_trip_and_log_dets_cancel(name):
    b, x, ctx = _build(name)
    assert_bijector_inverse(b, x, ctx)


@pytest.mark.parametrize("name", list(CASES))
def test_log_det_matches_autograd_jacobian(name):
    b, x, ctx = _build(name)
    if ctx is None:
        assert_log_det_matches_jacobian(lambda v: b(v), x)
    else:
        for i in range(x.shape[0]):  # one example at a time, with its own context row
            assert_log_det_matches_jacobian(lambda v, i=i: b(v, ctx[i:i + 1]), x[i:i + 1])


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if c[2]])
def test_zero_initialisation_is_identity(name):
    b, x, ctx = _build(name, perturb=False)
    assert_identity(b, x, ctx)


@pytest.mark.parametrize("name", [n for n, c in CASES.items() if any(True for _ in c[0]().parameters())])
def test_every_parameter_gets_a_gradient(name):
    b, x, ctx = _build(name)
    b.train()
    y, ld = b(x, ctx)
    (y.square().sum() - ld.sum()).backward()
    missing = [n for n, p in b.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


def test_spline_is_monotone_and_identity_in_the_tails():
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-4, 4, 801, dtype=torch.float64)
    params = torch.randn(1, 3 * 5 - 1, generator=g, dtype=torch.float64).expand(801, -1)
    y, log_d = rational_quadratic_spline(x, params[:, :5], params[:, 5:10], params[:, 10:], bound=2.0)
    assert (y.diff() > 0).all()
    outside = x.abs() > 2
    assert torch.equal(y[outside], x[outside]) and (log_d[outside] == 0).all()
    # The spline maps [-B, B] onto itself and is continuous at the bound.
    assert abs(float(y[x.abs() <= 2].max()) - 2) < 0.05 and abs(float(y[x.abs() <= 2].min()) + 2) < 0.05


def test_actnorm_initialises_from_the_first_training_batch_once():
    torch.manual_seed(0)
    a = ActNorm(3).double()
    x = 3 + 2 * torch.randn(512, 3, dtype=torch.float64)
    a.train()
    y, _ = a(x)
    assert int(a.initialized) == 1
    assert torch.allclose(y.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(y.std(0, unbiased=False), torch.ones(3, dtype=torch.float64), atol=1e-4)
    before = a.bias.clone()
    a(x + 10)  # a second batch does not re-initialise
    assert torch.equal(a.bias, before)
    fresh = ActNorm(3).double()
    fresh.load_state_dict(a.state_dict())  # the flag travels with the checkpoint
    fresh.train()
    fresh(x + 10)
    assert torch.equal(fresh.bias, before)


def test_actnorm_does_not_initialise_in_eval_mode():
    a = ActNorm(2).double().eval()
    a(torch.randn(8, 2, dtype=torch.float64))
    assert int(a.initialized) == 0 and (a.bias == 0).all()
