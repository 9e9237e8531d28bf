"""Pure loss functions of tensors (no modules, no state): ``gan``, ``elbo``."""

from dulab.losses.elbo import (
    bernoulli_log_likelihood,
    categorical_log_likelihood,
    discretized_logistic_log_likelihood,
    free_bits_kl,
    gaussian_kl,
    gaussian_kl_standard,
    gaussian_log_likelihood,
    iwae_bound,
)
from dulab.losses.gan import discriminator_loss, generator_loss, gradient_penalty, r1_penalty

__all__ = ["discriminator_loss", "generator_loss", "gradient_penalty", "r1_penalty",
           "bernoulli_log_likelihood", "categorical_log_likelihood", "discretized_logistic_log_likelihood",
           "free_bits_kl", "gaussian_kl", "gaussian_kl_standard", "gaussian_log_likelihood", "iwae_bound"]
