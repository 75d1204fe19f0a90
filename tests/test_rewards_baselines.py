import math

import pytest
import torch

from egg_zoo_discritune.games.baselines import ExponentialBaseline, advantages, build_baseline
from egg_zoo_discritune.games.discriminative import policy_gradient_loss
from egg_zoo_discritune.games.rewards import discriminative_reward, retrieval_accuracy, similarity_reward

SCORES = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 3.0, 2.0]])
TARGETS = torch.arange(3)


def test_discriminative_reward_is_log_softmax_of_the_target():
    expected = [2 - math.log(math.e ** 2 + math.e + 1), -math.log(3), 2 - math.log(math.e + math.e ** 3 + math.e ** 2)]
    torch.testing.assert_close(discriminative_reward(SCORES, TARGETS), torch.tensor(expected))


def test_accuracy_counts_ties_for_the_target():
    assert retrieval_accuracy(SCORES, TARGETS).tolist() == [1.0, 1.0, 0.0]


def test_similarity_reward_is_the_target_score():
    assert similarity_reward(SCORES, TARGETS).tolist() == [2.0, 0.0, 2.0]


def test_mean_baseline_is_the_running_mean_of_batch_means():
    baseline = build_baseline("mean")
    assert baseline.predict(torch.tensor([5.0, 7.0])).tolist() == [0.0, 0.0]
    baseline.update(torch.tensor([1.0, 3.0]))
    assert baseline.predict(torch.tensor([0.0])).tolist() == [2.0]
    baseline.update(torch.tensor([4.0]))
    assert baseline.predict(torch.tensor([0.0])).tolist() == [3.0]
    assert set(baseline.state_dict()) == {"mean", "n_updates"}


def test_exponential_baseline_starts_at_the_first_batch():
    baseline = ExponentialBaseline(decay=0.5)
    assert baseline.predict(torch.tensor([1.0, 3.0])).tolist() == [2.0, 2.0]
    baseline.update(torch.tensor([1.0, 3.0]))
    baseline.update(torch.tensor([4.0]))
    assert baseline.predict(torch.tensor([0.0])).tolist() == [3.0]
    with pytest.raises(ValueError):
        ExponentialBaseline(decay=1.0)


def test_leave_one_out_and_no_baseline():
    assert build_baseline("loo").predict(torch.tensor([1.0, 2.0, 3.0])).tolist() == [2.5, 2.0, 1.5]
    assert build_baseline("none").predict(torch.tensor([1.0, 2.0])).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="unknown baseline"):
        build_baseline("median")


def test_advantages_and_normalisation():
    rewards, base = torch.tensor([1.0, 2.0, 6.0]), torch.tensor([1.0, 1.0, 1.0])
    assert advantages(rewards, base).tolist() == [0.0, 1.0, 5.0]
    normalized = advantages(rewards, base, normalize=True)
    torch.testing.assert_close(normalized, (torch.tensor([0.0, 1.0, 5.0]) - 2.0) / math.sqrt(14 / 3))


def test_policy_gradient_loss_by_hand():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = policy_gradient_loss(logp, torch.tensor([0.5, -1.0]), torch.tensor([1.0, 1.0]), entropy_coeff=0.1)
    assert loss.item() == pytest.approx(-0.85)
    loss.backward()
    assert logp.grad.tolist() == [-0.25, 0.5]


def test_group_leave_one_out_with_several_samples_per_image():
    baseline = build_baseline("loo", samples_per_image=3)
    values = torch.tensor([1.0, 2.0, 6.0, 0.0, 3.0, 3.0])
    assert baseline.predict(values).tolist() == [4.0, 3.5, 1.5, 3.0, 1.5, 1.5]
