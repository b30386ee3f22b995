"""Dataclass fields that carry their own help, so that the command line reads it from one place;
and the configs made of them built from plain values (a sweep file's, a summary's).

The loss's own dataclass, :class:`~resmooth.diffusivity.DiffusivityMap`, carries no command-line
metadata (the loss knows nothing of the command line): its fields' help is here
(:data:`LOSS_HELP`), where :func:`inherited` reads it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..annealing import DISTRIBUTIONS
from ..diffusivity import SCHEMES, DiffusivityMap

# The command line's help (meaning, unit) and choices of each field of the loss's dataclasses.
LOSS_HELP: dict[type, dict[str, tuple[str, tuple[str, ...] | None]]] = {
    DiffusivityMap: {
        "scheme": ("the diffusivity scheme, global (Eq. 15), local (Eq. 17) or full (Eq. 19); the parameters that it "
                   "does not read must keep their defaults", SCHEMES),
        "distribution": ("the annealing density of the scale s(t), laplace (Eq. 14) or logistic (Eq. 13)",
                         DISTRIBUTIONS),
        "mu": ("where the annealing scale s(t) peaks, as a fraction of training; outside [0, 1] the peak lies outside "
               "the run, and s(t) only rises (mu > 1) or only falls (mu < 0)", None),
        "b": ("the scale b > 0 of the annealing density, in units of training progress (s(t) = exp(-|t - mu| / b) "
              "for laplace; larger is flatter)", None),
        "alpha": ("the steepness alpha >= 0 of the diffusivity's sigmoid of the normalized residual (Eq. 10; 0 makes "
                  "kappa constant)", None),
        "s": ("the constant scale s >= 0 of the local scheme's diffusivity (Eq. 17); the global and full schemes "
              "take theirs from the annealing s(t)", None),
    },
}


def option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with ``default``, its help text (meaning, unit) and, if any, its choices."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)


def inherited(cls: type, name: str, reader: str) -> Any:
    """The field ``name`` of the dataclass ``cls`` again, in another dataclass: its default and
    choices, and its help prefixed by ``reader``, what in the new one reads it."""
    (field,) = [f for f in dataclasses.fields(cls) if f.name == name]
    text, choices = LOSS_HELP[cls][name] if cls in LOSS_HELP else (field.metadata["help"], field.metadata.get("choices"))
    return option(field.default, f"{reader}: {text}", choices)


def from_values(cls: type, values: dict[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from plain values (a sweep file's, a summary's), refusing
    unknown fields by name; a field missing from ``values`` takes its default."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    return cls(**values)


def not_read(cls: type, record: dict[str, Any]) -> set[str]:
    """The fields of the dataclass ``cls`` that a run's record (its summary's config) says the run
    did not read: those it holds as None, but for the fields whose own value None is (their default)."""
    return {f.name for f in dataclasses.fields(cls) if f.name in record and record[f.name] is None and f.default is not None}


def from_record(cls: type, record: dict[str, Any]) -> Any:
    """An instance of the dataclass ``cls`` from a run's record: this version's, which holds None for
    a field that the run did not read, or an older one's, the config as given, which lacks the
    fields that it predates. Either field takes its default: the run did not read the one, and ran
    as the default has it before the other existed."""
    return from_values(cls, {k: v for k, v in record.items() if k not in not_read(cls, record)})
