"""``opt``: a dataclass field with its command-line help, so one typed dataclass is both a component's
options and its flags (``config.add_options`` turns each field into ``--name``)."""

from __future__ import annotations

from dataclasses import field
from typing import Any, Optional, Sequence


def opt(default: Any, help: str, choices: Optional[Sequence] = None) -> Any:
    metadata = {"help": help, "choices": choices}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)
