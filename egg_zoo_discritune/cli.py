"""What the console scripts share: bad input and missing files end the run with one line, not a traceback."""

from __future__ import annotations

import sys
from typing import Callable

# Missing files, programs or weights (OSError and its subclasses), bad options or data (ValueError),
# and an engine that cannot be imported (ImportError).
USER_ERRORS = (OSError, ValueError, ImportError)


def run(main: Callable[[], object]) -> None:
    try:
        main()
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")
