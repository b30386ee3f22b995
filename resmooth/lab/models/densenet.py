"""DenseNet-BC of Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks" (CVPR 2017).

The CIFAR form (Sec. 3 and 4.2): a 3x3 convolution with ``2k`` channels, three dense blocks of
``(L - 4) / 6`` bottleneck layers (BN-ReLU-1x1 conv to ``4k``, BN-ReLU-3x3 conv to ``k``), each
layer's output concatenated to its input; between blocks a transition BN-ReLU-1x1 conv that keeps
``floor(compression * channels)`` channels, then 2x2 average pooling; finally BN-ReLU, global
average pooling and a linear layer. DenseNet-BC with L = 100, k = 12 has 0.8M parameters.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import check_int
from .resnet import he_init

NUM_BLOCKS = 3


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1(4k)-BN-ReLU-conv3x3(k); returns the input with the ``k`` new maps appended."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return torch.cat((x, out), dim=1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1-avgpool 2: compresses the channels and halves the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNetBC(nn.Module):
    """DenseNet-BC for 32x32 (or 28x28) images (Huang et al. 2017).

    Args:
        depth: ``L``, with ``(L - 4)`` divisible by 6 (each bottleneck layer holds two convs).
        growth: ``k``, the number of feature maps each layer adds.
        compression: ``theta`` in (0, 1], the fraction of channels a transition keeps.
        num_classes: size of the output.
        in_channels: channels of the input images.
    """

    def __init__(
        self,
        depth: int = 100,
        growth: int = 12,
        compression: float = 0.5,
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if check_int("depth", depth) < 10 or (depth - 4) % 6:
            raise ValueError(f"depth must be 6m + 4 with m >= 1 (40, 100, 190, 250, ...); got {depth!r}")
        check_int("growth", growth, 1)
        if not 0.0 < compression <= 1.0:
            raise ValueError(f"compression must lie in (0, 1]; got {compression!r}")
        layers_per_block = (depth - 4) // 6
        channels = 2 * growth
        features: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, 1, 1, bias=False)]
        for block in range(NUM_BLOCKS):
            for _ in range(layers_per_block):
                features.append(Bottleneck(channels, growth))
                channels += growth
            if block < NUM_BLOCKS - 1:
                # floor, as in the authors' Torch code: 216 -> 108 and 300 -> 150 for L = 100, k = 12.
                compressed = math.floor(compression * channels)
                features.append(Transition(channels, compressed))
                channels = compressed
        self.features = nn.Sequential(*features)
        self.bn = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.features(x)))
        return self.fc(x.mean(dim=(2, 3)))  # global average pooling


def densenet_bc_100(num_classes: int = 10, in_channels: int = 3) -> DenseNetBC:
    """DenseNet-BC with L = 100, k = 12, compression 0.5 (0.8M parameters for 10 classes)."""
    return DenseNetBC(100, 12, 0.5, num_classes, in_channels)
