"""Conceptual Captions (CC3M), in the layouts the download tools write:

- the official TSVs (``caption<TAB>url``, no header) beside ``training/`` and ``validation/``, images
  named ``<row>_<crc32(url)>`` (the authors' loader) or ``<crc32(url)>`` (igorbrigadir's
  DownloadConceptualCaptions), with or without an extension; rows never downloaded are skipped and counted;
- img2dataset's output folder for one split: ``files`` layout (``00000/000000000.jpg`` + ``.txt``) or
  ``webdataset`` shards (``00000.tar`` with ``<key>.jpg``, ``<key>.txt``, ``<key>.json``).

The paper's ConCap test set is the validation split (the images that survived the download).
"""

from __future__ import annotations

import csv
import json
import tarfile
import zlib
from pathlib import Path

from egg_zoo_discritune.data_loaders.images import IMAGE_EXTENSIONS, ImageRecord

SPLITS = {
    "train": ("Train_GCC-training.tsv", "training"),
    "val": ("Validation_GCC-1.1.0-Validation.tsv", "validation"),
}
DOWNLOAD_HINT = ("the TSV files come from ai.google.com/research/ConceptualCaptions/download; "
                 "download the images with the DownloadConceptualCaptions scripts into training/ and validation/")


def url_crc32(url: str) -> str:
    return str(zlib.crc32(url.encode("utf-8")) & 0xFFFFFFFF)


def conceptual_records(root: Path, split: str) -> list[ImageRecord]:
    """The split's images in input order, from whichever layout ``root`` holds."""
    if split not in SPLITS:
        raise ValueError(f"Conceptual Captions has splits {sorted(SPLITS)}, not {split!r}")
    if (root / SPLITS[split][0]).is_file():
        return tsv_records(root, split)
    if any(root.glob("*.tar")):
        return webdataset_records(root)
    if root.is_dir() and any(d.is_dir() and d.name.isdigit() for d in root.iterdir()):
        return img2dataset_files_records(root)
    raise FileNotFoundError(f"{root}: expected {SPLITS[split][0]} with {SPLITS[split][1]}/, or img2dataset output "
                            f"(NNNNN.tar shards or NNNNN/ folders). Download: {DOWNLOAD_HINT}")


def _caption(text: str, metadata: str) -> list[str]:
    caption = text.strip()
    if not caption and metadata:
        caption = (json.loads(metadata).get("caption") or "").strip()
    return [caption] if caption else []


def webdataset_records(root: Path) -> list[ImageRecord]:
    """img2dataset ``webdataset`` shards: one record per image member, the caption from ``.txt`` (or ``.json``)."""
    records = []
    for shard in sorted(root.glob("*.tar")):
        with tarfile.open(shard) as archive:
            members = {m.name: m for m in archive.getmembers() if m.isfile()}

            def read(name: str) -> str:
                return archive.extractfile(members[name]).read().decode("utf-8") if name in members else ""

            for name in sorted(members):
                key, ext = name.rsplit(".", 1) if "." in name else (name, "")
                if f".{ext.lower()}" in IMAGE_EXTENSIONS:
                    records.append(ImageRecord(shard, key, _caption(read(f"{key}.txt"), read(f"{key}.json")), name))
    return records


def img2dataset_files_records(root: Path) -> list[ImageRecord]:
    """img2dataset ``files`` layout: ``NNNNN/<key>.jpg`` with ``<key>.txt`` / ``<key>.json`` beside it."""
    records = []
    for shard in sorted(d for d in root.iterdir() if d.is_dir() and d.name.isdigit()):
        for image in sorted(p for p in shard.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
            text, meta = image.with_suffix(".txt"), image.with_suffix(".json")
            records.append(ImageRecord(image, image.stem, _caption(
                text.read_text() if text.is_file() else "", meta.read_text() if meta.is_file() else "")))
    return records


def tsv_records(root: Path, split: str) -> list[ImageRecord]:
    """One record per TSV row, in file order; rows whose image is absent point to a missing file,
    which the dataset skips and counts."""
    tsv_name, folder_name = SPLITS[split]
    tsv, folder = root / tsv_name, root / folder_name
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
