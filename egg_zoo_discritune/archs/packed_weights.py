"""No-grad CPU matrix products through oneDNN with weights packed once per call, where that is faster.

Generation runs its 30 steps through every weight of the language model with few rows per product (one per
caption, or per beam). torch computes a CPU fp32 ``addmm`` with MKL's sgemm, which on the 2-core AMD EPYC
(Zen 4) of bench/README.md reaches 50-90 GFLOP/s at 20-100 rows: 28 ms for GPT-2's LM head on 20 captions,
where oneDNN with the weight reordered once to its blocked layout takes 11 ms (1.9-2.6x on every GPT-2
product at 20 rows, 1.4-2.3x at 100; in bf16 1.1-1.7x). Packing GPT-2 small costs ~0.1 s per call, repaid
within the first steps. Where oneDNN is not faster (MKL is tuned for Intel CPUs) a probe at the first call keeps
torch's own products. The values are the same products in the same precision; only the order of the
additions differs (fp32 rounding, tested). ``DISCRITUNE_PACKED_WEIGHTS=1``/``0`` skips the probe.
"""

from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from egg_zoo_discritune.precision import best_seconds

log = logging.getLogger("discritune")

ENV = "DISCRITUNE_PACKED_WEIGHTS"
MIN_SPEEDUP = 1.1  # packing must beat torch's product by this factor on the probe to be used


def packed_speedup(dtype: torch.dtype, rows: int = 20, repeats: int = 3) -> float:
    """torch's ``addmm`` time over the packed oneDNN product's, best of ``repeats`` each, at GPT-2's MLP
    size for one generation step of 20 captions ([20, 768] x [768, 3072]); ~20 ms."""
    rng = torch.Generator().manual_seed(0)  # not the global one: a run's random stream must not see the probe
    x, weight, bias = (torch.randn(*shape, generator=rng).to(dtype) for shape in ((rows, 768), (768, 3072), (3072,)))
    packed = _pack(weight.t(), rows)
    return (best_seconds(lambda: torch.addmm(bias, x, weight), repeats)
            / best_seconds(lambda: _packed_product(x, packed, bias), repeats))


def packing_pays(dtype: torch.dtype, speedup: Callable[[torch.dtype], float] = packed_speedup) -> bool:
    """Whether no-grad CPU products in ``dtype`` run packed here: ``DISCRITUNE_PACKED_WEIGHTS`` if set,
    else the probe, measured once per process and dtype and logged."""
    forced = os.environ.get(ENV, "")
    if forced not in ("", "0", "1"):
        raise ValueError(f"{ENV}={forced!r}: expected 1 (pack), 0 (do not) or unset (measure)")
    if forced:
        return forced == "1"
    return torch.backends.mkldnn.is_available() and _measured_pays(dtype, speedup)


@functools.cache
def _measured_pays(dtype: torch.dtype, speedup: Callable[[torch.dtype], float]) -> bool:
    ratio = speedup(dtype)
    chosen = ratio >= MIN_SPEEDUP
    log.info("generation's CPU %s products: %s (oneDNN with packed weights measured %.2fx torch's speed here)",
             str(dtype).removeprefix("torch."), "oneDNN, packed weights" if chosen else "torch's", ratio)
    return chosen


def _pack(weight_out_in: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight_out_in, rows)


def _packed_product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def _linear_weights(model: nn.Module) -> Iterator[tuple[nn.Module, torch.Tensor, torch.Tensor | None]]:
    """Each ``nn.Linear`` and GPT-2 ``Conv1D`` of ``model`` with its weight as [out, in] and its bias."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            yield module, module.weight, module.bias
        elif isinstance(module, Conv1D):
            yield module, module.weight.t(), module.bias


@contextmanager
def packed_linears(model: nn.Module, rows: int) -> Iterator[None]:
    """Inside, ``model``'s linear layers compute no-grad products with their weights packed for oneDNN
    (for products of about ``rows`` rows), in autocast's dtype where CPU autocast is on, if the probe finds
    that faster here; with grad enabled, on CUDA or where it is not faster, they run as before. The weights
    must not change inside (they are packed on entry)."""
    layers = list(_linear_weights(model))
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    cpu = bool(layers) and all(weight.device.type == "cpu" for _, weight, _ in layers)
    if not cpu or not packing_pays(dtype or layers[0][1].dtype):
        yield
        return
    own = [module.__dict__.get("forward") for module, _, _ in layers]  # an instance's own forward, if any
    for module, weight, bias in layers:
        module.forward = _packed_forward(module.forward, weight, bias, rows, dtype)
    try:
        yield
    finally:
        for (module, _, _), forward in zip(layers, own):
            if forward is None:
                del module.forward  # the class's forward shows again
            else:
                module.forward = forward


def _packed_forward(own: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None,
                    rows: int, dtype: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    dtype = dtype or weight.dtype
    with torch.no_grad():
        packed = _pack(weight.to(dtype), rows)
        bias = None if bias is None else bias.to(dtype)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return own(x)
        return _packed_product(x.to(dtype), packed, bias)

    return forward
