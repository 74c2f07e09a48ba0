"""Name -> algorithm class."""
from __future__ import annotations

ALGORITHMS: dict[str, type] = {}


def register(cls: type) -> type:
    ALGORITHMS[cls.name] = cls
    return cls
