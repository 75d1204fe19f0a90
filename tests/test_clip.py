import pytest
import torch
from PIL import Image

from egg_zoo_discritune.archs.clip import ClipRetriever, load_retriever
from egg_zoo_discritune.archs.openai_clip import clip_from_openai_state_dict, openai_clip_config
from egg_zoo_discritune.archs.packed_weights import ENV
from egg_zoo_discritune.archs.weights import load_state_dict_file
from tests import openai_clip_reference as ref
from tests.tiny_assets import write_clip_tokenizer


@pytest.fixture(scope="module")
def openai_state():
    return ref.random_openai_state_dict(vocab_size=300)


def _inputs(vocab_size):
    torch.manual_seed(0)
    pixels = torch.randn(3, 3, 32, 32)
    ids = torch.zeros(3, 77, dtype=torch.long)
    for row, n in enumerate((5, 9, 2)):
        ids[row, 0] = vocab_size - 2
        ids[row, 1:n + 1] = torch.randint(1, vocab_size - 2, (n,))
        ids[row, n + 1] = vocab_size - 1
    return pixels, ids


def test_config_is_read_off_the_shapes(openai_state):
    config = openai_clip_config(openai_state)
    assert config.vision_config.image_size == 32 and config.vision_config.patch_size == 8
    assert config.vision_config.num_attention_heads == 2 and config.text_config.num_hidden_layers == 2
    assert config.projection_dim == 16 and config.text_config.hidden_act == "quick_gelu"


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript"])
def test_openai_checkpoint_gives_the_same_embeddings(openai_state, tmp_path, fmt):
    path = tmp_path / "ViT-B-32.pt"
    if fmt == "torchscript":
        ref.save_torchscript(openai_state, path)
    else:
        torch.save(openai_state, path)
    model = clip_from_openai_state_dict(load_state_dict_file(path, "CLIP", trust_torchscript=True)).eval()
    pixels, ids = _inputs(openai_state["token_embedding.weight"].shape[0])
    with torch.no_grad():
        torch.testing.assert_close(model.get_image_features(pixel_values=pixels).pooler_output,
                                   ref.encode_image(openai_state, pixels), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(model.get_text_features(input_ids=ids).pooler_output,
                                   ref.encode_text(openai_state, ids), rtol=1e-4, atol=1e-5)
    assert torch.equal(model.logit_scale, openai_state["logit_scale"])


def test_load_retriever_from_openai_file_with_separate_tokenizer(openai_state, tmp_path):
    tokenizer_dir = tmp_path / "tok"
    tokenizer = write_clip_tokenizer(tokenizer_dir)
    state = ref.random_openai_state_dict(vocab_size=len(tokenizer))
    torch.save(state, tmp_path / "ViT-B-32.pt")
    retriever, processor = load_retriever(str(tmp_path / "ViT-B-32.pt"), tokenizer=str(tokenizer_dir))
    assert processor.crop_size == {"height": 32, "width": 32}
    texts = ["a red circle", "a blue square."]
    expected = ref.encode_text(state, tokenizer(texts, padding="max_length", max_length=77, return_tensors="pt").input_ids)
    torch.testing.assert_close(retriever.encode_texts(texts), expected, rtol=1e-4, atol=1e-5)


def test_scores_and_frozen_retriever(tiny):
    retriever, processor = load_retriever(str(tiny.clip), similarity="dot")
    assert not any(p.requires_grad for p in retriever.parameters())
    retriever.train()
    assert not retriever.model.training
    text = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    torch.testing.assert_close(retriever.score(text, image), torch.tensor([[3.0, 8.0], [1.0, 0.0]]))
    retriever.similarity = "cosine"
    torch.testing.assert_close(retriever.score(text, image), torch.tensor([[0.6, 0.8], [1.0, 0.0]]))
    retriever.similarity = "scaled_cosine"
    scale = retriever.model.logit_scale.exp().item()
    torch.testing.assert_close(retriever.score(text, image), torch.tensor([[0.6, 0.8], [1.0, 0.0]]) * scale)


def test_unknown_similarity_is_refused(tiny):
    retriever, _ = load_retriever(str(tiny.clip))
    with pytest.raises(ValueError, match="similarity"):
        ClipRetriever(retriever.model, retriever.tokenizer, similarity="l2")


def test_siglip_retriever(tiny, tmp_path):
    from transformers import SiglipModel

    from egg_zoo_discritune.config import ReceiverOptions
    from egg_zoo_discritune.data_loaders.features import fingerprint
    from egg_zoo_discritune.factory import load_other_receivers
    from tests.tiny_assets import write_siglip

    directory = write_siglip(tmp_path / "siglip")
    retriever, processor = load_retriever(str(directory), similarity="scaled_cosine")
    assert isinstance(retriever.model, SiglipModel) and fingerprint(retriever)["image_tower_sha256"]
    pixels = processor(images=[Image.new("RGB", (40, 30), "red")], return_tensors="pt").pixel_values
    assert pixels.shape == (1, 3, 32, 32)
    expected = retriever.model.get_image_features(pixel_values=pixels).pooler_output
    torch.testing.assert_close(retriever.encode_images(pixels), expected)
    # Padded to the full context as SigLIP was trained: a caption's embedding does not depend on its batch.
    texts = ["a red square", "a much longer caption about a small green circle"]
    torch.testing.assert_close(retriever.encode_texts(texts)[:1], retriever.encode_texts(texts[:1]))
    assert retriever.score(retriever.encode_texts(texts), retriever.encode_images(pixels)).shape == (2, 1)
    with pytest.raises(ValueError, match="other pixels"):  # SigLIP normalises differently from CLIP
        load_other_receivers(ReceiverOptions(receiver=f"{tiny.clip},{directory}"), load_retriever(str(tiny.clip))[0])


def test_embeddings_are_the_same_with_onednns_products(tiny, monkeypatch):
    retriever, _ = load_retriever(str(tiny.clip))
    size = retriever.model.config.vision_config.image_size
    pixels = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(0))
    texts = ["a red circle", "two blue squares on the left", "a cat"]
    embeddings = {}
    for onednn in ("0", "1"):
        monkeypatch.setenv(ENV, onednn)
        embeddings[onednn] = retriever.encode_images(pixels), retriever.encode_texts(texts)
    for packed, plain in zip(embeddings["1"], embeddings["0"]):
        assert plain.abs().sum() > 0
        torch.testing.assert_close(packed, plain, rtol=1e-5, atol=1e-5)
