"""Crash-safe, damage-checked files for backends.

A backend's state is one or more files plus a small ``manifest.json`` naming
them. ``save_snapshot`` writes every file under a new generation's name,
fsyncs it, then replaces the manifest in one atomic rename: readers (and a
process that crashed mid-save) see the old snapshot or the new one, never a
mix. Large arrays are plain ``.npy`` files, memory-mapped copy-on-write on
load, so opening an index costs almost nothing until it is searched.

Files damaged after they were written (truncated, zeroed, overwritten, a
missing file, a manifest that is not JSON) must never reach faiss or
hnswlib, whose loaders trust what they read and can crash the process. The
manifest records each file's size and CRC-32, and the file's identity as the
save left it (inode, size, mtime, ctime: any write changes ctime).
``load_snapshot`` checks sizes always and re-reads a file to check its CRC
only when its identity changed (a copied or touched folder), so an untouched
index opens without reading its files. Any mismatch raises ``DamagedFiles``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DamagedFiles, first_line

MANIFEST = "manifest.json"
CHUNK = 1 << 20

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


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    "Hold an exclusive ``flock`` on ``path`` (created if needed), waiting for it."
    with open(path, "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


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
    checks: dict[str, dict] = field(default_factory=dict)  # file name -> file_check

    def array(self, key: str) -> np.ndarray:
        """A saved array, memory-mapped copy-on-write (edits stay in memory).
        A plain ndarray view of the map: numpy's memmap subclass costs
        microseconds on every indexing, which queries do."""
        mapped = np.load(self.files[key], mmap_mode="c", allow_pickle=False)
        return mapped.view(np.ndarray) if isinstance(mapped, np.memmap) else mapped


def save_snapshot(
    directory: Path,
    files: Mapping[str, Writer],
    meta: Mapping[str, Any] | None = None,
    *,
    keep: Collection[str] = (),
) -> None:
    """Write ``files`` (key -> writer) and ``meta`` as the directory's new
    snapshot. ``keep`` names keys of the previous snapshot whose files carry
    over unchanged, not written again (files are never changed once saved, so
    an append-only backend saves only what is new)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    previous = load_snapshot(directory)
    generation = previous.meta.get("_generation", 0) + 1 if previous else 1
    names, checks = {}, {}
    for key in keep:
        if previous is None or key not in previous.files:
            raise ValueError(f"No saved file {key!r} to keep")
        names[key] = previous.files[key].name
        checks[names[key]] = previous.checks.get(names[key])
    started: list[Path] = []
    try:
        for key, write in files.items():
            name = f"{key}.{generation}"
            started.append(directory / name)
            _write_checked(directory / name, write)
            checks[name] = file_check(directory / name)
            names[key] = name
    except BaseException:  # e.g. a full disk: free what this save wrote
        for path in started:
            path.unlink(missing_ok=True)
        raise
    manifest = {
        "files": names,
        "checks": checks,
        "meta": {**(meta or {}), "_generation": generation},
    }
    atomic_write(directory / MANIFEST, lambda f: f.write(json.dumps(manifest).encode()))
    # Older generations, and files of a save that crashed before its manifest.
    pattern = re.compile(rf"^({'|'.join(map(re.escape, [*files, *keep]))})\.\d+$")
    replaced = {path.name for path in previous.files.values()} if previous else set()
    for path in directory.iterdir():
        if path.name in names.values():
            continue
        if pattern.match(path.name) or path.name in replaced:
            path.unlink()


def _write_checked(path: Path, write: Writer) -> None:
    """Write one file of a snapshot and fsync it. A library's own writer that
    fails (faiss raises RuntimeError) is an ``OSError`` like any failed
    write. hnswlib's writer says nothing when the disk fills up and leaves a
    short file, so a disk left with no free block after a write counts as
    full: a write that filled it exactly is refused too, which is safe."""
    try:
        write(path)
        with open(path, "rb") as written:
            os.fsync(written.fileno())
    except OSError:
        raise
    except Exception as error:  # noqa: BLE001 (a library's own write error, as EIO)
        raise OSError(errno.EIO, f"cannot write {path.name}: {first_line(error)}") from None
    if os.statvfs(path.parent).f_bavail == 0:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def load_snapshot(directory: Path) -> Snapshot | None:
    """The directory's last saved snapshot, or None if nothing was saved.
    Raises ``DamagedFiles`` if the manifest or a file it names is damaged."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        names = dict(manifest["files"])
        meta = dict(manifest["meta"])
        checks = dict(manifest.get("checks", {}))
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise DamagedFiles(f"{MANIFEST} is damaged ({type(error).__name__})") from None
    for name in names.values():
        if "/" in str(name) or str(name).startswith("."):
            raise DamagedFiles(f"{MANIFEST} names {name!r}, not a file of this index")
        verify_file(directory, str(name), checks.get(name))
    return Snapshot(
        files={key: directory / name for key, name in names.items()}, meta=meta, checks=checks
    )


def file_check(path: Path) -> dict[str, int]:
    "What ``verify_file`` compares a file with later: its CRC-32 and identity."
    with open(path, "rb") as fileobj:
        return {"crc32": _crc32(fileobj), **file_identity(path)}


def verify_file(directory: Path, name: str, check: dict | None) -> None:
    "Raise ``DamagedFiles`` unless ``directory / name`` is as ``check`` recorded it."
    path = directory / name
    try:
        identity = file_identity(path)
    except FileNotFoundError:
        raise DamagedFiles(f"{name} is missing") from None
    if check is None:
        return  # saved before checks were recorded
    if identity["size"] != check.get("size"):
        raise DamagedFiles(f"{name} has {identity['size']} bytes, {check.get('size')} were saved")
    if identity == {key: check.get(key) for key in identity}:
        return  # untouched since it was saved: no need to read it
    with open(path, "rb") as fileobj:
        if _crc32(fileobj) != check.get("crc32"):
            raise DamagedFiles(f"{name} has changed since it was saved (CRC-32 differs)")


def file_identity(path: Path) -> dict[str, int]:
    info = os.stat(path)
    return {
        "inode": info.st_ino,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "ctime_ns": info.st_ctime_ns,
    }


def _crc32(fileobj) -> int:
    fileobj.seek(0)
    crc = 0
    while chunk := fileobj.read(CHUNK):
        crc = zlib.crc32(chunk, crc)
    return crc
