"""Argument checks shared by the public functions: each error names the argument (on the command
line, its flag) and what is allowed."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType

import torch
from torch import Tensor

# The command-line flag of each argument of the command that is running (argument name -> flag),
# which the command line sets for its run (:func:`flags`): an error then names what the user typed,
# ``--b 0.7``, where a Python caller reads the argument, ``b=0.7``.
_FLAGS: ContextVar[Mapping[str, str]] = ContextVar("flags", default=MappingProxyType({}))
_NO_VALUE = object()


@contextlib.contextmanager
def flags(names: Mapping[str, str]) -> Iterator[None]:
    """Within the block, errors name the arguments of ``names`` (argument name -> flag) by their flag."""
    token = _FLAGS.set(MappingProxyType(dict(names)))
    try:
        yield
    finally:
        _FLAGS.reset(token)


def spelled(name: str, value: object = _NO_VALUE) -> str:
    """The argument ``name``, with ``value`` if given, as the caller typed it: ``b``, ``b=0.7`` from
    Python; ``--b``, ``--b 0.7`` on the command line (within :func:`flags`)."""
    flag = _FLAGS.get().get(name)
    if flag is None:
        return name if value is _NO_VALUE else f"{name}={value!r}"
    if value is _NO_VALUE or value is True:  # a switch (--overwrite) is its flag alone
        return flag
    return f"{flag} {value}"


def check_choice(name: str, value: object, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ValueError(f"{spelled(name)} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return value  # type: ignore[return-value]


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """An integer (not a bool), optionally at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{spelled(name)} must be an integer; got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{spelled(name)} must be >= {minimum}; got {value}")
    return value


def check_real(name: str, value: object, *, minimum: float | None = None, strict: bool = False) -> float:
    """A finite real number, optionally bounded below (``> minimum`` when ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{spelled(name)} must be a real number; got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{spelled(name)} must be finite; got {value}")
    if minimum is not None:
        if strict and value <= minimum:
            raise ValueError(f"{spelled(name)} must be > {minimum:g}; got {value:g}")
        if not strict and value < minimum:
            raise ValueError(f"{spelled(name)} must be >= {minimum:g}; got {value:g}")
    return value


def reads_back(validate_args: bool = True) -> bool:
    """Whether to run the checks of tensor values, which read them back from the device.

    Not while torch.compile traces: a read-back there is a data-dependent branch that breaks
    the graph (``fullgraph=True`` fails on it), so the compiled code runs unchecked, as with
    ``validate_args=False``; the same call run eagerly is checked.
    """
    return validate_args and not torch.compiler.is_compiling()


def check_progress(name: str, t: float | Tensor) -> float | Tensor:
    """Training progress: a number or a tensor with every value in [0, 1].

    A tensor's values are not checked while torch.compile traces (:func:`reads_back`).
    """
    if isinstance(t, Tensor):
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        if t.numel() and reads_back() and not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"{name} must lie in [0, 1] (a fraction of training); got values outside it")
        return t
    t = check_real(name, t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1] (a fraction of training); got {t:g}")
    return t


def check_floating(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    return x
