"""The paper-* presets are the authors' code point by point (issue 10's table): every row has a test here,
against hand-computed values or the real library it stands for."""

import json

import pytest
import torch
from transformers import CLIPModel, GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

from egg_zoo_discritune.archs.blip import build_blip
from egg_zoo_discritune.archs.clip import load_retriever
from egg_zoo_discritune.archs.clipcap import build_clipcap, stop_token_ids
from egg_zoo_discritune.archs.decoding import eos_normalised_log_prob
from egg_zoo_discritune.config import PRESETS, build_parser, parse_config
from egg_zoo_discritune.data_loaders.training import split_dataset
from egg_zoo_discritune.egg_compat import load_engine
from egg_zoo_discritune.train import build_game
from tests.tiny_assets import CLIP_DIM, byte_symbols, write_blip

EOS, PERIOD = 99, 13


def _paper(tiny, *extra):
    """paper-coco on the tiny models."""
    return parse_config(["--preset", "paper-coco", "--gpt2", str(tiny.gpt2), "--clipcap_weights",
                         str(tiny.clipcap_weights), "--receiver", str(tiny.clip), "--annotations",
                         str(tiny.coco_json), *extra])


def test_authors_log_prob_on_captions_stopped_by_a_period_by_eos_and_by_the_cap():
    tokens = torch.tensor([
        [5, PERIOD, EOS, EOS],  # "." at 2: their EOS follows it, so 2 tokens over 3
        [5, 6, EOS, EOS],  # EOS at 3: the 2 tokens before it over 3; EOS's own log-prob left out
        [5, 6, 7, 8],  # never stops: 4 tokens over the cap, 4
        [5, 6, 7, PERIOD],  # "." as the 4th and last allowed token: no room for their EOS, so over 4
    ])
    lengths = torch.tensor([2, 3, 4, 4])  # this package's lengths: the stop token included
    token_logp = torch.tensor([[-1.0, -2.0, 0.0, 0.0], [-1.0, -2.0, -4.0, 0.0],
                               [-1.0, -2.0, -3.0, -6.0], [-1.0, -1.0, -1.0, -1.0]])
    got = eos_normalised_log_prob(token_logp, tokens, lengths, EOS, max_new_tokens=4)
    torch.testing.assert_close(got, torch.tensor([-3 / 3, -3 / 3, -12 / 4, -4 / 4]))


def test_clipcap_and_blip_use_their_own_authors_normalisation(tiny, tmp_path):
    clipcap = build_clipcap(str(tiny.gpt2), str(tiny.clipcap_weights))
    eos = clipcap.tokenizer.eos_token_id
    tokens, lengths = torch.tensor([[5, 6, eos]]), torch.tensor([3])
    token_logp = torch.tensor([[-1.0, -2.0, -3.0]])
    torch.testing.assert_close(clipcap.authors_log_prob(token_logp, tokens, lengths, 30), torch.tensor([-3 / 3]))
    # BLIP (their BlipSender): the mean over the tokens that are not padding, [SEP] included.
    blip = build_blip(str(write_blip(tmp_path / "blip")))
    sep = blip.eos_id
    tokens = torch.tensor([[5, sep, blip.pad_id]])
    torch.testing.assert_close(blip.authors_log_prob(torch.tensor([[-1.0, -2.0, 0.0]]), tokens, torch.tensor([2]), 36),
                               torch.tensor([-3 / 2]))


def test_score_is_clips_own_logits_per_text(tiny):
    retriever, _ = load_retriever(str(tiny.clip))
    model = CLIPModel.from_pretrained(tiny.clip).eval()
    texts = ["a red circle", "a blue square", "green"]
    pixels = torch.randn(4, 3, 32, 32)
    batch = retriever.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         pixel_values=pixels).logits_per_text
        got = retriever.score(retriever.encode_texts(texts), retriever.encode_images(pixels))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert parse_config(["--preset", "paper-coco"]).receiver.similarity == "scaled_cosine"


def test_captions_are_capped_at_30_tokens(tiny):
    cfg = _paper(tiny, "--stop_rule", "eos")  # the random tiny model rarely writes EOS: rows run to the cap
    assert parse_config(["--preset", "paper-coco"]).game.max_len == 30
    game, _ = build_game(cfg, load_engine("builtin"))
    torch.manual_seed(0)
    _, interaction = game(torch.randn(4, 3, 32, 32))
    assert interaction.message.size(1) == 30
    assert interaction.message_length.max() == 30


@pytest.fixture(scope="module")
def dotted_gpt2(tmp_path_factory):
    """A GPT-2 whose byte-level BPE merges "..." into one token, as the real vocabulary does."""
    directory = tmp_path_factory.mktemp("dotted")
    vocab = {s: i for i, s in enumerate(byte_symbols())}
    for merged in ("..", "..."):
        vocab[merged] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n. .\n.. .\n")
    GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt")).save_pretrained(directory)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=64,
                        bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return directory


def test_any_token_containing_a_period_ends_the_caption(dotted_gpt2):
    sender = build_clipcap(str(dotted_gpt2), clip_dim=CLIP_DIM, prefix_length=2, stop_rule="any_period")
    tok = sender.tokenizer
    assert tok.tokenize("wait...") == ["w", "a", "i", "t", "..."]
    assert set(stop_token_ids(tok, "any_period")) == {tok.eos_token_id, *tok.convert_tokens_to_ids([".", "..", "..."])}
    assert set(stop_token_ids(tok, "period")) == {tok.eos_token_id, tok.convert_tokens_to_ids(".")}
    # Teach it "wait... go." and let greedy decoding run: "..." stops it under the authors' rule only.
    features = torch.randn(2, CLIP_DIM)
    ids = tok("wait... go.").input_ids
    tokens, lengths = torch.tensor([ids] * 2), torch.full((2,), len(ids))
    optimizer = torch.optim.Adam(sender.parameters(), lr=1e-2)
    for _ in range(150):
        loss = -sender.log_probs(features, tokens, lengths)[0].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    sender.eval()
    assert sender.decode(*sender.generate(features, max_new_tokens=20)) == ["wait..."] * 2
    sender.stop_ids = stop_token_ids(tok, "period")
    assert sender.decode(*sender.generate(features, max_new_tokens=20)) == ["wait... go."] * 2


def test_coco_training_includes_restval(tiny):
    cfg = _paper(tiny)
    assert cfg.data.include_restval
    train = split_dataset(cfg.data, "train", cfg.data.annotations, None, 0, lambda image: image, None)
    assert len(train) == 8 + 4  # the tiny Karpathy file: 8 train + 4 restval images
    without = parse_config(["--preset", "paper-coco", "--annotations", str(tiny.coco_json), "--no-include_restval"])
    assert len(split_dataset(without.data, "train", without.data.annotations, None, 0, lambda i: i, None)) == 8


def _dropout_calls(game, training: bool) -> list[bool]:
    """Whether GPT-2's dropout was active at each of its calls during one game step."""
    calls = []
    handles = [m.register_forward_hook(lambda m, i, o: calls.append(m.training))
               for m in game.sender.gpt.modules() if isinstance(m, torch.nn.Dropout)]
    game.train(training)
    torch.manual_seed(0)
    with torch.set_grad_enabled(training):
        game(torch.randn(4, 3, 32, 32))
    for handle in handles:
        handle.remove()
    return calls


def test_dropout_on_in_training_generation_and_teacher_forcing_only(tiny):
    on, _ = build_game(_paper(tiny), load_engine("builtin"))
    assert on.sender.gpt.config.resid_pdrop > 0
    seen = []

    def recording(name, method):
        def call(*args, **kwargs):
            seen.append((name, on.sender.gpt.training))
            return method(*args, **kwargs)
        return call

    on.sender.gpt.generate = recording("generate", on.sender.gpt.generate)
    on.sender.gpt.forward = recording("forward", on.sender.gpt.forward)
    calls = _dropout_calls(on, training=True)
    # Generation's own forward calls come first, then the one teacher-forced pass: all with dropout.
    assert calls and all(calls)
    assert seen[0] == ("generate", True) and seen[-1] == ("forward", True) and all(t for _, t in seen)
    assert not any(_dropout_calls(on, training=False))
    off, _ = build_game(_paper(tiny, "--dropout", "off"), load_engine("builtin"))
    assert not any(_dropout_calls(off, training=True))


def test_every_paper_knob_is_applied_and_its_source_shown():
    for name in ("paper-coco", "paper-concap", "paper-blip"):
        cfg = parse_config(["--preset", name])
        values = {k: v for group in vars(cfg).values() for k, v in vars(group).items()}
        help_text = build_parser(name).format_help()
        for knob, (value, source) in PRESETS[name].items():
            assert values[knob] == value, (name, knob)
            assert f"--{knob}={value}" in help_text and source.split(":")[0] in help_text, (name, knob)
    coco = parse_config(["--preset", "paper-coco"])
    assert (coco.receiver.similarity, coco.game.logprob_reduction, coco.game.max_len, coco.sender.stop_rule,
            coco.data.include_restval, coco.sender.dropout) == ("scaled_cosine", "authors", 30, "any_period", True, "on")
    # The package's own improvements never sit under the paper's name.
    for name in ("paper-coco", "paper-concap", "paper-blip"):
        cfg = parse_config(["--preset", name])
        assert (cfg.game.train_decoding, cfg.game.baseline, cfg.game.normalize_advantage, cfg.game.kl_coeff,
                cfg.game.samples_per_image) == ("greedy", "mean", False, 0.0, 1)
