"""The networks of the paper's experiments, by name: CIFAR ResNets (He et al. 2016) and DenseNet-BC (Huang et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..._checks import check_choice, check_int
from .densenet import DenseNetBC, densenet_bc_100
from .resnet import ResNet, resnet8, resnet8_narrow, resnet20, resnet32, resnet44, resnet56, resnet110

# Each constructor takes (num_classes, in_channels).
MODELS: dict[str, Callable[[int, int], nn.Module]] = {
    "resnet8": resnet8,
    "resnet8-w8": resnet8_narrow,
    "resnet20": resnet20,
    "resnet32": resnet32,
    "resnet44": resnet44,
    "resnet56": resnet56,
    "resnet110": resnet110,
    "densenet-bc-100": densenet_bc_100,
}


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The network ``name`` (a key of :data:`MODELS`) for ``num_classes`` classes and ``in_channels``-channel images."""
    check_choice("name", name, MODELS)
    check_int("num_classes", num_classes, 2)
    check_int("in_channels", in_channels, 1)
    return MODELS[name](num_classes, in_channels)


def count_parameters(model: nn.Module) -> int:
    """The number of parameters, as the papers count them: weights and biases, not BN running statistics."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "MODELS",
    "DenseNetBC",
    "ResNet",
    "build_model",
    "count_parameters",
    "densenet_bc_100",
    "resnet8",
    "resnet8_narrow",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]
