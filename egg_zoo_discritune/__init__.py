"""DiscriTune for EGG: discriminative finetuning of image captioners against a frozen retriever."""

__version__ = "0.1.0"
