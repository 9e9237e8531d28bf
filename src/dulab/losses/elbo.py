"""Arithmetic of variational bounds: analytic Gaussian KL terms, reconstruction log-likelihoods, the IWAE bound and
free-bits KL. Pure functions of tensors, all in nats.

The evidence lower bound of a latent-variable model is ``ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z))``
(Kingma & Welling, eq. 3); with ``K`` importance samples ``z_k ~ q(z|x)`` and log-weights
``log w_k = log p(x, z_k) - log q(z_k|x)``, the bound ``log (1/K) sum_k w_k`` is tighter and rises with ``K``
(Burda et al., theorem 1). Free bits (Kingma et al. 2016, appendix C.8) stop the optimiser from pushing the KL of a
latent group below ``lambda`` nats: ``sum_j max(lambda, E_x[KL_j])``.

References:
    Kingma, Welling. "Auto-Encoding Variational Bayes", ICLR 2014, arXiv:1312.6114.
    Burda, Grosse, Salakhutdinov. "Importance Weighted Autoencoders", ICLR 2016, arXiv:1509.00519.
    Kingma, Salimans, Jozefowicz, Chen, Sutskever, Welling. "Improved Variational Inference with Inverse
    Autoregressive Flow", NeurIPS 2016, arXiv:1606.04934.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dulab.distributions.categorical import categorical_log_prob
from dulab.distributions.gaussian import diag_gaussian_log_prob
from dulab.distributions.logistic import discretized_logistic_log_prob

__all__ = ["gaussian_kl_standard", "gaussian_kl", "gaussian_log_likelihood", "bernoulli_log_likelihood",
           "categorical_log_likelihood", "discretized_logistic_log_likelihood", "iwae_bound", "free_bits_kl"]


def gaussian_kl_standard(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, diag(exp(log_var))) || N(0, I))`` per dimension (Kingma & Welling, appendix B).

    Args:
        mean, log_var: ``(..., Z)`` parameters of the diagonal Gaussian q.
    Returns:
        ``(..., Z)`` elementwise KL in nats; sum over the last axis for the KL of the factorised distributions.
    """
    return 0.5 * (mean.square() + log_var.exp() - 1.0 - log_var)


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor, prior_mean: torch.Tensor,
                prior_log_var: torch.Tensor) -> torch.Tensor:
    """``KL(N(mean, diag(exp(log_var))) || N(prior_mean, diag(exp(prior_log_var))))`` per dimension.

    Args:
        mean, log_var: ``(..., Z)`` parameters of q.
        prior_mean, prior_log_var: parameters of the diagonal Gaussian prior, broadcastable to ``(..., Z)``.
    Returns:
        ``(..., Z)`` elementwise KL in nats.
    """
    return 0.5 * (prior_log_var - log_var + (log_var.exp() + (mean - prior_mean).square()) * torch.exp(-prior_log_var)
                  - 1.0)


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """``log N(x; mean, diag(exp(2 log_std)))`` summed over the event: ``(B, *event) -> (B,)`` nats."""
    return diag_gaussian_log_prob(x, mean, log_std.expand_as(mean))


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``sum log Bernoulli(x; sigmoid(logits))`` over the event: ``x`` in {0, 1} ``(B, *event)`` -> ``(B,)`` nats."""
    ll = -F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none")
    return ll.flatten(1).sum(1)


def categorical_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``sum log softmax(logits)[x]`` over the event.

    Args:
        x: ``(B, *event)`` int64 levels in ``{0..K-1}``.
        logits: ``(B, K, *event)``, one logit per level on axis 1.
    Returns:
        ``(B,)`` nats.
    """
    return categorical_log_prob(logits, x.long(), dim=1).flatten(1).sum(1)


def discretized_logistic_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                        num_levels: int) -> torch.Tensor:
    """One discretized logistic per dimension (PixelCNN++ section 2.1), summed over the event.

    Args:
        x: ``(B, *event)`` int64 levels in ``{0..K-1}``.
        mean, log_scale: ``(B, *event)``, in the [-1, 1] units of ``dulab.distributions.logistic``.
        num_levels: K.
    Returns:
        ``(B,)`` nats.
    """
    return discretized_logistic_log_prob(x.long(), mean, log_scale, num_levels).flatten(1).sum(1)


def iwae_bound(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` along ``dim`` (Burda et al., eq. 8), computed with logsumexp.

    Args:
        log_w: log importance weights ``log p(x, z_k) - log q(z_k|x)``, ``K`` along ``dim`` (default ``(K, B)``).
        dim: the sample axis.
    Returns:
        ``log_w`` without ``dim``: the K-sample bound in nats (K = 1: the single-sample ELBO estimate).
    """
    return torch.logsumexp(log_w, dim=dim) - math.log(log_w.shape[dim])


def free_bits_kl(kl: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The free-bits KL term ``sum_j max(free_bits, mean_b kl[b, j])`` (Kingma et al. 2016, appendix C.8).

    Each latent dimension (group ``j``) costs at least ``free_bits`` nats, so the optimiser gains nothing from
    pushing its batch-mean KL below that: a guard against posterior collapse. ``free_bits = 0`` gives the plain
    batch-mean KL.

    Args:
        kl: ``(B, Z)`` KL per example and latent dimension (nats).
        free_bits: lambda, nats per dimension (>= 0).
    Returns:
        a scalar, nats per example.
    """
    if free_bits < 0:
        raise ValueError(f"free_bits must be >= 0, got {free_bits}")
    return kl.mean(0).clamp(min=free_bits).sum()
