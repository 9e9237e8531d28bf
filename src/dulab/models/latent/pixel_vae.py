"""PixelVAE: a VAE whose decoder is a small PixelCNN conditioned on the latent.

The encoder and the prior are the VAE's (``q(z|x)`` diagonal Gaussian, ``p(z) = N(0, I)``). The decoder
``p(x|z) = prod_i p(x_i | x_<i, z)`` is autoregressive over pixels in raster order (channels R -> G -> B within a
pixel): a latent decoder (the VAE's MLP or deconvolutional net) maps z to conditioning feature maps ``m(z)``
``(N, M, H, W)``; a 1x1 projection of them is added to the output of every masked-convolution layer of a PixelCNN
(type-A first layer, type-B residual blocks, a softmax over the levels per sub-pixel). ``m(z)`` does not depend on
x, so the decoder stays a normalised autoregressive pmf for every z. A decoder this strong can model the data
without z: the KL term then drives q(z|x) to the prior (posterior collapse); ``free_bits`` (Kingma et al. 2016)
stops the optimiser from pushing each latent dimension's batch-mean KL below lambda nats, which keeps the latent
in use. Sampling is autoregressive over pixels (one network pass per sub-pixel, on the rows up to the current
one); ``decode(z)`` is the greedy decoding (each sub-pixel the mode of its conditional given the earlier ones).

References:
    Gulrajani, Kumar, Ahmed, Taiga, Visin, Vazquez, Courville. "PixelVAE: A Latent Variable Model for Natural
    Images", ICLR 2017, arXiv:1611.05013.
    van den Oord, Kalchbrenner, Kavukcuoglu. "Pixel Recurrent Neural Networks", ICML 2016, arXiv:1601.06759.
    Chen, Kingma, Salimans, Duan, Dhariwal, Schulman, Sutskever, Abbeel. "Variational Lossy Autoencoder",
    ICLR 2017, arXiv:1611.02731 (posterior collapse with autoregressive decoders).
    Kingma et al. "Improved Variational Inference with Inverse Autoregressive Flow", NeurIPS 2016,
    arXiv:1606.04934 (free bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dulab.config import check_choices, require_at_least, require_odd, require_widths
from dulab.distributions import categorical_sample
from dulab.distributions.gaussian import diag_gaussian_log_prob, standard_normal_log_prob
from dulab.errors import UserError
from dulab.losses.elbo import categorical_log_likelihood, gaussian_kl_standard
from dulab.models.autoregressive.pixel_cnn import CategoricalHead, MaskedResidualBlock
from dulab.models.base import DensityModel
from dulab.models.latent.networks import Decoder, Encoder, choose_architecture, input_features
from dulab.models.latent.vae import VAE
from dulab.nn.masked import MaskedConv2d

__all__ = ["PixelVAE", "PixelVAEConfig"]

#: activations (rows x pixels x filters) per decoder pass in ``log_prob``
_ACTIVATION_BUDGET = 2**22


@dataclass
class PixelVAEConfig:
    """Hyperparameters of ``PixelVAE``.

    Attributes:
        latent_dim: Z.
        hidden_sizes, hidden_channels, architecture: the encoder and the latent decoder ``z -> m(z)``, as for
            ``VAEConfig``.
        conditioning_channels: M / C, the conditioning feature maps per image channel that ``m(z)`` outputs.
        num_filters: feature maps of the PixelCNN's residual stream.
        num_layers: masked residual blocks (each one type-B kxk convolution); more layers, a stronger decoder.
        first_kernel_size: odd size of the type-A first convolution.
        kernel_size: odd size of the type-B convolutions.
        beta: weight of the KL term (1: the ELBO).
        free_bits: nats per latent dimension below which the batch-mean KL is not penalised (0: off).
        kl_warmup_steps: training steps over which the KL weight rises linearly to ``beta`` (0: off; as for
            ``VAEConfig``). Off by default: the collapse with a PixelCNN decoder is this model's point (section 14
            of BENCHMARKS.md), and free bits are its measured remedy.
    """

    latent_dim: int = 16
    hidden_sizes: tuple[int, ...] = (256,)
    hidden_channels: int = 32
    architecture: Literal["auto", "mlp", "conv"] = "auto"
    conditioning_channels: int = 8
    num_filters: int = 32
    num_layers: int = 3
    first_kernel_size: int = 5
    kernel_size: int = 3
    beta: float = 1.0
    free_bits: float = 0.0
    kl_warmup_steps: int = 0

    def __post_init__(self):
        check_choices(self)
        require_widths(self, "hidden_sizes")
        require_at_least(self, 0, "kl_warmup_steps")
        require_at_least(self, 1, "latent_dim", "hidden_channels", "conditioning_channels", "num_filters")
        require_at_least(self, 0, "num_layers")
        require_odd(self, 1, "first_kernel_size", "kernel_size")
        if self.beta < 0 or self.free_bits < 0:
            raise UserError(f"need beta >= 0 and free_bits >= 0; got beta={self.beta}, free_bits={self.free_bits}")


class PixelVAE(VAE):
    """VAE encoder and prior, PixelCNN decoder conditioned on z (see the module docstring)."""

    Config = PixelVAEConfig
    #: importance samples of the per-epoch NLL estimate (each one a full PixelCNN pass; benchmarks use 1000)
    eval_importance_samples: int = 32

    @classmethod
    def check_spec(cls, spec, config):
        if not (spec.is_discrete and spec.is_image):
            raise UserError(f"pixel_vae models discrete images (C, H, W); got {spec.describe()} data: use vae")

    def __init__(self, spec, config=None):
        DensityModel.__init__(self, spec, config)
        c = self.config
        C, K = spec.shape[0], spec.num_levels
        F = max(c.num_filters, C)
        self.architecture = choose_architecture(spec, c.architecture)
        self.encoder = Encoder(spec, 2 * c.latent_dim, self.architecture, c.hidden_sizes, c.hidden_channels)
        # z -> m(z): (N, conditioning_channels, C, H, W), read as (N, M, H, W) feature maps
        self.latent_decoder = Decoder(spec, c.latent_dim, c.conditioning_channels, self.architecture,
                                      c.hidden_sizes, c.hidden_channels)
        M = c.conditioning_channels * C
        self.first = MaskedConv2d(C, F, c.first_kernel_size, "A", num_groups=C)
        self.blocks = nn.ModuleList(MaskedResidualBlock(F, c.kernel_size, C, 0.0) for _ in range(c.num_layers))
        self.projections = nn.ModuleList(nn.Conv2d(M, F, 1) for _ in range(c.num_layers + 1))
        self.head = CategoricalHead(F, F, C, K, C)
        self._init_warmup()

    # ------------------------------------------------------------------ decoder
    def conditioning(self, z: torch.Tensor) -> torch.Tensor:
        """``m(z)``: ``(N, Z) -> (N, M, H, W)``."""
        m = self.latent_decoder(z)  # (N, conditioning_channels, C, H, W)
        return m.flatten(1, 2)  # -> (N, M, H, W)

    def decoder_logits(self, v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """The PixelCNN: image ``v`` scaled to [-1, 1] ``(N, C, h, W)`` and ``m(z)`` ``(N, M, h, W)`` ->
        logits ``(N, K, C, h, W)`` of every conditional ``p(x_i | x_<i, z)``. Works on the top ``h`` rows alone
        (no layer looks below the current row)."""
        h = self.first(v) + self.projections[0](m)
        for block, proj in zip(self.blocks, self.projections[1:]):
            h = block(h) + proj(m)
        return self.head(h)

    def decoder_log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` summed over the event: ``x (N, C, H, W)`` int64, ``z (N, Z)`` -> ``(N,)`` nats."""
        v = input_features(x, self.spec, self._param_dtype())
        return categorical_log_likelihood(x, self.decoder_logits(v, self.conditioning(z)))

    # ------------------------------------------------------------------ bounds
    def _terms(self, x, generator=None):
        mean, log_var = self.posterior(x)
        z = mean + torch.exp(0.5 * log_var) * self._randn(mean.shape, generator, mean)
        return self.decoder_log_likelihood(x, z), gaussian_kl_standard(mean, log_var)

    def log_weights(self, x: torch.Tensor, num_samples: int, *, generator: torch.Generator | None = None,
                    max_rows: int | None = None) -> torch.Tensor:
        """Log importance weights ``log p(x|z_k) + log p(z_k) - log q(z_k|x)``: ``(K, B)`` nats, in chunks of at
        most ``max_rows`` decoder rows (default: a fixed activation budget)."""
        if num_samples < 1:
            raise UserError(f"num_samples must be >= 1, got {num_samples}")
        mean, log_var = self.posterior(x)
        B, Z = mean.shape
        std = torch.exp(0.5 * log_var)
        rows = max_rows or max(B, _ACTIVATION_BUDGET // (self.spec.num_dims * self.first.weight.shape[0]))
        chunk = max(1, rows // B)
        out = []
        for start in range(0, num_samples, chunk):
            k = min(chunk, num_samples - start)
            flat = (mean + std * self._randn((k, B, Z), generator, mean)).reshape(k * B, Z)  # (k * B, Z)
            xs = x.unsqueeze(0).expand(k, *x.shape).reshape(k * B, *x.shape[1:])  # (k * B, C, H, W)
            log_px = self.decoder_log_likelihood(xs, flat)
            log_pz = standard_normal_log_prob(flat)
            log_qz = diag_gaussian_log_prob(flat, mean.repeat(k, 1), 0.5 * log_var.repeat(k, 1))
            out.append((log_px + log_pz - log_qz).view(k, B))
        return torch.cat(out, 0)

    # ------------------------------------------------------------------ decoding and sampling
    @torch.no_grad()
    def _generate(self, z: torch.Tensor, generator: torch.Generator | None, greedy: bool) -> torch.Tensor:
        """Pixel by pixel (raster, channels in order): draws from, or the mode of, each conditional."""
        C, H, W = self.spec.shape
        K = self.spec.num_levels
        m = self.conditioning(z)
        x = torch.zeros(len(z), C, H, W, dtype=torch.long, device=z.device)
        for i in range(H):
            for j in range(W):
                for ch in range(C):
                    v = input_features(x[:, :, :i + 1], self.spec, self._param_dtype())  # rows 0..i
                    logits = self.decoder_logits(v, m[:, :, :i + 1])[:, :, ch, i, j]  # (N, K)
                    x[:, ch, i, j] = logits.argmax(1) if greedy else categorical_sample(logits, generator)
        assert int(x.max()) < K
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Greedy autoregressive decoding (each sub-pixel the mode of its conditional): ``(N, Z) -> (N, C, H, W)``."""
        return self._generate(z, None, greedy=True)

    def decoder_params(self, z: torch.Tensor) -> torch.Tensor:
        raise UserError("pixel_vae's decoder is autoregressive: p(x|z) has no parameters without x; use "
                        "decoder_logits(v, conditioning(z))")

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None, context=None,
               use_decoder_noise: bool = True) -> torch.Tensor:
        """``z ~ N(0, I)``, then ``x ~ p(x|z)`` autoregressively (greedy decoding when ``use_decoder_noise`` is
        off). Returns ``(num_samples, C, H, W)`` int64 levels."""
        like = torch.empty((), dtype=self._param_dtype(), device=self._param_device())
        z = self._randn((num_samples, self.config.latent_dim), generator, like)
        return self._generate(z, generator, greedy=not use_decoder_noise)

