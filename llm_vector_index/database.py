"""Finding and opening llm's embeddings database, as every entry point does:
``-d/--database``, else ``LLM_EMBEDDINGS_DB``, else ``embeddings.db`` in
llm's user directory. A missing file is refused, never created."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import llm
from sqlite_utils import Database

from .errors import VectorIndexError


def default_path() -> Path:
    "The database llm's own commands use when none is named."
    return Path(os.environ.get("LLM_EMBEDDINGS_DB") or llm.user_dir() / "embeddings.db")


def open_embeddings(path: str | Path | None = None) -> Database:
    "The embeddings database at ``path`` (default: ``default_path()``)."
    path = Path(path) if path else default_path()
    if not path.exists():
        raise VectorIndexError(f"Database not found: {path}")
    db = Database(path)
    try:
        has_embeddings = db["embeddings"].exists()
    except sqlite3.DatabaseError as error:
        raise VectorIndexError(f"Cannot read {path} as a SQLite database: {error}") from None
    if not has_embeddings:
        raise VectorIndexError(f"No embeddings table found in database {path}")
    return db
