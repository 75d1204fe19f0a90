import logging

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from egg_zoo_discritune.archs.clipcap import build_clipcap
from egg_zoo_discritune.archs.packed_weights import ENV, packed_linears, packed_speedup, packing_pays
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


def test_with_grad_the_layers_run_as_before_and_train(gpt, forced):
    embeds = torch.randn(2, 3, 48)
    with packed_linears(gpt, 2):
        gpt(inputs_embeds=embeds).logits.sum().backward()
    assert gpt.lm_head.weight.grad is not None and gpt.transformer.h[0].mlp.c_fc.weight.grad.abs().sum() > 0


def test_forwards_are_restored_after_an_error_and_an_instance_forward_is_kept(gpt, forced):
    own = gpt.lm_head.forward
    gpt.lm_head.forward = own  # an instance attribute set by someone else
    with pytest.raises(KeyError):
        with packed_linears(gpt, 2):
            raise KeyError("inside")
    assert gpt.lm_head.__dict__["forward"] is own
    assert _replaced_forwards(gpt) == [gpt.lm_head]


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
    assert "oneDNN, packed weights (oneDNN with packed weights measured 2.00x" in caplog.text
    assert "products: torch's" in caplog.text


def test_not_packed_where_the_probe_finds_it_slower(gpt, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setattr("egg_zoo_discritune.archs.packed_weights.packing_pays", lambda dtype: False)
    with packed_linears(gpt, 2):
        assert _replaced_forwards(gpt) == []


def test_the_probe_compares_real_products_and_leaves_the_random_stream_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    assert 0 < packed_speedup(torch.float32, repeats=1) < 100
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
