"""Argument checks shared by the public functions: each error names the argument (on the command
line, its flag) and what is allowed."""

from __future__ import annotations

import contextlib
import math
import numbers
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


def _scalar(value: object) -> object:
    """A 0-d tensor's value as a Python number (read back once, at the argument's check); any
    other value as it is. A tensor of another shape, or of a bool or complex dtype, stays a tensor
    and is refused by the caller as not a number."""
    if isinstance(value, Tensor) and value.ndim == 0 and value.dtype != torch.bool and not value.is_complex():
        return value.item()
    return value


def check_int(name: str, value: object, minimum: int | None = None) -> int:
    """An integer (not a bool): a Python or NumPy integer, or a 0-d integer tensor; optionally at
    least ``minimum``."""
    value = value if isinstance(value, Tensor) and value.is_floating_point() else _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{spelled(name)} must be an integer; got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{spelled(name)} must be >= {minimum}; got {value}")
    return value


def check_real(name: str, value: object, *, minimum: float | None = None, strict: bool = False) -> float:
    """A finite real number, optionally bounded below (``> minimum`` when ``strict``): a Python
    or NumPy number, or a 0-d tensor (not a bool), returned as a float."""
    value = _scalar(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
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


def in_transform() -> bool:
    """Whether the code runs under a torch.func transform (``grad``, ``vmap``, ``jacfwd``, ...),
    whose tensors are wrappers: a value read back from one fails under ``vmap``, and one stored
    outside the transform is no longer valid after it. Not asked while torch.compile traces."""
    return not torch.compiler.is_compiling() and torch._C._functorch.peek_interpreter_stack() is not None


def reads_back(validate_args: bool = True) -> bool:
    """Whether to run the checks of tensor values, which read them back from the device.

    Not while torch.compile traces: a read-back there is a data-dependent branch that breaks
    the graph (``fullgraph=True`` fails on it), so the compiled code runs unchecked, as with
    ``validate_args=False``; the same call run eagerly is checked. Not under a torch.func
    transform either (:func:`in_transform`), where ``vmap`` cannot read a value back.
    """
    return validate_args and not torch.compiler.is_compiling() and not in_transform()


def check_progress(name: str, t: float | Tensor, validate_args: bool = True) -> float | Tensor:
    """Training progress: a number or a tensor with every value in [0, 1].

    Where a tensor's values are not checked (``validate_args=False``, under torch.compile or a
    torch.func transform, see :func:`reads_back`) they are clamped to [0, 1] instead, so that a
    value outside is never used as it is: past the end of training the progress stays at 1, as
    the criteria's own schedule keeps it. A number is always checked.
    """
    if isinstance(t, Tensor):
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
        if not reads_back(validate_args):
            return t.clamp(0.0, 1.0)
        if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
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
