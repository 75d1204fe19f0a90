"""What the console scripts share: their start (logging, device), and one-line errors for bad input and
missing files instead of a traceback."""

from __future__ import annotations

import logging
import sys
from typing import Callable

import torch

# Missing files, programs or weights (OSError and its subclasses), bad options or data (ValueError),
# and an engine that cannot be imported (ImportError).
USER_ERRORS = (OSError, ValueError, ImportError)


def run(main: Callable[[], object]) -> None:
    try:
        main()
    except USER_ERRORS as err:
        sys.exit(f"error: {err}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)  # the shell's code for SIGINT


def start(no_cuda: bool) -> torch.device:
    """What every command does first: log to stderr with times, and pick the GPU unless told not to."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    return torch.device("cuda" if torch.cuda.is_available() and not no_cuda else "cpu")
