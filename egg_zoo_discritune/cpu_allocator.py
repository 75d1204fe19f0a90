"""glibc's malloc set to keep the memory an update frees, so the next update reuses it without page faults.

An update allocates GBs of short-lived logits, activations and gradients. By default glibc serves every block
over its mmap threshold (at most 32 MB) with a fresh ``mmap`` and returns it to the kernel on ``free``, so
each is faulted in and zeroed again on first touch: on the VMs we measure on that ran at ~1 GB/s, and a
fresh 120 MB tensor took 120 ms to fill where a reused one took 8 ms (bench/README.md). With mmap off and
trimming off, every block comes from the heap and freed memory stays there for the next one: what the
jemalloc/tcmalloc preload of torch's CPU tuning guide achieves, without a preload. The cost: the process
keeps its peak heap after an update instead of returning it (peak RSS rose ~10 %; still below the authors'
code at batch 20 and 100)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os

ENV = "DISCRITUNE_KEEP_FREED_MEMORY"
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, <malloc.h>
_INT_MAX = 2**31 - 1  # mallopt takes an int; a larger Python int would wrap


def keep_freed_memory() -> bool:
    """Turns glibc's mmap and trimming off (``mallopt``) unless ``DISCRITUNE_KEEP_FREED_MEMORY=0``;
    whether it applied (not on other C libraries or systems)."""
    if os.environ.get(ENV, "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))


def glibc_environment() -> dict[str, str]:
    """The same setting for a process that does not import this package, as glibc's environment variables
    (read when it starts)."""
    return {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(_INT_MAX)}
