"""Conceptual Captions (CC3M): the official TSV files (``caption<TAB>url``, no header) and the images
the download scripts wrote, named ``<row>_<crc32(url)>`` (the authors' loader) or ``<crc32(url)>``
(igorbrigadir/DownloadConceptualCaptions), with or without an extension.

Layout under the data root: ``Train_GCC-training.tsv`` + ``training/`` and
``Validation_GCC-1.1.0-Validation.tsv`` + ``validation/`` (the paper's ConCap test set).
Rows whose image was never downloaded are skipped and counted.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path

from egg_zoo_discritune.data_loaders.images import ImageRecord

SPLITS = {
    "train": ("Train_GCC-training.tsv", "training"),
    "val": ("Validation_GCC-1.1.0-Validation.tsv", "validation"),
}
DOWNLOAD_HINT = ("the TSV files come from ai.google.com/research/ConceptualCaptions/download; "
                 "download the images with the DownloadConceptualCaptions scripts into training/ and validation/")


def url_crc32(url: str) -> str:
    return str(zlib.crc32(url.encode("utf-8")) & 0xFFFFFFFF)


def conceptual_records(root: Path, split: str) -> list[ImageRecord]:
    """One record per TSV row, in file order; rows whose image is absent point to a missing file,
    which the dataset skips and counts."""
    if split not in SPLITS:
        raise ValueError(f"Conceptual Captions has splits {sorted(SPLITS)}, not {split!r}")
    tsv_name, folder_name = SPLITS[split]
    tsv, folder = root / tsv_name, root / folder_name
    if not tsv.is_file():
        raise FileNotFoundError(f"Conceptual Captions file not found: {tsv}. Download: {DOWNLOAD_HINT}")
    if not folder.is_dir():
        raise FileNotFoundError(f"Conceptual Captions image folder not found: {folder}. Download: {DOWNLOAD_HINT}")
    by_stem = {p.name.split(".")[0]: p for p in folder.iterdir()}
    records = []
    with open(tsv, newline="", encoding="utf-8") as f:
        for row_index, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)):
            if len(row) != 2:
                raise ValueError(f"{tsv}:{row_index + 1}: expected 'caption<TAB>url', got {len(row)} fields")
            caption, url = row
            crc = url_crc32(url)
            path = by_stem.get(f"{row_index}_{crc}") or by_stem.get(crc) or folder / f"{row_index}_{crc}"
            records.append(ImageRecord(path, path.name, [caption.strip()]))
    return records
