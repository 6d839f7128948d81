"""Where an index's files live, and the rules that keep them there.

A database is a file people share, so an index name read from it is
untrusted input: a crafted ``vector_indexes.name`` such as ``../../victim``
must never lead a command (or llm's own ``llm similar`` through a default
index) to write, replace or delete anything outside the database's index
folder. Every path to an index's files is made here:

- names are checked whole (``fullmatch``: ``$`` would let ``"abc\\n"`` pass);
- every path is resolved (symlinks followed) and must lie strictly inside the
  resolved index folder;
- a folder is deleted only if it carries the marker file the plugin writes
  into every folder it creates: a folder someone else made is left alone;
- the index folder itself must be a real folder the plugin made (marked),
  not a link to somewhere else.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from sqlite_utils import Database

from .errors import InvalidIndexName, UnsafePath, VectorIndexError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
# Written into every folder the plugin creates; nothing without it is deleted.
MARKER = ".llm-vector-index"
STAGING = ".rebuild"  # full rebuilds are staged in here, then swapped in
# An index's build and commit locks, beside its folder (see generations.py).
LOCK_PATTERN = re.compile(rf"\.{NAME_PATTERN.pattern}\.(lock|commit)")


def is_valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_PATTERN.fullmatch(name) is not None


def check_name(name: object) -> str:
    "The name, if it can name a folder inside the index folder; else InvalidIndexName."
    if not isinstance(name, str) or not is_valid_name(name):
        raise InvalidIndexName(
            f"Invalid index name {name!r}: use up to 100 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return name


def database_path(db: Database) -> Path | None:
    "The file behind the connection, or None for an in-memory database."
    for row in db.execute("pragma database_list").fetchall():
        if row[1] == "main":
            return Path(row[2]) if row[2] else None
    return None


def indexes_directory(db: Database) -> Path:
    "Where the backends' files live: a folder beside the database file."
    path = database_path(db)
    if path is None:
        raise VectorIndexError("Vector indexes need a database file, not :memory:")
    return path.parent / f"{path.name}.vector-indexes"


def checked_base(db: Database) -> Path:
    """The index folder, refused unless the plugin may use it: a real folder
    (a link, say in a shared tarball, would send builds and drops to another
    folder) that the plugin made, or that is absent. A folder made by an
    earlier version, which wrote no marker into it, is adopted if everything
    in it is the plugin's."""
    base = indexes_directory(db)
    if base.is_symlink():
        raise UnsafePath(
            f"Refusing to use {base}: it is a link (to {base.resolve()}), and an "
            "index folder must be a real folder beside its database"
        )
    if not base.exists() or (base / MARKER).is_file():
        return base
    if not base.is_dir():
        raise UnsafePath(f"Refusing to use {base}: it is not a folder")
    strays = sorted(entry.name for entry in base.iterdir() if not _made_by_plugin(entry))
    if strays:
        raise UnsafePath(
            f"{base} exists but was not made by llm-vector-index (it holds "
            f"{strays[0]!r}): move it away"
        )
    with contextlib.suppress(OSError):  # a read-only place: still fine to read from
        (base / MARKER).touch()
    return base


def _made_by_plugin(entry: Path) -> bool:
    "Could an earlier version have made this entry of the index folder?"
    if entry.is_symlink():
        return False
    if entry.is_dir():
        if entry.name == STAGING:
            return all(is_ours(child) for child in entry.iterdir())
        return is_ours(entry)
    return entry.name == MARKER or LOCK_PATTERN.fullmatch(entry.name) is not None


def inside(base: Path, *parts: str) -> Path:
    """``base / parts``, refused unless it resolves (symlinks included) to a
    path strictly inside ``base``."""
    path = base.joinpath(*parts)
    try:
        root = base.resolve()
        resolved = path.resolve()
    except (OSError, RuntimeError) as error:  # a loop of links, a name too long
        raise UnsafePath(f"Refusing to use {path}: {error}") from None
    if resolved == root or not resolved.is_relative_to(root):
        raise UnsafePath(f"Refusing to use {path}: it leads outside {base} (to {resolved})")
    return path


def index_path(db: Database, name: str, prefix: str = "", suffix: str = "") -> Path:
    "A path for index ``name`` inside the database's index folder, checked."
    return inside(checked_base(db), f"{prefix}{check_name(name)}{suffix}")


def lock_path(db: Database, name: str, kind: str = "lock") -> Path:
    "An index's build lock (``lock``) or commit lock (``commit``) file, beside its folder."
    return index_path(db, name, prefix=".", suffix=f".{kind}")


def remove_index_files(db: Database, name: str) -> None:
    "Delete an index's folder (if the plugin made it) and its two lock files."
    remove_tree(index_path(db, name))
    for kind in ("lock", "commit"):
        lock_path(db, name, kind).unlink(missing_ok=True)


def staging_path(db: Database, name: str) -> Path:
    "Where a full rebuild of ``name`` is written before it is swapped in."
    return inside(checked_base(db), STAGING, check_name(name))


def mark(directory: Path) -> None:
    "Create ``directory`` (if needed) as one of ours."
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).touch()


def is_ours(directory: Path) -> bool:
    """A real folder (not a link) that the plugin created, or an empty one:
    ``mark`` makes the folder, then its marker, and a process killed between
    the two leaves an empty folder that would otherwise block every later
    build. Taking an empty folder over loses nothing of anyone's."""
    if not directory.is_dir() or directory.is_symlink():
        return False
    if (directory / MARKER).is_file():
        return True
    with os.scandir(directory) as entries:
        return next(entries, None) is None


def check_ours_or_absent(directory: Path) -> None:
    "Refuse to go on when ``directory`` exists but the plugin did not make it."
    if directory.is_symlink() or (directory.exists() and not is_ours(directory)):
        raise UnsafePath(
            f"{directory} exists but was not made by llm-vector-index: "
            "move it away or use another index name"
        )


def check_removable(directory: Path) -> None:
    "Refuse before anything changes if ``directory`` exists but cannot be deleted."
    if not directory.exists():
        return
    folders = [directory.parent, directory] + [p for p in directory.rglob("*") if p.is_dir()]
    for folder in folders:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise VectorIndexError(f"Cannot delete files in {folder}: permission denied")


def remove_tree(directory: Path) -> bool:
    "Delete ``directory`` if the plugin made it; True if it is gone."
    if not directory.exists() and not directory.is_symlink():
        return True
    if not is_ours(directory):
        return False
    shutil.rmtree(directory, ignore_errors=True)
    return not directory.exists()
