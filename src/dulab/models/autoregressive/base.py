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
from torch import nn

from dulab.distributions import categorical_log_prob, categorical_sample
from dulab.errors import UserError
from dulab.models.base import DensityModel

__all__ = ["AutoregressiveModel", "SequenceModel"]


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

    def generation_coordinates(self) -> torch.Tensor:
        """Where each generation step lies: ``(D, 3)`` float ``(row, col, channel)``, each in [0, 1].

        Row ``t`` describes the dimension generated at step ``t`` (``generation_order()[t]``). Images
        ``(C, H, W)`` give pixel row, column and channel; 2-D grids ``(H, W)`` (e.g. VQ-VAE codes) row and
        column; vectors ``(D,)`` put the index in the column slot. Sequence models append them to their inputs
        as a position encoding (a coordinate with a single value is 0).
        """
        shape = self.spec.shape
        if len(shape) == 1:
            shape = (1, 1, shape[0])
        elif len(shape) == 2:
            shape = (1, *shape)
        C, H, W = shape[-3], shape[-2], shape[-1]
        flat = self.generation_order()
        c, rest = flat // (H * W), flat % (H * W)
        coords = torch.stack([rest // W, rest % W, c], 1).float()  # (D, 3): row, col, channel
        return coords / torch.tensor([max(H - 1, 1), max(W - 1, 1), max(C - 1, 1)], dtype=torch.float32)

    def conditionals_from_onehot(self, x_onehot: torch.Tensor,
                                 context: torch.Tensor | None = None) -> torch.Tensor:
        """Per-dimension conditional parameters from a float relaxation of the input (for dependency tests).

        The hook of ``tests/properties.py``'s ``assert_autoregressive_dependencies``: it must run the same
        network as ``conditionals``, with the discrete input replaced by a differentiable one.

        Args:
            x_onehot: ``(B, *event, K)`` float; one-hot rows for real data, any values allowed.
            context: class labels ``(B,)`` for conditional models.
        Returns:
            ``(B, D, P)``: the ``P`` parameters of ``p(x_d | x_<d)`` for every flat event index ``d``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement conditionals_from_onehot")

    def encode(self, x: torch.Tensor, context: torch.Tensor | None = None, *, num_features: int = 256,
               seed: int = 0) -> torch.Tensor:
        """Fisher-score features: ``d log p(x) / d parameters`` per example, randomly projected.

        See ``dulab.models.autoregressive.fisher.fisher_score``.

        Args:
            x: ``(B, *event)`` int64 levels.
            context: class labels for conditional models.
            num_features: dimension of the seeded Gaussian random projection.
            seed: seed of the projection (same seed, same feature space).
        Returns:
            ``(B, num_features)`` float features.
        """
        from dulab.models.autoregressive.fisher import fisher_score

        return fisher_score(self, x, context=context, num_features=num_features, seed=seed)

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


class SequenceModel(AutoregressiveModel):
    """An autoregressive model over the event flattened into a sequence in generation order.

    The shared plumbing of RNN, WaveNet and Transformer between event and sequence layouts; a cached sampler.

    Subclass obligations:

    * ``self.value_embedding``: an ``nn.Embedding(K, E)`` for the level of each dimension.
    * ``logits_from_embedded(e, context) -> (B, D, K)``: logits of step ``t`` from the embeddings ``e``
      ``(B, D, E)`` of the values in generation order; step ``t`` may use only ``e[:, :t]`` (the subclass
      shifts, e.g. with a start token).
    * ``init_state(num_samples, context)`` and ``step(state, t, prev, context) -> (logits (B, K), state)``:
      one generation step from the value generated at step ``t - 1`` (``prev``, ``(B,)`` int64, ``None`` at
      t = 0). ``sample`` drives them and draws exactly as ``naive_sample`` does (same generator, same draws).
    """

    def init_sequence_inputs(self, embed_dim: int) -> None:
        """Create what every sequence model reads its input with: ``value_embedding`` (K -> E), a learned ``start``
        token ``(E,)`` fed before the first dimension, and the ``coords`` buffer used by ``append_position``."""
        self.value_embedding = nn.Embedding(self.spec.num_levels, embed_dim)
        self.start = nn.Parameter(torch.zeros(embed_dim))
        self.register_buffer("coords", self.generation_coordinates(), persistent=False)  # (D, 3)

    def _order_on(self, device) -> torch.Tensor:
        return self.generation_order().to(device)

    def to_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, *event, ...) -> (B, D, ...)``: flattened in generation order, trailing axes kept."""
        B, n = x.shape[0], len(self.spec.shape)
        flat = x.reshape(B, self.spec.num_dims, *x.shape[1 + n:])  # (B, *event, ...) -> (B, D, ...)
        return flat[:, self._order_on(x.device)]

    def from_sequence(self, seq: torch.Tensor) -> torch.Tensor:
        """``(B, D, ...)`` in generation order -> ``(B, D, ...)`` in flat event order."""
        out = torch.empty_like(seq)
        out[:, self._order_on(seq.device)] = seq
        return out

    def logits_from_embedded(self, e: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def append_position(self, h: torch.Tensor, t: slice | int) -> torch.Tensor:
        """``(..., E) -> (..., E + 3)``: append ``generation_coordinates()[t]`` (steps ``t``) to the features.

        Needs a ``coords`` buffer holding ``generation_coordinates()`` (registered by the subclass).
        """
        pos = self.coords[t].to(h.dtype)
        return torch.cat([h, pos.expand(*h.shape[:-1], 3)], -1)

    def conditionals(self, x, context=None):
        e = self.value_embedding(self.to_sequence(x))  # (B, D, E)
        logits = self.from_sequence(self.logits_from_embedded(e, context))  # (B, D, K), flat event order
        return logits.transpose(1, 2).reshape(x.shape[0], -1, *self.spec.shape)  # (B, K, *event)

    def conditionals_from_onehot(self, x_onehot, context=None):
        e = self.to_sequence(x_onehot) @ self.value_embedding.weight  # (B, D, K) @ (K, E) -> (B, D, E)
        return self.from_sequence(self.logits_from_embedded(e, context))

    def init_state(self, num_samples: int, context: torch.Tensor | None):
        raise NotImplementedError

    def step(self, state, t: int, prev: torch.Tensor | None, context: torch.Tensor | None):
        raise NotImplementedError

    @torch.no_grad()
    def sample(self, num_samples, *, generator=None, context=None, given=None, given_mask=None,
               temperature=1.0):
        """Cached sampling, one ``step`` per dimension; same arguments and same draws as ``naive_sample``."""
        x, mask, context = self._prepare_sampling(num_samples, context, given, given_mask)
        flat, flat_mask = x.view(num_samples, -1), mask.view(num_samples, -1)
        state, prev = self.init_state(num_samples, context), None
        for t, index in enumerate(self.generation_order().tolist()):
            logits, state = self.step(state, t, prev, context)
            if not bool(flat_mask[:, index].all()):
                value = self.sample_from(logits[:, :, None], 0, generator, temperature)  # (B, K, 1) -> (B,)
                flat[:, index] = torch.where(flat_mask[:, index], flat[:, index], value)
            prev = flat[:, index]
        return x
