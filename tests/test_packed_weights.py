import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from egg_zoo_discritune.archs.clipcap import build_clipcap
from egg_zoo_discritune.archs.packed_weights import (ENV, packed_linears, packed_speedup, packing_pays, probe_readings,
                                                     trained_speedup)
from tests.tiny_assets import CLIP_DIM

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@pytest.fixture
def gpt():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=32, n_embd=48, n_layer=2, n_head=2)).eval()


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setenv(ENV, "1")


def _replaced_forwards(model):
    return [m for m in model.modules() if "forward" in m.__dict__]


@pytest.mark.parametrize("rows", [1, 7, 40])  # a generation step, odd sizes, a prefill of several positions
def test_packed_products_are_the_same_fp32_products(gpt, forced, rows):
    embeds = torch.randn(rows, 3, 48)
    with torch.no_grad():
        expected = gpt(inputs_embeds=embeds).logits
        with packed_linears(gpt, rows):
            assert len(_replaced_forwards(gpt)) == 2 * 4 + 1  # 4 Conv1D per block, the LM head
            packed = gpt(inputs_embeds=embeds).logits
    assert packed.dtype == torch.float32
    torch.testing.assert_close(packed, expected, rtol=1e-5, atol=1e-5)
    assert _replaced_forwards(gpt) == []


def test_under_cpu_autocast_the_products_are_in_its_dtype(gpt, forced):
    embeds = torch.randn(4, 3, 48)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = gpt(inputs_embeds=embeds).logits
        with packed_linears(gpt, 4):
            packed = gpt(inputs_embeds=embeds).logits
    assert packed.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(packed.float(), expected.float(), rtol=0.05, atol=0.05)


def _gradients(gpt, embeds, loss, packed: bool):
    gpt.zero_grad(set_to_none=True)
    embeds = embeds.clone().requires_grad_()
    with packed_linears(gpt, embeds.shape[0] * embeds.shape[1]) if packed else nullcontext():
        logits = gpt(inputs_embeds=embeds).logits
    loss(logits).backward()  # outside, as a training step's backward is
    grads = {name: p.grad.clone() for name, p in gpt.named_parameters() if p.grad is not None}
    return logits.detach(), embeds.grad, grads


@pytest.mark.parametrize("loss", [lambda logits: logits.sum(),  # an expanded (stride 0) gradient
                                  lambda logits: logits.log_softmax(-1)[..., 7].pow(2).mean()],
                         ids=["sum", "log-softmax"])
def test_with_grad_the_forward_and_every_gradient_are_torchs_products(gpt, forced, loss):
    embeds = torch.randn(3, 5, 48)
    logits, embeds_grad, grads = _gradients(gpt, embeds, loss, packed=False)
    with packed_linears(gpt, 15):
        assert len(_replaced_forwards(gpt)) == 2 * 4 + 1
    packed_logits, packed_embeds_grad, packed_grads = _gradients(gpt, embeds, loss, packed=True)
    torch.testing.assert_close(packed_logits, logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed_embeds_grad, embeds_grad, rtol=1e-4, atol=1e-6)
    assert packed_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_with_grad_a_frozen_layer_gets_no_gradient_and_the_others_still_train(gpt, forced):
    gpt.transformer.h[0].requires_grad_(False)
    _, embeds_grad, grads = _gradients(gpt, torch.randn(2, 3, 48), lambda logits: logits.pow(2).mean(), packed=True)
    assert not any(name.startswith("transformer.h.0.") for name in grads) and embeds_grad.abs().sum() > 0
    assert grads["transformer.h.1.mlp.c_fc.weight"].abs().sum() > 0


def test_with_grad_under_cpu_autocast_the_products_and_gradients_are_in_its_dtype(gpt, forced):
    embeds = torch.randn(2, 3, 48, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = gpt(inputs_embeds=embeds).logits
        with packed_linears(gpt, 6):
            packed = gpt(inputs_embeds=embeds).logits
    assert packed.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(packed.float(), expected.float(), rtol=0.05, atol=0.05)
    packed.float().pow(2).mean().backward()
    assert gpt.lm_head.weight.grad.dtype == torch.float32 and gpt.lm_head.weight.grad.abs().sum() > 0


def test_forwards_are_restored_after_an_error_and_an_instance_forward_is_kept(gpt, forced):
    own = gpt.lm_head.forward
    gpt.lm_head.forward = own  # an instance attribute set by someone else
    with pytest.raises(KeyError):
        with packed_linears(gpt, 2):
            raise KeyError("inside")
    assert gpt.lm_head.__dict__["forward"] is own
    assert _replaced_forwards(gpt) == [gpt.lm_head]


def test_threads_using_one_model_at_once_get_its_products_and_leave_its_forwards_alone(gpt, forced):
    embeds = torch.randn(2, 3, 48)
    with torch.no_grad():
        expected = gpt(inputs_embeds=embeds).logits

    def caption(_) -> torch.Tensor:  # as the study server's threads call the retriever
        with torch.no_grad(), packed_linears(gpt, 2):
            return gpt(inputs_embeds=embeds).logits

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(caption, range(40)))
    for logits in results:
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    assert _replaced_forwards(gpt) == []


def test_the_choice_follows_the_environment_then_the_probe(monkeypatch, caplog):
    monkeypatch.setenv(ENV, "0")
    assert not packing_pays(torch.float32, speedup=lambda dtype: 9.0)
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(ValueError, match=ENV):
        packing_pays(torch.float32)
    monkeypatch.delenv(ENV)
    calls = []

    def fast(dtype):
        calls.append(dtype)
        return 2.0

    with caplog.at_level(logging.INFO, logger="discritune"):
        assert packing_pays(torch.float32, speedup=fast) and packing_pays(torch.float32, speedup=fast)
        assert not packing_pays(torch.float32, speedup=lambda dtype: 1.0)
    assert calls == [torch.float32]  # measured once per process
    assert "no-grad float32 CPU products: oneDNN (oneDNN measured 2.00x torch's speed here)" in caplog.text
    assert "products: torch's" in caplog.text
    assert probe_readings()["no-grad float32"] == 1.0  # the last probe of that mode and dtype


def test_each_grad_mode_has_its_own_probe(gpt, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    asked = []

    def pays(dtype, speedup):
        asked.append(speedup)
        return True

    monkeypatch.setattr("egg_zoo_discritune.archs.packed_weights.packing_pays", pays)
    with torch.no_grad(), packed_linears(gpt, 2):
        pass
    with packed_linears(gpt, 2):
        pass
    assert asked == [packed_speedup, trained_speedup]


@pytest.mark.parametrize("grad", [False, True])
def test_not_packed_where_the_probe_finds_it_slower(gpt, monkeypatch, grad):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr("egg_zoo_discritune.archs.packed_weights.packing_pays", lambda dtype, speedup: False)
    with torch.set_grad_enabled(grad), packed_linears(gpt, 2):
        assert _replaced_forwards(gpt) == []


def test_the_probe_compares_real_products_and_leaves_the_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    assert 0 < packed_speedup(torch.float32, repeats=1) < 100
    assert 0 < trained_speedup(torch.float32, rows=16, repeats=1) < 100
    assert torch.equal(torch.rand(3), expected)  # resumed runs probe again: they must draw the same numbers


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_clipcap_captions_are_the_same_packed_or_not(tiny, monkeypatch, mode):
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights)).eval()
    features = torch.randn(6, CLIP_DIM, generator=torch.Generator().manual_seed(3))
    captions = {}
    for packed in ("0", "1"):
        monkeypatch.setenv(ENV, packed)
        captions[packed] = sender.generate(features, mode=mode, max_new_tokens=12, num_beams=3)
    assert torch.equal(captions["0"][0], captions["1"][0]) and torch.equal(captions["0"][1], captions["1"][1])
