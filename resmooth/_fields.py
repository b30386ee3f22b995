"""Dataclass fields that carry their own help, so that the command line reads it from one place;
and the configs made of them built from plain values (a sweep file's, a summary's)."""

from __future__ import annotations

import dataclasses
from typing import Any


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
    return option(field.default, f"{reader}: {field.metadata['help']}", field.metadata.get("choices"))


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
