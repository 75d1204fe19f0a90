"""Topographic similarity of a run's validation messages, with EGG's own
``TopographicSimilarity.compute_topsim``: the Spearman correlation between the pairwise cosine distances
of the images' retriever features and the pairwise edit distances of their messages (padded token ids,
as EGG's callback reads them).

    python bench/topsim.py RUN_DIR [--epoch N]

Needs EGG and a run made with ``--save_interactions``; the features come from the run's own retriever.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from egg.core.language_analysis import TopographicSimilarity

from egg_zoo_discritune.archs.options import ReceiverOptions
from egg_zoo_discritune.captioning import encode_images
from egg_zoo_discritune.data_loaders.options import DataOptions
from egg_zoo_discritune.data_loaders.training import split_dataset, validation_source
from egg_zoo_discritune.engine.interaction import load_interactions
from egg_zoo_discritune.factory import load_clips


def topsim(run_dir: Path, epoch: int) -> dict:
    cfg = json.loads((run_dir / "config.json").read_text())
    data = DataOptions(**cfg["data"])
    retriever, _, preprocess = load_clips(ReceiverOptions(**cfg["receiver"]))
    dataset = split_dataset(data, data.val_split, *validation_source(data), data.max_val_images, preprocess, None)
    features = encode_images(dataset, retriever, None, 256, torch.device("cpu")).features
    interaction = load_interactions(run_dir / "interactions" / "validation" / f"epoch_{epoch}" / "interaction_gpu0")
    meanings = features[interaction.labels].numpy()
    value = TopographicSimilarity.compute_topsim(meanings, interaction.message.numpy(), "cosine", "edit")
    return {"topsim": value, "n_images": len(meanings), "mean_length": interaction.message_length.float().mean().item(),
            "p_at_1": interaction.aux["acc"].mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epoch", type=int, default=None, help="validation epoch (default: the last saved)")
    args = parser.parse_args()
    saved = sorted(int(p.name.split("_")[1]) for p in (args.run_dir / "interactions" / "validation").iterdir())
    print(json.dumps(topsim(args.run_dir, args.epoch or saved[-1])))


if __name__ == "__main__":
    main()
