"""Which autocast precision a run uses. ``auto`` picks bf16 only where the hardware computes it natively
and it pays: on CUDA, compute capability >= 8.0; on a CPU, the AVX512_BF16 or AMX instructions *and* a
bf16 matrix product measured at startup faster than the fp32 one. The flags alone are not enough: on the
2-core Xeon of bench/README.md (AVX512_BF16, no AMX) bf16 products run at 0.55-0.8x the fp32 speed and a
bf16 ClipCap update is 1.3-1.4x slower, while without the flags bf16 is emulated (> 18x slower)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
MIN_SPEEDUP = 1.1  # bf16 must beat fp32 by this factor on the probe to be chosen


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo is not readable)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def best_seconds(product: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``product``, after one untimed warm-up call."""
    product()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        times.append(time.perf_counter() - start)
    return min(times)


def bf16_matmul_speedup(repeats: int = 3) -> float:
    """fp32 time over bf16 time of one CPU matrix product of ClipCap's size (GPT-2's MLP on 20 captions of
    30 tokens: [600, 768] x [768, 3072]), the best of ``repeats`` each; about 0.1 s where bf16 is native."""
    x, w = torch.randn(600, 768), torch.randn(3072, 768)
    x16, w16 = x.bfloat16(), w.bfloat16()
    return best_seconds(lambda: F.linear(x, w), repeats) / best_seconds(lambda: F.linear(x16, w16), repeats)


def resolve_precision(requested: str, device: torch.device, flags: Optional[set[str]] = None,
                      cuda_capability: Optional[tuple[int, int]] = None,
                      speedup: Callable[[], float] = bf16_matmul_speedup) -> str:
    """The precision a run uses for ``--precision requested`` on ``device``; logs the choice, and warns
    once when an explicit bf16 is slower than fp32 here. ``flags``, ``cuda_capability`` and ``speedup``
    default to this machine's."""
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}; expected one of {PRECISIONS}")
    if requested == "fp16" and device.type != "cuda":
        log.warning("fp16 needs a CUDA device; training on %s in fp32", device)
        return "fp32"
    if requested in ("fp32", "fp16"):
        return requested
    if device.type == "cuda":
        major, minor = cuda_capability or torch.cuda.get_device_capability(device)
        native, why = major >= 8, f"CUDA compute capability {major}.{minor}"
    else:
        found = sorted((cpu_flags() if flags is None else flags) & set(NATIVE_BF16_CPU_FLAGS))
        native, why = bool(found), f"the CPU has {', '.join(found)}" if found else \
            "the CPU has neither AVX512_BF16 nor AMX, so bf16 is emulated"
        if native or requested == "bf16":  # measured where it could pay, or to say how much it costs
            ratio = speedup()
            native = native and ratio >= MIN_SPEEDUP
            why += f"; a bf16 matrix product measured {ratio:.2f}x the fp32 speed here"
    if requested == "auto":
        chosen = "bf16" if native else "fp32"
        log.info("precision auto: %s (%s)", chosen, why)
        return chosen
    if not native:
        log.warning("--precision bf16 is slower than fp32 here (%s); --precision auto would use fp32", why)
    return "bf16"
