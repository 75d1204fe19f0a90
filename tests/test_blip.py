"""The BLIP sender with a tiny BlipConfig model: log-probs from the decoder logits, captions that end
at [SEP], and DiscriTune training that changes the text decoder only."""

import pytest
import torch

from egg_zoo_discritune.archs.blip import build_blip
from egg_zoo_discritune.engine.checkpoint import load_checkpoint
from egg_zoo_discritune.evaluate import main as evaluate
from egg_zoo_discritune.train import main as train
from tests.test_train import _argv
from tests.tiny_assets import write_blip


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    return write_blip(tmp_path_factory.mktemp("blip") / "blip")


def test_log_probs_equal_a_step_by_step_computation(blip_dir):
    sender = build_blip(str(blip_dir))
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32)
    tokens, lengths = sender.generate(pixels, mode="sample", max_new_tokens=5)
    token_logp, _ = sender.log_probs(pixels, tokens, lengths)
    embeds = sender.model.vision_model(pixel_values=pixels)[0]
    for row in range(3):
        for t in range(tokens.size(1)):
            ids = torch.cat([sender.prompt_ids, tokens[row, :t]])[None]
            logits = sender.model.text_decoder(input_ids=ids, encoder_hidden_states=embeds[row:row + 1]).logits
            expected = logits[0, -1].log_softmax(-1)[tokens[row, t]] if t < lengths[row] else torch.tensor(0.0)
            torch.testing.assert_close(token_logp[row, t], expected, rtol=1e-4, atol=1e-5)


def test_captions_stop_at_sep(blip_dir):
    sender = build_blip(str(blip_dir), prompt="")
    assert sender.prompt_ids.tolist() == [sender.bos_id]
    pixels = torch.randn(2, 3, 32, 32)
    tokens, lengths = sender.generate(pixels, max_new_tokens=6)
    assert lengths.tolist() == [6, 6] and sender.eos_id not in tokens.tolist()[0]
    with torch.no_grad():  # make [SEP] the most likely token after one word
        sender.model.text_decoder.cls.predictions.decoder.bias[sender.eos_id] = 8.0
    for mode in ("greedy", "beam"):
        tokens, lengths = sender.generate(pixels, mode=mode, max_new_tokens=6, num_beams=2)
        for row, n in zip(tokens.tolist(), lengths.tolist()):
            assert n < 6 and row[n - 1] == sender.eos_id and sender.eos_id not in row[:n - 1]
    assert all("[SEP]" not in c and "[DEC]" not in c for c in sender.decode(tokens, lengths))


def test_training_changes_only_the_text_decoder(tiny, blip_dir, tmp_path):
    run_dir = train(_argv(tiny, tmp_path / "run", "--sender", "blip-base", "--sender_source", str(blip_dir),
                          "--n_epochs", "1", "--max_len", "6"))
    state = load_checkpoint(run_dir / "final.tar")["model_state_dict"]
    trained = [k for k in state if k.startswith("sender.")]
    assert trained and all(k.startswith("sender.model.text_decoder.") for k in trained)
    exported = torch.load(run_dir / "sender_finetuned.pt", weights_only=True)
    original = build_blip(str(blip_dir)).model.state_dict()
    assert set(exported) == set(original)
    vision = [k for k in original if k.startswith("vision_model.")]
    assert vision and all(torch.equal(exported[k], original[k]) for k in vision)
    assert any(not torch.equal(exported[k], original[k]) for k in original if k.startswith("text_decoder."))


def test_evaluate_a_blip_run(tiny, blip_dir, tmp_path):
    run_dir = train(_argv(tiny, tmp_path / "run", "--sender", "blip-base", "--sender_source", str(blip_dir),
                          "--n_epochs", "1", "--max_len", "6"))
    results = evaluate(["--sender", "blip-base", "--sender_source", str(blip_dir), "--receiver", str(tiny.clip),
                        "--checkpoints", "pretrained", str(run_dir), "--test_sets", "coco", "--root",
                        f"coco={tiny.coco_root}", "--block_size", "2", "--no-nlg", "--decoding", "greedy",
                        "--max_len", "6", "--num_workers", "0", "--output_dir", str(tmp_path / "eval")])
    pretrained, finetuned = results[0], results[1]
    assert pretrained["checkpoint"] == str(blip_dir) and finetuned["checkpoint"].endswith("final.tar")
    assert pretrained["n_images"] == finetuned["n_images"] == 4
    lines = (tmp_path / "eval" / "captions" / "run__coco.jsonl").read_text().splitlines()
    assert len(lines) == 4
