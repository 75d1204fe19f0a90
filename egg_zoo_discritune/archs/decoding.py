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


def generation_rows(batch: int, mode: str, num_beams: int = 5) -> int:
    """Rows of each step's products: one per caption, or per beam."""
    return batch * num_beams if mode == "beam" else batch


def caption_lengths(tokens: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """Length up to and including the first stop token; the full width when there is none."""
    is_stop = torch.isin(tokens, torch.tensor(stop_ids, device=tokens.device))
    first = torch.where(is_stop.any(1), is_stop.int().argmax(1) + 1, torch.full_like(tokens[:, 0], tokens.size(1)))
    return first


# Rows of [N, V] logits handled at once: ~8 MB of fp32 per buffer, so the passes over a chunk stay in the
# CPU's cache. The buffers are made once per call and written with ``out=``: a fresh 8 MB tensor per op
# cost more in page faults than the op itself (bench/README.md).
_CHUNK_ELEMENTS = 2**21


def _row_chunks(n_rows: int, vocab: int) -> list[slice]:
    step = max(1, _CHUNK_ELEMENTS // vocab)
    return [slice(i, i + step) for i in range(0, n_rows, step)]


def _chunk_log_softmax(x: torch.Tensor, buffers: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 log-softmax and softmax of a chunk of rows, in ``buffers`` [2, rows, V] when given. Under
    ``torch.compile`` there are none: Inductor plans its own memory, and ``out=`` fails on symbolic shapes."""
    if buffers is None:
        logp = x.float().log_softmax(-1)
        return logp, logp.exp()
    logp, work = buffers[:, :x.size(0)]
    if x.dtype != torch.float32:
        x = work.copy_(x)
    torch.log_softmax(x, -1, out=logp)
    return logp, torch.exp(logp, out=work)


class _TokenLogProb(torch.autograd.Function):
    """``log_softmax(logits).gather(tokens)`` and the entropy without keeping a [N, V] log-softmax: the
    forward keeps only the logits (which the LM head made anyway) and gets the entropy (no gradient)
    from the same fp32 chunk; the backward writes the softmax straight into the gradient, scales it in
    place and sets each row's token entry to ``g * (1 - p)`` from the saved log-prob."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        token_logp, entropy = torch.empty(2, logits.size(0), device=logits.device)
        chunks = _row_chunks(*logits.shape)
        buffers = None if torch.compiler.is_compiling() else torch.empty(
            2, chunks[0].stop - chunks[0].start, logits.size(1), device=logits.device)
        with torch.autocast(logits.device.type, enabled=False):  # fp32 here even inside a bf16 step
            for c in chunks:
                logp, p = _chunk_log_softmax(logits[c], buffers)
                token_logp[c] = logp.gather(-1, tokens[c].unsqueeze(-1)).squeeze(-1)
                entropy[c] = -p.mul_(logp).sum(-1)
        ctx.save_for_backward(logits, tokens, token_logp)
        ctx.mark_non_differentiable(entropy)
        return token_logp, entropy

    @staticmethod
    def backward(ctx, grad: torch.Tensor, _entropy_grad: torch.Tensor):
        logits, tokens, token_logp = ctx.saved_tensors
        grad_logits = torch.empty_like(logits)
        neg_grad = grad.neg().to(logits.dtype).unsqueeze(-1)
        with torch.autocast(logits.device.type, enabled=False):
            for c in _row_chunks(*logits.shape):
                if torch.compiler.is_compiling():
                    grad_logits[c] = logits[c].softmax(-1).mul_(neg_grad[c])
                else:
                    torch.softmax(logits[c], -1, out=grad_logits[c]).mul_(neg_grad[c])
            # 1 - p = -expm1(log p) in fp32: exact where p is near 1, where a bf16 "p - 1" would lose it all
            rows = torch.arange(logits.size(0), device=logits.device)
            grad_logits[rows, tokens] = (grad * -torch.expm1(token_logp)).to(logits.dtype)
        return grad_logits, None


def token_log_probs(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, temperature: float = 1.0,
                    entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and entropies ``[B, T]`` of ``tokens`` under ``logits`` ``[B, T, V]`` (the logits
    that predict each token), in fp32 and zero past each length. Without ``entropy_grad`` (the usual
    case) no [B, T, V] tensor beyond the logits is kept for the backward pass, and the entropy is
    computed outside the autograd graph; with it, the entropy's gradient needs the full log-softmax."""
    if temperature != 1.0:
        logits = logits / temperature
    mask = torch.arange(tokens.size(1), device=tokens.device) < lengths.unsqueeze(1)
    if entropy_grad and torch.is_grad_enabled():
        logp = logits.float().log_softmax(-1)
        token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        return token_logp * mask, entropy * mask
    token_logp, entropy = _TokenLogProb.apply(logits.reshape(-1, logits.size(-1)), tokens.reshape(-1))
    return token_logp.view(tokens.shape) * mask, entropy.view(tokens.shape) * mask


def eos_normalised_log_prob(token_logp: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor, eos_id: int,
                            max_new_tokens: int) -> torch.Tensor:
    """The authors' ClipCap caption log-prob: the sum of the token log-probs before the first EOS (a token
    containing "." counts, EOS does not) over that count + 1, capped at ``max_new_tokens``. Their generation
    forces an EOS after the stop token, so the + 1 counts it; a row that never stops has no EOS to count."""
    ends_with_eos = tokens.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1) == eos_id
    counted = lengths - ends_with_eos.long()
    mask = torch.arange(tokens.size(1), device=tokens.device) < counted.unsqueeze(1)
    return (token_logp * mask).sum(1) / (counted + 1).clamp(max=max_new_tokens)
