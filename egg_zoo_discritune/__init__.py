"""DiscriTune for EGG: discriminative finetuning of image captioners against a frozen retriever."""

from egg_zoo_discritune.cpu_allocator import keep_freed_memory

# Process-wide, at import, so every entry point and bench gets it; DISCRITUNE_KEEP_FREED_MEMORY=0 turns it off.
keep_freed_memory()

__version__ = "0.1.0"
