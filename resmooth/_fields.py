"""Dataclass fields that carry their own help, so that the command line reads it from one place."""

from __future__ import annotations

import dataclasses
from typing import Any


def option(default: Any, help: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field with ``default``, its help text (meaning, unit) and, if any, its choices."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)
