"""A small convolutional classifier used as the feature network of the sample-quality metrics on small images.

The Fréchet Inception Distance (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
Nash Equilibrium", 2017, arXiv:1706.08500) and the Inception Score (Salimans et al., "Improved Techniques for
Training GANs", 2016, arXiv:1606.03498) read the features and class probabilities of a classifier trained on
the data domain. ImageNet's InceptionV3 means little on 8x8 digits, so dulab ships one of these small networks
per embedded labelled image set, trained by ``benchmarks/train_extractors.py``; the same recipe (a classifier
trained on the domain, its penultimate layer as features) is the one used for MNIST-scale GAN evaluation.

The network: stages of two 3x3 convolutions (batch norm, ReLU) with 2x2 max pooling between stages until the
feature map is at most 5x5, global average pooling, one hidden linear layer (the features, after ReLU) and a
linear classifier (the logits).
"""

from __future__ import annotations

import torch
from torch import nn

from dulab.errors import UserError

__all__ = ["SmallClassifier", "stage_sizes"]


def stage_sizes(size: int) -> list[int]:
    """Spatial size of each stage: halve (floor) ``size`` until it is at most 5, e.g. 20 -> [20, 10, 5]."""
    sizes = [size]
    while sizes[-1] > 5:
        sizes.append(sizes[-1] // 2)
    return sizes


class SmallClassifier(nn.Module):
    """Conv net sized by the input shape; ``forward`` gives logits, ``features`` the penultimate layer.

    Args:
        in_channels: C of the images.
        size: H = W of the images.
        num_levels: number of pixel values; inputs are int64 in ``[0, num_levels)`` and are scaled to [-1, 1].
        num_classes: K.
        width: channels of the first stage; later stages have ``2 * width``.
        feature_dim: F, the width of the penultimate layer.
    """

    def __init__(self, *, in_channels: int, size: int, num_levels: int, num_classes: int, width: int = 32,
                 feature_dim: int = 128):
        super().__init__()
        for name, value, low in (("in_channels", in_channels, 1), ("size", size, 4), ("num_levels", num_levels, 2),
                                 ("num_classes", num_classes, 2), ("width", width, 1), ("feature_dim", feature_dim, 1)):
            if int(value) != value or value < low:
                raise UserError(f"SmallClassifier: {name} must be an integer >= {low}, got {value!r}")
        self.hparams = {"in_channels": in_channels, "size": size, "num_levels": num_levels,
                        "num_classes": num_classes, "width": width, "feature_dim": feature_dim}
        self.input_shape = (in_channels, size, size)
        self.num_levels = num_levels
        self.feature_dim = feature_dim
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, _ in enumerate(stage_sizes(size)):
            if i > 0:
                layers.append(nn.MaxPool2d(2))  # sizes follow stage_sizes (floor)
            c_out = width if i == 0 else 2 * width
            for _ in range(2):
                layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
                c_in = c_out
        self.body = nn.Sequential(*layers)
        self.hidden = nn.Linear(c_in, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """Levels ``{0..L-1}`` (any dtype) -> float32 in [-1, 1], after checking the shape."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise UserError(f"extractor expects images of shape (B, {', '.join(map(str, self.input_shape))}), "
                            f"got {tuple(x.shape)}")
        return x.to(torch.float32) * (2.0 / (self.num_levels - 1)) - 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features.

        Args:
            x: ``(B, C, H, W)`` levels in ``[0, num_levels)`` (int64, as the dataset holds them).
        Returns:
            ``(B, F)`` float32, non-negative (after ReLU).
        """
        h = self.body(self.scale(x)).mean(dim=(2, 3))  # (B, C', h, w) -> (B, C'): global average pool
        return torch.relu(self.hidden(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, K)`` of ``x`` ``(B, C, H, W)`` (levels, as in ``features``)."""
        return self.head(self.features(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features(x), forward(x))`` from one pass: ``(B, F)`` and ``(B, K)``."""
        h = self.features(x)
        return h, self.head(h)
