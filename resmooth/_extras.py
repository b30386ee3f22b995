"""The ``train`` extra: what the lab (:mod:`resmooth.lab`) needs beyond torch, checked on import.

Kept outside the lab so that the command line can catch the lab's refusal without importing it.
"""

from __future__ import annotations

import importlib.util

# What the ``train`` extra of pyproject.toml brings, by import name. scikit-learn is imported only
# when the digits dataset is loaded, but it comes with the extra and is checked with the rest.
TRAIN_EXTRA = ("numpy", "torchvision", "tqdm", "sklearn")


class MissingExtraError(ModuleNotFoundError):
    """The lab is imported where the ``train`` extra is not installed."""


def require_train_extra() -> None:
    """Raise :class:`MissingExtraError`, naming the extra and what is missing, unless it is all there."""
    missing = [name for name in TRAIN_EXTRA if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"resmooth.lab (the trainer, data and studies) needs the 'train' extra, which is not installed "
            f"(missing: {', '.join(missing)}): pip install 'resmooth[train]'. The loss alone "
            f"(from resmooth import ResidualSmoothingLoss) needs torch only.",
            name=missing[0],
        )
