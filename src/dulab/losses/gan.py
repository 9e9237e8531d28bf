"""GAN objectives as pure functions of discriminator (critic) outputs, and the gradient penalties.

``kind`` selects one of five losses; each returns the scalar the network minimises, a mean over the batch:

* ``minimax``: the saturating game of Goodfellow et al. (2014), ``min_G max_D E log D(x) + E log(1 - D(G(z)))``;
  D minimises ``-log sigmoid(r) - log(1 - sigmoid(f))``, G minimises ``log(1 - sigmoid(f))``.
* ``non_saturating``: the same D loss; G maximises ``log D(G(z))`` instead (the heuristic of Sec. 3 of that
  paper), i.e. minimises ``-log sigmoid(f) = softplus(-f)``.
* ``wasserstein``: the critic of Arjovsky et al. (2017) maximises ``E f(x) - E f(G(z))``; D minimises
  ``mean(f) - mean(r)``, G minimises ``-mean(f)`` (with weight clipping or a gradient penalty for the Lipschitz
  constraint, applied by the task).
* ``hinge``: Lim & Ye (2017), Miyato et al. (2018): D minimises ``relu(1 - r) + relu(1 + f)``, G ``-mean(f)``.
* ``least_squares``: Mao et al. (2017) with targets a=0 (fake), b=1 (real), c=1 (G):
  D minimises ``((r - 1)^2 + f^2) / 2``, G ``(f - 1)^2 / 2``.

Logits are raw discriminator outputs (no sigmoid applied); ``log sigmoid`` is computed with ``softplus`` for
stability (``-log sigmoid(t) = softplus(-t)``, ``-log(1 - sigmoid(t)) = softplus(t)``).

References:
    Goodfellow et al. "Generative Adversarial Networks", 2014, arXiv:1406.2661.
    Arjovsky, Chintala, Bottou. "Wasserstein GAN", 2017, arXiv:1701.07875.
    Gulrajani, Ahmed, Arjovsky, Dumoulin, Courville. "Improved Training of Wasserstein GANs", 2017,
    arXiv:1704.00028.
    Mao, Li, Xie, Lau, Wang, Smolley. "Least Squares Generative Adversarial Networks", 2017, arXiv:1611.04076.
    Lim, Ye. "Geometric GAN", 2017, arXiv:1705.02894.
    Miyato, Kataoka, Koyama, Yoshida. "Spectral Normalization for Generative Adversarial Networks", 2018,
    arXiv:1802.05957.
    Mescheder, Geiger, Nowozin. "Which Training Methods for GANs do actually Converge?", 2018, arXiv:1801.04406.
    Salimans, Goodfellow, Zaremba, Cheung, Radford, Chen. "Improved Techniques for Training GANs", 2016,
    arXiv:1606.03498 (label smoothing, feature matching).
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from dulab.errors import UserError, closest

__all__ = ["LOSS_KINDS", "LossKind", "discriminator_loss", "generator_loss", "gradient_penalty", "r1_penalty",
           "feature_matching_loss"]

#: The loss kinds, as a type for model configs (``--set loss=...`` is checked against it) and as a tuple.
LossKind = Literal["minimax", "non_saturating", "wasserstein", "hinge", "least_squares"]
LOSS_KINDS = typing.get_args(LossKind)


def _check_kind(kind: str) -> None:
    if kind not in LOSS_KINDS:
        raise UserError(f"unknown GAN loss kind {kind!r}; {closest(kind, LOSS_KINDS)}")


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str, *,
                       real_target: float = 1.0) -> torch.Tensor:
    """The loss the discriminator (critic) minimises.

    Args:
        real_logits: ``(B_r,)`` (or any shape) discriminator outputs on real data.
        fake_logits: ``(B_f,)`` outputs on generated data.
        kind: one of ``LOSS_KINDS``.
        real_target: the target probability of real data for the logistic kinds (``minimax``,
            ``non_saturating``): below 1 it is one-sided label smoothing (Salimans et al. 2016, Sec. 3.4), the
            real term becoming the cross-entropy ``t softplus(-r) + (1 - t) softplus(r)``; the fake target stays 0.
    Returns:
        A scalar: the mean over real examples plus the mean over fake ones (for ``minimax`` and
        ``non_saturating`` at logits 0 this is ``2 log 2``).
    """
    _check_kind(kind)
    if kind in ("minimax", "non_saturating"):
        real_term = F.softplus(-real_logits)
        if real_target != 1.0:
            real_term = real_target * real_term + (1.0 - real_target) * F.softplus(real_logits)
        return real_term.mean() + F.softplus(fake_logits).mean()
    if real_target != 1.0:
        raise UserError(f"real_target (label smoothing) applies to the logistic losses only, not {kind!r}")
    if kind == "wasserstein":
        return fake_logits.mean() - real_logits.mean()
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    return 0.5 * ((real_logits - 1).pow(2).mean() + fake_logits.pow(2).mean())


def generator_loss(fake_logits: torch.Tensor, kind: str) -> torch.Tensor:
    """The loss the generator minimises, given the discriminator's outputs on its samples.

    Args:
        fake_logits: ``(B,)`` discriminator outputs on generated data.
        kind: one of ``LOSS_KINDS``.
    Returns:
        A scalar batch mean. Every kind decreases as the fake logits rise (``least_squares`` while they are
        below its target 1).
    """
    _check_kind(kind)
    if kind == "minimax":
        return -F.softplus(fake_logits).mean()  # log(1 - sigmoid(f)) = -softplus(f)
    if kind == "non_saturating":
        return F.softplus(-fake_logits).mean()
    if kind in ("wasserstein", "hinge"):
        return -fake_logits.mean()
    return 0.5 * (fake_logits - 1).pow(2).mean()


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Feature matching (Salimans et al. 2016, Sec. 3.1): ``||mean_x f(x) - mean_z f(G(z))||_2^2`` of D's
    intermediate features ``(B, F)`` (the real ones are taken as constants).

    Args:
        real_features: ``(B_r, F)`` features of real data.
        fake_features: ``(B_f, F)`` features of generated data.
    Returns:
        A scalar, the generator's loss.
    """
    return (real_features.detach().mean(0) - fake_features.mean(0)).pow(2).sum()


def _input_grad_norms(critic: Callable, x: torch.Tensor) -> torch.Tensor:
    """``||grad_x critic(x)_i||`` per example ``(B,)``, with a graph so that the penalty can be backpropagated."""
    out = critic(x).reshape(-1)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    # critic(x)_i depends on x_i only (no cross-example layers such as batch norm), so the gradient of the sum
    # holds each example's own input gradient in its row.
    return grad.reshape(grad.shape[0], -1).norm(dim=1)


def gradient_penalty(critic: Callable, real: torch.Tensor, fake: torch.Tensor, *,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP gradient penalty (Gulrajani et al. 2017, Eq. 3), before the weight lambda.

    ``x_hat = eps x + (1 - eps) x_fake`` with one ``eps ~ U[0, 1]`` per example; the penalty is the batch mean of
    ``(||grad_x_hat critic(x_hat)||_2 - 1)^2``. The critic must treat examples independently (no batch norm).

    Args:
        critic: ``(B, *event) -> (B,)`` (or ``(B, 1)``) outputs.
        real: ``(B, *event)`` float real examples (in the critic's input representation).
        fake: ``(B, *event)`` generated examples (detached or not: the interpolates are taken as leaves).
        generator: source of ``eps``.
    Returns:
        A scalar with a graph to the critic's parameters.
    """
    if real.shape != fake.shape:
        raise UserError(f"gradient_penalty needs real and fake of one shape, got {tuple(real.shape)} and"
                        f" {tuple(fake.shape)}")
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, device=real.device,
                     dtype=real.dtype)
    x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
    return (_input_grad_norms(critic, x_hat) - 1).pow(2).mean()


def r1_penalty(critic: Callable, real: torch.Tensor) -> torch.Tensor:
    """R1 regulariser (Mescheder et al. 2018, Eq. 9) without its weight: the batch mean of
    ``||grad_x critic(x)||^2`` at real data (the task adds ``gamma / 2`` times it to the D loss).

    Squared norms add up over the rows of the batch's input gradient, so the value is ``||grad_X sum_i critic(X)_i||^2
    / B`` for any critic: with cross-example layers (D's batch norm) or PacGAN packing it penalises the whole batch's
    input gradient, which the per-example definition reduces to when the examples are independent.

    Args:
        critic: ``(B, *event) -> (B,)`` outputs.
        real: ``(B, *event)`` float real examples.
    Returns:
        A scalar with a graph to the critic's parameters.
    """
    x = real.detach().clone().requires_grad_(True)
    return _input_grad_norms(critic, x).pow(2).mean()
