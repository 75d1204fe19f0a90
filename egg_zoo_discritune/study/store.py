"""The study file: one SQLite database holding the images, the trials, the participants' slots and the
answers. WAL mode, so answers commit while the analysis or the admin export reads; every answer is one
transaction, and the primary keys make a second answer to the same trial impossible."""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, image_id TEXT NOT NULL, source_path TEXT NOT NULL, sha256 TEXT NOT NULL,
    jpeg BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY, target_image INTEGER NOT NULL REFERENCES images(id), source TEXT NOT NULL,
    caption TEXT NOT NULL, candidates TEXT NOT NULL, target_position INTEGER NOT NULL,
    attention INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS slots (
    id INTEGER PRIMARY KEY, token TEXT UNIQUE, started_at TEXT, completed_at TEXT, completion_code TEXT);
CREATE TABLE IF NOT EXISTS assignments (
    slot INTEGER NOT NULL REFERENCES slots(id), position INTEGER NOT NULL,
    trial INTEGER NOT NULL REFERENCES trials(id), PRIMARY KEY (slot, position), UNIQUE (slot, trial));
CREATE TABLE IF NOT EXISTS answers (
    slot INTEGER NOT NULL, position INTEGER NOT NULL, chosen_position INTEGER NOT NULL,
    correct INTEGER NOT NULL, response_ms INTEGER NOT NULL, answered_at TEXT NOT NULL,
    PRIMARY KEY (slot, position), FOREIGN KEY (slot, position) REFERENCES assignments(slot, position));
"""


def connect(path: Path, create: bool = False) -> sqlite3.Connection:
    """A connection to the study file (``create``: a new one; else it must exist and be a study)."""
    if create and path.exists():
        raise FileExistsError(f"{path} exists: a study is never overwritten; choose another file")
    if not create and not path.is_file():
        raise FileNotFoundError(f"{path}: no such study file (make one with discritune-study build)")
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=30000")
    if create:
        db.executescript(SCHEMA)
    elif db.execute("SELECT count(*) FROM sqlite_master WHERE name='answers'").fetchone()[0] == 0:
        raise ValueError(f"{path}: not a study file (no answers table)")
    return db


def meta(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, value FROM meta"))
