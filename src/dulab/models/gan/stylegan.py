"""StyleGAN, small: a mapping network ``z -> w``, a synthesis network that starts from a learned constant and is
steered at every layer by ``w`` (AdaIN, or StyleGAN2's modulated/demodulated convolutions), per-layer noise inputs
with learned per-channel scales, style mixing regularisation, and the truncation trick in W (Karras et al. 2019).

* **Mapping** (Sec. 2): ``z`` is normalised to unit mean square (pixel norm), then ``mapping_layers``
  equalised-lr linear layers with LeakyReLU(0.2) give ``w`` (``w_dim``); the mapping's learning rate is scaled by
  ``mapping_lr_mul`` (0.01 in the paper).
* **Synthesis**: a learned constant ``(C_0, h_0, w_0)`` at the base resolution, then for each of the
  ``dcgan.num_stages`` stages a x2 nearest up-sampling; two style layers per resolution. A style layer is
  ``conv3x3 -> noise -> +bias -> LeakyReLU -> AdaIN(w)`` (``style_block="adain"``, StyleGAN; the first layer
  has no convolution, it styles the constant) or ``modulated conv3x3 (w) -> noise -> +bias -> LeakyReLU``
  (``"modulated"``, StyleGAN2 Sec. 2.2). A 1x1 convolution (modulated, without demodulation, for StyleGAN2) maps
  the last features to the image, then ``tanh``.
* **Noise inputs** (Sec. 3.2): each layer adds one ``N(0, 1)`` map per example, scaled per channel by a learned
  factor that starts at 0. While training, the maps come from the global RNG (saved with the run); ``sample``
  draws them from its ``generator``.
* **Style mixing** (Sec. 3.1): while training, each example's styles switch, with probability ``mixing_prob``, from
  ``w_1 = f(z_1)`` to ``w_2 = f(z_2)`` at a crossover layer drawn uniformly from ``1..L-1`` (one crossover per
  example here; the paper draws one per minibatch).
* **Truncation in W** (Sec. 3.1 / Appendix B): ``w' = w_avg + psi (w - w_avg)`` with ``w_avg`` an exponential
  moving average (``w_avg_beta``) of the mapped ``w`` over training, kept as a buffer (saved in checkpoints);
  ``sample(n, truncation=psi)``. ``w_avg`` starts at 0, as in the authors' code.

D is the DCGAN critic without batch norm (``image_base.conv_critic``). Defaults: the non-saturating loss with
R1 (Mescheder et al. 2018;
gamma 1 here, 10 in the paper for 1024x1024 faces), Adam lr 2e-3 with betas (0, 0.99) (the paper's
betas and its 1e-3..3e-3 range). Equalised learning rate (Karras et al. 2018) in G.

References:
    Karras, Laine, Aila. "A Style-Based Generator Architecture for Generative Adversarial Networks", 2019,
    arXiv:1812.04948.
    Karras, Laine, Aittala, Hellsten, Lehtinen, Aila. "Analyzing and Improving the Image Quality of StyleGAN", 2020,
    arXiv:1912.04958.
    Huang, Belongie. "Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization", 2017,
    arXiv:1703.06868.
    Mescheder, Geiger, Nowozin. "Which Training Methods for GANs do actually Converge?", 2018, arXiv:1801.04406.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dulab.config import check_choices, require_at_least
from dulab.errors import UserError
from dulab.losses.gan import LossKind
from dulab.models.gan.image_base import ImageGAN, ImageGANConfig, conv_critic
from dulab.nn.modulation import AdaIN, EqualConv2d, EqualLinear, ModulatedConv2d, NoiseInjection

__all__ = ["StyleGAN", "StyleGANConfig", "MappingNetwork", "SynthesisNetwork", "mix_styles"]


@dataclass
class StyleGANConfig(ImageGANConfig):
    """Hyperparameters of ``StyleGAN`` (``base_channels`` sizes G and D).

    Attributes:
        w_dim: size of ``w`` (the intermediate latent).
        mapping_layers: depth of the mapping MLP (8 in the paper).
        mapping_lr_mul: learning-rate multiplier of the mapping network (equalised lr).
        style_block: ``adain`` (StyleGAN) or ``modulated`` (StyleGAN2's weight (de)modulation).
        mixing_prob: probability that an example's styles switch between two ``w`` while training (0 disables).
        w_avg_beta: decay of the moving average ``w_avg`` used by the truncation trick.
    """

    latent_dim: int = 64
    loss: LossKind = "non_saturating"
    r1_gamma: float = 1.0
    w_dim: int = 64
    mapping_layers: int = 4
    mapping_lr_mul: float = 0.01
    style_block: Literal["adain", "modulated"] = "adain"
    mixing_prob: float = 0.9
    w_avg_beta: float = 0.995
    betas_g: tuple[float, float] | None = (0.0, 0.99)
    betas_d: tuple[float, float] | None = (0.0, 0.99)

    def __post_init__(self):
        super().__post_init__()
        check_choices(self)
        require_at_least(self, 1, "w_dim", "mapping_layers")
        for name in ("mixing_prob", "w_avg_beta"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise UserError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.mapping_lr_mul <= 0:
            raise UserError(f"mapping_lr_mul must be > 0, got {self.mapping_lr_mul}")


class MappingNetwork(nn.Module):
    """``z (B, latent_dim) -> w (B, w_dim)``: pixel norm, then equalised-lr linear + LeakyReLU(0.2) layers."""

    def __init__(self, latent_dim: int, w_dim: int, num_layers: int, lr_mul: float):
        super().__init__()
        sizes = [latent_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(EqualLinear(a, b, lr_mul=lr_mul) for a, b in zip(sizes[:-1], sizes[1:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
        return x


class StyleLayer(nn.Module):
    """One styled layer (module docstring): AdaIN after the convolution, or a modulated convolution."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kind: str, *, upsample: bool,
                 conv: bool = True):
        super().__init__()
        self.kind, self.upsample = kind, upsample
        if kind == "modulated":
            self.conv = ModulatedConv2d(in_channels, out_channels, 3, w_dim)
        else:
            self.conv = EqualConv2d(in_channels, out_channels, 3, bias=False) if conv else None
            self.adain = AdaIN(out_channels, w_dim)
        self.noise = NoiseInjection(out_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor, w: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.kind == "modulated":
            x = self.conv(x, w)
        elif self.conv is not None:
            x = self.conv(x)
        x = F.leaky_relu(self.noise(x, generator=generator) + self.bias[None, :, None, None], 0.2)
        return self.adain(x, w) if self.kind == "adain" else x


class SynthesisNetwork(nn.Module):
    """Per-layer styles ``ws (B, L, w_dim)`` -> images ``(B, C, H, W)`` in ``[-1, 1]``."""

    def __init__(self, shape, stages: int, base_channels: int, w_dim: int, kind: str):
        super().__init__()
        C, H, W = shape
        chans = [base_channels * 2**max(0, stages - 1 - r) for r in range(stages + 1)]  # per resolution
        self.const = nn.Parameter(torch.ones(1, chans[0], H // 2**stages, W // 2**stages))
        layers = [StyleLayer(chans[0], chans[0], w_dim, kind, upsample=False, conv=kind == "modulated"),
                  StyleLayer(chans[0], chans[0], w_dim, kind, upsample=False)]
        for r in range(1, stages + 1):
            layers += [StyleLayer(chans[r - 1], chans[r], w_dim, kind, upsample=True),
                       StyleLayer(chans[r], chans[r], w_dim, kind, upsample=False)]
        self.layers = nn.ModuleList(layers)
        self.to_rgb = (ModulatedConv2d(chans[-1], C, 1, w_dim, demodulate=False) if kind == "modulated"
                       else EqualConv2d(chans[-1], C, 1))
        self.kind = kind

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def forward(self, ws: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self.const.expand(ws.shape[0], -1, -1, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], generator)
        x = self.to_rgb(x, ws[:, -1]) if self.kind == "modulated" else self.to_rgb(x)
        return torch.tanh(x)


class StyleGANGenerator(nn.Module):
    """The mapping and synthesis networks, and the tracked ``w_avg`` (a buffer)."""

    def __init__(self, spec, config: StyleGANConfig, stages: int):
        super().__init__()
        self.mapping = MappingNetwork(config.latent_dim, config.w_dim, config.mapping_layers, config.mapping_lr_mul)
        self.synthesis = SynthesisNetwork(spec.shape, stages, config.base_channels, config.w_dim, config.style_block)
        self.register_buffer("w_avg", torch.zeros(config.w_dim))


def mix_styles(w1: torch.Tensor, w2: torch.Tensor, crossover: torch.Tensor, num_layers: int) -> torch.Tensor:
    """Per-layer styles: ``w1`` on layers ``< crossover`` and ``w2`` from there on, per example.

    Args:
        w1, w2: ``(B, w_dim)``.
        crossover: ``(B,)`` int layer indices (``num_layers``: no mixing).
        num_layers: L.
    Returns:
        ``(B, L, w_dim)``.
    """
    layer = torch.arange(num_layers, device=w1.device)[None, :, None]  # (1, L, 1)
    return torch.where(layer < crossover[:, None, None], w1[:, None], w2[:, None])


class StyleGAN(ImageGAN):
    """A small style-based GAN for images ``(C, H, W)``."""

    Config = StyleGANConfig
    train_defaults = {"epochs": 30, "batch_size": 64, "lr": 2e-3, "schedule": "constant"}

    def build_generator(self) -> nn.Module:
        return StyleGANGenerator(self.spec, self.config, self.stages)

    def build_discriminator(self) -> nn.Module:
        return conv_critic(self.spec.shape, self._widths(), self.stages)

    @property
    def num_style_layers(self) -> int:
        return self.G.synthesis.num_layers

    def styles(self, z: torch.Tensor, *, truncation: float | None = None) -> torch.Tensor:
        """Per-layer styles ``(B, L, w_dim)`` for ``z (B, latent_dim)``.

        In training mode ``w_avg`` follows the batch mean of ``w`` and, with probability ``mixing_prob`` per
        example, a second ``w`` from fresh ``z`` (global RNG) takes over at a random crossover layer. With
        ``truncation=psi``: ``w_avg + psi (w - w_avg)`` on every layer.
        """
        c, L = self.config, self.num_style_layers
        w = self.G.mapping(z)
        ws = w[:, None].expand(-1, L, -1)
        if self.training:
            with torch.no_grad():
                self.G.w_avg.lerp_(w.detach().mean(0), 1.0 - c.w_avg_beta)
            if c.mixing_prob > 0 and L > 1:
                B = z.shape[0]
                w2 = self.G.mapping(torch.randn_like(z))
                mixed = torch.rand(B, device=z.device) < c.mixing_prob
                cut = torch.randint(1, L, (B,), device=z.device)
                ws = mix_styles(w, w2, torch.where(mixed, cut, torch.full_like(cut, L)), L)
        if truncation is not None:
            ws = torch.lerp(self.G.w_avg.to(ws.dtype), ws, truncation)
        return ws

    def generate(self, z: torch.Tensor, *, generator: torch.Generator | None = None,
                 truncation: float | None = None) -> torch.Tensor:
        """G(z): ``(B, latent_dim) -> (B, C, H, W)`` in ``[-1, 1]``; noise maps from ``generator`` (global RNG when
        ``None``); ``truncation`` as in ``styles``."""
        return self.G.synthesis(self.styles(z, truncation=truncation), generator=generator)

    @torch.no_grad()
    def sample(self, num_samples: int, *, generator: torch.Generator | None = None,
               context: torch.Tensor | None = None, truncation: float | None = None) -> torch.Tensor:
        """``(num_samples, C, H, W)`` samples (int64 levels for discrete data); latents and noise maps from
        ``generator``; ``truncation=psi`` pulls every ``w`` toward ``w_avg`` (the truncation trick in W)."""
        if context is not None:
            raise UserError("stylegan is unconditional: call sample() without context=")
        z = self.sample_latent(num_samples, generator=generator)
        return self.from_critic_input(self.generate(z, generator=generator, truncation=truncation))
