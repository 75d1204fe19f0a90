"""DiscriTune for EGG: discriminative finetuning of image captioners against a frozen retriever."""

import os

# torch's CPU allocator backs allocations of 2 MB and more with transparent huge pages when this is set
# before torch first allocates (it reads it once). An update allocates GBs of short-lived logits and
# activations; with 4 KB pages each is faulted in anew, which cost a quarter of a bf16 update's CPU time
# (bench/README.md). Linux only; THP_MEM_ALLOC_ENABLE=0 turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
