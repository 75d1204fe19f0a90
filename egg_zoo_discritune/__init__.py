"""DiscriTune for EGG: discriminative finetuning of image captioners against a frozen retriever."""

import os

# torch's CPU allocator backs allocations of 2 MB and more with transparent huge pages when this is set
# before torch first allocates (it reads it once). An update allocates GBs of short-lived logits and
# activations; with 4 KB pages each is faulted in anew (24 bf16 products of the LM head's size: 3.2 s of
# kernel time beside 8.8 s of user time; bench/README.md). Linux only; THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
