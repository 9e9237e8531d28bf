"""Shared property checkers, applied to every registered model of the families they fit (DESIGN.md section 6).

Each checker raises ``AssertionError`` with a message saying what broke. They run in float64 where they check
math, on tiny domains, seeded.
"""

from __future__ import annotations

import math

import numpy as np
import torch

import dulab
from dulab.api import model_hparams
from dulab.data.base import DataSpec

__all__ = ["enumerate_domain", "random_levels", "assert_normalised", "assert_sample_frequencies", "assert_grads_finite",
           "assert_checkpoint_roundtrip", "assert_same_seed_same_samples", "TINY_DISCRETE_SPECS"]

#: Tiny discrete domains on which a model's pmf can be summed exactly (DESIGN.md 6.1).
TINY_DISCRETE_SPECS = {
    "vector4x3": DataSpec((4,), "discrete", 3),
    "binary3x3": DataSpec((1, 3, 3), "discrete", 2),
    "levels2x2x3": DataSpec((1, 2, 2), "discrete", 3),
    "rgb2x2binary": DataSpec((3, 2, 2), "discrete", 2),
}


def enumerate_domain(shape, num_levels: int) -> torch.Tensor:
    """Every point of ``{0..K-1}^shape``: ``(K^D, *shape)`` int64, lexicographic."""
    D = math.prod(shape)
    if num_levels**D > 2**20:
        raise ValueError(f"domain of {num_levels}^{D} points is too large to enumerate")
    grid = torch.cartesian_prod(*[torch.arange(num_levels)] * D) if D > 1 else torch.arange(num_levels)[:, None]
    return grid.reshape(-1, *shape)


def random_levels(spec: DataSpec, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` seeded random discrete inputs of ``spec``: ``(n, *spec.shape)`` int64."""
    return torch.randint(0, spec.num_levels, (n, *spec.shape), generator=torch.Generator().manual_seed(seed))


def _context_for(model, n: int, context):
    if context is not None or not getattr(model, "is_conditional", False):
        return context
    return torch.zeros(n, dtype=torch.long)


@torch.no_grad()
def assert_normalised(model, context=None, atol: float = 1e-5, batch: int = 4096) -> None:
    """``logsumexp(log_prob(all points)) == 0`` over the model's whole discrete domain (model cast to float64)."""
    model = model.double().eval()
    spec = model.spec
    xs = enumerate_domain(spec.shape, spec.num_levels)
    lps = []
    for chunk in xs.split(batch):
        lps.append(model.log_prob(chunk, context=_context_for(model, len(chunk), context)))
    total = torch.logsumexp(torch.cat(lps), 0).item()
    assert abs(total) < atol, f"{type(model).__name__}: log of total probability is {total:.3e}, expected 0"


@torch.no_grad()
def assert_sample_frequencies(model, num_samples: int = 20000, seed: int = 0, context=None,
                              p_threshold: float = 1e-4) -> None:
    """Sample frequencies on a tiny domain match ``exp(log_prob)`` (chi-square test, cells pooled to E >= 5)."""
    from scipy import stats

    model = model.double().eval()
    spec = model.spec
    xs = enumerate_domain(spec.shape, spec.num_levels)
    ctx = _context_for(model, len(xs), context)
    probs = torch.exp(model.log_prob(xs, context=ctx)).numpy()
    g = torch.Generator().manual_seed(seed)
    sctx = None if ctx is None else ctx[:1].expand(num_samples)
    samples = model.sample(num_samples, generator=g, context=sctx)
    assert samples.shape == (num_samples, *spec.shape), f"sample shape {tuple(samples.shape)}"
    assert samples.dtype == torch.long, f"samples must be int64 levels, got {samples.dtype}"
    assert samples.min() >= 0 and samples.max() < spec.num_levels, "samples out of range"
    radix = spec.num_levels ** torch.arange(spec.num_dims - 1, -1, -1)
    index = (samples.reshape(num_samples, -1) * radix).sum(1).numpy()
    observed = np.bincount(index, minlength=len(xs)).astype(float)
    expected = probs / probs.sum() * num_samples
    order = np.argsort(expected)  # pool the rarest cells until each pool expects >= 5
    obs_p, exp_p, o_acc, e_acc = [], [], 0.0, 0.0
    for i in order:
        o_acc += observed[i]
        e_acc += expected[i]
        if e_acc >= 5:
            obs_p.append(o_acc)
            exp_p.append(e_acc)
            o_acc = e_acc = 0.0
    if e_acc > 0:
        obs_p[-1] += o_acc
        exp_p[-1] += e_acc
    if len(exp_p) < 2:
        return
    chi2, p = stats.chisquare(obs_p, exp_p)
    assert p > p_threshold, \
        f"{type(model).__name__}: sample frequencies disagree with exp(log_prob) (chi2={chi2:.1f}, p={p:.2e})"


def assert_grads_finite(model, x, context=None) -> None:
    """``loss(x)["loss"].backward()`` gives every parameter a finite, not-all-None gradient."""
    model.train()
    model.zero_grad(set_to_none=True)
    out = model.loss(x, context=_context_for(model, len(x), context))
    assert "loss" in out and out["loss"].ndim == 0, "loss() must return a dict with a scalar 'loss'"
    out["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"parameters without gradient: {missing[:5]}"
    bad = [n for n, p in model.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients: {bad[:5]}"


@torch.no_grad()
def assert_checkpoint_roundtrip(name: str, model, x, tmp_path, context=None) -> None:
    """Save the weights as safetensors, rebuild the model by registry name + config, load: identical log_prob."""
    from dulab.training.checkpoint import load_weights, save_weights

    model.eval()
    path = tmp_path / f"{name}.safetensors"
    save_weights(path, model.state_dict())
    rebuilt = dulab.build_model(name, model.spec, **model_hparams(model)).to(next(model.parameters()).dtype)
    rebuilt.load_state_dict(load_weights(path))
    rebuilt.eval()
    ctx = _context_for(model, len(x), context)
    torch.manual_seed(0)
    a = model.log_prob(x, context=ctx)
    torch.manual_seed(0)
    b = rebuilt.log_prob(x, context=ctx)
    assert torch.equal(a, b), f"{name}: log_prob differs after a checkpoint round trip (max {(a - b).abs().max():.3e})"


@torch.no_grad()
def assert_same_seed_same_samples(model, num_samples: int = 4, context=None) -> None:
    """Two ``sample`` calls with equally seeded generators give identical samples; a different seed differs."""
    model.eval()
    ctx = _context_for(model, num_samples, context)
    a = model.sample(num_samples, generator=torch.Generator().manual_seed(1), context=ctx)
    b = model.sample(num_samples, generator=torch.Generator().manual_seed(1), context=ctx)
    assert torch.equal(a, b), f"{type(model).__name__}: same seed gave different samples"


# ============================================================================================ autoregressive
# Jacobian dependency checks for autoregressive models (DESIGN.md 6.2). The hook every AR model provides:
#
#     model.conditionals_from_onehot(x_onehot, context=None) -> (B, D, P)
#
# ``x_onehot`` is a float ``(B, *event, K)`` continuous relaxation of the int levels (one-hot rows for real
# data; any float values are allowed, so gradients flow), ``D`` runs over the flat event index
# (``x.reshape(B, -1)`` order, NOT generation order) and ``P`` are the parameters of ``p(x_d | x_<d)`` (logits,
# or per-dimension mixture parameters, with any coupling to earlier channels of the same pixel applied).
# It must run the same network code as ``conditionals`` so that the check covers what ``log_prob`` uses.

__all__ += ["dependency_map", "assert_autoregressive_dependencies"]


def dependency_map(model, x, context=None, seed: int = 0) -> torch.Tensor:
    """``dep[b, i, c, j] = sum_k |d <w, params[b, i]> / d onehot[c, j, k]|`` in float64 (``w`` random).

    Args:
        model: an autoregressive model with ``conditionals_from_onehot`` (a float64 copy is used).
        x: ``(B, *event)`` int64 levels where the Jacobian is taken.
        context: class labels for conditional models (zeros when ``None``).
        seed: seed of the random projection ``w`` of each conditional's parameters.
    Returns:
        ``(B, D, B, D)`` float64: how much output dim ``i`` of row ``b`` moves with input ``j`` of row ``c``.
    """
    import copy

    import torch.nn.functional as F

    model = copy.deepcopy(model).double().eval()
    B, D, K = x.shape[0], model.spec.num_dims, model.spec.num_levels
    onehot = F.one_hot(x.long(), K).double().requires_grad_(True)  # (B, *event, K)
    params = model.conditionals_from_onehot(onehot, context=_context_for(model, B, context))
    assert params.ndim == 3 and params.shape[:2] == (B, D), (
        f"conditionals_from_onehot must return (B, D, P) = ({B}, {D}, P), got {tuple(params.shape)}")
    w = torch.randn(params.shape[2], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    dep = torch.zeros(B, D, B, D, dtype=torch.float64)
    for b in range(B):
        for i in range(D):
            (g,) = torch.autograd.grad((params[b, i] * w).sum(), onehot, retain_graph=True, allow_unused=True)
            if g is not None:
                dep[b, i] = g.abs().reshape(B, D, K).sum(-1)
    return dep


def assert_autoregressive_dependencies(model, x, order=None, context=None, strict_each: bool = True) -> None:
    """No conditional sees its own, a later, or another row's input; the allowed inputs do matter.

    Computes ``dependency_map`` (float64 autograd through the model's ``conditionals_from_onehot`` hook, see
    the comment above) and asserts, for every row ``b`` and output dimension ``i`` (flat event index):

    * exactly zero dependency on inputs ``j`` of the same row with ``pos(j) >= pos(i)`` in the generation
      order (the dimension itself, later pixels, and later colour channels of the same pixel);
    * exactly zero dependency on every input of every other row (no leak across batch elements);
    * non-zero dependency on some allowed input for the last dimension of the order, and, when
      ``strict_each``, for every dimension but the first (turn it off for models with random sparse
      connectivity, e.g. MADE with random hidden degrees, where a conditional may legitimately be constant).

    Args:
        model: an autoregressive model (any dtype; a float64 copy is checked).
        x: ``(B, *event)`` int64 levels, ``B >= 2`` to test the batch independence.
        order: ``(D,)`` flat event indices in generation order; ``model.generation_order()`` when ``None``.
        context: class labels for conditional models.
        strict_each: require every non-first conditional to depend on some earlier input.
    """
    B, D = x.shape[0], model.spec.num_dims
    order = model.generation_order() if order is None else torch.as_tensor(order)
    order = order.reshape(-1).long().cpu()
    assert sorted(order.tolist()) == list(range(D)), "order must be a permutation of the flat event indices"
    pos = torch.empty(D, dtype=torch.long)
    pos[order] = torch.arange(D)
    dep = dependency_map(model, x, context=context)
    name = type(model).__name__
    allowed = pos[None, :] < pos[:, None]  # (D_out, D_in): input j comes strictly before output i
    for b in range(B):
        for c in range(B):
            block = dep[b, :, c, :]
            if c != b:
                assert (block == 0).all(), (
                    f"{name}: output of row {b} depends on row {c} (max {block.max():.2e}): rows leak")
                continue
            bad = block.masked_fill(allowed, 0)
            if (bad != 0).any():
                i, j = map(int, (bad != 0).nonzero()[0])
                raise AssertionError(
                    f"{name}: conditional of dim {i} (position {int(pos[i])}) depends on dim {j} "
                    f"(position {int(pos[j])}), which the order forbids ({bad[i, j]:.2e})")
            ok = (block * allowed).sum(1) > 0  # (D,)
            last = int(order[-1])
            assert D == 1 or ok[last], f"{name}: the last conditional (dim {last}) ignores earlier inputs"
            if strict_each:
                missing = [int(i) for i in order[1:] if not ok[i]]
                assert not missing, f"{name}: conditionals of dims {missing[:5]} ignore every earlier input"


# ============================================================================================ flows
# Checkers for bijectors (``dulab.bijectors.Bijector``: ``forward(x, context) -> (y, log_det)``, ``inverse``) and
# flow models (``transform(x) -> (z, log_det)``, ``inverse(z)``, ``sample_and_log_prob``) (DESIGN.md 6.3).

__all__ += ["perturb_parameters", "assert_bijector_inverse", "assert_log_det_matches_jacobian",
            "assert_identity", "assert_density_integrates", "assert_entropy_consistent",
            "assert_dequantized_mass"]


@torch.no_grad()
def perturb_parameters(module, scale: float = 0.05, seed: int = 0):
    """Add ``N(0, scale^2)`` noise to every parameter (seeded), so zero-initialised layers are not the identity."""
    g = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype).to(p.device))
    return module


def assert_bijector_inverse(bijector, x, context=None, atol: float = 1e-6) -> None:
    """``inverse(forward(x)) == x``, ``forward(inverse(y)) == y`` and the two log-dets cancel (float64)."""
    name = type(bijector).__name__
    with torch.no_grad():
        y, ld = bijector(x, context)
        x_back, ld_inv = bijector.inverse(y, context)
        assert ld.shape == (x.shape[0],), f"{name}: log_det must be (B,), got {tuple(ld.shape)}"
        assert torch.allclose(x_back, x, atol=atol, rtol=0), (
            f"{name}: inverse(forward(x)) != x (max {(x_back - x).abs().max():.2e})")
        assert torch.allclose(ld + ld_inv, torch.zeros_like(ld), atol=atol), (
            f"{name}: forward and inverse log-dets do not cancel (max {(ld + ld_inv).abs().max():.2e})")
        y2 = y + 0.1 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=y.dtype)
        x2, _ = bijector.inverse(y2, context)
        y2_back, _ = bijector(x2, context)
        assert torch.allclose(y2_back, y2, atol=atol, rtol=0), (
            f"{name}: forward(inverse(y)) != y (max {(y2_back - y2).abs().max():.2e})")


def assert_log_det_matches_jacobian(fn, x, atol: float = 1e-6) -> None:
    """``fn(x) -> (y, log_det)``: for each example, ``log_det`` equals ``slogdet`` of the autograd Jacobian of the
    flattened map (float64). ``fn`` must treat examples independently (eval mode for batch-norm)."""
    with torch.no_grad():
        _, ld = fn(x)
    for b in range(x.shape[0]):
        xb = x[b:b + 1]

        def flat(v, _shape=xb.shape):
            return fn(v.reshape(_shape))[0].reshape(-1)

        jac = torch.autograd.functional.jacobian(flat, xb.reshape(-1))  # (D, D)
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0, f"example {b}: the Jacobian is singular"
        assert abs(float(logabs) - float(ld[b])) < atol, (
            f"example {b}: log_det {float(ld[b]):.8f} but slogdet of the Jacobian is {float(logabs):.8f}")


@torch.no_grad()
def assert_identity(bijector, x, context=None, atol: float = 1e-10) -> None:
    """A bijector at its zero initialisation maps ``x`` to itself with log-det 0."""
    y, ld = bijector(x, context)
    name = type(bijector).__name__
    assert y.shape == x.shape and torch.allclose(y, x, atol=atol, rtol=0), f"{name}: not the identity at zero init"
    assert torch.allclose(ld, torch.zeros_like(ld), atol=atol), f"{name}: log_det {ld.abs().max():.2e} != 0"


@torch.no_grad()
def assert_density_integrates(model, half_width: float = 12.0, num_points: int | None = None,
                              atol: float = 2e-3) -> None:
    """``exp(log_prob)`` of a continuous 1-D or 2-D model integrates to 1 over ``[-half_width, half_width]^D``
    (float64). The grid is uniform in ``t`` with ``x = sinh(t)``: fine near the origin, where densities have
    detail, and coarse far out, so heavy tails are covered too (midpoint rule with weights ``cosh(t) dt``)."""
    model = model.double().eval()
    D = model.spec.num_dims
    assert D in (1, 2), "grid integration is for 1-D and 2-D models"
    n = num_points or (4000 if D == 1 else 400)
    t_max = math.asinh(half_width)
    dt = 2 * t_max / n
    t = torch.linspace(-t_max + dt / 2, t_max - dt / 2, n, dtype=torch.float64)
    axis, weight = torch.sinh(t), torch.cosh(t) * dt
    if D == 1:
        grid, w = axis[:, None], weight
    else:
        grid, w = torch.cartesian_prod(axis, axis), torch.cartesian_prod(weight, weight).prod(1)
    grid = grid.reshape(-1, *model.spec.shape)
    ctx = _context_for(model, len(grid), None)
    lp = torch.cat([model.log_prob(c, context=None if ctx is None else ctx[:len(c)]) for c in grid.split(8192)])
    total = float((lp.exp() * w).sum())
    assert abs(total - 1) < atol, f"{type(model).__name__}: density integrates to {total:.5f} on the grid, not 1"


@torch.no_grad()
def assert_entropy_consistent(model, num_samples: int = 256, seed: int = 0, rtol: float = 1e-6) -> None:
    """Samples scored through the density path (``log_prob``) agree with the sampling path's log-density
    (``sample_and_log_prob``), example by example and in their mean (the entropy estimate)."""
    model = model.double().eval()
    g = torch.Generator().manual_seed(seed)
    ctx = _context_for(model, num_samples, None)
    x, lp_sampling = model.sample_and_log_prob(num_samples, generator=g, context=ctx)
    lp_density = model.log_prob(x, context=ctx)
    err = (lp_density - lp_sampling).abs().max()
    assert err < rtol * (1 + lp_sampling.abs().max()), (
        f"log_prob of samples disagrees with the sampling path ({err:.2e})")
    entropy = model.entropy(num_samples, generator=torch.Generator().manual_seed(seed), context=ctx)
    assert abs(entropy + float(lp_density.mean())) < 1e-6 * (1 + abs(entropy)), "entropy estimate disagrees"


@torch.no_grad()
def assert_dequantized_mass(model, num_noise: int = 64, seed: int = 0, slack: float = 0.05,
                            exact: bool = False) -> None:
    """For a dequantized flow on a tiny discrete domain (float64): the bound ``b(x) = E[log p(x+u) - log q(u|x)]``
    satisfies ``sum_x exp(b(x)) <= 1 + slack`` (Jensen). With ``exact`` (a flow whose continuous density lives on
    all of ``[0, K)^D``, e.g. logit preprocessing with ``alpha = 0``) the importance estimate
    ``sum_x E[exp(log p(x+u) - log q(u|x))]``, which is then exactly 1, must be 1 within Monte-Carlo error
    (otherwise it is only <= 1). ``num_noise`` noise draws per point, from the global RNG seeded with ``seed``."""
    model = model.double().eval()
    xs = enumerate_domain(model.spec.shape, model.spec.num_levels)
    ctx = _context_for(model, len(xs), None)
    torch.manual_seed(seed)
    lps = torch.stack([model.log_prob(xs, context=ctx) for _ in range(num_noise)])  # (S, N)
    bound_mass = float(lps.mean(0).exp().sum())
    weights = lps.exp()  # (S, N) importance weights p(x+u) / q(u|x)
    mass = float(weights.mean(0).sum())
    # Standard error of the estimate: the exact check allows 5 standard errors (plus ``slack / 10``).
    se = float(weights.var(0).sum().div(num_noise).sqrt())
    name = type(model).__name__
    assert bound_mass <= 1 + slack, f"{name}: sum_x exp(bound) = {bound_mass:.4f} > 1"
    if exact:
        assert abs(mass - 1) < 5 * se + slack / 10, (
            f"{name}: sum_x E[exp(log p - log q)] = {mass:.4f} (standard error {se:.4f}), expected 1")
    else:
        assert mass <= 1 + 5 * se + slack, f"{name}: sum_x E[exp(log p - log q)] = {mass:.4f} > 1 (se {se:.4f})"
