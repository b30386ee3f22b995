"""The CIFAR ResNets of He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (CVPR 2016), Sec. 4.2.

A 3x3 convolution with 16 channels, three stages of ``n`` basic blocks with 16, 32 and 64
channels (the first block of stages 2 and 3 has stride 2), global average pooling and a linear
layer: depth ``6n + 2`` gives ResNet20/32/44/56/110. ``width`` scales the three stages together
(``width``, ``2 width``, ``4 width``); the published networks have ``width = 16``. The narrow
ResNet8 (``width = 8``, 19k parameters) is this project's addition: the largest member of the
family whose paired, multi-seed Fashion-MNIST study fits two CPU cores (book, chapter 7).

Shortcuts are option A of the paper (Sec. 3.3, used for CIFAR in Sec. 4.2) by default: where a
block halves the resolution and doubles the width, the identity is subsampled with stride 2 and
the new channels are zeros. It has no parameters, so the counts match the published ones
(ResNet20 0.27M, ResNet110 1.7M). Option B (``shortcut="B"``, Sec. 3.3) projects there instead, with
a 1x1 convolution of that stride and a batch norm, as torchvision's ResNets do: 2,752 parameters
more at every depth (two projections, 16 to 32 and 32 to 64 channels, and their batch norms).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..._checks import check_choice, check_int

WIDTH = 16  # channels of the first stage in He et al.'s CIFAR ResNets
SHORTCUTS = ("A", "B")  # He et al. Sec. 3.3: zero-padded identity, or projection where the shape changes


class ZeroPadShortcut(nn.Module):
    """Option A: ``x[:, :, ::stride, ::stride]`` with ``extra_channels`` zero channels appended."""

    def __init__(self, stride: int, extra_channels: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        # Slicing with ::stride keeps ceil(H / stride) rows, which is what a 3x3 conv with
        # padding 1 and the same stride produces, so odd sizes (Fashion-MNIST's 7x7) line up.
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"stride={self.stride}, extra_channels={self.extra_channels}"


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """Option B: a 1x1 convolution with ``stride`` and a batch norm (no bias: the norm shifts)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the shortcut, then ReLU (He et al. 2016, Fig. 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str = "A") -> None:
        super().__init__()
        # No conv biases: each conv is followed by BN, whose shift makes a bias redundant.
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "B":
            self.shortcut = projection(in_channels, out_channels, stride)
        else:
            self.shortcut = ZeroPadShortcut(stride, out_channels - in_channels)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR ResNet of depth ``6n + 2`` (He et al. 2016, Sec. 4.2).

    Args:
        depth: total number of weighted layers, ``6n + 2`` (20, 32, 44, 56, 110, ...).
        num_classes: size of the output.
        in_channels: channels of the input images (3 for CIFAR, 1 for Fashion-MNIST).
        width: channels of the first stage; the second and third have twice and four times as many.
        shortcut: ``"A"`` (zero-padded identity) or ``"B"`` (1x1 projection) where a block changes the shape.
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: int = WIDTH,
                 shortcut: str = "A") -> None:
        super().__init__()
        if check_int("depth", depth) < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 20, 32, 44, 56, 110, ...); got {depth!r}")
        check_int("width", width, 1)
        check_choice("shortcut", shortcut, SHORTCUTS)
        n = (depth - 2) // 6
        widths = (width, 2 * width, 4 * width)
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        blocks = []
        channels = width
        for stage, width in enumerate(widths):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(channels, width, stride, shortcut))
                channels = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))  # global average pooling


def he_init(model: nn.Module) -> None:
    """He et al. 2015 ("Delving Deep into Rectifiers") normal init; BN starts as the identity."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            # fan_in here: fan_out (the number of classes) is small and would start with
            # logits several times larger than fan_in's variance-preserving scale.
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(m.bias)


def resnet8(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    return ResNet(8, num_classes, in_channels, shortcut=shortcut)


def resnet8_narrow(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    """ResNet8 at half width (8, 16, 32 channels): the model of the CPU Fashion-MNIST study."""
    return ResNet(8, num_classes, in_channels, width=8, shortcut=shortcut)


def resnet20(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    return ResNet(20, num_classes, in_channels, shortcut=shortcut)


def resnet32(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    return ResNet(32, num_classes, in_channels, shortcut=shortcut)


def resnet44(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    return ResNet(44, num_classes, in_channels, shortcut=shortcut)


def resnet56(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    return ResNet(56, num_classes, in_channels, shortcut=shortcut)


def resnet110(num_classes: int = 10, in_channels: int = 3, shortcut: str = "A") -> ResNet:
    return ResNet(110, num_classes, in_channels, shortcut=shortcut)
