"""Crash-safe files for backends.

A backend's state is one or more files plus a small ``manifest.json`` naming
them. ``save_snapshot`` writes every file under a new generation's name,
fsyncs it, then replaces the manifest in one atomic rename: readers (and a
process that crashed mid-save) see the old snapshot or the new one, never a
mix. Large arrays are plain ``.npy`` files, memory-mapped copy-on-write on
load, so opening an index costs almost nothing until it is searched.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MANIFEST = "manifest.json"

Writer = Callable[[Path], None]


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Write a file through ``write(fileobj)`` so that readers see the old or
    the new content, never a torn one: temp file, fsync, rename, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its files are always 0600, and an index shared through a
    # group-writable folder must follow the umask like every other file in it.
    temp_name = path.parent / f".{path.name}.{secrets.token_hex(8)}"
    fd = os.open(temp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fileobj:
            write(fileobj)
            fileobj.flush()
            os.fsync(fileobj.fileno())
        os.replace(temp_name, path)
    except BaseException:
        if os.path.exists(temp_name):
            os.unlink(temp_name)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def array_writer(array: np.ndarray) -> Writer:
    "A writer that saves an array as a .npy file."

    def write(path: Path) -> None:
        with open(path, "wb") as fileobj:
            np.save(fileobj, np.ascontiguousarray(array), allow_pickle=False)

    return write


@dataclass
class Snapshot:
    files: dict[str, Path]
    meta: dict[str, Any]

    def array(self, key: str) -> np.ndarray:
        "A saved array, memory-mapped copy-on-write (edits stay in memory)."
        return np.load(self.files[key], mmap_mode="c", allow_pickle=False)


def save_snapshot(
    directory: Path, files: Mapping[str, Writer], meta: Mapping[str, Any] | None = None
) -> None:
    "Write ``files`` (key -> writer) and ``meta`` as the directory's new snapshot."
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    previous = load_snapshot(directory)
    generation = previous.meta.get("_generation", 0) + 1 if previous else 1
    names = {}
    for key, write in files.items():
        name = f"{key}.{generation}"
        write(directory / name)
        with open(directory / name, "rb") as written:
            os.fsync(written.fileno())
        names[key] = name
    manifest = {"files": names, "meta": {**(meta or {}), "_generation": generation}}
    atomic_write(directory / MANIFEST, lambda f: f.write(json.dumps(manifest).encode()))
    # Older generations, and files of a save that crashed before its manifest.
    pattern = re.compile(rf"^({'|'.join(map(re.escape, files))})\.\d+$")
    for path in directory.iterdir():
        if pattern.match(path.name) and path.name not in names.values():
            path.unlink()


def load_snapshot(directory: Path) -> Snapshot | None:
    "The directory's last saved snapshot, or None if nothing was saved."
    try:
        manifest = json.loads((Path(directory) / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    return Snapshot(
        files={key: Path(directory) / name for key, name in manifest["files"].items()},
        meta=manifest["meta"],
    )
