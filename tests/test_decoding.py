import pytest
import torch

from egg_zoo_discritune.archs import decoding
from egg_zoo_discritune.archs.decoding import token_log_probs


def log_softmax_reference(logits, tokens, lengths, temperature):
    """The textbook computation: full log-softmax, gather, entropy from it."""
    logp = (logits.double() / temperature).log_softmax(-1)
    mask = torch.arange(tokens.size(1)) < lengths.unsqueeze(1)
    token_logp = logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) * mask
    return token_logp, -(logp.exp() * logp).sum(-1) * mask


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk_elements", [2**26, 50])  # one chunk, or a few rows per chunk
def test_fused_log_probs_and_gradients_equal_the_log_softmax(monkeypatch, temperature, chunk_elements):
    monkeypatch.setattr(decoding, "_CHUNK_ELEMENTS", chunk_elements)
    torch.manual_seed(0)
    logits = (3 * torch.randn(3, 5, 17)).requires_grad_()
    tokens, lengths = torch.randint(0, 17, (3, 5)), torch.tensor([5, 2, 4])
    weights = torch.randn(3, 5)  # a gradient that differs per token

    token_logp, entropy = token_log_probs(logits, tokens, lengths, temperature)
    (token_logp * weights).sum().backward()
    reference = logits.detach().clone().requires_grad_()
    expected_logp, expected_entropy = log_softmax_reference(reference, tokens, lengths, temperature)
    (expected_logp * weights).sum().backward()

    assert token_logp.dtype == entropy.dtype == torch.float32
    torch.testing.assert_close(token_logp.double(), expected_logp, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy.double(), expected_entropy, atol=1e-5, rtol=1e-5)
    assert not entropy.requires_grad
    torch.testing.assert_close(logits.grad, reference.grad.float(), atol=1e-6, rtol=1e-5)


def test_entropy_gradient_path_equals_the_fused_path():
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 11, requires_grad=True)
    tokens, lengths = torch.randint(0, 11, (2, 4)), torch.tensor([4, 3])
    fused_logp, fused_entropy = token_log_probs(logits, tokens, lengths)
    logp, entropy = token_log_probs(logits, tokens, lengths, entropy_grad=True)
    assert entropy.requires_grad
    torch.testing.assert_close(logp, fused_logp)
    torch.testing.assert_close(entropy.detach(), fused_entropy)
    torch.autograd.grad(entropy.sum(), logits)  # the entropy carries a gradient on this path


def test_bf16_logits_keep_their_dtype_and_give_fp32_log_probs():
    torch.manual_seed(2)
    logits = torch.randn(2, 3, 13).bfloat16().requires_grad_()
    tokens, lengths = torch.randint(0, 13, (2, 3)), torch.tensor([3, 3])
    token_logp, _ = token_log_probs(logits, tokens, lengths)
    token_logp.sum().backward()
    expected, _ = log_softmax_reference(logits.detach().float(), tokens, lengths, 1.0)
    assert token_logp.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    torch.testing.assert_close(token_logp.double(), expected, atol=1e-5, rtol=1e-5)


def test_bf16_gradient_is_accurate_where_the_token_is_almost_certain():
    """The token's entry g * (1 - p) with p = 0.999: computed from "p - 1" in bf16 it would be 0 or 2x off."""
    logits = torch.zeros(2, 1, 50)
    logits[:, 0, 7] = 10.8  # p(token 7) ~ 0.999 over 50 entries
    tokens, lengths = torch.tensor([[7], [3]]), torch.tensor([1, 1])
    bf16 = logits.bfloat16().requires_grad_()
    token_log_probs(bf16, tokens, lengths)[0].sum().backward()
    reference = bf16.detach().double().requires_grad_()
    log_softmax_reference(reference, tokens, lengths, 1.0)[0].sum().backward()
    torch.testing.assert_close(bf16.grad.double(), reference.grad, rtol=1e-2, atol=1e-6)


def test_inside_bf16_autocast_the_entropy_stays_fp32_accurate():
    torch.manual_seed(3)
    logits = 4 * torch.randn(2, 3, 101)
    tokens, lengths = torch.randint(0, 101, (2, 3)), torch.tensor([3, 3])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        token_logp, entropy = token_log_probs(logits.requires_grad_(), tokens, lengths)
    expected_logp, expected_entropy = log_softmax_reference(logits.detach(), tokens, lengths, 1.0)
    torch.testing.assert_close(entropy.double(), expected_entropy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(token_logp.double(), expected_logp, atol=1e-5, rtol=1e-5)
