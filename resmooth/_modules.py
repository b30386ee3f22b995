"""Modules that are also the function of their name (``resmooth.residual``, ``resmooth.diffusivity``)."""

from __future__ import annotations

import types
from typing import Any


class CallableModule(types.ModuleType):
    """A module that, called, calls its own function of the module's name.

    ``resmooth.residual`` and ``resmooth.diffusivity`` have long been the package's functions of
    those names; they are their modules now, so that ``import resmooth.diffusivity as d;
    d.DiffusivityMap`` works, and calling the module calls the function, so that
    ``resmooth.residual(z, y)`` and ``from resmooth import diffusivity; diffusivity(d, t)`` keep working.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)
