"""What every paper's typed settings share: option sets as enums, checks that name the key, and the
one conversion from a composed config section to its dataclasses.

A setting's type, default and check live in its dataclass; YAML files only override. An option
set is an `Option` enum: OmegaConf refuses any other value when the config is composed (the sweeper
turns that into one sentence), and at run time a member behaves exactly as its plain string (it
compares, hashes, prints, formats, serialises and reprs as the string), so seeds derived from it
and cache keys built from it are those of the string.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from enum import Enum
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from edgeai_repro.core.errors import require

T = TypeVar("T")


class Option(str, Enum):
    """A member of an option set. Members are named by their value (YAML writes the value)."""

    def __str__(self) -> str:
        return self.value

    def __repr__(self) -> str:
        return repr(self.value)

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    def __hash__(self) -> int:
        return str.__hash__(self)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


def typed(section: DictConfig | T) -> T:
    """A composed config section as its dataclass (a dataclass passes through unchanged)."""
    return OmegaConf.to_object(section) if isinstance(section, DictConfig) else section


def check_all(obj: Any, key: str) -> None:
    """Run `check(key)` on `obj` and on every nested settings dataclass, depth first, so each
    dataclass checks its own fields and names them by their full key."""
    if not is_dataclass(obj):
        return
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            check_all(value, f"{key}.{f.name}")
        elif isinstance(value, dict):
            for name, item in value.items():
                check_all(item, f"{key}.{f.name}.{name}")
    if hasattr(obj, "check"):
        obj.check(key)


def check_range(key: str, value: list[float], positive: bool = True) -> None:
    """A [low, high] pair with low <= high (and low > 0 when `positive`)."""
    require(
        len(value) == 2 and value[0] <= value[1], f"{key}={list(value)} must be [low, high] with low <= high."
    )
    if positive:
        require(value[0] > 0, f"{key}={list(value)} must be positive; use values above 0.")
