"""Probability pieces shared by the models: categorical, discretized logistic mixture, Gaussian."""

from dulab.distributions.categorical import categorical_log_prob, categorical_sample
from dulab.distributions.gaussian import diag_gaussian_log_prob, standard_normal_log_prob
from dulab.distributions.logistic import (
    discretized_logistic_mixture_log_prob,
    discretized_logistic_mixture_sample,
    log_sub_exp,
)

__all__ = ["categorical_log_prob", "categorical_sample", "discretized_logistic_mixture_log_prob",
           "discretized_logistic_mixture_sample", "log_sub_exp", "standard_normal_log_prob",
           "diag_gaussian_log_prob"]
