"""The shared base of autoregressive models: log-likelihood from one forward pass, generic sequential sampling.

An autoregressive model factorises ``p(x) = prod_i p(x_i | x_<i)`` in a fixed generation order. For images
``(C, H, W)`` the order is raster over pixels and, within a pixel, channel 0 before 1 before 2 (R -> G -> B);
for vectors and sequences it is the natural order. A subclass implements ``conditionals`` (one forward pass
giving the parameters of every conditional at once, with the masking that makes them autoregressive) and, when
its likelihood is not a per-dimension softmax, ``log_prob_from`` and ``sample_from``.

``naive_sample`` is the reference sampler: one full forward pass per dimension. Subclasses may override
``sample`` with a cached version; it must consume the generator exactly as ``naive_sample`` does, so the two give
identical samples for the same seed (tested). Both accept ``given``/``given_mask`` to complete partial inputs.
"""

from __future__ import annotations

import torch

from dulab.distributions import categorical_log_prob, categorical_sample
from dulab.errors import UserError
from dulab.models.base import DensityModel

__all__ = ["AutoregressiveModel"]


class AutoregressiveModel(DensityModel):
    """Base for models over discrete data with an explicit generation order."""

    family = "autoregressive"

    @classmethod
    def check_spec(cls, spec, config):
        if not spec.is_discrete:
            raise UserError(f"{cls.__name__} needs discrete data (int levels); got continuous data. "
                            "Flows model continuous data.")

    # ---------------------------------------------------------------- subclass interface
    def conditionals(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Parameters of every conditional from one pass; default layout: logits ``(B, K, *event)``."""
        raise NotImplementedError

    def log_prob_from(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``sum_i log p(x_i | x_<i)`` from ``conditionals`` output: ``(B,)`` nats."""
        return categorical_log_prob(params, x, dim=1).reshape(x.shape[0], -1).sum(1)

    def sample_from(self, params: torch.Tensor, index: int, generator: torch.Generator | None,
                    temperature: float = 1.0) -> torch.Tensor:
        """Draw dimension ``index`` (a flat index into the event) for every batch row: ``(B,)`` int64."""
        logits = params.reshape(params.shape[0], params.shape[1], -1)[:, :, index]  # (B, K, D) -> (B, K)
        return categorical_sample(logits, generator, temperature)

    # ---------------------------------------------------------------- shared
    def generation_order(self) -> torch.Tensor:
        """Flat event indices in generation order: raster over pixels, channels in order within a pixel."""
        shape = self.spec.shape
        if len(shape) == 3:
            C, H, W = shape
            idx = torch.arange(C * H * W).view(C, H, W)
            return idx.permute(1, 2, 0).reshape(-1)  # (C, H, W) -> (H, W, C) -> raster with R, G, B per pixel
        return torch.arange(self.spec.num_dims)

    def log_prob(self, x, context=None):
        self.check_input(x)
        context = self._check_context(context, x.shape[0])
        return self.log_prob_from(self.conditionals(x, context), x)

    def _prepare_sampling(self, num_samples, context, given, given_mask):
        device = self._param_device()
        shape = (num_samples, *self.spec.shape)
        x = torch.zeros(shape, dtype=torch.long, device=device)
        mask = torch.zeros(shape, dtype=torch.bool, device=device)
        if given is not None:
            given = torch.as_tensor(given, device=device).long()
            if given.shape[1:] != self.spec.shape:
                raise UserError(f"given must have shape (N, {', '.join(map(str, self.spec.shape))})")
            given = given.expand(shape) if given.shape[0] == 1 else given
            if given.shape[0] != num_samples:
                raise UserError(f"given holds {given.shape[0]} examples, num_samples is {num_samples}")
            if given_mask is None:
                raise UserError("given needs given_mask (True where the value is given)")
            mask = torch.as_tensor(given_mask, device=device).bool().expand(shape).clone()
            x = torch.where(mask, given, x)
        context = self._check_context(context, num_samples)
        return x, mask, context

    @torch.no_grad()
    def naive_sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
                     given: torch.Tensor | None = None, given_mask: torch.Tensor | None = None,
                     temperature: float = 1.0) -> torch.Tensor:
        """Reference sampler: one full forward pass per dimension (slow, obviously right).

        Args:
            num_samples: N.
            generator: the random stream.
            context: class labels ``(N,)`` for conditional models.
            given, given_mask: ``(N, *event)`` values and a boolean mask of those to keep (completion).
            temperature: softmax temperature.
        Returns:
            ``(N, *event)`` int64 levels.
        """
        x, mask, context = self._prepare_sampling(num_samples, context, given, given_mask)
        flat, flat_mask = x.view(num_samples, -1), mask.view(num_samples, -1)
        for index in self.generation_order().tolist():
            if bool(flat_mask[:, index].all()):
                continue
            params = self.conditionals(x, context)
            value = self.sample_from(params, index, generator, temperature)
            flat[:, index] = torch.where(flat_mask[:, index], flat[:, index], value)
        return x

    def sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None, temperature=1.0):
        return self.naive_sample(num_samples, generator=generator, context=context, given=given,
                                 given_mask=given_mask, temperature=temperature)
