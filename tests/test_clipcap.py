import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.activations import GELUTanh, NewGELUActivation

from egg_zoo_discritune.archs.clipcap import build_clipcap, stop_token_ids, use_fused_gelu
from egg_zoo_discritune.archs.decoding import caption_lengths
from egg_zoo_discritune.archs.packed_weights import ENV
from egg_zoo_discritune.archs.weights import MissingWeightsError
from tests.tiny_assets import CLIP_DIM, GPT2_EMBED, clipcap_original_state_dict


def test_original_checkpoint_loads_strictly_and_exports_identically(tiny):
    original = torch.load(tiny.clipcap_weights, weights_only=True)
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights))
    exported = sender.export()
    assert set(exported) == set(original)
    for key, value in original.items():
        assert exported[key].dtype == value.dtype, key
        assert torch.equal(exported[key], value), key


def test_legacy_buffers_are_the_only_keys_dropped(tiny):
    state = torch.load(tiny.clipcap_weights, weights_only=True)
    state["gpt.transformer.h.0.attn.unexpected"] = torch.zeros(1)
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights))
    with pytest.raises(RuntimeError, match="unexpected"):
        sender.load_clipcap_state_dict(state)


def _naive_clipcap_transformer_mapper(state, x, clip_length, heads=8):
    """ClipCap's transformer mapper written out step by step (einsum attention, keys before values)."""
    p = "clip_project."
    h = (x @ state[p + "linear.weight"].t() + state[p + "linear.bias"]).view(x.size(0), clip_length, -1)
    h = torch.cat([h, state[p + "prefix_const"].expand(x.size(0), -1, -1)], dim=1)
    n_layers = len({k.split(".")[3] for k in state if k.startswith(p + "transformer.layers.")})
    for i in range(n_layers):
        q = f"{p}transformer.layers.{i}."
        y = torch.nn.functional.layer_norm(h, h.shape[-1:], state[q + "norm1.weight"], state[q + "norm1.bias"])
        b, n, c = y.shape
        queries = (y @ state[q + "attn.to_queries.weight"].t()).reshape(b, n, heads, c // heads)
        kv = (y @ state[q + "attn.to_keys_values.weight"].t()).reshape(b, n, 2, heads, c // heads)
        att = torch.einsum("bnhd,bmhd->bnmh", queries, kv[:, :, 0]) * (c // heads) ** -0.5
        out = torch.einsum("bnmh,bmhd->bnhd", att.softmax(dim=2), kv[:, :, 1]).reshape(b, n, c)
        h = h + out @ state[q + "attn.project.weight"].t() + state[q + "attn.project.bias"]
        y = torch.nn.functional.layer_norm(h, h.shape[-1:], state[q + "norm2.weight"], state[q + "norm2.bias"])
        y = torch.relu(y @ state[q + "mlp.fc1.weight"].t() + state[q + "mlp.fc1.bias"])
        h = h + y @ state[q + "mlp.fc2.weight"].t() + state[q + "mlp.fc2.bias"]
    return h[:, clip_length:]


def test_transformer_mapper_checkpoint_loads_and_matches_clipcap_math(tiny, tmp_path):
    torch.manual_seed(1)
    gpt = GPT2LMHeadModel(GPT2Config.from_pretrained(tiny.gpt2))
    state = {f"gpt.{k}": v for k, v in gpt.state_dict().items()}
    prefix_length, clip_length, layers, d = 5, 3, 2, GPT2_EMBED
    state["clip_project.linear.weight"] = torch.randn(clip_length * d, CLIP_DIM) * 0.2
    state["clip_project.linear.bias"] = torch.randn(clip_length * d) * 0.2
    state["clip_project.prefix_const"] = torch.randn(prefix_length, d)
    for i in range(layers):
        q = f"clip_project.transformer.layers.{i}."
        for norm in ("norm1", "norm2"):
            state[q + norm + ".weight"] = 1 + 0.1 * torch.randn(d)
            state[q + norm + ".bias"] = 0.1 * torch.randn(d)
        state[q + "attn.to_queries.weight"] = torch.randn(d, d) * 0.2
        state[q + "attn.to_keys_values.weight"] = torch.randn(2 * d, d) * 0.2
        state[q + "attn.project.weight"] = torch.randn(d, d) * 0.2
        state[q + "attn.project.bias"] = torch.randn(d) * 0.2
        state[q + "mlp.fc1.weight"] = torch.randn(2 * d, d) * 0.2
        state[q + "mlp.fc1.bias"] = torch.randn(2 * d) * 0.2
        state[q + "mlp.fc2.weight"] = torch.randn(d, 2 * d) * 0.2
        state[q + "mlp.fc2.bias"] = torch.randn(d) * 0.2
    torch.save(state, tmp_path / "transformer_weights.pt")
    sender = build_clipcap(str(tiny.gpt2), str(tmp_path / "transformer_weights.pt"))
    features = torch.randn(3, CLIP_DIM)
    prefix = sender.prefix(features)
    assert prefix.shape == (3, prefix_length, d)
    torch.testing.assert_close(prefix, _naive_clipcap_transformer_mapper(state, features, clip_length),
                               rtol=1e-5, atol=1e-5)


def _train_to_say(sender, features, text, steps=150):
    """Maximum likelihood on one caption for every image, through the sender's own log_probs."""
    ids = sender.tokenizer(text).input_ids
    tokens = torch.tensor([ids] * features.size(0))
    lengths = torch.full((features.size(0),), len(ids))
    optimizer = torch.optim.Adam(sender.parameters(), lr=1e-2)
    for _ in range(steps):
        logp, _ = sender.log_probs(features, tokens, lengths)
        loss = -logp.sum() / lengths.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return ids


def test_greedy_captions_stop_at_the_full_stop(tiny):
    torch.manual_seed(0)
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights))
    features = torch.randn(3, CLIP_DIM)
    ids = _train_to_say(sender, features, "a red circle.")
    tokens, lengths = sender.generate(features, mode="greedy", max_new_tokens=30)
    assert sender.decode(tokens, lengths) == ["a red circle."] * 3
    assert lengths.tolist() == [len(ids)] * 3
    assert (tokens[:, len(ids):] == sender.pad_id).all()
    beam_tokens, beam_lengths = sender.generate(features, mode="beam", num_beams=3, max_new_tokens=30)
    assert sender.decode(beam_tokens, beam_lengths) == ["a red circle."] * 3
    # Without the full stop as a stop token the same model writes on past the ".".
    sender.stop_ids = stop_token_ids(sender.tokenizer, "eos")
    _, eos_lengths = sender.generate(features, mode="greedy", max_new_tokens=30)
    assert (eos_lengths > len(ids)).all()


def test_log_probs_equal_step_by_step_computation(tiny):
    torch.manual_seed(0)
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights))
    features = torch.randn(2, CLIP_DIM)
    tokens = torch.randint(0, 200, (2, 6))
    lengths = torch.tensor([6, 3])
    token_logp, entropy = sender.log_probs(features, tokens, lengths, temperature=0.7)
    prefix = sender.prefix(features)
    for row in range(2):
        for t in range(6):
            embeds = torch.cat([prefix[row:row + 1], sender.gpt.transformer.wte(tokens[row:row + 1, :t])], dim=1)
            logp = (sender.gpt(inputs_embeds=embeds).logits[0, -1] / 0.7).log_softmax(-1)
            expected = logp[tokens[row, t]] if t < lengths[row] else torch.tensor(0.0)
            expected_entropy = -(logp.exp() * logp).sum() if t < lengths[row] else torch.tensor(0.0)
            torch.testing.assert_close(token_logp[row, t], expected, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(entropy[row, t], expected_entropy, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("onednn", ["0", "1"])
def test_log_probs_gradients_equal_those_of_the_step_by_step_computation(tiny, monkeypatch, onednn):
    """Every parameter's gradient, the tied embedding's (a sparse lookup gradient added into the LM head's)
    included, with torch's products and with oneDNN's."""
    monkeypatch.setenv(ENV, onednn)
    torch.manual_seed(0)
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights)).eval()
    features = torch.randn(2, CLIP_DIM)
    tokens = torch.randint(0, 200, (2, 5))
    lengths = torch.tensor([5, 2])
    sender.log_probs(features, tokens, lengths)[0].sum().backward()
    grads = {name: p.grad.clone() for name, p in sender.named_parameters()}
    sender.zero_grad(set_to_none=True)
    with monkeypatch.context() as torchs:
        torchs.setenv(ENV, "0")
        for row in range(2):
            for t in range(lengths[row]):
                embeds = torch.cat([sender.prefix(features[row:row + 1]),
                                    sender.gpt.transformer.wte(tokens[row:row + 1, :t])], dim=1)
                sender.gpt(inputs_embeds=embeds).logits[0, -1].log_softmax(-1)[tokens[row, t]].backward()
    assert grads.keys() == {name for name, p in sender.named_parameters() if p.grad is not None}
    for name, p in sender.named_parameters():
        assert p.grad.layout == torch.strided and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=name)


def test_fused_gelu_computes_gpt2s_gelu_new():
    torch.manual_seed(0)
    original = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=GPT2_EMBED, n_layer=2, n_head=2)).eval()
    fused = copy.deepcopy(original)
    use_fused_gelu(fused)
    assert all(type(b.mlp.act) is NewGELUActivation for b in original.transformer.h)
    assert all(type(b.mlp.act) is GELUTanh for b in fused.transformer.h)
    x = 3 * torch.randn(10_000)
    assert (NewGELUActivation()(x) - GELUTanh()(x)).abs().max() < 1e-6
    ids = torch.randint(0, 50, (3, 12))
    torch.testing.assert_close(fused(ids).logits, original(ids).logits, rtol=0, atol=1e-5)


def test_sampling_and_lengths(tiny):
    torch.manual_seed(0)
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights))
    tokens, lengths = sender.generate(torch.randn(5, CLIP_DIM), mode="sample", max_new_tokens=7)
    assert tokens.size(0) == 5 and tokens.size(1) <= 7
    assert ((lengths >= 1) & (lengths <= tokens.size(1))).all()
    # Counted here row by row: up to and including the first stop token, else the whole width.
    for row, length in zip(tokens.tolist(), lengths.tolist()):
        stops = [i for i, t in enumerate(row) if t in sender.stop_ids]
        assert length == (stops[0] + 1 if stops else len(row))


def test_caption_lengths_include_the_first_stop_token():
    tokens = torch.tensor([[5, 13, 13, 99], [5, 6, 7, 8], [13, 99, 99, 99]])
    assert caption_lengths(tokens, [13, 99]).tolist() == [2, 4, 1]


def test_stop_rules(tiny):
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights))
    tok = sender.tokenizer
    period = tok.convert_tokens_to_ids(".")
    assert stop_token_ids(tok, "period") == sorted({tok.eos_token_id, period})
    assert stop_token_ids(tok, "eos") == [tok.eos_token_id]
    assert set(stop_token_ids(tok, "period")) <= set(stop_token_ids(tok, "any_period"))


def test_trainable_parts(tiny):
    sender = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights), trainable="mapper")
    names = {n for n, p in sender.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("clip_project.") for n in names)
    sender.set_trainable("gpt2")
    assert all(n.startswith("gpt.") for n, p in sender.named_parameters() if p.requires_grad)


def test_missing_weights_say_what_to_download(tiny, tmp_path):
    with pytest.raises(MissingWeightsError, match="1IdaBtMSvtyzF0ByVaBHtvM0JYSXRExRX"):
        build_clipcap(str(tiny.gpt2), str(tmp_path / "coco_weights.pt"))
    with pytest.raises(MissingWeightsError, match="hf download"):
        build_clipcap(str(tmp_path / "no-such-gpt2"), str(tiny.clipcap_weights))


def test_weights_from_another_gpt2_config_are_refused(tiny, tmp_path):
    state = clipcap_original_state_dict(tiny.gpt2)
    state["gpt.transformer.wte.weight"] = torch.zeros(10, GPT2_EMBED)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="does not match"):
        build_clipcap(str(tiny.gpt2), str(tmp_path / "bad.pt"))
