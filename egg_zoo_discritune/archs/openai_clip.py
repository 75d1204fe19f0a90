"""Conversion of OpenAI CLIP checkpoints (``ViT-B-32.pt``: TorchScript or plain state dict) to HF ``CLIPModel``.

The architecture is read off the tensor shapes, as OpenAI's own ``build_model`` does; activations are
QuickGELU, which OpenAI's weights need (plain GELU gives wrong embeddings).
"""

from __future__ import annotations

import torch
from transformers import CLIPConfig, CLIPModel

_LAYER_RENAMES = {
    "ln_1": "layer_norm1", "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2", "attn.out_proj": "self_attn.out_proj",
}
_TOP_RENAMES = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
# Scalars that OpenAI's TorchScript archives carry besides the weights.
_METADATA = {"input_resolution", "context_length", "vocab_size"}


def _count_layers(state: dict, prefix: str) -> int:
    return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})


def openai_clip_config(state: dict[str, torch.Tensor]) -> CLIPConfig:
    """The HF config of the OpenAI ViT CLIP whose weights are ``state``."""
    if "visual.conv1.weight" not in state:
        raise ValueError("not an OpenAI ViT CLIP state dict (no visual.conv1.weight; ResNet CLIPs are not supported)")
    vision_width, _, patch, _ = state["visual.conv1.weight"].shape
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["ln_final.weight"].shape[0]
    vocab = state["token_embedding.weight"].shape[0]
    text = dict(
        vocab_size=vocab, hidden_size=text_width, intermediate_size=4 * text_width,
        num_hidden_layers=_count_layers(state, "transformer.resblocks."), num_attention_heads=text_width // 64 or 1,
        max_position_embeddings=state["positional_embedding"].shape[0], hidden_act="quick_gelu",
        bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=vocab - 1,
    )
    vision = dict(
        hidden_size=vision_width, intermediate_size=4 * vision_width, image_size=patch * grid, patch_size=patch,
        num_hidden_layers=_count_layers(state, "visual.transformer.resblocks."),
        num_attention_heads=vision_width // 64 or 1, hidden_act="quick_gelu",
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=state["text_projection"].shape[1])


def convert_openai_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI CLIP keys -> HF ``CLIPModel`` keys (fused attention projections are split into q/k/v)."""
    out = {}
    for key, value in state.items():
        if key in _METADATA:
            continue
        if key in _TOP_RENAMES:
            out[_TOP_RENAMES[key]] = value
        elif key == "visual.proj":
            out["visual_projection.weight"] = value.t().contiguous()
        elif key == "text_projection":
            out["text_projection.weight"] = value.t().contiguous()
        elif ".resblocks." in key:
            tower = "vision_model" if key.startswith("visual.") else "text_model"
            layer, rest = key.split(".resblocks.")[1].split(".", 1)
            base = f"{tower}.encoder.layers.{layer}"
            if rest.startswith("attn.in_proj_"):
                kind = rest.rsplit("_", 1)[1]
                for name, chunk in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{base}.self_attn.{name}.{kind}"] = chunk.contiguous()
            else:
                module, param = rest.rsplit(".", 1)
                out[f"{base}.{_LAYER_RENAMES.get(module, module)}.{param}"] = value
        else:
            raise ValueError(f"unexpected key in OpenAI CLIP state dict: {key}")
    return out


def clip_from_openai_state_dict(state: dict[str, torch.Tensor]) -> CLIPModel:
    model = CLIPModel(openai_clip_config(state))
    model.load_state_dict({k: v.float() for k, v in convert_openai_state_dict(state).items()}, strict=True)
    return model
