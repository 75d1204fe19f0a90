"""``--compile``: ``torch.compile`` of the teacher-forced pass, with eager execution as the fallback.

The teacher-forced pass (the captioner's forward over its own captions, and its backward) is the part of an
update that compiling speeds up (bench/README.md). Compiling needs a backend: Inductor writes C++ on a CPU
(a C++ compiler must be installed) and Triton kernels on CUDA. Where that is missing, or compiling a
function fails, the run goes on eagerly, with one warning that says why; the numbers are the same up to
rounding either way.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Callable, Optional, TypeVar

import torch

log = logging.getLogger("discritune")
Fn = TypeVar("Fn", bound=Callable)


def missing_backend(device: torch.device) -> Optional[str]:
    """Why Inductor cannot compile for ``device`` here, or None when it can."""
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Inductor needs Triton on CUDA, and it is not installed"
        return None
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        return f"Inductor needs a C++ compiler on the CPU, and {compiler!r} is not on the PATH (set CXX)"
    return None


def compile_or_eager(fn: Fn, device: torch.device, what: str) -> Fn:
    """``fn`` compiled with dynamic shapes (caption lengths and the last batch vary), or ``fn`` itself where
    compiling is unavailable; a call whose compilation fails warns once and runs ``fn`` eagerly from then on."""
    reason = missing_backend(device)
    if reason is not None:
        log.warning("--compile: %s runs eagerly: %s", what, reason)
        return fn
    compiled_fn = torch.compile(fn, dynamic=True)
    eager = False

    def call(*args, **kwargs):
        nonlocal eager
        if not eager:
            try:
                return compiled_fn(*args, **kwargs)
            except Exception as error:  # a compiler error; a real bug in fn raises again below, eagerly
                eager = True
                log.warning("--compile: compiling %s failed (%s: %s); it runs eagerly from now on", what,
                            type(error).__name__, str(error).strip().splitlines()[0] if str(error).strip() else "")
        return fn(*args, **kwargs)

    return call  # type: ignore[return-value]
