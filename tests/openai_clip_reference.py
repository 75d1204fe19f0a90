"""A plain re-statement of OpenAI CLIP's ViT forward pass over its own state-dict keys, used as the
reference that the HF conversion must reproduce. Random weights, small sizes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_openai_state_dict(width=128, layers=2, patch=8, resolution=32, text_width=128, text_layers=2,
                             embed_dim=16, vocab_size=300, context_length=77, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    def block(prefix, w):
        return {
            f"{prefix}.attn.in_proj_weight": r(3 * w, w), f"{prefix}.attn.in_proj_bias": r(3 * w),
            f"{prefix}.attn.out_proj.weight": r(w, w), f"{prefix}.attn.out_proj.bias": r(w),
            f"{prefix}.ln_1.weight": 1 + r(w), f"{prefix}.ln_1.bias": r(w),
            f"{prefix}.mlp.c_fc.weight": r(4 * w, w), f"{prefix}.mlp.c_fc.bias": r(4 * w),
            f"{prefix}.mlp.c_proj.weight": r(w, 4 * w), f"{prefix}.mlp.c_proj.bias": r(w),
            f"{prefix}.ln_2.weight": 1 + r(w), f"{prefix}.ln_2.bias": r(w),
        }

    grid = resolution // patch
    sd = {
        "visual.conv1.weight": r(width, 3, patch, patch), "visual.class_embedding": r(width, scale=0.5),
        "visual.positional_embedding": r(grid * grid + 1, width, scale=0.5),
        "visual.ln_pre.weight": 1 + r(width), "visual.ln_pre.bias": r(width),
        "visual.ln_post.weight": 1 + r(width), "visual.ln_post.bias": r(width),
        "visual.proj": r(width, embed_dim, scale=0.2),
        "token_embedding.weight": r(vocab_size, text_width, scale=0.5),
        "positional_embedding": r(context_length, text_width, scale=0.1),
        "ln_final.weight": 1 + r(text_width), "ln_final.bias": r(text_width),
        "text_projection": r(text_width, embed_dim, scale=0.2),
        "logit_scale": torch.tensor(math.log(1 / 0.07)),
        "input_resolution": torch.tensor(resolution), "context_length": torch.tensor(context_length),
        "vocab_size": torch.tensor(vocab_size),
    }
    for i in range(layers):
        sd.update(block(f"visual.transformer.resblocks.{i}", width))
    for i in range(text_layers):
        sd.update(block(f"transformer.resblocks.{i}", text_width))
    return sd


def _ln(x, sd, key):
    return F.layer_norm(x, x.shape[-1:], sd[key + ".weight"], sd[key + ".bias"], eps=1e-5)


def _block(x, sd, p, heads, causal):
    b, n, w = x.shape
    y = _ln(x, sd, p + ".ln_1")
    q, k, v = (y @ sd[p + ".attn.in_proj_weight"].t() + sd[p + ".attn.in_proj_bias"]).chunk(3, dim=-1)
    q, k, v = (t.view(b, n, heads, w // heads).transpose(1, 2) for t in (q, k, v))
    att = q @ k.transpose(-1, -2) / math.sqrt(w // heads)
    if causal:
        att = att.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    y = (att.softmax(-1) @ v).transpose(1, 2).reshape(b, n, w)
    x = x + y @ sd[p + ".attn.out_proj.weight"].t() + sd[p + ".attn.out_proj.bias"]
    y = _ln(x, sd, p + ".ln_2") @ sd[p + ".mlp.c_fc.weight"].t() + sd[p + ".mlp.c_fc.bias"]
    y = y * torch.sigmoid(1.702 * y)  # QuickGELU
    return x + y @ sd[p + ".mlp.c_proj.weight"].t() + sd[p + ".mlp.c_proj.bias"]


def _layers(sd, prefix):
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def encode_image(sd, pixels):
    width = sd["visual.conv1.weight"].shape[0]
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=sd["visual.conv1.weight"].shape[-1])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(x.size(0), 1, -1), x], dim=1) + sd["visual.positional_embedding"]
    x = _ln(x, sd, "visual.ln_pre")
    for i in range(_layers(sd, "visual.transformer.resblocks.")):
        x = _block(x, sd, f"visual.transformer.resblocks.{i}", width // 64, causal=False)
    return _ln(x[:, 0], sd, "visual.ln_post") @ sd["visual.proj"]


def encode_text(sd, ids):
    width = sd["ln_final.weight"].shape[0]
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][: ids.size(1)]
    for i in range(_layers(sd, "transformer.resblocks.")):
        x = _block(x, sd, f"transformer.resblocks.{i}", width // 64, causal=True)
    x = _ln(x, sd, "ln_final")
    return x[torch.arange(ids.size(0)), ids.argmax(-1)] @ sd["text_projection"]


class _Holder(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def save_torchscript(sd: dict[str, torch.Tensor], path) -> None:
    """A TorchScript archive whose ``state_dict()`` is ``sd``, like OpenAI's released ``ViT-B-32.pt``."""
    root = _Holder()
    for key, value in sd.items():
        *parents, leaf = key.split(".")
        module = root
        for name in parents:
            if not hasattr(module, name):
                module.add_module(name, _Holder())
            module = getattr(module, name)
        module.register_parameter(leaf, torch.nn.Parameter(value.clone(), requires_grad=False)) \
            if value.is_floating_point() else module.register_buffer(leaf, value.clone())
    torch.jit.script(root).save(str(path))
