"""CPU matrix products of linear layers through oneDNN, where that is faster here than torch's own.

torch computes a CPU fp32 ``addmm``/``mm`` with MKL's sgemm, which on the 2-core AMD EPYC (Zen 4) of
bench/README.md runs GPT-2's and CLIP's products at 2-3x oneDNN's time: 28 ms for GPT-2's LM head on one
generation step of 20 captions against 11 ms through oneDNN with the weight reordered once to its blocked
layout (1.9-2.6x on every GPT-2 product at 20 rows, 1.4-2.3x at 100); on a teacher-forced pass of 20
captions, 1.7-3.6x for the forward products and 1.5-2.3x for the backward's; 2.2-2.3x for CLIP's text
tower on 400-3200 rows (scratch microbenchmarks, medians of 7-9). In bf16 torch already calls oneDNN, and
only generation's packed weights gain (1.1-1.7x).

``packed_linears`` swaps a model's ``nn.Linear``/GPT-2 ``Conv1D`` forwards for oneDNN ones inside it:

- entered without grad (generation, the frozen retriever), the weights are packed once on entry, ~0.1 s for
  GPT-2 small, repaid within the first steps;
- entered with grad (the teacher-forced pass), each forward hands oneDNN the plain weight (reordering it
  itself costs the same as packing first, for a product used once) and the backward's input- and
  weight-gradient products go through oneDNN too.

A probe per grad mode and dtype, at the first call, keeps torch's products where oneDNN is not faster (MKL is
tuned for Intel CPUs; bf16 training gains nothing). The values are the same products in the same precision;
only the order of the additions differs (fp32 rounding, tested). ``DISCRITUNE_PACKED_WEIGHTS=1``/``0`` skips
the probes.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import weakref
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from egg_zoo_discritune.precision import best_seconds

log = logging.getLogger("discritune")

ENV = "DISCRITUNE_PACKED_WEIGHTS"
MIN_SPEEDUP = 1.1  # oneDNN must beat torch's products by this factor on the probe to be used
_readings: dict[str, float] = {}  # what the probes measured in this process, for probe_readings()


def packed_speedup(dtype: torch.dtype, rows: int = 20, repeats: int = 3) -> float:
    """torch's ``addmm`` time over the packed oneDNN product's, best of ``repeats`` each, at GPT-2's MLP
    size for one generation step of 20 captions ([20, 768] x [768, 3072]); ~20 ms."""
    rng = torch.Generator().manual_seed(0)  # not the global one: a run's random stream must not see the probe
    x, weight, bias = (torch.randn(*shape, generator=rng).to(dtype) for shape in ((rows, 768), (768, 3072), (3072,)))
    packed = _pack(weight.t(), rows)
    return (best_seconds(lambda: torch.addmm(bias, x, weight), repeats)
            / best_seconds(lambda: _onednn_linear(x, packed, bias), repeats))


def trained_speedup(dtype: torch.dtype, rows: int = 400, repeats: int = 3) -> float:
    """torch's time over oneDNN's for the three products of a trained linear layer (forward, input and
    weight gradients), best of ``repeats`` each, at GPT-2's MLP size on 10 teacher-forced captions of 40
    positions ([400, 768] x [768, 3072]); ~0.2 s."""
    rng = torch.Generator().manual_seed(0)
    x, weight, grad = (torch.randn(*shape, generator=rng).to(dtype) for shape in ((rows, 768), (3072, 768),
                                                                                  (rows, 3072)))

    def torchs() -> None:
        torch.mm(x, weight.t()), torch.mm(grad, weight), torch.mm(grad.t(), x)

    def onednns() -> None:
        _onednn_linear(x, weight, None), _input_grad(grad, weight), _weight_grad(grad, x)

    return best_seconds(torchs, repeats) / best_seconds(onednns, repeats)


def packing_pays(dtype: torch.dtype, speedup: Callable[[torch.dtype], float] = packed_speedup) -> bool:
    """Whether CPU products in ``dtype`` run through oneDNN here: ``DISCRITUNE_PACKED_WEIGHTS`` if set, else
    ``speedup`` (``packed_speedup`` for no-grad ones, ``trained_speedup`` for trained ones), measured once per
    process, dtype and probe, and logged."""
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
    what = f"{'trained' if speedup is trained_speedup else 'no-grad'} {str(dtype).removeprefix('torch.')}"
    _readings[what] = ratio
    log.info("%s CPU products: %s (oneDNN measured %.2fx torch's speed here)", what,
             "oneDNN" if chosen else "torch's", ratio)
    return chosen


def probe_readings() -> dict[str, float]:
    """oneDNN's speed over torch's, as each probe that ran in this process measured it (``"no-grad float32"``,
    ``"trained bfloat16"``, ...); a product went through oneDNN where the reading is >= ``MIN_SPEEDUP``."""
    return dict(_readings)


def _pack(weight_out_in: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight_out_in, rows)


def _onednn_linear(x: torch.Tensor, weight_out_in: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight_out_in.t() + bias`` through oneDNN; the weight packed by ``_pack`` or a plain, possibly
    strided tensor, which oneDNN reorders itself (as fast as packing first, for a product used once)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight_out_in, bias, "none", [], "")


def _input_grad(grad: torch.Tensor, weight_out_in: torch.Tensor) -> torch.Tensor:
    """``grad @ weight_out_in`` [rows, in] for ``grad`` [rows, out]."""
    return _onednn_linear(grad, weight_out_in.t(), None)


def _weight_grad(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``grad.t() @ x`` [out, in] for ``grad`` [rows, out] and ``x`` [rows, in]."""
    return _onednn_linear(grad.t(), x.t(), None)


class _OneDNNLinear(torch.autograd.Function):
    """``x @ weight.t() + bias`` with its forward and both gradient products through oneDNN; the gradients
    are the same products as torch's linear, in the same precision (fp32 rounding differs, tested)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad = grad.reshape(-1, grad.size(-1)).contiguous()  # e.g. a sum's expanded gradient: stride 0
        x_grad = weight_grad = bias_grad = None
        if ctx.needs_input_grad[0]:
            x_grad = _input_grad(grad, weight).view(x.shape)
        if ctx.needs_input_grad[1]:
            weight_grad = _weight_grad(grad, x.reshape(-1, x.size(-1)).contiguous())
        if ctx.has_bias and ctx.needs_input_grad[2]:
            bias_grad = grad.sum(0)
        return x_grad, weight_grad, bias_grad


def _linear_weights(model: nn.Module) -> Iterator[tuple[nn.Module, torch.Tensor, torch.Tensor | None]]:
    """Each ``nn.Linear`` and GPT-2 ``Conv1D`` of ``model`` with its weight as [out, in] and its bias."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            yield module, module.weight, module.bias
        elif isinstance(module, Conv1D):
            yield module, module.weight.t(), module.bias


@contextmanager
def packed_linears(model: nn.Module, rows: int) -> Iterator[None]:
    """Inside, ``model``'s linear layers compute their CPU products through oneDNN where the probe for this
    grad mode finds that faster here, in autocast's dtype where CPU autocast is on. Entered without grad, the
    weights are packed on entry for products of about ``rows`` rows and must not change inside; entered with
    grad, the forward and backward products go through oneDNN with the weights as they are. Calls in the
    other grad mode, on CUDA, under ``torch.compile`` (Inductor picks its own kernels) or where oneDNN is not
    faster run as before."""
    layers = list(_linear_weights(model))
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None
    trained = torch.is_grad_enabled()
    cpu = bool(layers) and all(weight.device.type == "cpu" for _, weight, _ in layers)
    probe = trained_speedup if trained else packed_speedup
    if not cpu or torch.compiler.is_compiling() or not packing_pays(dtype or layers[0][1].dtype, probe):
        yield
        return
    replace = _trained_forward if trained else functools.partial(_packed_forward, rows=rows)
    with _lock(model):  # the forwards are the model's own attributes: one thread swaps them at a time
        own = [module.__dict__.get("forward") for module, _, _ in layers]  # an instance's own forward, if any
        for module, weight, bias in layers:
            module.forward = replace(module.forward, weight, bias, dtype)
        try:
            yield
        finally:
            for (module, _, _), forward in zip(layers, own):
                if forward is None:
                    del module.forward  # the class's forward shows again
                else:
                    module.forward = forward


_locks: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _lock(model: nn.Module) -> threading.RLock:
    """The model's own reentrant lock (a nested context in the same thread wraps the outer one's forwards)."""
    with _locks_guard:
        return _locks.setdefault(model, threading.RLock())


def _packed_forward(own: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None,
                    dtype: torch.dtype | None, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    dtype = dtype or weight.dtype
    with torch.no_grad():
        packed = _pack(weight.to(dtype), rows)
        bias = None if bias is None else bias.to(dtype)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return own(x)
        return _onednn_linear(x.to(dtype), packed, bias)

    return forward


def _trained_forward(own: Callable[[torch.Tensor], torch.Tensor], weight: torch.Tensor, bias: torch.Tensor | None,
                     dtype: torch.dtype | None) -> Callable[[torch.Tensor], torch.Tensor]:
    dtype = dtype or weight.dtype

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return own(x)
        return _OneDNNLinear.apply(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))

    return forward
