"""ClipCap mappers: CLIP image embedding -> ``prefix_length`` GPT-2 input embeddings.

Attribute names follow the original ClipCap code so that ``state_dict`` keys match the released
checkpoints (``clip_project.model.{0,2}.*`` for the MLP; ``clip_project.linear``,
``clip_project.prefix_const`` and ``clip_project.transformer.layers.*`` for the transformer mapper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLPMapper(nn.Module):
    """Linear -> Tanh -> Linear, 512 -> 3840 -> 7680 (= 10 x 768) for the released weights."""

    def __init__(self, clip_dim: int, embed_dim: int, prefix_length: int):
        super().__init__()
        self.prefix_length = prefix_length
        hidden = embed_dim * prefix_length // 2
        self.model = nn.Sequential(
            nn.Linear(clip_dim, hidden), nn.Tanh(), nn.Linear(hidden, embed_dim * prefix_length)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features).view(features.size(0), self.prefix_length, -1)


class _Attention(nn.Module):
    """Multi-head self-attention with a fused key/value projection (ClipCap's layout: keys first)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.to_queries = nn.Linear(dim, dim, bias=False)
        self.to_keys_values = nn.Linear(dim, 2 * dim, bias=False)
        self.project = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        h = self.num_heads
        q = self.to_queries(x).view(b, n, h, c // h).transpose(1, 2)
        kv = self.to_keys_values(x).view(b, n, 2, h, c // h)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.project(out.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _Transformer(nn.Module):
    def __init__(self, dim: int, num_heads: int, num_layers: int, mlp_ratio: float):
        super().__init__()
        self.layers = nn.ModuleList(_Layer(dim, num_heads, mlp_ratio) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class TransformerMapper(nn.Module):
    """ClipCap's transformer mapper: the CLIP embedding is projected to ``clip_length`` tokens,
    concatenated with learnt constants, and the outputs at the constants' positions are the prefix."""

    def __init__(self, clip_dim: int, embed_dim: int, prefix_length: int, clip_length: int,
                 num_layers: int = 8, num_heads: int = 8, mlp_ratio: float = 2.0):
        super().__init__()
        self.clip_length = clip_length
        self.transformer = _Transformer(embed_dim, num_heads, num_layers, mlp_ratio)
        self.linear = nn.Linear(clip_dim, clip_length * embed_dim)
        self.prefix_const = nn.Parameter(torch.randn(prefix_length, embed_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.linear(features).view(features.size(0), self.clip_length, -1)
        prefix = self.prefix_const.unsqueeze(0).expand(features.size(0), -1, -1)
        return self.transformer(torch.cat([x, prefix], dim=1))[:, self.clip_length:]


MAPPERS = {"mlp": MLPMapper, "transformer": TransformerMapper}
