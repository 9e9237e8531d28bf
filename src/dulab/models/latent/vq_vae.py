"""VQ-VAE and VQ-VAE-2: autoencoders with a discrete latent grid of codebook indices.

A convolutional encoder maps an image to a grid of ``code_dim``-vectors ``z_e``; each is replaced by its nearest
codebook vector ``e_k`` (the posterior is one-hot on ``k = argmin_j ||z_e - e_j||``), and the decoder maps the grid
of chosen vectors back to the parameters of a likelihood ``p(x | z_q)`` that suits the data (discretized logistic
for n-level images, Bernoulli for binary ones, Gaussian for continuous data: ``networks.choose_observation``, as
for the VAE). The argmin has no gradient, so the decoder's input gradient is copied to the encoder
(straight-through, eq. 3 of van den Oord et al.); the codebook is trained by ``||sg[z_e] - e||^2`` or, with
``use_ema``, by exponential moving averages of the assigned encodings (appendix A.1), and the encoder is held near
its codes by the commitment loss ``beta ||z_e - sg[e]||^2``. Codes that no encoding chose during ``restart_every``
training steps are restarted at randomly drawn encodings of the current batch (a common remedy for codebook
collapse; the draw uses the ``generator``/global RNG, which the engine saves, so resume stays bitwise).

Under the uniform prior ``p(z) = K^-n`` over the ``n`` code positions (the prior the first stage is trained under)
``log p(x) >= log p(x | z_q) - n log K`` (the posterior is deterministic, so its entropy is 0): ``log_prob`` returns
this bound and ``sample`` decodes uniformly drawn codes. A learned prior replaces the uniform one in the second
stage (``vq_prior``, ``dulab.models.latent.vq_prior``), which then samples images end to end.

VQ-VAE-2 (``VQVAE2``) has two code grids: a top grid at half the resolution of the bottom one (where the shape
allows, else the same resolution), quantised from the bottom features, and a bottom grid quantised from the bottom
features together with the decoded top codes; the decoder sees both (Razavi et al., figure 2a).

References:
    van den Oord, Vinyals, Kavukcuoglu. "Neural Discrete Representation Learning", NeurIPS 2017, arXiv:1711.00937.
    Razavi, van den Oord, Vinyals. "Generating Diverse High-Fidelity Images with VQ-VAE-2", NeurIPS 2019,
    arXiv:1906.00446.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dulab.config import check_choices, require_at_least, require_fraction
from dulab.data.base import DataSpec
from dulab.errors import UserError
from dulab.models.base import DensityModel
from dulab.models.latent.networks import Observation, choose_observation, input_features

__all__ = ["VectorQuantizer", "VQVAE", "VQVAEConfig", "VQVAE2", "VQVAE2Config", "num_downsamples_for"]

#: Laplace smoothing of the EMA cluster sizes (keeps an unused code's size away from 0)
_EMA_EPS = 1e-5


def _is_distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def num_downsamples_for(spec: DataSpec, requested: int) -> int:
    """Halvings from the image to the code grid: ``requested`` (checked) or, for ``-1``, at least one and then more
    while both sides are even and larger than 8 (digits 8x8 -> 4x4 codes, photos 32x32 -> 8x8, sprites 64x64 -> 8x8).
    """
    _, H, W = spec.shape
    if requested >= 0:
        f = 2 ** requested
        if H % f or W % f:
            raise UserError(f"num_downsamples={requested} needs H and W divisible by {f}; the images are {H}x{W}")
        return requested
    n = 0
    while H % 2 == 0 and W % 2 == 0 and (n == 0 or min(H, W) > 8):
        H, W, n = H // 2, W // 2, n + 1
    if n == 0:
        raise UserError(f"VQ-VAE needs even image sides to downsample to a code grid, got {H}x{W}")
    return n


class ResidualBlock(nn.Module):
    """``h + conv1x1(ReLU(conv3x3(ReLU(h))))`` (the VQ-VAE paper's residual block)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, hidden, 3, padding=1)
        self.out = nn.Conv2d(hidden, channels, 1)

    def forward(self, h):
        return h + self.out(F.relu(self.conv(F.relu(h))))


def conv_encoder(in_channels: int, hidden: int, out_channels: int, num_down: int, num_blocks: int) -> nn.Sequential:
    """``(B, in, H, W) -> (B, out, H / 2^num_down, W / 2^num_down)``: strided 4x4 convolutions, residual blocks."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1)]
    for _ in range(num_down):
        layers += [nn.ReLU(), nn.Conv2d(hidden, hidden, 4, stride=2, padding=1)]
    layers += [ResidualBlock(hidden, max(1, hidden // 2)) for _ in range(num_blocks)]
    layers += [nn.ReLU(), nn.Conv2d(hidden, out_channels, 1)]
    return nn.Sequential(*layers)


def conv_decoder(in_channels: int, hidden: int, out_channels: int, num_up: int, num_blocks: int) -> nn.Sequential:
    """``(B, in, h, w) -> (B, out, h 2^num_up, w 2^num_up)``: residual blocks, transposed 4x4 convolutions."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, hidden, 3, padding=1)]
    layers += [ResidualBlock(hidden, max(1, hidden // 2)) for _ in range(num_blocks)]
    for _ in range(num_up):
        layers += [nn.ReLU(), nn.ConvTranspose2d(hidden, hidden, 4, stride=2, padding=1)]
    layers += [nn.ReLU(), nn.Conv2d(hidden, out_channels, 3, padding=1)]
    return nn.Sequential(*layers)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation of ``(B, E, h, w)`` feature maps against a codebook ``(K, E)``.

    Args:
        num_codes: K.
        code_dim: E.
        use_ema: update the codebook by exponential moving averages of the assigned encodings (a buffer, not a
            parameter) instead of by gradient descent on the codebook loss.
        ema_decay: gamma of those averages.
        restart_every: every this many training calls, codes assigned no encoding since the last check are moved
            to encodings drawn at random from the current call's batch (0: never).

    Buffers: ``hits`` (assignments per code since the last restart check), ``num_updates`` (training calls),
    ``num_restarts`` (codes restarted so far) and, with EMA, ``ema_count`` / ``ema_sum``. All live in the state
    dict, so a checkpoint carries them and resume continues exactly. Under ``torch.distributed`` (DDP) the counts
    and EMA sums are summed over the processes and restarted codes take rank 0's draws, so every process keeps
    the same codebook. The restart check reads the step counter on the host (one synchronisation per step).
    """

    def __init__(self, num_codes: int, code_dim: int, *, use_ema: bool = False, ema_decay: float = 0.99,
                 restart_every: int = 0):
        super().__init__()
        self.num_codes, self.code_dim = num_codes, code_dim
        self.use_ema, self.ema_decay, self.restart_every = use_ema, ema_decay, restart_every
        init = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if use_ema:
            self.register_buffer("codebook", init)
            # count 1 with sum = the initial vector: an unused code keeps its vector (no division by ~0)
            self.register_buffer("ema_count", torch.ones(num_codes))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("hits", torch.zeros(num_codes, dtype=torch.long))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_restarts", torch.zeros((), dtype=torch.long))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row: ``(N, E) -> (N,)`` int64 in ``[0, K)``."""
        cb = self.codebook.to(flat.dtype)
        d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ cb.T + cb.pow(2).sum(1)  # (N, K) squared distances
        return d.argmin(1)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of a code grid: ``(B, h, w)`` int64 -> ``(B, E, h, w)``."""
        if codes.min() < 0 or codes.max() >= self.num_codes:
            raise UserError(f"code indices must lie in [0, {self.num_codes})")
        return self.codebook[codes].permute(0, 3, 1, 2)  # (B, h, w, E) -> (B, E, h, w)

    def forward(self, z_e: torch.Tensor, *, generator: torch.Generator | None = None,
                update: bool | None = None) -> dict:
        """Quantise ``z_e`` ``(B, E, h, w)``; with ``update`` (default: in training mode) also restart dead codes
        and update the statistics (hits, EMA codebook).

        Returns:
            ``z_q``: the straight-through output ``z_e + sg[e - z_e]`` (value ``e``, gradient to ``z_e``)
            ``(B, E, h, w)``; ``codes`` ``(B, h, w)`` int64; ``codebook_loss`` ``mean ||sg[z_e] - e||^2`` (gradient
            to the codebook only) and ``commitment_loss`` ``mean ||z_e - sg[e]||^2`` (gradient to the encoder only),
            both means over positions and code dimensions.
        """
        B, E, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, E)  # (B, E, h, w) -> (B h w, E)
        update = self.training if update is None else update
        if update and self.restart_every > 0:
            self._maybe_restart(flat.detach(), generator)
        codes = self.nearest(flat.detach())
        e = self.codebook[codes].to(flat.dtype)  # (N, E); gradient reaches the codebook (not with EMA)
        codebook_loss = (flat.detach() - e).pow(2).mean()
        commitment_loss = (flat - e.detach()).pow(2).mean()
        q = flat + (e - flat).detach()  # straight-through estimator
        if update:
            self._update(flat.detach(), codes)
        return {"z_q": q.view(B, h, w, E).permute(0, 3, 1, 2), "codes": codes.view(B, h, w),
                "codebook_loss": codebook_loss, "commitment_loss": commitment_loss}

    @torch.no_grad()
    def _update(self, flat: torch.Tensor, codes: torch.Tensor) -> None:
        counts = torch.bincount(codes, minlength=self.num_codes)
        if _is_distributed():  # every process sees the whole batch's statistics: the buffers stay equal
            torch.distributed.all_reduce(counts)
        self.hits += counts
        self.num_updates += 1
        if self.use_ema:  # appendix A.1: N_k <- g N_k + (1-g) n_k, m_k <- g m_k + (1-g) sum z, e_k = m_k / N_k
            g = self.ema_decay
            sums = torch.zeros_like(self.ema_sum).index_add_(0, codes, flat.to(self.ema_sum.dtype))
            if _is_distributed():
                torch.distributed.all_reduce(sums)
            self.ema_count.mul_(g).add_(counts.to(self.ema_count.dtype), alpha=1 - g)
            self.ema_sum.mul_(g).add_(sums, alpha=1 - g)
            n = self.ema_count.sum()
            size = (self.ema_count + _EMA_EPS) / (n + self.num_codes * _EMA_EPS) * n  # Laplace smoothing
            self.codebook.copy_(self.ema_sum / size[:, None])

    @torch.no_grad()
    def _maybe_restart(self, flat: torch.Tensor, generator: torch.Generator | None) -> None:
        step = int(self.num_updates)
        if step == 0 or step % self.restart_every:
            return
        dead = (self.hits == 0).nonzero().squeeze(1)
        self.hits.zero_()
        if dead.numel() == 0:
            return
        N = flat.shape[0]
        device = generator.device if generator is not None else flat.device
        if N >= dead.numel():  # distinct encodings where there are enough
            pick = torch.randperm(N, generator=generator, device=device)[:dead.numel()]
        else:
            pick = torch.randint(N, (dead.numel(),), generator=generator, device=device)
        new = flat[pick.to(flat.device)].to(self.codebook.dtype)
        if _is_distributed():  # the same dead set everywhere (hits are summed): take rank 0's draws
            torch.distributed.broadcast(new, src=0)
        self.codebook[dead] = new
        if self.use_ema:
            self.ema_sum[dead] = new
            self.ema_count[dead] = 1.0
        self.num_restarts += dead.numel()


def _usage(codes: torch.Tensor, num_codes: int) -> dict:
    """Perplexity ``exp(H(code frequencies))`` and the number of codes used, over all positions of ``codes``."""
    counts = torch.bincount(codes.reshape(-1), minlength=num_codes).double()
    p = counts / counts.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"perplexity": float(entropy.exp()), "codes_used": int((counts > 0).sum())}


@dataclass
class VQVAEConfig:
    """Hyperparameters of ``VQVAE``.

    Attributes:
        num_codes: K, the codebook size.
        code_dim: E, the size of each codebook vector.
        hidden_channels: channels of the convolutional encoder and decoder.
        num_blocks: residual blocks in the encoder and in the decoder.
        num_downsamples: halvings from the image to the code grid (``-1``: automatic, see
            ``num_downsamples_for``; digits 8x8 -> a 4x4 grid).
        decoder: the likelihood p(x | z_q), as for ``VAEConfig.decoder`` (``auto``: discretized logistic for n-level
            images, Bernoulli for binary images, Gaussian for continuous data).
        beta: weight of the commitment loss (0.25 in the paper).
        use_ema: train the codebook by exponential moving averages (appendix A.1) instead of the codebook loss.
        codebook_decay: decay of those averages (not ``ema_decay``, the training option that averages weights).
        restart_every: training steps between dead-code checks (0: no restarts).
    """

    num_codes: int = 32
    code_dim: int = 16
    hidden_channels: int = 64
    num_blocks: int = 2
    num_downsamples: int = -1
    decoder: Literal["auto", "bernoulli", "categorical", "logistic", "gaussian"] = "auto"
    beta: float = 0.25
    use_ema: bool = False
    codebook_decay: float = 0.99
    restart_every: int = 20

    def __post_init__(self):
        check_choices(self)
        require_at_least(self, 1, "code_dim", "hidden_channels")
        require_at_least(self, 2, "num_codes")
        require_at_least(self, 0, "num_blocks", "restart_every")
        require_at_least(self, -1, "num_downsamples")
        require_fraction(self, "codebook_decay")
        if self.beta < 0:
            raise UserError(f"beta must be >= 0, got {self.beta}")


class _VQModel(DensityModel):
    """What VQ-VAE and VQ-VAE-2 share: likelihood, loss, bound, usage metrics, uniform-prior sampling.

    Subclass obligations: ``quantizers`` (an ``nn.ModuleList``, top level first), ``grid_shapes`` (one ``(h, w)``
    per quantizer), ``_forward(x, generator, update) -> (decoder params, [quantizer outputs])`` (``update``: as for
    ``VectorQuantizer.forward``), ``encode``,
    ``decoder_params(codes)``, and the flat code layout for a prior: ``codes_to_tensor`` / ``tensor_to_codes``.
    """

    family = "latent"
    train_defaults = {"epochs": 30, "lr": 2e-3, "batch_size": 64}

    @classmethod
    def check_spec(cls, spec, config):
        if not spec.is_image:
            raise UserError(f"{cls.__name__} needs images (C, H, W); the data are {spec.describe()}")
        num_downsamples_for(spec, config.num_downsamples)

    def _init_observation(self, spec):
        self.observation = Observation(spec, choose_observation(spec, self.config.decoder))

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return input_features(x, self.spec, self._param_dtype())

    def _out(self, h: torch.Tensor) -> torch.Tensor:
        N = h.shape[0]
        return h.view(N, self.observation.params_per_dim, *self.spec.shape)  # (N, P C, H, W) -> (N, P, C, H, W)

    # ------------------------------------------------------------------ the code layout for a prior
    @property
    def num_code_positions(self) -> int:
        return sum(h * w for h, w in self.grid_shapes)

    def prior_spec(self) -> DataSpec:
        """The ``DataSpec`` of the codes as a prior models them (see ``codes_to_tensor``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ likelihood and loss
    def decode(self, codes, *, use_decoder_noise: bool = False, generator: torch.Generator | None = None):
        """Images from codes: the decoder's mode (mean for a Gaussian), or a draw from p(x | z_q)."""
        params = self.decoder_params(codes)
        return self.observation.sample(params, generator) if use_decoder_noise else self.observation.mode(params)

    def log_likelihood_given_codes(self, x: torch.Tensor, codes) -> torch.Tensor:
        """``log p(x | z_q(codes))``: ``(B,)`` nats."""
        self.check_input(x)
        return self.observation.log_likelihood(x, self.decoder_params(codes))

    def log_prob(self, x: torch.Tensor, context=None) -> torch.Tensor:
        """The uniform-prior bound ``log p(x | z_q(x)) - n log K`` (<= log p(x) under ``p(z) = K^-n``): ``(B,)``."""
        params, _ = self._forward(x, None, update=False)
        return self.observation.log_likelihood(x, params) - self._uniform_code_nll()

    def _uniform_code_nll(self) -> float:
        return sum(h * w * math.log(q.num_codes) for (h, w), q in zip(self.grid_shapes, self.quantizers))

    def loss(self, x: torch.Tensor, context=None, *, generator: torch.Generator | None = None) -> dict:
        """``-log p(x|z_q) / D + codebook + beta * commitment`` (the codebook term only without EMA).

        Returns:
            ``"loss"``; ``"nll"``: ``-log p(x|z_q) + n log K`` in nats per example (the uniform-prior bound, so
            the derived bits/dim bound the true ones from above); ``"recon"``: ``-log p(x|z_q)`` (nats per
            example); ``"codebook"`` and ``"commitment"``: the two squared distances (summed over levels; equal in
            value, they differ in where their gradient goes).
        """
        params, quantized = self._forward(x, generator)
        recon = -self.observation.log_likelihood(x, params).mean()
        codebook = sum(q["codebook_loss"] for q in quantized)
        commitment = sum(q["commitment_loss"] for q in quantized)
        loss = recon / self.spec.num_dims + self.config.beta * commitment
        if not self.config.use_ema:
            loss = loss + codebook
        return {"loss": loss, "nll": recon + self._uniform_code_nll(), "recon": recon, "codebook": codebook,
                "commitment": commitment}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``: ``(B, *event)``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def evaluation_metrics(self, dataset, batch_size: int = 256) -> dict:
        """Codebook usage and reconstruction error over ``dataset`` (the ``Task.evaluate`` hook, each epoch).

        Returns:
            ``perplexity`` (``exp`` of the entropy of the code frequencies over every position; K when all codes
            are equally used) and ``codes_used`` per level (suffixes ``_top``/``_bottom`` for VQ-VAE-2), and
            ``recon_mse``: the mean squared error of ``reconstruct(x)`` with levels scaled to [0, 1] (continuous
            data: in the data's units).
        """
        device = self._param_device()
        levels, sq = None, 0.0
        scale = (self.spec.num_levels - 1) if self.spec.is_discrete else 1.0
        for chunk in dataset.x.split(batch_size):
            chunk = chunk.to(device)
            codes = self.encode(chunk)
            codes = codes if isinstance(codes, tuple) else (codes,)
            levels = [[] for _ in codes] if levels is None else levels
            for kept, c in zip(levels, codes):
                kept.append(c)
            rec = self.decode(codes if len(codes) > 1 else codes[0])
            sq += float(((rec.double() - chunk.double()) / scale).pow(2).sum())
        return self._usage_metrics(levels) | {"recon_mse": sq / (len(dataset) * self.spec.num_dims)}

    def _usage_metrics(self, codes) -> dict:
        names = [""] if len(self.quantizers) == 1 else ["_top", "_bottom"]
        out = {}
        for name, level, q in zip(names, codes, self.quantizers):
            usage = _usage(torch.cat([c.reshape(-1) for c in level]), q.num_codes)
            out.update({f"perplexity{name}": usage["perplexity"], f"codes_used{name}": usage["codes_used"]})
        return out

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
               use_decoder_noise: bool = False) -> torch.Tensor:
        """Decode codes drawn from the uniform prior ``p(z) = K^-n`` (the first stage's prior; train ``vq_prior``
        on this model's run for a learned one). Returns ``(N, *event)``: the decoder's mode by default (as in the
        paper), a draw from p(x | z_q) with ``use_decoder_noise``."""
        device = generator.device if generator is not None else self._param_device()
        grids = tuple(torch.randint(q.num_codes, (num_samples, h, w), generator=generator, device=device)
                      .to(self._param_device()) for (h, w), q in zip(self.grid_shapes, self.quantizers))
        return self.decode(grids if len(grids) > 1 else grids[0], use_decoder_noise=use_decoder_noise,
                           generator=generator)


class VQVAE(_VQModel):
    """One code grid ``(h, w)`` of indices into a K-vector codebook (see the module docstring)."""

    Config = VQVAEConfig

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c = self.config
        n = num_downsamples_for(spec, c.num_downsamples)
        C, H, W = spec.shape
        self.grid_shapes = [(H // 2 ** n, W // 2 ** n)]
        self._init_observation(spec)
        self.encoder = conv_encoder(C, c.hidden_channels, c.code_dim, n, c.num_blocks)
        self.quantizers = nn.ModuleList([VectorQuantizer(c.num_codes, c.code_dim, use_ema=c.use_ema,
                                                         ema_decay=c.codebook_decay, restart_every=c.restart_every)])
        self.decoder = conv_decoder(c.code_dim, c.hidden_channels, C * self.observation.params_per_dim, n,
                                    c.num_blocks)

    @property
    def quantizer(self) -> VectorQuantizer:
        return self.quantizers[0]

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder output ``z_e``: ``(B, *event) -> (B, E, h, w)``."""
        return self.encoder(self._features(x))

    def _forward(self, x, generator, update=None):
        q = self.quantizer(self.encode_features(x), generator=generator, update=update)
        return self._out(self.decoder(q["z_q"])), [q]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code indices: ``(B, *event) -> (B, h, w)`` int64 in ``[0, num_codes)``."""
        flat = self.encode_features(x)
        B, E, h, w = flat.shape
        return self.quantizer.nearest(flat.permute(0, 2, 3, 1).reshape(-1, E)).view(B, h, w)

    def decoder_params(self, codes: torch.Tensor) -> torch.Tensor:
        """``(B, h, w)`` codes -> ``(B, P, *event)`` parameters of p(x | z_q)."""
        if tuple(codes.shape[1:]) != tuple(self.grid_shapes[0]):
            raise UserError(f"codes must have shape (B, {self.grid_shapes[0][0]}, {self.grid_shapes[0][1]}),"
                            f" got {tuple(codes.shape)}")
        return self._out(self.decoder(self.quantizer.embed(codes).to(self._param_dtype())))

    def prior_spec(self) -> DataSpec:
        """Codes as a one-channel image ``(1, h, w)`` with K levels (what ``pixel_cnn`` and ``transformer`` take)."""
        h, w = self.grid_shapes[0]
        return DataSpec((1, h, w), "discrete", self.config.num_codes)

    def codes_to_tensor(self, codes: torch.Tensor) -> torch.Tensor:
        return codes.unsqueeze(1)  # (B, h, w) -> (B, 1, h, w)

    def tensor_to_codes(self, t: torch.Tensor) -> torch.Tensor:
        return t[:, 0]


@dataclass
class VQVAE2Config(VQVAEConfig):
    """Hyperparameters of ``VQVAE2``: those of ``VQVAEConfig``; ``num_codes`` and ``code_dim`` apply to both levels
    (two separate codebooks), ``num_downsamples`` to the bottom grid (the top one is halved once more where both of
    its sides are even, else kept at the bottom's resolution)."""


class VQVAE2(_VQModel):
    """Two code levels: top ``(h/2, w/2)`` (or ``(h, w)``) and bottom ``(h, w)``; the bottom is quantised from the
    bottom features concatenated with the decoded top codes, and the decoder reads both (Razavi et al. 2019)."""

    Config = VQVAE2Config

    def __init__(self, spec, config=None):
        super().__init__(spec, config)
        c = self.config
        n = num_downsamples_for(spec, c.num_downsamples)
        C, H, W = spec.shape
        hb, wb = H // 2 ** n, W // 2 ** n
        halve = hb % 2 == 0 and wb % 2 == 0
        self.grid_shapes = [(hb // 2, wb // 2) if halve else (hb, wb), (hb, wb)]
        self._init_observation(spec)
        ch, E, k = c.hidden_channels, c.code_dim, int(halve)
        self.encoder_bottom = conv_encoder(C, ch, ch, n, c.num_blocks)  # (B, ch, hb, wb)
        self.encoder_top = conv_encoder(ch, ch, E, k, c.num_blocks)  # (B, E, ht, wt)
        self.decoder_top = conv_decoder(E, ch, E, k, c.num_blocks)  # top codes -> (B, E, hb, wb)
        self.pre_bottom = nn.Conv2d(ch + E, E, 1)
        self.upsample_top = nn.ConvTranspose2d(E, E, 4, stride=2, padding=1) if halve else nn.Conv2d(E, E, 1)
        self.decoder = conv_decoder(2 * E, ch, C * self.observation.params_per_dim, n, c.num_blocks)
        kw = dict(use_ema=c.use_ema, ema_decay=c.codebook_decay, restart_every=c.restart_every)
        self.quantizers = nn.ModuleList([VectorQuantizer(c.num_codes, E, **kw), VectorQuantizer(c.num_codes, E, **kw)])

    def _levels(self, x, generator=None, update=None):
        h_b = self.encoder_bottom(self._features(x))  # (B, ch, hb, wb)
        q_t = self.quantizers[0](self.encoder_top(h_b), generator=generator, update=update)
        z_b = self.pre_bottom(torch.cat([h_b, self.decoder_top(q_t["z_q"])], 1))  # (B, E, hb, wb)
        q_b = self.quantizers[1](z_b, generator=generator, update=update)
        return q_t, q_b

    def _decode_quantized(self, z_t, z_b):
        return self._out(self.decoder(torch.cat([z_b, self.upsample_top(z_t)], 1)))

    def _forward(self, x, generator, update=None):
        q_t, q_b = self._levels(x, generator, update)
        return self._decode_quantized(q_t["z_q"], q_b["z_q"]), [q_t, q_b]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Code indices ``(top (B, ht, wt), bottom (B, hb, wb))``, int64 (no statistics are updated)."""
        q_t, q_b = self._levels(x, update=False)
        return q_t["codes"], q_b["codes"]

    def decoder_params(self, codes) -> torch.Tensor:
        """``(top, bottom)`` code grids -> ``(B, P, *event)``."""
        if not isinstance(codes, (tuple, list)) or len(codes) != 2:
            raise UserError("VQVAE2 decodes a pair (top codes, bottom codes)")
        for c, shape in zip(codes, self.grid_shapes):
            if tuple(c.shape[1:]) != tuple(shape):
                raise UserError(f"code grids must have shapes {self.grid_shapes}, got "
                                f"{[tuple(c.shape[1:]) for c in codes]}")
        dtype = self._param_dtype()
        z_t, z_b = (q.embed(c).to(dtype) for q, c in zip(self.quantizers, codes))
        return self._decode_quantized(z_t, z_b)

    def prior_spec(self) -> DataSpec:
        """Both grids as one sequence, the top grid first (raster), then the bottom (raster): ``(n_t + n_b,)`` with
        K levels. An autoregressive prior over it is ``p(top) p(bottom | top)``: the bottom prior is conditioned on
        the whole top grid."""
        return DataSpec((self.num_code_positions,), "discrete", self.config.num_codes)

    def codes_to_tensor(self, codes) -> torch.Tensor:
        top, bottom = codes
        return torch.cat([top.reshape(top.shape[0], -1), bottom.reshape(bottom.shape[0], -1)], 1)

    def tensor_to_codes(self, t: torch.Tensor):
        (ht, wt), (hb, wb) = self.grid_shapes
        B = t.shape[0]
        return t[:, :ht * wt].reshape(B, ht, wt), t[:, ht * wt:].reshape(B, hb, wb)
