import pytest
import torch
from torch import nn

from egg_zoo_discritune.egg_compat import load_engine
from egg_zoo_discritune.engine.interaction import LoggingStrategy
from egg_zoo_discritune.games.baselines import build_baseline
from egg_zoo_discritune.config import parse_config
from egg_zoo_discritune.games.discriminative import DiscriminativeGame
from egg_zoo_discritune.games.options import GameOptions
from egg_zoo_discritune.games.retrievers import Retrievers
from egg_zoo_discritune.train import build_game
from tests.tiny_assets import write_clip


class StubSender(nn.Module):
    """Fixed captions whose log-probabilities are a parameter, so the loss can be written by hand."""

    pad_id = 0
    reads_pixels = False

    def __init__(self):
        super().__init__()
        self.token_logp = nn.Parameter(torch.tensor([[-1.0, -0.5, 0.0], [-2.0, 0.0, 0.0]]))
        self.tokens = torch.tensor([[5, 6, 7], [8, 9, 0]])
        self.lengths = torch.tensor([3, 2])

    def generate(self, features, mode, max_new_tokens, num_beams, temperature):
        self.mode = mode
        return self.tokens, self.lengths

    def log_probs(self, features, tokens, lengths, temperature, entropy_grad=False):
        mask = torch.arange(3) < lengths.unsqueeze(1)
        entropy = torch.ones(2, 3) * (self.token_logp if entropy_grad else self.token_logp.detach()).exp()
        return self.token_logp * mask, entropy * mask

    def decode(self, tokens, lengths):
        return ["first", "second"]


class StubReceiver(nn.Module):
    def encode_images(self, pixels):
        return torch.eye(2)

    def encode_texts(self, texts):
        return torch.tensor([[2.0, 0.0], [1.0, 1.0]])

    def score(self, text, image):
        return text @ image.t()


def _game(**options):
    options = {"logprob_reduction": "sum", "max_len": 5, **options}
    return DiscriminativeGame(StubSender(), Retrievers([StubReceiver()]), build_baseline("mean"), LoggingStrategy(),
                              GameOptions(**options))


def test_reinforce_loss_and_interaction_by_hand():
    game = _game()
    loss, interaction = game(torch.zeros(2, 3, 4, 4), torch.tensor([10, 11]))
    # scores [[2, 0], [1, 1]]: rewards log softmax of the diagonal; baseline 0 at the first step.
    rewards = torch.tensor([2 - torch.log(torch.exp(torch.tensor(2.0)) + 1).item(), -torch.log(torch.tensor(2.0)).item()])
    seq_logp = torch.tensor([-1.5, -2.0])
    torch.testing.assert_close(loss, -(rewards * seq_logp).mean())
    torch.testing.assert_close(interaction.aux["reward"], rewards)
    assert interaction.aux["acc"].tolist() == [1.0, 1.0]
    assert interaction.aux["baseline"].tolist() == [0.0, 0.0]
    assert interaction.message.tolist() == [[5, 6, 7, 0, 0], [8, 9, 0, 0, 0]]
    assert interaction.message_length.tolist() == [3, 2]
    assert interaction.labels.tolist() == [10, 11]
    assert game.sender.mode == "greedy"
    loss.backward()
    torch.testing.assert_close(game.sender.token_logp.grad[:, 0], -rewards / 2)
    # The next step subtracts the running mean of the first step's rewards.
    loss, interaction = game(torch.zeros(2, 3, 4, 4))
    torch.testing.assert_close(interaction.aux["baseline"], rewards.mean().expand(2))
    torch.testing.assert_close(loss, -((rewards - rewards.mean()) * seq_logp).mean())


def test_mean_log_prob_reduction_and_entropy_bonus():
    game = _game(logprob_reduction="mean", entropy_coeff=0.5)
    loss, interaction = game(torch.zeros(2, 3, 4, 4))
    rewards = interaction.aux["reward"]
    torch.testing.assert_close(interaction.aux["logp"], torch.tensor([-0.5, -1.0]))
    e = torch.exp(torch.tensor([[-1.0, -0.5, 0.0], [-2.0, 0.0, 0.0]]))  # the stub's token entropies
    entropy = torch.stack([e[0].sum() / 3, e[1, :2].sum() / 2])
    torch.testing.assert_close(interaction.aux["entropy"], entropy)
    torch.testing.assert_close(loss, -(rewards * torch.tensor([-0.5, -1.0])).mean() - 0.5 * entropy.mean())
    loss.backward()
    # d/dx of -0.5 * mean(entropy) for the stub's exp(x) entropies, plus the REINFORCE term.
    expected = -rewards[0] / 3 / 2 - 0.5 * e[0, 0] / 3 / 2
    torch.testing.assert_close(game.sender.token_logp.grad[0, 0], expected)


def test_without_entropy_bonus_the_entropy_has_no_graph(tiny):
    cfg = parse_config(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights),
                        "--receiver", str(tiny.clip), "--max_len", "6"])
    game, _ = build_game(cfg, load_engine("builtin"))
    game.eval()  # no dropout, so both passes see the same network
    features = torch.randn(3, game.sender.feature_dim)
    tokens, lengths = game.sender.generate(features, max_new_tokens=6)
    logp, entropy = game.sender.log_probs(features, tokens, lengths)
    assert logp.requires_grad and not entropy.requires_grad
    _, entropy_with_grad = game.sender.log_probs(features, tokens, lengths, entropy_grad=True)
    assert entropy_with_grad.requires_grad
    torch.testing.assert_close(entropy, entropy_with_grad.detach())


def test_evaluation_uses_test_decoding_and_leaves_the_baseline():
    game = _game().eval()
    with torch.no_grad():
        loss, interaction = game(torch.zeros(2, 3, 4, 4))
    assert game.sender.mode == "beam"
    assert game.baseline.n_updates.item() == 0
    torch.testing.assert_close(loss, -interaction.aux["reward"].mean())


def test_non_finite_rewards_stop_the_step():
    game = _game()
    game.receiver.first.encode_texts = lambda texts: torch.tensor([[float("nan"), 0.0], [1.0, 1.0]])
    with pytest.raises(FloatingPointError, match="non-finite reward"):
        game(torch.zeros(2, 3, 4, 4))


def test_training_changes_every_trainable_parameter_and_no_frozen_one(tiny):
    cfg = parse_config(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights),
                        "--receiver", str(tiny.clip), "--max_len", "8"])
    engine = load_engine("builtin")
    game, _ = build_game(cfg, engine)
    before = {k: v.clone() for k, v in game.state_dict().items()}
    trainable = {n for n, p in game.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("sender.") for n in trainable)
    optimizer = torch.optim.Adam(game.sender.trainable_parameters(), lr=1e-3)
    torch.manual_seed(0)
    batches = [(torch.randn(4, 3, 32, 32), torch.arange(4)) for _ in range(3)]
    trainer = engine.make_trainer(game, optimizer, batches, None, [], device=torch.device("cpu"))
    trainer.train(1)
    after = game.state_dict()
    for name, value in before.items():
        if name in trainable:
            assert not torch.equal(value, after[name]), f"trainable {name} did not change"
        elif name.startswith("receiver."):
            assert torch.equal(value, after[name]), f"frozen {name} changed"
    assert game.baseline.n_updates.item() == 3


def test_several_sampled_captions_per_image_with_group_baseline(tiny):
    cfg = parse_config(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights),
                        "--receiver", str(tiny.clip), "--max_len", "6", "--samples_per_image", "3",
                        "--train_decoding", "sample", "--baseline", "loo"])
    game, _ = build_game(cfg, load_engine("builtin"))
    torch.manual_seed(0)
    loss, interaction = game(torch.randn(4, 3, 32, 32), torch.tensor([7, 8, 9, 10]))
    assert interaction.labels.tolist() == [7, 7, 7, 8, 8, 8, 9, 9, 9, 10, 10, 10]
    reward = interaction.aux["reward"].view(4, 3)
    torch.testing.assert_close(interaction.aux["baseline"].view(4, 3), (reward.sum(1, keepdim=True) - reward) / 2)
    loss.backward()
    game.eval()
    with torch.no_grad():
        _, interaction = game(torch.randn(4, 3, 32, 32))
    assert interaction.aux["reward"].shape == (4,)
    with pytest.raises(ValueError, match="train_decoding sample"):
        GameOptions(samples_per_image=2)


def test_kl_penalty_to_the_initial_captioner(tiny):
    cfg = parse_config(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights),
                        "--receiver", str(tiny.clip), "--max_len", "6", "--kl_coeff", "0.5",
                        "--train_decoding", "sample", "--baseline", "none", "--logprob_reduction", "sum",
                        "--dropout", "off"])
    game, _ = build_game(cfg, load_engine("builtin"))
    assert not any(p.requires_grad for p in game.kl_penalty.reference.parameters())
    assert not any(k.startswith("reference.") for k in game.checkpoint_state_dict())
    images = torch.randn(4, 3, 32, 32)
    torch.manual_seed(0)
    _, interaction = game(images)
    assert interaction.aux["kl"].abs().max() == 0  # the policy is still the reference
    with torch.no_grad():
        game.sender.clip_project.model[2].bias.add_(0.5)
    torch.manual_seed(0)
    loss, interaction = game(images)
    features = game.receiver.first.encode_images(images)
    tokens, lengths = interaction.message, interaction.message_length
    policy, _ = game.sender.log_probs(features, tokens, lengths)
    reference, _ = game.kl_penalty.reference.log_probs(features, tokens, lengths)
    kl = (policy - reference).sum(1).detach()
    torch.testing.assert_close(interaction.aux["kl"], kl, rtol=1e-4, atol=1e-5)
    shaped = interaction.aux["reward"] - 0.5 * kl
    torch.testing.assert_close(loss, -(shaped * policy.sum(1)).mean(), rtol=1e-4, atol=1e-5)


def test_bf16_autocast_keeps_fp32_weights(tiny):
    cfg = parse_config(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights),
                        "--receiver", str(tiny.clip), "--max_len", "6", "--precision", "bf16"])
    game, _ = build_game(cfg, load_engine("builtin"))
    seen = []
    score = game.receiver.first.score
    game.receiver.first.score = lambda t, i: seen.append(torch.is_autocast_enabled("cpu")) or score(t, i)
    loss, interaction = game(torch.randn(4, 3, 32, 32))
    loss.backward()
    assert seen == [True] and torch.isfinite(loss)
    assert all(p.dtype == torch.float32 and p.grad is not None and torch.isfinite(p.grad).all()
               for p in game.sender.trainable_parameters())


def test_micro_batched_log_probs_give_the_same_loss_and_gradients(tiny):
    grads, losses, calls = [], [], []
    for micro_batch in (0, 3):
        cfg = parse_config(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights),
                            "--receiver", str(tiny.clip), "--max_len", "6", "--micro_batch", str(micro_batch),
                            "--dropout", "off"])
        game, _ = build_game(cfg, load_engine("builtin"))
        log_probs = game.sender.log_probs
        n_calls = []
        game.sender.log_probs = lambda *a: n_calls.append(a[1].size(0)) or log_probs(*a)
        torch.manual_seed(0)
        loss, _ = game(torch.randn(7, 3, 32, 32))
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in game.sender.trainable_parameters()])
        calls.append(n_calls)
    torch.testing.assert_close(losses[0], losses[1])
    for whole, chunked in zip(*grads):
        torch.testing.assert_close(whole, chunked, rtol=1e-4, atol=1e-6)
    assert calls[0] == [7]
    # Chunks of 3, 3, 1 in the forward pass, each run again in the backward pass (activation recomputation).
    assert sorted(calls[1]) == [1, 1, 3, 3, 3, 3]


@pytest.mark.parametrize("mode, expected", [("alternate", [[0], [0, 1], [0]]), ("average", [[0, 1]] * 3)])
def test_only_the_rewarding_retrievers_encode_images(tiny, tmp_path, mode, expected):
    second = write_clip(tmp_path / "clip2", seed=1)
    cfg = parse_config(["--gpt2", str(tiny.gpt2), "--clipcap_weights", str(tiny.clipcap_weights),
                        "--receiver", f"{tiny.clip},{second}", "--receiver_mode", mode, "--max_len", "4"])
    game, _ = build_game(cfg, load_engine("builtin"))
    encoded = []
    for i, retriever in enumerate(game.receiver.members):
        retriever.encode_images = (lambda f, i: lambda x: encoded[-1].append(i) or f(x))(retriever.encode_images, i)
    for _ in expected:
        encoded.append([])
        game(torch.randn(4, 3, 32, 32))[0].backward()
    # Alternating: the first retriever encodes every step only because ClipCap reads its features.
    assert encoded == expected
