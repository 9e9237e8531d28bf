"""Shared property checkers, applied to every registered model of the families they fit (DESIGN.md section 6).

Each checker raises ``AssertionError`` with a message saying what broke. They run in float64 where they check
math, on tiny domains, seeded.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import numpy as np
import torch

import dulab
from dulab.api import model_hparams
from dulab.data.base import DataSpec

__all__ = ["enumerate_domain", "random_levels", "assert_normalised", "assert_sample_frequencies", "chi_square",
           "assert_grads_finite",
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
    chi2, p = chi_square(observed, probs / probs.sum() * num_samples)
    assert p > p_threshold, \
        f"{type(model).__name__}: sample frequencies disagree with exp(log_prob) (chi2={chi2:.1f}, p={p:.2e})"


def chi_square(observed, expected, min_expected: float = 5.0) -> tuple[float, float]:
    """Pearson's chi-square test of counts against expected counts, the rarest cells pooled until each pool expects
    ``>= min_expected`` (the usual validity rule). Returns ``(chi2, p_value)``.

    Raises:
        ValueError: fewer than 2 pooled cells remain (the test would say nothing: draw more samples).
    """
    from scipy import stats

    observed, expected = np.asarray(observed, dtype=float), np.asarray(expected, dtype=float)
    assert observed.shape == expected.shape and abs(observed.sum() - expected.sum()) < 1e-6 * observed.sum(), \
        "observed and expected counts must have the same shape and total"
    obs_p, exp_p, o_acc, e_acc = [], [], 0.0, 0.0
    for i in np.argsort(expected):  # pool the rarest cells until each pool expects >= min_expected
        o_acc += observed[i]
        e_acc += expected[i]
        if e_acc >= min_expected:
            obs_p.append(o_acc)
            exp_p.append(e_acc)
            o_acc = e_acc = 0.0
    if e_acc > 0 and obs_p:
        obs_p[-1] += o_acc
        exp_p[-1] += e_acc
    if len(exp_p) < 2:
        raise ValueError(f"a chi-square test needs >= 2 cells expecting >= {min_expected} counts, got {len(exp_p)}:"
                         " draw more samples")
    chi2, p = stats.chisquare(obs_p, exp_p)
    return float(chi2), float(p)


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
def assert_same_seed_same_samples(model, num_samples: int = 4, context=None, num_differ: int = 64) -> None:
    """Two ``sample`` calls with equally seeded generators give identical samples; a different seed differs.

    The "differs" half draws ``max(num_samples, num_differ)`` samples per seed, so two seeds of a non-degenerate
    model coincide by chance with negligible probability (for a tiny binary domain of 8 points and a model giving
    no point more than 1/2, at most ``(1/2)^64``).
    """
    model.eval()
    ctx = _context_for(model, num_samples, context)
    a = model.sample(num_samples, generator=torch.Generator().manual_seed(1), context=ctx)
    b = model.sample(num_samples, generator=torch.Generator().manual_seed(1), context=ctx)
    assert torch.equal(a, b), f"{type(model).__name__}: same seed gave different samples"
    n = max(num_samples, num_differ)
    ctx = _context_for(model, n, None if context is None else torch.as_tensor(context).reshape(-1)[:1].expand(n))
    c = model.sample(n, generator=torch.Generator().manual_seed(1), context=ctx)
    d = model.sample(n, generator=torch.Generator().manual_seed(2), context=ctx)
    assert not torch.equal(c, d), f"{type(model).__name__}: seeds 1 and 2 gave the same {n} samples (generator unused?)"


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


def dependency_map(model, x, context=None, seed: int = 0, relaxation: torch.Tensor | None = None) -> torch.Tensor:
    """``dep[b, i, c, j] = sum_k |d <w, params[b, i]> / d onehot[c, j, k]|`` in float64 (``w`` random).

    Args:
        model: an autoregressive model with ``conditionals_from_onehot`` (a float64 copy is used).
        x: ``(B, *event)`` int64 levels where the Jacobian is taken.
        context: class labels for conditional models (zeros when ``None``).
        seed: seed of the random projection ``w`` of each conditional's parameters.
        relaxation: ``(B, *event, K)`` float point to take the Jacobian at instead of ``one_hot(x)``.
    Returns:
        ``(B, D, B, D)`` float64: how much output dim ``i`` of row ``b`` moves with input ``j`` of row ``c``.
    """
    import copy

    import torch.nn.functional as F

    model = copy.deepcopy(model).double().eval()
    B, D, K = x.shape[0], model.spec.num_dims, model.spec.num_levels
    onehot = F.one_hot(x.long(), K).double() if relaxation is None else relaxation.double()
    onehot = onehot.detach().requires_grad_(True)  # (B, *event, K)
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


def assert_autoregressive_dependencies(model, x, order=None, context=None, strict_each: bool = True,
                                       num_points: int = 3, seed: int = 0) -> None:
    """No conditional sees its own, a later, or another row's input; the allowed inputs do matter.

    Computes ``dependency_map`` (float64 autograd through the model's ``conditionals_from_onehot`` hook, see
    the comment above) at ``num_points`` points: the one-hot rows of ``x`` and ``num_points - 1`` seeded random
    relaxations (each row a random mixture of the one-hot row and a random positive vector), so that a unit that
    happens to be dead (a ReLU at zero) at one point cannot hide a leak. It asserts, at every point, for every row
    ``b`` and output dimension ``i`` (flat event index):

    * exactly zero dependency on inputs ``j`` of the same row with ``pos(j) >= pos(i)`` in the generation
      order (the dimension itself, later pixels, and later colour channels of the same pixel);
    * exactly zero dependency on every input of every other row (no leak across batch elements);
    * non-zero dependency (at some point) on some allowed input for the last dimension of the order, and, when
      ``strict_each``, for every dimension but the first (turn it off for models with random sparse
      connectivity, e.g. MADE with random hidden degrees, where a conditional may legitimately be constant).

    Args:
        model: an autoregressive model (any dtype; a float64 copy is checked).
        x: ``(B, *event)`` int64 levels, ``B >= 2`` to test the batch independence.
        order: ``(D,)`` flat event indices in generation order; ``model.generation_order()`` when ``None``.
        context: class labels for conditional models.
        strict_each: require every non-first conditional to depend on some earlier input.
        num_points: points where the Jacobian is taken (the one-hot ``x`` first).
        seed: seed of the random relaxations and projections.
    """
    B, D = x.shape[0], model.spec.num_dims
    order = model.generation_order() if order is None else torch.as_tensor(order)
    order = order.reshape(-1).long().cpu()
    assert sorted(order.tolist()) == list(range(D)), "order must be a permutation of the flat event indices"
    pos = torch.empty(D, dtype=torch.long)
    pos[order] = torch.arange(D)
    import torch.nn.functional as F

    K = model.spec.num_levels
    onehot = F.one_hot(x.long(), K).double()
    g = torch.Generator().manual_seed(seed)
    points = [onehot] + [0.5 * onehot + torch.rand(onehot.shape, generator=g, dtype=torch.float64)
                         for _ in range(num_points - 1)]
    maps = [dependency_map(model, x, context=context, seed=seed + n, relaxation=r) for n, r in enumerate(points)]
    name = type(model).__name__
    allowed = pos[None, :] < pos[:, None]  # (D_out, D_in): input j comes strictly before output i
    for n, dep in enumerate(maps):
        where = "at the one-hot input" if n == 0 else f"at random relaxation {n}"
        for b in range(B):
            for c in range(B):
                block = dep[b, :, c, :]
                if c != b:
                    assert (block == 0).all(), (
                        f"{name}: output of row {b} depends on row {c} (max {block.max():.2e}) {where}: rows leak")
                    continue
                bad = block.masked_fill(allowed, 0)
                if (bad != 0).any():
                    i, j = map(int, (bad != 0).nonzero()[0])
                    raise AssertionError(
                        f"{name}: conditional of dim {i} (position {int(pos[i])}) depends on dim {j} "
                        f"(position {int(pos[j])}), which the order forbids ({bad[i, j]:.2e}) {where}")
    dep = torch.stack(maps).abs().sum(0)
    for b in range(B):
        block = dep[b, :, b, :]
        ok = (block * allowed).sum(1) > 0  # (D,)
        last = int(order[-1])
        assert D == 1 or ok[last], f"{name}: the last conditional (dim {last}) ignores earlier inputs"
        if strict_each:
            missing = [int(i) for i in order[1:] if not ok[i]]
            assert not missing, f"{name}: conditionals of dims {missing[:5]} ignore every earlier input"


# ============================================================================================ AR sampling
# Checks of the samplers of autoregressive models through the distributions they draw from. Every sampler of
# dulab.models draws through ``dulab.distributions.categorical_sample`` (a softmax over logits / temperature) or
# ``discretized_logistic_mixture_sample``; ``record_draws`` wraps both wherever a dulab module imported them and
# records, for each call, the log-pmf ``(B, K)`` over the K levels that the call samples from.

__all__ += ["record_draws", "enumerated_conditionals", "assert_cached_sampling_matches_naive",
            "assert_sampler_draws_from_log_prob"]

_DRAW_FUNCTIONS = ("categorical_sample", "discretized_logistic_mixture_sample")


@contextlib.contextmanager
def record_draws():
    """Context manager yielding a list that fills with ``(kind, log_pmf)`` per draw call of any dulab sampler.

    ``kind`` is ``"categorical"`` (``log_pmf = log_softmax(logits / temperature)``, float64) or ``"mixture"``
    (the discretized logistic mixture's pmf over ``0..K-1`` from the parameters passed, i.e. after any
    temperature the caller applied). ``log_pmf`` is ``(B, K)`` float64, one row per drawn value.
    """
    import sys

    import pytest
    import torch.nn.functional as F

    from dulab import distributions

    originals = {name: getattr(distributions, name) for name in _DRAW_FUNCTIONS}
    log: list[tuple[str, torch.Tensor]] = []

    def categorical(logits, generator=None, temperature=1.0):
        lp = F.log_softmax(logits.detach().double() / temperature, dim=-1)
        log.append(("categorical", lp.reshape(-1, lp.shape[-1])))
        return originals["categorical_sample"](logits, generator, temperature)

    def mixture(logit_weights, means, log_scales, num_levels, generator=None):
        levels = torch.arange(num_levels, device=means.device).view(-1, *[1] * (means.dim() - 1))  # (K, 1..)
        lp = distributions.discretized_logistic_mixture_log_prob(
            levels.expand(num_levels, *means.shape[:-1]), logit_weights.double(), means.double(),
            log_scales.double(), num_levels)  # (K, ...)
        log.append(("mixture", lp.reshape(num_levels, -1).T))
        return originals["discretized_logistic_mixture_sample"](logit_weights, means, log_scales, num_levels,
                                                                generator)

    wrappers = {"categorical_sample": categorical, "discretized_logistic_mixture_sample": mixture}
    with pytest.MonkeyPatch.context() as mp:
        for module in [m for n, m in list(sys.modules.items()) if n == "dulab" or n.startswith("dulab.")]:
            for name, fn in originals.items():
                if getattr(module, name, None) is fn:
                    mp.setattr(module, name, wrappers[name])
        yield log


def _draws(sampler, num_samples, seed, **kwargs):
    with record_draws() as log:
        x = sampler(num_samples, generator=torch.Generator().manual_seed(seed), **kwargs)
    return x, log


@torch.no_grad()
def assert_cached_sampling_matches_naive(model, num_samples: int = 4, seed: int = 0, temperature: float = 1.0,
                                         atol: float = 1e-9, **kwargs) -> None:
    """``model.sample`` (the cached sampler) draws from the same conditionals as ``model.naive_sample`` (one full
    forward pass per dimension), draw call by draw call (log-pmfs within ``atol``, float64), and draws the same
    values from equally seeded generators. ``kwargs`` (``context``, ``given``, ``given_mask``) go to both."""
    name = type(model).__name__
    a, log_a = _draws(model.sample, num_samples, seed, temperature=temperature, **kwargs)
    b, log_b = _draws(model.naive_sample, num_samples, seed, temperature=temperature, **kwargs)
    assert log_b, f"{name}: naive_sample made no recorded draw (it must draw through dulab.distributions)"
    assert len(log_a) == len(log_b), f"{name}: cached sampler made {len(log_a)} draw calls, naive {len(log_b)}"
    for t, ((kind_a, lp_a), (kind_b, lp_b)) in enumerate(zip(log_a, log_b)):
        assert kind_a == kind_b and lp_a.shape == lp_b.shape, f"{name}: draw {t} differs in kind or shape"
        err = float((lp_a - lp_b).abs().max())
        assert err <= atol, (f"{name}: draw {t}: cached conditionals differ from naive by {err:.2e} in log-probability"
                             f" (temperature {temperature})")
    assert torch.equal(a, b), f"{name}: cached and naive samplers drew different values from the same seed"


@torch.no_grad()
def enumerated_conditionals(model, x, order=None, context=None) -> torch.Tensor:
    """The model's own conditionals ``log p(x_t = k | x_<t)`` of the generation order at the rows of ``x``,
    from ``log_prob`` of every point of the (tiny) domain: the joint marginalised over the later dimensions.

    Args:
        model: an autoregressive model on a domain small enough to enumerate (a float64 copy is used).
        x: ``(B, *event)`` int64 points (their prefixes are conditioned on).
        order: flat event indices in generation order (``model.generation_order()``).
        context: one class label for conditional models (the same for all rows).
    Returns:
        ``(D, B, K)`` float64: row ``t`` is the conditional of the ``t``-th generated dimension.
    """
    import copy

    model = copy.deepcopy(model).double().eval()
    spec = model.spec
    K, D = spec.num_levels, spec.num_dims
    order = (model.generation_order() if order is None else torch.as_tensor(order)).reshape(-1).long().cpu()
    xs = enumerate_domain(spec.shape, K)
    ctx = _context_for(model, len(xs), None if context is None else torch.as_tensor(context).expand(len(xs)))
    joint = model.log_prob(xs, context=ctx).reshape([K] * D).permute(*order.tolist())  # axes in generation order
    seq = x.reshape(x.shape[0], -1)[:, order].cpu()  # (B, D) values in generation order
    out = torch.empty(D, x.shape[0], K, dtype=torch.float64)
    for t in range(D):
        marginal = joint.logsumexp(tuple(range(t + 1, D))) if t + 1 < D else joint  # (K,) * (t + 1)
        prefix = (seq[:, :t] * K ** torch.arange(t - 1, -1, -1)).sum(1) if t else torch.zeros(len(seq), dtype=int)
        rows = marginal.reshape(-1, K)[prefix]  # (B, K)
        out[t] = rows - rows.logsumexp(1, keepdim=True)
    return out


@torch.no_grad()
def assert_sampler_draws_from_log_prob(model, sampler: str = "sample", num_samples: int = 6, seed: int = 0,
                                       temperatures=(1.0, 0.5, 2.0), atol: float = 1e-8, context=None) -> None:
    """On a tiny domain, every draw of ``model.<sampler>`` uses the model's own conditional, tempered.

    At temperature 1 each draw's log-pmf equals ``log p(x_t | x_<t)`` from ``enumerated_conditionals`` (the
    joint of ``log_prob``, marginalised) at the prefix actually sampled. At temperature ``T`` a softmax draw must
    use ``p^(1/T) / Z`` exactly (softmax of logits / T). A mixture draw (PixelCNN++) defines its own tempering
    (weights / T, scales * T); for it, and for every draw, ``T != 1`` must change the conditionals and ``T < 1``
    must lower their mean entropy, compared at the same prefixes with ``T = 1`` (for softmax draws this is
    Boltzmann's monotone entropy in ``T``; for ``T > 1`` a discretized logistic with open edge bins may move mass
    into the edges and lose entropy, so only ``T < 1`` is checked that way).
    """
    name = type(model).__name__
    fn = getattr(model, sampler)
    ctx = None if context is None else torch.as_tensor(context).reshape(1).expand(num_samples)
    D = model.spec.num_dims
    for T in temperatures:
        x, log = _draws(fn, num_samples, seed, temperature=T, **({} if ctx is None else {"context": ctx}))
        assert len(log) == D, f"{name}.{sampler}: {len(log)} draw calls for {D} dimensions"
        ref = enumerated_conditionals(model, x, context=None if context is None else ctx[0])  # (D, B, K)
        for t, (kind, lp) in enumerate(log):
            assert lp.shape == ref[t].shape, f"{name}.{sampler}: draw {t} has shape {tuple(lp.shape)}"
            if T == 1.0 or kind == "categorical":
                want = torch.log_softmax(ref[t] / T, dim=1)
                err = float((lp - want).abs().max())
                assert err <= atol, (f"{name}.{sampler}: draw {t} at temperature {T} is not the model's "
                                     f"{'tempered ' if T != 1 else ''}conditional (max log-pmf error {err:.2e})")
        if T != 1.0:
            change = max(float((lp - ref[t]).abs().max()) for t, (_, lp) in enumerate(log))
            assert change > 1e-3, f"{name}.{sampler}: temperature {T} leaves every conditional unchanged ({change:.1e})"
        if T < 1.0:
            h_t = torch.stack([-(lp.exp() * lp).sum(1) for _, lp in log]).mean()
            h_1 = (-(ref.exp() * ref).sum(2)).mean()
            assert h_t < h_1, (f"{name}.{sampler}: temperature {T} does not sharpen: mean conditional entropy "
                               f"{float(h_t):.4f} vs {float(h_1):.4f} at temperature 1")


# ============================================================================================ flows
# Checkers for bijectors (``dulab.bijectors.Bijector``: ``forward(x, context) -> (y, log_det)``, ``inverse``) and
# flow models (``transform(x) -> (z, log_det)``, ``inverse(z)``, ``sample_and_log_prob``) (DESIGN.md 6.3).

__all__ += ["perturb_parameters", "assert_bijector_inverse", "assert_log_det_matches_jacobian",
            "assert_identity", "assert_density_integrates", "assert_entropy_consistent",
            "assert_dequantized_mass", "assert_dequantized_density_integrates", "dequantized_pmf",
            "assert_discrete_flow_sample_frequencies"]


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


def _box(u: torch.Tensor) -> torch.Tensor:
    """``f(u) = 1`` on the inner box ``[0.1, 0.9]^D`` of the unit cube, 0 elsewhere: ``(N, D) -> (N,)`` float64.

    Zero near the faces of the cube, where a logit-normal ``q(u | x)`` vanishes, so ``f / q`` stays bounded and
    importance estimates have finite variance; ``int f = 0.8^D`` exactly.
    """
    return ((u > 0.1) & (u < 0.9)).all(1).double()


@torch.no_grad()
def _continuous_log_density(model, y: torch.Tensor) -> torch.Tensor:
    """log-density of a dequantized flow on its continuous space ``[0, K)^D`` at float points ``y``: ``(B,)``."""
    z, log_det = model.transform(y)
    return model.base_log_prob(z) + log_det


@torch.no_grad()
def assert_dequantized_mass(model, num_noise: int = 400, seed: int = 0, num_se: float = 5.0,
                            quadrature_points: int = 24) -> None:
    """The dequantized bound of a flow on a tiny discrete domain, checked two-sided (float64).

    For every point ``x`` of the domain and ``num_noise`` noise draws ``u`` (``generator`` seeded with ``seed``;
    ``log_prob`` and ``dequantize`` draw the same ``u`` from equal seeds):

    1. ``log_prob(x) == log p(x + u) - log q(u | x)`` draw by draw, with ``log p`` the flow's continuous density
       (``transform`` + ``base_log_prob``) and ``log q`` from ``dequantize`` (0 for uniform noise): nothing
       dropped, nothing added (within 1e-9).
    2. ``exp(log q)`` is the density of the drawn ``u``: ``E_q[f(u) / q(u | x)] = int f = 0.8^D`` (``_box``),
       summed over the points, within ``num_se`` standard errors (finite variance: ``f / q`` is bounded).
    3. For ``D <= 2``, the importance identity of the bound itself: ``E_q[f(u) exp(log_prob(x))] =
       int f(u) p(x + u) du`` (summed over the points), the right side by Gauss-Legendre quadrature of the
       continuous density, within ``num_se`` standard errors; and Jensen:
       ``sum_x exp(mean log_prob(x)) <= sum_x P(x)`` with ``P(x) = int_[0,1)^D p(x + u) du`` (quadrature), which
       is the mass of ``[0, K)^D`` and so ``<= 1``.
    """
    model = model.double().eval()
    name = type(model).__name__
    spec = model.spec
    D = spec.num_dims
    xs = enumerate_domain(spec.shape, spec.num_levels)  # (N, *event)
    N = len(xs)
    xr = xs.repeat(num_noise, *[1] * len(spec.shape))  # (S * N, *event), draw s of point n at row s * N + n
    lp = model.log_prob(xr, generator=torch.Generator().manual_seed(seed))
    y, log_q = model.dequantize(xr, generator=torch.Generator().manual_seed(seed))
    u = (y - xr).reshape(len(xr), -1)  # (S * N, D)
    assert ((u >= 0) & (u <= 1)).all(), f"{name}: dequantization noise outside [0, 1]"
    want = _continuous_log_density(model, y) - log_q
    err = float((lp - want).abs().max())
    assert err < 1e-9, f"{name}: log_prob differs from log p(x + u) - log q(u | x) by {err:.2e}"

    def check_mean(values, expected, what):  # values (S * N,): sum over the points of the per-point means
        v = values.reshape(num_noise, N)
        total, want = float(v.mean(0).sum()), float(expected.sum())
        se = float(v.var(0).sum().div(num_noise).sqrt())  # the points' noise draws are independent
        assert abs(total - want) < num_se * se + 1e-9, (
            f"{name}: sum_x {what} is {total:.5f}, expected {want:.5f} ({abs(total - want) / se:.1f} standard "
            f"errors, {num_noise} draws per point)")

    f = _box(u)
    check_mean(f * torch.exp(-log_q), torch.full((N,), 0.8**D, dtype=torch.float64), "E_q[f(u) / q(u|x)]")
    if D > 2:
        return
    nodes, weights = np.polynomial.legendre.leggauss(quadrature_points)
    nodes, weights = torch.from_numpy(nodes), torch.from_numpy(weights)

    def integral(lo, hi, fn):  # int over [lo, hi]^D of fn(u) p(x + u) du for every x: (N,)
        t = (lo + hi) / 2 + (hi - lo) / 2 * nodes
        w = weights * (hi - lo) / 2
        grid = torch.cartesian_prod(*[t] * D).reshape(-1, D) if D > 1 else t[:, None]  # (Q, D)
        wq = torch.cartesian_prod(*[w] * D).prod(1) if D > 1 else w
        pts = (xs.reshape(N, 1, D).double() + grid[None]).reshape(-1, *spec.shape)  # (N * Q, *event)
        dens = _continuous_log_density(model, pts).exp().reshape(N, -1)
        return (dens * (fn(grid) * wq)[None]).sum(1)

    ref = integral(0.1, 0.9, lambda g: torch.ones(len(g), dtype=torch.float64))
    check_mean(f * lp.exp(), ref, "E_q[f(u) exp(log_prob(x))] (against quadrature)")
    # P(x) on [0, 1)^D in three panels per axis, so the quadrature resolves the density's edge behaviour
    edges = [0.0, 0.1, 0.9, 1.0]
    panels = torch.zeros(N, dtype=torch.float64)
    for combo in itertools.product(range(3), repeat=D):
        lo = torch.tensor([edges[i] for i in combo], dtype=torch.float64)
        hi = torch.tensor([edges[i + 1] for i in combo], dtype=torch.float64)
        t = (lo + hi) / 2 + (hi - lo) / 2 * nodes[:, None]  # (Q, D)
        w = weights[:, None] * (hi - lo) / 2
        grid = torch.cartesian_prod(*t.T).reshape(-1, D) if D > 1 else t
        wq = torch.cartesian_prod(*w.T).prod(1) if D > 1 else w[:, 0]
        pts = (xs.reshape(N, 1, D).double() + grid[None]).reshape(-1, *spec.shape)
        panels += (_continuous_log_density(model, pts).exp().reshape(N, -1) * wq[None]).sum(1)
    mass = float(panels.sum())
    assert mass <= 1 + 1e-4, f"{name}: the continuous density has mass {mass:.5f} > 1 on [0, K)^D"
    bound = lp.reshape(num_noise, N).mean(0)
    bound_se = lp.reshape(num_noise, N).std(0) / math.sqrt(num_noise)
    jensen = float((bound - num_se * bound_se).exp().sum())
    assert jensen <= mass + 1e-4, f"{name}: sum_x exp(bound(x)) = {jensen:.5f} exceeds the mass {mass:.5f} (Jensen)"


def _logit_grid(model, num_points: int | None):
    """Quadrature of ``[0, K)^D`` in the logit coordinates ``t in [-30, 30]^D`` (``y = K sigmoid(t)``): per axis,
    Gauss-Legendre panels between the breakpoints -30, -10, -4, 4, 10, 30 and the level boundaries
    ``t = logit(k / K)`` (so every node lies inside one cell). Returns points ``(P, *event)``, weights ``dy``
    ``(P,)`` and each point's cell index into ``enumerate_domain`` ``(P,)``."""
    spec = model.spec
    D, K = spec.num_dims, spec.num_levels
    assert D in (1, 2), "grid integration is for 1-D and 2-D models"
    n = num_points or (64 if D == 1 else 32)  # nodes per panel
    level_edges = [math.log(k / (K - k)) for k in range(1, K)]
    breaks = sorted({-30.0, -10.0, -4.0, 4.0, 10.0, 30.0, *level_edges})
    nodes, weights = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(n))
    ts, dts, levels = [], [], []
    for a, b in zip(breaks[:-1], breaks[1:]):
        ts.append((a + b) / 2 + (b - a) / 2 * nodes)
        dts.append(weights * (b - a) / 2)
        levels.append(torch.full((n,), sum(e <= (a + b) / 2 for e in level_edges)))
    t, dt, lev = torch.cat(ts), torch.cat(dts), torch.cat(levels)
    y1, w1 = K * torch.sigmoid(t), K * torch.sigmoid(t) * torch.sigmoid(-t) * dt
    if D == 1:
        return y1.reshape(-1, *spec.shape), w1, lev
    grid, w = torch.cartesian_prod(y1, y1), torch.cartesian_prod(w1, w1).prod(1)
    cell = torch.cartesian_prod(lev, lev) @ torch.tensor([K, 1])
    return grid.reshape(-1, *spec.shape), w, cell


@torch.no_grad()
def dequantized_pmf(model, num_points: int | None = None) -> torch.Tensor:
    """``P(x) = int_{x + [0, 1)^D} p(y) dy`` for every point of the domain (``enumerate_domain`` order), by the
    quadrature in logit coordinates (see ``assert_dequantized_density_integrates``); ``(K^D,)`` float64."""
    model = model.double().eval()
    spec = model.spec
    grid, w, cell = _logit_grid(model, num_points)
    lp = torch.cat([_continuous_log_density(model, c) for c in grid.split(8192)])
    return torch.zeros(spec.num_levels ** spec.num_dims, dtype=torch.float64).index_add_(0, cell, lp.exp() * w)


@torch.no_grad()
def assert_dequantized_density_integrates(model, num_points: int | None = None, atol: float = 2e-3) -> None:
    """With ``logit_alpha = 0`` the preprocessing maps ``[0, K)^D`` onto all of ``R^D``, so the continuous density
    of a dequantized flow must integrate to 1 over ``[0, K)^D`` (``D <= 2``, float64). Integrated in the logit
    coordinates, ``y = K sigmoid(t)`` with ``dy = K sigmoid(t) sigmoid(-t) dt``, Gauss-Legendre panels on
    ``t in [-30, 30]^D`` (the tails beyond hold < 1e-12 for bases with logistic or lighter tails), so spikes at the
    edges of ``[0, K)`` (a logistic base) are resolved. Counts every log-det of ``transform``, the
    preprocessing's included."""
    total = float(dequantized_pmf(model, num_points).sum())
    assert abs(total - 1) < atol, (f"{type(model).__name__}: the dequantized density integrates to {total:.5f} "
                                   "over [0, K)^D, not 1")


@torch.no_grad()
def assert_discrete_flow_sample_frequencies(model, num_samples: int = 20000, seed: int = 0,
                                            p_threshold: float = 1e-4) -> None:
    """A dequantized flow with ``logit_alpha = 0`` on a 1-D/2-D discrete domain: ``sample`` (latent draws through
    ``inverse``, floored to levels) has the frequencies ``P(x)`` of ``dequantized_pmf`` (chi-square test)."""
    model = model.double().eval()
    spec = model.spec
    probs = dequantized_pmf(model)
    samples = model.sample(num_samples, generator=torch.Generator().manual_seed(seed))
    assert samples.shape == (num_samples, *spec.shape) and samples.dtype == torch.long, "samples: shape or dtype"
    radix = spec.num_levels ** torch.arange(spec.num_dims - 1, -1, -1)
    observed = np.bincount((samples.reshape(num_samples, -1) * radix).sum(1).numpy(), minlength=len(probs))
    chi2, p = chi_square(observed, (probs / probs.sum() * num_samples).numpy())
    assert p > p_threshold, (f"{type(model).__name__}: sample frequencies disagree with the dequantized pmf "
                             f"(chi2={chi2:.1f}, p={p:.2e})")


# ============================================================================================ training
__all__ += ["assert_resume_equals_straight_run"]


def assert_resume_equals_straight_run(name: str, train, test, tmp_path, *, epochs: int = 2, batch_size: int = 8,
                                      stop_at: int = 3, seed: int = 7, **hparams) -> None:
    """``dulab.train(..., max_steps=stop_at)`` then ``dulab.resume`` ends with bitwise the weights of one straight
    run (public API only, CPU, same seed). ``train``/``test``: datasets; ``hparams``: model and training options."""
    from dulab.training.checkpoint import load_weights

    kw = dict(data=train, eval_data=test, epochs=epochs, batch_size=batch_size, seed=seed, progress=False,
              sample_fn=None, **hparams)
    straight = dulab.train(name, out_dir=tmp_path / "straight", **kw)
    stopped = dulab.train(name, out_dir=tmp_path / "stopped", max_steps=stop_at, **kw)
    assert stopped.summary["status"] == "stopped" and stopped.summary["step"] == stop_at, stopped.summary
    resumed = dulab.resume(tmp_path / "stopped", data=train, eval_data=test, progress=False, max_steps=None,
                           sample_fn=None)
    assert resumed.summary["step"] == straight.summary["step"] > stop_at
    a = load_weights(tmp_path / "straight" / "model.safetensors")
    b = load_weights(tmp_path / "stopped" / "model.safetensors")
    assert a.keys() == b.keys(), f"{name}: resumed run saved other tensors"
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, (f"{name}: weights after resume differ from the straight run in {differ[:4]} "
                        f"(max {max(float((a[k].double() - b[k].double()).abs().max()) for k in differ):.2e})")
