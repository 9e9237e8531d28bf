"""What the image GANs SAGAN, BigGAN and StyleGAN share: the image check, the number of x2 stages chosen from the
image size (``dcgan.num_stages``: 8x8 -> 2 stages on a 2x2 base, 20x20 -> 2 on 5x5, 32x32 -> 3 on 4x4, 64x64 ->
4 on 4x4, odd sizes -> none), per-stage widths, and a strided-convolution critic without batch norm (optionally
spectrally normalised, optionally with a self-attention block).

References:
    Radford, Metz, Chintala. "Unsupervised Representation Learning with Deep Convolutional Generative Adversarial
    Networks", 2016, arXiv:1511.06434.
    Zhang, Goodfellow, Metaxas, Odena. "Self-Attention Generative Adversarial Networks", 2019, arXiv:1805.08318.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from dulab.config import require_at_least
from dulab.errors import UserError
from dulab.models.gan.base import GANConfig, GANModel
from dulab.models.gan.dcgan import num_stages
from dulab.nn.attention import SelfAttention2d

__all__ = ["ImageGANConfig", "ImageGAN", "attention_index", "spectral_normalize_all", "conv_critic"]


@dataclass
class ImageGANConfig(GANConfig):
    """``GANConfig`` plus the width of the convolutional networks.

    Attributes:
        base_channels: channels of D's first stage (and of G's last); stage ``i`` of D has ``base_channels * 2^i``.
    """

    base_channels: int = 32

    def __post_init__(self):
        super().__post_init__()
        require_at_least(self, 1, "base_channels")


class ImageGAN(GANModel):
    """A GAN for images ``(C, H, W)`` with ``stages`` x2 up-sampling stages in G (down-sampling in D)."""

    Config = ImageGANConfig

    @classmethod
    def check_spec(cls, spec, config):
        if len(spec.shape) != 3:
            raise UserError(f"{cls.__name__.lower()} needs images (C, H, W), got data of shape {spec.shape};"
                            " use gan for vectors")
        if max(spec.shape[1:]) // 2**num_stages(*spec.shape[1:]) > 64:
            raise UserError(f"{cls.__name__.lower()} supports images whose sides reach a base of at most 64 by"
                            f" halving (8x8, 20x20, 32x32, 64x64, ...); got {spec.shape[1]}x{spec.shape[2]}")

    @property
    def stages(self) -> int:
        return num_stages(*self.spec.shape[1:])

    def _widths(self) -> list[int]:
        """Channels of D's stages, ``[c, 2c, ..., 2^(s-1) c]`` (at least one entry)."""
        return [self.config.base_channels * 2**i for i in range(max(1, self.stages))]


def attention_index(sizes: list[tuple[int, int]], max_positions: int) -> int:
    """Index into ``sizes`` (feature maps ``(h, w)``) of the largest map with ``h w <= max_positions`` (the first
    of equals); the smallest map when none fits."""
    area = [h * w for h, w in sizes]
    fits = [i for i, a in enumerate(area) if a <= max_positions]
    if not fits:
        return min(range(len(sizes)), key=lambda i: area[i])
    return max(fits, key=lambda i: (area[i], -i))


def spectral_normalize_all(module: nn.Module) -> nn.Module:
    """Spectral norm on every convolution, transposed convolution, linear layer and embedding inside ``module``."""
    for m in list(module.modules()):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            spectral_norm(m)
    return module


def conv_critic(shape, widths: list[int], stages: int, *, use_spectral_norm: bool = False,
                attention_reduction: int | None = None, attention_max_positions: int = 256) -> nn.Sequential:
    """DCGAN's discriminator without batch norm: ``stages`` conv4x4/2 + LeakyReLU(0.2) (a conv3x3 when
    ``stages == 0``), then a linear layer on the flattened last map: ``(B, C, H, W) -> (B, 1)``.

    Args:
        shape: ``(C, H, W)``.
        widths: channels per stage (``len = max(1, stages)``).
        stages: number of stride-2 stages.
        use_spectral_norm: on every weight.
        attention_reduction: a ``SelfAttention2d`` with this reduction after the stage whose output map is the
            largest with at most ``attention_max_positions`` positions (``None``: no attention).
    """
    C, H, W = shape
    layers: list[nn.Module] = []
    if stages == 0:
        layers += [nn.Conv2d(C, widths[0], 3, padding=1), nn.LeakyReLU(0.2)]
        sizes = [(H, W)]
    else:
        chans = [C] + widths
        for i in range(stages):
            layers.append(nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 4, stride=2, padding=1),
                                        nn.LeakyReLU(0.2)))
        sizes = [(H // 2**(i + 1), W // 2**(i + 1)) for i in range(stages)]  # after each stage
    if attention_reduction is not None:
        at = attention_index(sizes, attention_max_positions)
        layers.insert(at + 1 if stages > 0 else 2, SelfAttention2d(widths[at], attention_reduction))
    layers += [nn.Flatten(), nn.Linear(widths[-1] * (H // 2**stages) * (W // 2**stages), 1)]
    d = nn.Sequential(*layers)
    return spectral_normalize_all(d) if use_spectral_norm else d
