"""BigGAN, small: a class-conditional residual GAN with conditional batch norm fed by a shared class embedding and a
hierarchical latent, a projection discriminator, spectral norm in G and D, orthogonal regularisation of G, the
hinge loss, and the truncation trick at sampling (Brock et al. 2019).

* **Generator.** ``z`` is split into ``num_blocks + 1`` chunks (the hierarchical latent, Sec. 4 / Appendix B):
  the first goes through a linear layer to the base map, and chunk ``i`` is concatenated with the shared class
  embedding ``e(y)`` to condition block ``i``. Each residual block is
  ``CBN -> ReLU -> up x2 -> conv3x3 -> CBN -> ReLU -> conv3x3`` plus ``up x2 -> conv1x1`` on the skip path; every
  conditional batch norm (``dulab.nn.modulation.ConditionalBatchNorm2d``) takes its gain and bias from linear maps
  of ``[e(y), z_i]``. Then BN, ReLU, conv3x3 to the image and ``tanh``.
* **Discriminator.** Residual blocks down (the first "optimised", as in SN-GAN), ReLU, sum over positions to ``h``;
  the logit is ``psi(h) + <embed(y), h>``: the projection discriminator of Miyato & Koyama (2018, Eq. 3).
* **Orthogonal regularisation** (Sec. 3.1, Eq. 3) on every G weight ``W`` (as a matrix of filters, rows
  ``W.reshape(out, -1)``), except the shared embedding: ``beta ||W W^T * (1 - I)||_F^2``; only the off-diagonal
  terms are penalised, so filters are pushed towards orthogonality but their norms are free. Added to G's loss
  through ``generator_regularizer`` (weights before spectral normalisation, as in the authors' code).
* **Truncation trick** (Sec. 3.1): ``sample(n, truncation=t)`` draws ``z`` from a truncated normal, re-sampling
  every entry with ``|z| > t``; smaller ``t`` trades variety for fidelity.

The number of blocks is ``dcgan.num_stages`` (at least one; images of odd size get one block without up/down
sampling). The data must be labelled (``spec.num_classes``); ``sample`` needs ``context=`` labels.
Defaults follow the paper where they fit a small CPU model: hinge loss, Adam betas (0, 0.999), D at 4x G's
learning rate (lr_g 1e-4, lr_d 4e-4), ``beta = 1e-4``; one D step per G step (the paper uses two).

References:
    Brock, Donahue, Simonyan. "Large Scale GAN Training for High Fidelity Natural Image Synthesis", 2019,
    arXiv:1809.11096.
    Miyato, Koyama. "cGANs with Projection Discriminator", 2018, arXiv:1802.05637.
    Miyato, Kataoka, Koyama, Yoshida. "Spectral Normalization for Generative Adversarial Networks", 2018,
    arXiv:1802.05957.
    de Vries, Strub, Mary, Larochelle, Pietquin, Courville. "Modulating early visual processing by language",
    2017, arXiv:1707.00683.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from dulab.config import require_at_least
from dulab.errors import UserError
from dulab.losses.gan import LossKind
from dulab.models.gan.dcgan import num_stages
from dulab.models.gan.image_base import ImageGAN, ImageGANConfig, attention_index
from dulab.nn.attention import SelfAttention2d
from dulab.nn.modulation import ConditionalBatchNorm2d

__all__ = ["BigGAN", "BigGANConfig", "orthogonal_penalty", "truncated_normal"]


@dataclass
class BigGANConfig(ImageGANConfig):
    """Hyperparameters of ``BigGAN``.

    Attributes:
        latent_dim: size of ``z`` (split into ``num_blocks + 1`` chunks; at least that many).
        base_channels: channels of the last G block and the first D block; block ``i`` of D has
            ``base_channels * 2^i``.
        embed_dim: size of the shared class embedding.
        ortho_beta: weight of the orthogonal regularisation of G (0 disables; the paper's 1e-4).
        use_attention: a self-attention block in G and D (on the largest map with at most 256 positions), as
            BigGAN has at 64x64.
    """

    latent_dim: int = 64
    loss: LossKind = "hinge"
    base_channels: int = 32
    embed_dim: int = 32
    ortho_beta: float = 1e-4
    use_attention: bool = False
    lr_g: float | None = 1e-4
    lr_d: float | None = 4e-4
    betas_g: tuple[float, float] | None = (0.0, 0.999)
    betas_d: tuple[float, float] | None = (0.0, 0.999)

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, 1, "embed_dim")
        require_at_least(self, 0.0, "ortho_beta")


def orthogonal_penalty(weight: torch.Tensor) -> torch.Tensor:
    """``||W W^T * (1 - I)||_F^2`` for ``W = weight.reshape(out, -1)`` (BigGAN Eq. 3 without beta).

    Args:
        weight: ``(out, ...)``, e.g. a linear ``(out, in)`` or convolution ``(out, in, k, k)`` weight.
    Returns:
        A scalar: the sum of squared inner products of distinct rows (0 iff the rows are orthogonal).
    """
    w = weight.reshape(weight.shape[0], -1)
    gram = w @ w.T  # (out, out)
    off = gram - torch.diag_embed(torch.diagonal(gram))  # * (1 - I)
    return off.pow(2).sum()


def truncated_normal(shape, threshold: float, *, generator: torch.Generator | None = None, device=None,
                     dtype=None) -> torch.Tensor:
    """``N(0, 1)`` entries conditioned on ``|z| <= threshold``, by re-sampling the entries outside (BigGAN Sec. 3.1).

    Args:
        shape: of the result.
        threshold: > 0.
        generator: source of the draws.
    """
    if not threshold > 0:
        raise UserError(f"truncation must be > 0, got {threshold}")
    z = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    outside = z.abs() > threshold
    while bool(outside.any()):
        z[outside] = torch.randn(int(outside.sum()), generator=generator, device=device, dtype=dtype)
        outside = z.abs() > threshold
    return z


def _sn(module: nn.Module) -> nn.Module:
    return spectral_norm(module)


class GBlock(nn.Module):
    """BigGAN's residual up block with conditional batch norm (module docstring)."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, *, upsample: bool):
        super().__init__()
        self.bn1 = ConditionalBatchNorm2d(in_channels, cond_dim, wrap=_sn)
        self.conv1 = _sn(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.bn2 = ConditionalBatchNorm2d(out_channels, cond_dim, wrap=_sn)
        self.conv2 = _sn(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = _sn(nn.Conv2d(in_channels, out_channels, 1))
        self.upsample = upsample

    def _up(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self._up(F.relu(self.bn1(x, cond))))
        h = self.conv2(F.relu(self.bn2(h, cond)))
        return h + self.skip(self._up(x))


class DBlock(nn.Module):
    """Residual down block: ``[ReLU] conv3x3 ReLU conv3x3 [avgpool]`` plus ``conv1x1 [avgpool]`` on the skip path
    (the first block skips the leading ReLU, and pools before its skip convolution: SN-GAN's "optimised" block)."""

    def __init__(self, in_channels: int, out_channels: int, *, downsample: bool, first: bool):
        super().__init__()
        self.conv1 = _sn(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.conv2 = _sn(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = _sn(nn.Conv2d(in_channels, out_channels, 1))
        self.downsample, self.first = downsample, first

    def _down(self, x):
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = self._down(self.conv2(F.relu(h)))
        skip = self.skip(self._down(x)) if self.first else self._down(self.skip(x))
        return h + skip


class BigGANGenerator(nn.Module):
    """``(z (B, latent_dim), y (B,)) -> (B, C, H, W)`` in ``[-1, 1]``."""

    def __init__(self, spec, config: BigGANConfig, stages: int, widths: list[int], attention: bool):
        super().__init__()
        C, H, W = spec.shape
        n = len(widths)  # blocks
        self.base = (widths[-1], H // 2**stages, W // 2**stages)
        self.chunks = [len(t) for t in torch.arange(config.latent_dim).tensor_split(n + 1)]
        self.embed = nn.Embedding(spec.num_classes, config.embed_dim)  # shared by every block
        top, bh, bw = self.base
        self.linear = _sn(nn.Linear(self.chunks[0], top * bh * bw))
        chans = widths[::-1] + [widths[0]]  # [2^(n-1) c, ..., c, c]
        self.blocks = nn.ModuleList(
            GBlock(chans[i], chans[i + 1], config.embed_dim + self.chunks[i + 1], upsample=stages > 0)
            for i in range(n))
        sizes = [(bh * 2**(i + 1), bw * 2**(i + 1)) if stages > 0 else (bh, bw) for i in range(n)]
        self.attention_after = attention_index(sizes, 256) if attention else -1
        self.attention = _sn_attention(chans[self.attention_after + 1]) if attention else None
        self.out_bn = nn.BatchNorm2d(chans[-1])
        self.out_conv = _sn(nn.Conv2d(chans[-1], C, 3, padding=1))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        zs = z.split(self.chunks, dim=1)  # hierarchical latent: (B, latent_dim) -> n + 1 chunks
        e = self.embed(y)  # (B, embed_dim)
        h = self.linear(zs[0]).reshape(z.shape[0], *self.base)  # (B, top * bh * bw) -> (B, top, bh, bw)
        for i, block in enumerate(self.blocks):
            h = block(h, torch.cat([e, zs[i + 1]], dim=1))
            if i == self.attention_after:
                h = self.attention(h)
        return torch.tanh(self.out_conv(F.relu(self.out_bn(h))))


class BigGANDiscriminator(nn.Module):
    """``(x (B, C, H, W), y (B,)) -> (B,)`` logits: ``psi(h) + <embed(y), h>`` (projection)."""

    def __init__(self, spec, config: BigGANConfig, stages: int, widths: list[int], attention: bool):
        super().__init__()
        C, H, W = spec.shape
        chans = [C] + widths
        self.blocks = nn.ModuleList(DBlock(chans[i], chans[i + 1], downsample=stages > 0, first=i == 0)
                                    for i in range(len(widths)))
        sizes = [(H // 2**(i + 1), W // 2**(i + 1)) if stages > 0 else (H, W) for i in range(len(widths))]
        self.attention_after = attention_index(sizes, 256) if attention else -1
        self.attention = _sn_attention(chans[self.attention_after + 1]) if attention else None
        self.linear = _sn(nn.Linear(widths[-1], 1))
        self.embed = _sn(nn.Embedding(spec.num_classes, widths[-1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = x
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attention_after:
                h = self.attention(h)
        h = F.relu(h).sum(dim=(2, 3))  # global sum pooling: (B, top, h, w) -> (B, top)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)  # Miyato & Koyama 2018, Eq. 3


def _sn_attention(channels: int) -> SelfAttention2d:
    attn = SelfAttention2d(channels)
    for name in ("f", "g", "h", "v"):
        spectral_norm(getattr(attn, name))
    return attn


class BigGAN(ImageGAN):
    """A small class-conditional BigGAN for labelled images ``(C, H, W)``."""

    Config = BigGANConfig
    is_conditional = True
    train_defaults = {"epochs": 30, "batch_size": 64, "lr": 2e-4, "schedule": "constant"}  # lr_g/lr_d override

    @classmethod
    def check_spec(cls, spec, config):
        super().check_spec(spec, config)
        if not spec.num_classes:
            raise UserError("biggan is class-conditional and needs labelled data (spec.num_classes): e.g. digits,"
                            " shapes or sprites; use sagan or stylegan for unlabelled images")
        blocks = max(1, num_stages(*spec.shape[1:]))
        if config.latent_dim < blocks + 1:
            raise UserError(f"biggan splits z into {blocks + 1} chunks for this image size: latent_dim must be >="
                            f" {blocks + 1}, got {config.latent_dim}")

    def build_generator(self) -> nn.Module:
        return BigGANGenerator(self.spec, self.config, self.stages, self._widths(), self.config.use_attention)

    def build_discriminator(self) -> nn.Module:
        return BigGANDiscriminator(self.spec, self.config, self.stages, self._widths(), self.config.use_attention)

    def _labels(self, context, batch: int) -> torch.Tensor:
        if context is None:
            raise UserError("biggan is class-conditional: pass context= labels to generate/discriminate/sample")
        return self._check_context(context, batch)

    def generate(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """G(z, y): ``(B, latent_dim)``, labels ``(B,)`` -> ``(B, C, H, W)`` in ``[-1, 1]``."""
        return self.G(z, self._labels(context, z.shape[0]))

    def discriminate(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """D(x, y): ``(B, C, H, W)``, labels ``(B,)`` -> logits ``(B,)``."""
        return self.D(x, self._labels(context, x.shape[0])).reshape(x.shape[0])

    def sample_latent(self, num_samples: int, *, generator: torch.Generator | None = None,
                      truncation: float | None = None) -> torch.Tensor:
        """``z ~ N(0, I)``, or the truncated normal on ``[-truncation, truncation]`` (``(num_samples, latent_dim)``)."""
        if truncation is None:
            return super().sample_latent(num_samples, generator=generator)
        return truncated_normal((num_samples, self.config.latent_dim), truncation, generator=generator,
                                device=self._param_device(), dtype=self._param_dtype())

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               context: torch.Tensor | None = None, truncation: float | None = None) -> torch.Tensor:
        """``(num_samples, C, H, W)`` samples (int64 levels for discrete data) of classes ``context`` (``(B,)`` or one
        label for all), with the truncation trick when ``truncation`` is given. Uses G as it is (call ``eval()``
        first for batch-norm running statistics)."""
        z = self.sample_latent(num_samples, generator=generator, truncation=truncation)
        return self.from_critic_input(self.generate(z, context=self._labels(context, num_samples)))

    def generator_regularizer(self) -> torch.Tensor | None:
        """``beta sum_W ||W W^T * (1 - I)||_F^2`` over G's weights but the shared embedding (``None`` when off)."""
        if self.config.ortho_beta == 0:
            return None
        terms = [orthogonal_penalty(p) for name, p in self.G.named_parameters()
                 if p.ndim >= 2 and not name.startswith("embed.")]
        return self.config.ortho_beta * torch.stack(terms).sum()

    def loss(self, x: torch.Tensor, context: torch.Tensor | None = None) -> dict:
        """Both players' losses on real ``x`` with labels ``context`` against fakes of those labels (global RNG)."""
        from dulab.losses.gan import discriminator_loss, generator_loss

        y = self._labels(context, x.shape[0])
        fake_logits = self.discriminate(self.generate(self.sample_latent(x.shape[0]), y), y)
        d = discriminator_loss(self.discriminate(self.to_critic_input(x), y), fake_logits, self.config.loss)
        return {"loss": d, "d_loss": d, "g_loss": generator_loss(fake_logits, self.config.loss)}
