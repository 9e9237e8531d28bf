"""The InceptionV3 network of the Fréchet Inception Distance, in plain torch, loading the standard FID weights.

FID (Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", 2017,
arXiv:1706.08500) compares 2048-d pool features of the InceptionV3 network (Szegedy et al., "Rethinking the
Inception Architecture for Computer Vision", 2015, arXiv:1512.00567) as released by TensorFlow in
``inception-2015-12-05``. That graph differs from the textbook InceptionV3 in three places, which the ports used
for FID (pytorch-fid, torch-fidelity) reproduce and so does this module: a 1008-class classifier, average pools
inside the blocks that exclude zero padding from the mean, and a max pool (not an average pool) in the pool branch
of the last block.

The module and parameter names follow torchvision's ``Inception3`` (``Conv2d_1a_3x3.conv.weight``,
``Mixed_5b.branch1x1.bn.running_mean``, ..., ``fc.weight``), which is the key layout of pytorch-fid's
``pt_inception-2015-12-05-6726825d.pth`` and torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``;
``load_fid_weights`` loads such a file with ``strict=True``. No weights ship with dulab and none are downloaded.

Input handling is pytorch-fid's: images in [0, 1] (levels divided by ``num_levels - 1``; grey images repeated to
three channels) are resized to 299x299 bilinearly (``align_corners=False``) and mapped to [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dulab.errors import UserError

__all__ = ["FIDInceptionV3", "load_fid_weights", "FEATURE_DIM", "NUM_CLASSES", "INPUT_SIZE"]

FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TensorFlow graph's classifier: 1000 ImageNet classes + 8 unused outputs
INPUT_SIZE = 299


class ConvBN(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as in the TensorFlow graph), ReLU.

    Attribute names ``conv`` and ``bn`` are part of the weight-file layout.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


def _run(x: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    """Apply ``layers`` in order (one branch of a block)."""
    for layer in layers:
        x = layer(x)
    return x


def _mean_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's "SAME" average pool divides by the number of real (unpadded) inputs in each window.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class BlockA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1; out = 224 + pool_features channels."""

    def __init__(self, c_in: int, pool_features: int):
        super().__init__()
        self.branch1x1 = ConvBN(c_in, 64, 1)
        self.branch5x5_1 = ConvBN(c_in, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(c_in, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            _run(x, self.branch5x5_1, self.branch5x5_2),
            _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(_mean_pool_3x3(x)),
        ], dim=1)


class ReductionB(nn.Module):
    """35x35 -> 17x17: stride-2 3x3 | 1x1-3x3-3x3/2 | max pool/2; out = 384 + 96 + c_in channels."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3 = ConvBN(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(c_in, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(x),
            _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            F.max_pool2d(x, 3, stride=2),
        ], dim=1)


class BlockC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 and 7x1) of ``c7`` channels; out = 768 channels."""

    def __init__(self, c_in: int, c7: int):
        super().__init__()
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        self.branch1x1 = ConvBN(c_in, 192, 1)
        self.branch7x7_1 = ConvBN(c_in, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, **row)
        self.branch7x7_3 = ConvBN(c7, 192, **col)
        self.branch7x7dbl_1 = ConvBN(c_in, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_3 = ConvBN(c7, c7, **row)
        self.branch7x7dbl_4 = ConvBN(c7, c7, **col)
        self.branch7x7dbl_5 = ConvBN(c7, 192, **row)
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(x),
            _run(x, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            _run(x, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                 self.branch7x7dbl_5),
            self.branch_pool(_mean_pool_3x3(x)),
        ], dim=1)


class ReductionD(nn.Module):
    """17x17 -> 8x8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | max pool/2; out = 320 + 192 + c_in channels."""

    def __init__(self, c_in: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(c_in, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(c_in, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            _run(x, self.branch3x3_1, self.branch3x3_2),
            _run(x, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
            F.max_pool2d(x, 3, stride=2),
        ], dim=1)


class BlockE(nn.Module):
    """8x8 block with split 1x3 / 3x1 outputs; out = 320 + 768 + 768 + 192 = 2048 channels.

    Args:
        c_in: input channels.
        max_pool: the pool branch's pooling: the FID graph's first E block (``Mixed_7b``) averages (without the
            padding), its second (``Mixed_7c``) takes the maximum.
    """

    def __init__(self, c_in: int, *, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        wide, tall = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        self.branch1x1 = ConvBN(c_in, 320, 1)
        self.branch3x3_1 = ConvBN(c_in, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, **wide)
        self.branch3x3_2b = ConvBN(384, 384, **tall)
        self.branch3x3dbl_1 = ConvBN(c_in, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, **wide)
        self.branch3x3dbl_3b = ConvBN(384, 384, **tall)
        self.branch_pool = ConvBN(c_in, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_1(x)
        b = _run(x, self.branch3x3dbl_1, self.branch3x3dbl_2)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _mean_pool_3x3(x)
        return torch.cat([
            self.branch1x1(x),
            self.branch3x3_2a(a), self.branch3x3_2b(a),
            self.branch3x3dbl_3a(b), self.branch3x3dbl_3b(b),
            self.branch_pool(pooled),
        ], dim=1)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as in the FID graph; ``features`` = 2048-d pool3, ``forward`` = 1008 classifier logits.

    Args:
        num_levels: for integer inputs, the number of levels (``x / (num_levels - 1)`` maps them to [0, 1]);
            float inputs are taken to lie in [0, 1] already.
    """

    feature_dim = FEATURE_DIM
    num_classes = NUM_CLASSES

    def __init__(self, *, num_levels: int = 256):
        super().__init__()
        if int(num_levels) != num_levels or num_levels < 2:
            raise UserError(f"FIDInceptionV3: num_levels must be an integer >= 2, got {num_levels!r}")
        self.num_levels = int(num_levels)
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)  # 299 -> 149
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)  # -> 147
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)  # max pool -> 73
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)  # -> 71, max pool -> 35
        self.Mixed_5b = BlockA(192, 32)
        self.Mixed_5c = BlockA(256, 64)
        self.Mixed_5d = BlockA(288, 64)
        self.Mixed_6a = ReductionB(288)  # -> 17
        self.Mixed_6b = BlockC(768, 128)
        self.Mixed_6c = BlockC(768, 160)
        self.Mixed_6d = BlockC(768, 160)
        self.Mixed_6e = BlockC(768, 192)
        self.Mixed_7a = ReductionD(768)  # -> 8
        self.Mixed_7b = BlockE(1280, max_pool=False)
        self.Mixed_7c = BlockE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` levels or [0, 1] floats, C in {1, 3} -> ``(B, 3, 299, 299)`` float32 in [-1, 1]."""
        if x.dim() != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"the InceptionV3 extractor takes images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
        if x.dtype.is_floating_point:
            x = x.to(torch.float32)
        else:
            x = x.to(torch.float32) / (self.num_levels - 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # (B, 1, H, W) -> (B, 3, H, W): grey as RGB
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * x - 1.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """pool3 features ``(B, 2048)`` of images ``x`` ``(B, C, H, W)`` (see ``preprocess``)."""
        h = _run(self.preprocess(x), self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
        h = F.max_pool2d(h, 3, stride=2)
        h = _run(h, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
        h = F.max_pool2d(h, 3, stride=2)
        h = _run(h, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                 self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)  # (B, 2048, 8, 8)
        return h.mean(dim=(2, 3))  # (B, 2048)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier logits ``(B, 1008)``; softmax gives the class probabilities of the Inception Score."""
        return self.fc(self.features(x))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features(x), forward(x))`` from one pass: ``(B, 2048)`` and ``(B, 1008)``."""
        h = self.features(x)
        return h, self.fc(h)


def load_fid_weights(path, *, num_levels: int = 256) -> FIDInceptionV3:
    """An ``FIDInceptionV3`` with the weights of a pytorch-fid / torch-fidelity ``.pth`` file, in eval mode.

    Args:
        path: a plain state dict saved with ``torch.save`` (e.g. ``pt_inception-2015-12-05-6726825d.pth``).
        num_levels: levels of integer inputs (see ``FIDInceptionV3``).
    Returns:
        the network on CPU, eval mode, gradients off.
    Raises:
        UserError: the file is missing, not a state dict, or its keys or shapes are not this network's.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--feature-weights: no such file {str(path)!r}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle, zip and torch errors alike mean "not a weights file"
        raise UserError(f"--feature-weights: {str(path)!r} is not a torch state dict file "
                        f"({type(e).__name__})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--feature-weights: {str(path)!r} does not hold a state dict (name -> tensor)")
    net = FIDInceptionV3(num_levels=num_levels)
    expected = set(net.state_dict())
    # Files converted from TensorFlow may lack BatchNorm's num_batches_tracked counters; it is unused in eval mode.
    given = set(state) | {k for k in expected if k.endswith(".num_batches_tracked")}
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        detail = "; ".join(part for part in (
            f"missing {len(missing)} keys, e.g. {missing[:3]}" if missing else "",
            f"unexpected {len(unexpected)} keys, e.g. {unexpected[:3]}" if unexpected else "") if part)
        raise UserError(f"--feature-weights: {str(path)!r} is not an FID InceptionV3 state dict ({detail})")
    for key, value in state.items():
        want = net.state_dict()[key].shape
        if value.shape != want:
            raise UserError(f"--feature-weights: {key} has shape {tuple(value.shape)}, expected {tuple(want)}")
    state = dict(state)
    for key in expected - set(state):  # only num_batches_tracked counters remain missing here
        state[key] = torch.zeros((), dtype=torch.long)
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)
