"""JSON Lines files, read the same way everywhere: blank lines skipped, every error naming the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator


def json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for every non-blank line of ``path``, ``where`` being ``"path:line"``."""
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{number}", json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error})") from None
