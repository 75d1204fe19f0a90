"""The discriminative game, its rewards and baselines."""
