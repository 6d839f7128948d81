"""Keeping an index's files and its catalog in step across processes.

A generation marker beside the backend's files says which catalog generation
they belong to; a build writes it before the files change, so a build that
dies before the catalog commits leaves files and catalog visibly out of step
(the next query says so, the next build repairs it), never silently wrong.
The build lock allows one build at a time; the commit lock spans a build's
first change to the live files until its catalog commit, and readers take it
shared while they read the catalog and open the files. Full rebuilds swap a
fresh folder in for the old one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlite_utils import Database

from . import paths
from .errors import CannotWrite, IndexBusy
from .storage import atomic_write, exclusive_lock

GENERATION_FILE = "generation"


@contextmanager
def build_lock(db: Database, name: str) -> Iterator[None]:
    "One build at a time per index (``name`` in ``db``), across processes."
    lock_path = paths.lock_path(db, name)
    try:
        paths.mark(lock_path.parent)  # the index folder, made as ours
        lock_file = open(lock_path, "a")  # noqa: SIM115 (held for the lock's life)
    except OSError as error:
        raise CannotWrite(
            f"Cannot build index {name!r}: {error.strerror}: {error.filename}"
        ) from None
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexBusy(f"Index {name!r} is being built by another process") from None
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@contextmanager
def commit_lock(db: Database, name: str) -> Iterator[None]:
    """Held (exclusive) from a build's first change to the live files until
    its catalog commit: readers that take it shared (``reading_lock``) see
    files and catalog of one generation. Short: a full build holds it only
    around the folder swap and the commit."""
    with exclusive_lock(paths.lock_path(db, name, "commit")):
        yield


@contextmanager
def reading_lock(db: Database, name: str, timeout: float = 60.0) -> Iterator[None]:
    """Wait out a build's save-to-commit window, and keep the next one from
    starting while the catalog is read and the files opened."""
    try:
        lock_file = open(paths.lock_path(db, name, "commit"))  # noqa: SIM115 (held while waited on)
    except OSError:  # never built here, or not readable: nothing to wait for
        yield
        return
    with lock_file:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break  # answer anyway: the generation check still guards
                time.sleep(0.005)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def write_generation(directory: Path, generation: int, owner: str) -> None:
    """Record which catalog generation, of which index (``Index.identity``),
    the files in ``directory`` belong to: files copied in from another index
    are then detected, not searched with this index's label map."""
    atomic_write(directory / GENERATION_FILE, lambda f: f.write(f"{generation} {owner}".encode()))


def read_generation(directory: Path, owner: str) -> int | None:
    "The generation the files belong to, or None if unknown or another index's."
    try:
        generation, written_by = (directory / GENERATION_FILE).read_text().split(" ", 1)
        return int(generation) if written_by == owner else None
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None


class _Ahead:
    def __init__(self, undo: bool) -> None:
        self.undo = undo

    def keep(self) -> None:
        """From here on a failure leaves the marker ahead of the catalog (a
        second set of files is saved after files that already changed)."""
        self.undo = False


@contextmanager
def saving_ahead(directory: Path, generation: int, owner: str, undo: bool) -> Iterator[_Ahead]:
    """Mark the files in ``directory`` as ``generation`` while a backend saves
    over them (so that a kill before the catalog commits is detected). With
    ``undo`` (a backend whose save is atomic, so that a failed save leaves
    the files it had), a save that fails with an exception (a full disk, a
    read-only mount) puts the previous marker back: the files are still the
    catalog's and queries go on using them. It was kept as a hard link, so
    putting it back is a rename, which needs no free space. ``keep()`` on
    what it yields gives that up once files that cannot be undone changed."""
    marker = directory / GENERATION_FILE
    kept = directory / f".{GENERATION_FILE}.previous"
    kept.unlink(missing_ok=True)
    if undo:
        try:
            os.link(marker, kept)
        except FileNotFoundError:
            undo = False  # nothing saved before: nothing to go back to
    ahead = _Ahead(undo)
    try:
        write_generation(directory, generation, owner)
        yield ahead
    except BaseException:
        if ahead.undo:
            os.replace(kept, marker)
        raise
    finally:
        # (A rename between two links of one file does nothing: the marker
        # was never replaced. Either way the kept link goes.)
        kept.unlink(missing_ok=True)


def swap_directories(new: Path, current: Path) -> None:
    """Put a freshly built folder in place of the current one (ours, or none).
    The current one is kept aside until ``remove_retired`` (after the commit),
    so that ``unswap`` can put it back if the commit fails."""
    paths.check_ours_or_absent(current)
    if current.exists():
        os.replace(current, _retired(current))
    os.replace(new, current)


def unswap(current: Path) -> None:
    """Put back the folder ``swap_directories`` set aside, in place of the new
    one: the catalog, which failed to commit, still describes it."""
    retired = _retired(current)
    if retired.exists():
        paths.remove_tree(current)
        os.replace(retired, current)


def _retired(current: Path) -> Path:
    return current.with_name(f".{current.name}.retired-{os.getpid()}")


def remove_retired(current: Path) -> None:
    """Delete the copies full rebuilds swapped out of ``current``, including
    those a killed build left behind (builds of one index are serialised by
    its lock, so no build is using them)."""
    for left in current.parent.glob(f".{current.name}.retired-*"):
        paths.remove_tree(left)


def remove_if_empty(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty, or already gone
        directory.rmdir()  # only ever removes an empty folder
