"""What every token-level captioner shares: HF ``generate`` options per decoding mode, caption lengths,
and per-token log-probabilities from teacher-forced logits."""

from __future__ import annotations

import torch

DECODING_MODES = ("greedy", "sample", "beam")


def generate_options(mode: str, num_beams: int = 5, temperature: float = 1.0) -> dict:
    """``generate`` keyword arguments: greedy, pure sampling (top-k and top-p off) or beam search."""
    if mode == "greedy":
        return dict(do_sample=False, num_beams=1)
    if mode == "sample":
        return dict(do_sample=True, top_k=0, top_p=1.0, temperature=temperature)
    if mode == "beam":
        return dict(do_sample=False, num_beams=num_beams)
    raise ValueError(f"unknown decoding mode {mode!r}; expected one of {DECODING_MODES}")


def caption_lengths(tokens: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """Length up to and including the first stop token; the full width when there is none."""
    is_stop = torch.isin(tokens, torch.tensor(stop_ids, device=tokens.device))
    first = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1, torch.full_like(tokens[:, 0], tokens.size(1)))
    return first


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, temperature: float = 1.0,
                    entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and entropies ``[B, T]`` of ``tokens`` under ``logits`` ``[B, T, V]`` (the logits
    that predict each token), in fp32 and zero past each length. Without ``entropy_grad`` the entropy is
    computed outside the autograd graph, which then holds no extra ``[B, T, V]`` tensor for it."""
    logp = (logits.float() / temperature).log_softmax(-1)
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
        entropy = -(logp.exp() * logp).sum(-1)
    mask = torch.arange(tokens.size(1), device=tokens.device) < lengths.unsqueeze(1)
    return token_logp * mask, entropy * mask


def eos_normalised_log_prob(token_logp: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, eos_id: int,
                            max_new_tokens: int) -> torch.Tensor:
    """The authors' ClipCap caption log-prob: the sum of the token log-probs before the first EOS (a token
    containing "." counts, EOS does not) over that count + 1, capped at ``max_new_tokens``. Their generation
    forces an EOS after the stop token, so the + 1 counts it; a row that never stops has no EOS to count."""
    ends_with_eos = tokens.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1) == eos_id
    counted = lengths - ends_with_eos.long()
    mask = torch.arange(tokens.size(1), device=tokens.device) < counted.unsqueeze(1)
    return (token_logp * mask).sum(1) / (counted + 1).clamp(max=max_new_tokens)
