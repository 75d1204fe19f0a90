"""What images a run trains and validates on: one typed dataclass, also the training command's flags."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from egg_zoo_discritune.options import opt


@dataclass
class DataOptions:
    """What images the game is played on."""

    dataset: str = opt("coco", "training data format", ("coco", "conceptual", "generic"))
    data_root: Optional[str] = opt(None, "image root (coco: the folder holding train2014/ and val2014/; "
                                         "conceptual: the folder with the TSVs and training/, validation/; "
                                         "generic: a folder of images)")
    annotations: Optional[str] = opt(None, "coco: dataset_coco.json (Karpathy splits); generic: a JSONL/CSV manifest")
    val_annotations: Optional[str] = opt(None, "the validation images when --data_root holds training images only: "
                                               "generic: a folder or manifest; conceptual: the img2dataset folder "
                                               "of the validation split")
    train_split: str = opt("train", "split to train on")
    val_split: str = opt("val", "split to validate on (P@1 over consecutive blocks of --batch_size images)")
    include_restval: bool = opt(True, "coco: add Karpathy 'restval' to 'train' (113,287 images, as the authors' "
                                      "code; without it 82,783)")
    max_train_images: int = opt(0, "use only the first N training images (0: all)")
    max_val_images: int = opt(0, "use only the first N validation images (0: all)")
    num_workers: int = opt(4, "DataLoader worker processes that decode images")
    stream: bool = opt(False, "conceptual: stream the training split's img2dataset shards (--data_root: NNNNN.tar "
                              "or NNNNN/ folders) sequentially through a shuffle buffer, for millions of images")
    shuffle_buffer: int = opt(1000, "--stream: images each DataLoader worker shuffles among")
    feature_cache: Optional[str] = opt(None, "read the images' CLIP features from this cache (made by "
                                             "python -m egg_zoo_discritune.extract_features) instead of pixels")
    verify_cache: int = opt(1000, "--feature_cache: hash this many of the images (a seeded sample; -1: all, 0: "
                                  "none) at start and refuse the cache if one differs from the image it was made from")
