"""The game's recipe in one typed object: how captions are written, rewarded and turned into an update.
Each field is also a flag of the training command (``--name``); defaults are the authors' code."""

from __future__ import annotations

from dataclasses import dataclass, fields

from egg_zoo_discritune.options import opt


@dataclass
class GameOptions:
    """The reward and the REINFORCE update."""

    reward: str = opt("discriminative", "log-probability of the target image (the paper), retrieval accuracy, "
                                        "or caption-image similarity", ("discriminative", "accuracy", "similarity"))
    baseline: str = opt("mean", "running mean of all rewards so far (EGG's MeanBaseline, the paper), exponential "
                                "moving average, leave-one-out (over the other samples of the same image with "
                                "--samples_per_image > 1, else over the batch), or none",
                        ("mean", "exponential", "loo", "none"))
    baseline_decay: float = opt(0.9, "decay of the exponential baseline")
    normalize_advantage: bool = opt(False, "standardise advantages over the batch")
    logprob_reduction: str = opt("authors", "caption log-probability from its token log-probs: the authors' "
                                            "length normalisation (ClipCap: the sum before EOS over that count + 1; "
                                            "BLIP: the mean), the sum (plain REINFORCE) or the mean",
                                 ("authors", "sum", "mean"))
    entropy_coeff: float = opt(0.0, "weight of the entropy bonus")
    kl_coeff: float = opt(0.0, "weight of a KL penalty to the initial captioner, subtracted from the reward "
                               "(a frozen copy of the captioner is kept only when > 0)")
    samples_per_image: int = opt(1, "captions sampled per training image (> 1 needs --train_decoding sample)")
    micro_batch: int = opt(0, "teacher-forced log-prob pass in chunks of N captions, recomputed in the backward "
                              "pass, so a large batch fits a small GPU (0: the whole batch at once)")
    train_decoding: str = opt("greedy", "decoding during training (the paper: greedy)", ("greedy", "sample"))
    temperature: float = opt(1.0, "sampling temperature (--train_decoding sample; top-k and top-p are off)")
    test_decoding: str = opt("beam", "decoding for validation (the paper: beam search)", ("beam", "greedy"))
    beam_size: int = opt(5, "beams for --test_decoding beam")
    max_len: int = opt(30, "EGG's message length: at most this many caption tokens (the authors' --max_len 40 "
                           "counts ClipCap's 10 prefix positions, so 30)")
    receiver_mode: str = opt("alternate", "with several retrievers: each batch's reward from the next retriever "
                                          "in turn, or the average of their rewards", ("alternate", "average"))

    def __post_init__(self) -> None:
        for f in fields(self):
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"unknown {f.name} {getattr(self, f.name)!r}; expected one of {choices}")
        if self.samples_per_image > 1 and self.train_decoding != "sample":
            raise ValueError("several captions per image need --train_decoding sample (greedy ones are identical)")
        if self.max_len < 1:
            raise ValueError(f"--max_len must be at least 1 caption token, got {self.max_len}")
