"""Your own images: a folder (searched recursively), or a JSONL / CSV manifest of image paths with
optional captions. Relative paths in a manifest are relative to the manifest's folder.

JSONL: one object per line with the image under ``image`` (or ``path``, ``file_name``, ``filename``)
and optionally ``captions`` (a list) or ``caption`` (a string).
CSV: a header row with an ``image``/``path``/``file_name``/``filename`` column and optionally
``caption`` or ``captions`` (several captions separated by ``|``).
"""

from __future__ import annotations

import csv
from pathlib import Path

from egg_zoo_discritune.data_loaders.images import IMAGE_EXTENSIONS, ImageRecord
from egg_zoo_discritune.jsonl import json_lines

PATH_KEYS = ("image", "path", "file_name", "filename")


def _record(row: dict, base: Path, where: str) -> ImageRecord:
    key = next((k for k in PATH_KEYS if row.get(k)), None)
    if key is None:
        raise ValueError(f"{where}: no image path; expected one of the fields {PATH_KEYS}")
    captions = row.get("captions", row.get("caption", []))
    if isinstance(captions, str):
        captions = captions.split("|")
    if not isinstance(captions, list):
        raise ValueError(f"{where}: captions must be a string or a list of strings")
    path = Path(row[key])
    return ImageRecord(path if path.is_absolute() else base / path, str(row.get("id", row[key])),
                       [c.strip() for c in captions if isinstance(c, str) and c.strip()])


def folder_records(root: Path) -> list[ImageRecord]:
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    return [ImageRecord(p, str(p.relative_to(root))) for p in paths]


def manifest_records(path: Path) -> list[ImageRecord]:
    base = path.parent
    if path.suffix.lower() == ".jsonl":
        records = []
        for where, row in json_lines(path):
            if not isinstance(row, dict):
                raise ValueError(f"{where}: expected a JSON object")
            records.append(_record(row, base, where))
        return records
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            return [_record(row, base, f"{path}:{i + 2}") for i, row in enumerate(csv.DictReader(f))]
    raise ValueError(f"{path}: expected a folder of images, a .jsonl or a .csv manifest")


def generic_records(source: Path) -> list[ImageRecord]:
    """Records from a folder of images or a JSONL/CSV manifest."""
    if source.is_dir():
        records = folder_records(source)
    elif source.is_file():
        records = manifest_records(source)
    else:
        raise FileNotFoundError(f"no such image folder or manifest: {source}")
    if not records:
        raise ValueError(f"{source}: no images found (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return records
