"""Reading ``torch.save`` files that users pass in: tensors only (nothing else is unpickled), and one
line naming the file for every way such a file can be wrong."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch


def load_torch_file(path: Path, what: str, allowed: Sequence[type] = ()) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``allowed``: classes unpickled besides tensors."""
    try:
        with torch.serialization.safe_globals(list(allowed)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # torch's message advises loading unsafely; say what the file holds instead.
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if found:
            raise ValueError(f"{path}: {what} holds a Python object ({found.group(1)}) besides tensors, and such "
                             "objects are never unpickled here (that could run code); save a dict of tensors") from None
        raise ValueError(f"{path}: not a torch.save file ({what} expected)") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile):
        raise ValueError(f"{path}: a truncated or corrupt torch.save file ({what} expected)") from None
