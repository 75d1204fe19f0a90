"""Caption your own images (alt-text): ``python -m egg_zoo_discritune.caption --help``.

Reads a folder of images, a JSONL/CSV manifest, or image files given one by one, and writes one JSON
line per image: ``{"path": ..., "caption": ...}``. Images that cannot be read are skipped and counted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence


from egg_zoo_discritune.cli import run as run_cli, start
from egg_zoo_discritune.captioning import encode_images, write_captions
from egg_zoo_discritune.archs.options import ReceiverOptions, SenderOptions
from egg_zoo_discritune.config import DecodingOptions, add_options, options_from
from egg_zoo_discritune.options import opt
from egg_zoo_discritune.data_loaders.generic import generic_records
from egg_zoo_discritune.data_loaders.images import ImageRecord, ImageRecordsDataset
from egg_zoo_discritune.factory import PRETRAINED, load_clips, load_sender_from

log = logging.getLogger("discritune")


@dataclass
class CaptionOptions:
    """Which images, which captioner, where the captions go."""

    images: list[str] = opt([], "a folder of images, a JSONL/CSV manifest, or image files")
    checkpoint: str = opt(PRETRAINED, "'pretrained' (--clipcap_weights), a run directory, a .tar checkpoint "
                                      "or a ClipCap .pt file")
    output: str = opt("captions.jsonl", "JSON-lines file to write")


def _records(sources: list[str]) -> list[ImageRecord]:
    records = []
    for source in sources:
        path = Path(source)
        records += [ImageRecord(path, str(path))] if path.is_file() and path.suffix.lower() not in (".jsonl", ".csv") \
            else generic_records(path)
    return records


def main(argv: Optional[Sequence[str]] = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m egg_zoo_discritune.caption", description=__doc__.split("\n")[0])
    for cls in (CaptionOptions, DecodingOptions, SenderOptions, ReceiverOptions):
        add_options(parser, cls)
    namespace = parser.parse_args(sys.argv[1:] if argv is None else argv)
    opts, decode = options_from(namespace, CaptionOptions), options_from(namespace, DecodingOptions)
    if not opts.images:
        parser.error("give --images (a folder, a manifest or image files)")
    device = start(decode.no_cuda)
    retriever, sender_encoder, preprocess = load_clips(options_from(namespace, ReceiverOptions),
                                                       options_from(namespace, SenderOptions).sender_clip)
    sender, _ = load_sender_from(opts.checkpoint, options_from(namespace, SenderOptions),
                                 (sender_encoder or retriever).feature_dim)
    for module in (retriever, sender_encoder, sender):
        if module is not None:
            module.to(device)
    dataset = ImageRecordsDataset(_records(opts.images), preprocess, source="images")
    encoded = encode_images(dataset, retriever, sender_encoder, decode.batch_size, device, decode.num_workers)
    captions = write_captions(sender.eval(), encoded.prefix_features, decode.decoding, decode.beam_size, decode.max_len,
                              decode.batch_size)
    output = Path(opts.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "w") as f:
        for index, caption in zip(encoded.indices.tolist(), captions):
            f.write(json.dumps({"path": str(dataset.records[index].path), "caption": caption}) + "\n")
    log.info("%d captions written to %s; %d images skipped", len(captions), output, dataset.n_skipped)
    return output


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()
