"""The per-dimension conditionals of a discrete likelihood model, one coding step at a time.

Entropy coding with a model ``p(x) = prod_t p(s_t | s_<t)`` needs, at step ``t``, the distribution of the symbol
``s_t`` given the symbols already coded, computed *the same way* by the encoder (which knows all of ``x``) and by
the decoder (which knows only ``s_<t``). ``Conditionals`` gives both sides one interface, so the encoder simply
replays the decoder's computation (same inputs, same batch, same operations):

* ``log_probs(t) -> (B, K)`` float64, the log-probabilities of step ``t``'s symbol;
* ``feed(t, symbols)`` tells it the values of step ``t`` (decoded, or read from ``x`` when encoding);
* ``result()`` the examples ``(B, *event)`` int64 built from the fed symbols; ``targets(x)`` the symbols of
  ``x`` in coding order ``(B, T)``.

Which models qualify and how (``conditionals_for``):

* sequence models (``rnn``, ``wavenet``, ``transformer``): their cached sampling step (``init_state``/``step``),
  one cheap step per dimension in generation order;
* other autoregressive models (``made``, ``pixel_cnn``, ``gated_pixel_cnn``, ``pixel_cnn_pp``, ``pixel_snail``):
  ``conditionals`` on the partially coded input (undecoded dimensions are 0), one forward pass per dimension in
  ``generation_order()``; image models with a bounded ``receptive_field`` run it on the crop ``cropped_sample``
  uses. Categorical models read the logits the sampler reads; models with another per-dimension likelihood
  (PixelCNN++'s discretized logistic mixture) are evaluated with ``log_prob_from`` at every level of the
  dimension (the other dimensions' terms are the same for every level and cancel in the normalisation);
* ``histogram``: the joint table as one symbol over ``K^D`` configurations, or one categorical per dimension;
* ``logistic_mixture``: one discretized logistic mixture per dimension.

Class-conditional models and models of continuous data are refused with a ``UserError``. MADE with several
masks codes with its current mask (one order): its code length is that component's, not the ensemble's.

References:
    Frey, Hinton. "Efficient stochastic source coding and an application to a Bayesian network source model",
    The Computer Journal, 1997 (coding with a model's conditionals in order).
"""

from __future__ import annotations

import torch

from dulab.errors import UserError

__all__ = ["Conditionals", "conditionals_for", "supports_compression"]

MAX_JOINT_SYMBOLS = 1 << 20  # a joint histogram coded as one symbol (24-bit tables leave room for this)


class Conditionals:
    """Base: a model's conditionals for a batch of ``B`` examples, stepped through in coding order."""

    num_steps: int
    num_symbols: int

    def log_probs(self, t: int) -> torch.Tensor:
        raise NotImplementedError

    def feed(self, t: int, symbols: torch.Tensor) -> None:
        raise NotImplementedError

    def result(self) -> torch.Tensor:
        raise NotImplementedError

    def targets(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class _Ordered(Conditionals):
    """Shared: one symbol per event dimension, in the order ``order`` (flat event indices)."""

    def __init__(self, model, batch: int, order: torch.Tensor):
        self.model, self.batch = model, batch
        self.order = [int(i) for i in order]
        self.num_steps, self.num_symbols = len(self.order), model.spec.num_levels
        device = model._param_device()
        self.x = torch.zeros(batch, *model.spec.shape, dtype=torch.long, device=device)
        self.flat = self.x.view(batch, -1)

    def feed(self, t, symbols):
        self.flat[:, self.order[t]] = symbols.to(self.flat.device)

    def result(self):
        return self.x

    def targets(self, x):
        return x.reshape(x.shape[0], -1)[:, self.order]  # (B, *event) -> (B, D) in coding order


class _SequenceConditionals(_Ordered):
    """Sequence models: the cached step of their sampler (``init_state``/``step``)."""

    def __init__(self, model, batch):
        super().__init__(model, batch, model.generation_order())
        self.state, self.prev = model.init_state(batch, None), None

    def log_probs(self, t):
        logits, self.state = self.model.step(self.state, t, self.prev, None)  # (B, K)
        return torch.log_softmax(logits.double(), -1)

    def feed(self, t, symbols):
        super().feed(t, symbols)
        self.prev = self.flat[:, self.order[t]]


class _PassConditionals(_Ordered):
    """Autoregressive models: ``conditionals`` on the partially coded input, cropped where the model allows."""

    def __init__(self, model, batch):
        super().__init__(model, batch, model.generation_order())
        from dulab.models.autoregressive.base import AutoregressiveModel

        self.categorical = type(model).sample_from is AutoregressiveModel.sample_from
        field = model.receptive_field() if hasattr(model, "receptive_field") else None
        self.field = field if len(model.spec.shape) == 3 else None

    def _window(self, index: int):
        """The input the network sees for flat index ``index`` and the index inside it (as ``cropped_sample``)."""
        if self.field is None:
            return self.x, index
        C, H, W = self.model.spec.shape
        ch, i, j = index // (H * W), (index // W) % H, index % W
        up, left, right = self.field
        a = getattr(self.model, "window_alignment", 1)
        r0 = max(0, i - up) // a * a
        c0, c1 = max(0, j - left) // a * a, min(W, j + right + 1)
        h, w = i + 1 - r0, c1 - c0
        return self.x[:, :, r0:i + 1, c0:c1], (ch * h + i - r0) * w + j - c0

    def log_probs(self, t):
        x, index = self._window(self.order[t])
        params = self.model.conditionals(x, None)
        B, K = x.shape[0], self.num_symbols
        if self.categorical:
            logits = params.reshape(B, params.shape[1], -1)[:, :, index]  # (B, K, D) -> (B, K)
            return torch.log_softmax(logits.double(), -1)
        # Any other per-dimension likelihood: log p(x with dimension `index` set to k) for every level k. The
        # other dimensions contribute the same terms for every k, so the normalisation over k leaves the
        # conditional of dimension `index`.
        params = params.double()
        candidates = x.unsqueeze(0).repeat(K, *([1] * x.dim()))  # (K, B, *window)
        candidates.view(K, B, -1)[:, :, index] = torch.arange(K, device=x.device)[:, None]
        lp = self.model.log_prob_from(params.repeat(K, *([1] * (params.dim() - 1))),
                                      candidates.reshape(K * B, *x.shape[1:]))  # (K * B,)
        return torch.log_softmax(lp.view(K, B).t(), -1)  # (B, K)


class _TableConditionals(Conditionals):
    """Models with a fixed table of log-probabilities per step (histogram, logistic mixture): ``(T, K)``."""

    def __init__(self, model, batch, table: torch.Tensor, joint: bool):
        self.model, self.batch, self.joint = model, batch, joint
        self.table = table.double()  # (T, K) log-probabilities
        self.num_steps, self.num_symbols = self.table.shape
        self.symbols = torch.zeros(batch, self.num_steps, dtype=torch.long)

    def log_probs(self, t):
        return self.table[t].expand(self.batch, -1)

    def feed(self, t, symbols):
        self.symbols[:, t] = symbols.cpu()

    def _radix(self):
        K, D = self.model.spec.num_levels, self.model.spec.num_dims
        return K ** torch.arange(D - 1, -1, -1)  # place values, most significant first (as Histogram)

    def result(self):
        spec = self.model.spec
        if self.joint:
            digits = (self.symbols[:, :1] // self._radix()) % spec.num_levels  # (B, D)
            return digits.view(self.batch, *spec.shape)
        return self.symbols.view(self.batch, *spec.shape)

    def targets(self, x):
        flat = x.reshape(x.shape[0], -1).cpu()
        return (flat * self._radix()).sum(1, keepdim=True) if self.joint else flat


def _refuse(model, why: str):
    from dulab.registry import MODELS

    supported = [n for n, e in MODELS.items() if e.family == "autoregressive"]
    raise UserError(f"{type(model).__name__} cannot drive an entropy coder: {why}. Compression works with the "
                    f"discrete autoregressive models ({', '.join(supported)})")


def conditionals_for(model, batch: int) -> Conditionals:
    """The ``Conditionals`` of ``model`` for ``batch`` examples; ``UserError`` for models that cannot code."""
    from dulab.models.autoregressive.base import AutoregressiveModel, SequenceModel
    from dulab.models.autoregressive.histogram import Histogram
    from dulab.models.autoregressive.logistic_mixture import LogisticMixture

    spec = getattr(model, "spec", None)
    if spec is None or not spec.is_discrete:
        _refuse(model, "it is not a model of discrete data")
    if getattr(model, "is_conditional", False):
        _refuse(model, "it is class-conditional (the labels would have to be coded too); train it without "
                       "use_context")
    K, D = spec.num_levels, spec.num_dims
    if isinstance(model, SequenceModel):
        return _SequenceConditionals(model, batch)
    if isinstance(model, AutoregressiveModel):
        return _PassConditionals(model, batch)
    if isinstance(model, Histogram):
        logits = model.logits.detach().double()
        if model.joint:
            if K**D > MAX_JOINT_SYMBOLS:
                _refuse(model, f"its joint table of {K}^{D} configurations is too large to code as one symbol")
            return _TableConditionals(model, batch, torch.log_softmax(logits, 0)[None], joint=True)
        return _TableConditionals(model, batch, torch.log_softmax(logits, -1), joint=False)
    if isinstance(model, LogisticMixture):
        from dulab.distributions import discretized_logistic_mixture_log_prob

        w, mu, ls = (p.detach().double() for p in model._params(K))  # (K, D, M): one row per level
        levels = torch.arange(K)[:, None].expand(K, D)
        table = discretized_logistic_mixture_log_prob(levels, w, mu, ls, K).t()  # (K, D) -> (D, K)
        return _TableConditionals(model, batch, table, joint=False)
    _refuse(model, "it exposes no per-dimension conditionals")


def supports_compression(model) -> bool:
    """Whether ``model`` can drive the entropy coder (``conditionals_for`` would not refuse it)."""
    try:
        conditionals_for(model, 1)
    except UserError:
        return False
    return True
