"""The networks of the paper's experiments, by name: CIFAR ResNets (He et al. 2016) and DenseNet-BC (Huang et al. 2017)."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..._checks import check_choice, check_int
from .densenet import DenseNetBC, densenet_bc_100
from .resnet import SHORTCUTS, ResNet, resnet8, resnet8_narrow, resnet20, resnet32, resnet44, resnet56, resnet110

# Each constructor takes (num_classes, in_channels); a ResNet's also the shortcut (RESNETS).
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
RESNETS = tuple(name for name in MODELS if name.startswith("resnet"))


def build_model(name: str, num_classes: int, in_channels: int = 3, *, shortcut: str = "A") -> nn.Module:
    """The network ``name`` (a key of :data:`MODELS`) for ``num_classes`` classes and ``in_channels``-channel
    images; a ResNet's ``shortcut`` is ``"A"`` or ``"B"`` (:mod:`resmooth.lab.models.resnet`)."""
    check_choice("name", name, MODELS)
    check_int("num_classes", num_classes, 2)
    check_int("in_channels", in_channels, 1)
    check_choice("shortcut", shortcut, SHORTCUTS)
    if name in RESNETS:
        return MODELS[name](num_classes, in_channels, shortcut=shortcut)  # type: ignore[call-arg]
    if shortcut != "A":
        raise ValueError(f"shortcut={shortcut!r} applies to the ResNets ({', '.join(RESNETS)}); {name!r} has none")
    return MODELS[name](num_classes, in_channels)


def count_parameters(model: nn.Module) -> int:
    """The number of parameters, as the papers count them: weights and biases, not BN running statistics."""
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "MODELS",
    "RESNETS",
    "SHORTCUTS",
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
