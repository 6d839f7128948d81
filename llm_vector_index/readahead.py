"""A file about to be memory-mapped and read at random, brought into the
operating system's page cache by one sequential pass beside it.

faiss maps an index's codes and reads its graph's links through the same
mapping. From a cold page cache every page it touches is then a small read
of its own: opening the default index of a million rows took 5-7 s where
reading its 656 MB file in order takes 1.5 s. A thread reading the file in
order while faiss opens it (and while the first queries run) leaves faiss
finding its pages there: 1.4 s from a cold cache, and next to nothing when
the file is already cached (its pages are only copied, a few MB at a time,
into one reused buffer). ``posix_fadvise(WILLNEED)`` and ``readahead(2)``
did nothing on this machine's file system, so the reading is done by hand.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

CHUNK = 8 << 20  # bytes a read
SMALLEST = 16 << 20  # a smaller file costs little to fault in
MEMORY_SHARE = 4  # read only files under 1/4 of the memory available


def available_memory() -> int | None:
    "Bytes of memory available for the page cache (Linux), or None if unknown."
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_ahead(path: Path) -> threading.Thread | None:
    """Start reading ``path`` in order in a daemon thread, and return it;
    None for a small file, one that would not fit in a share of the memory
    available (it would only push other pages out), or one that cannot be
    opened (the caller's own open says why)."""
    try:
        size = os.stat(path).st_size
    except OSError:
        return None
    available = available_memory()
    if size < SMALLEST or available is None or size > available // MEMORY_SHARE:
        return None
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:
        return None

    def read() -> None:
        buffer = bytearray(CHUNK)
        try:
            while os.readv(descriptor, [buffer]):
                pass
        except OSError:
            pass  # only a hint to the page cache: the real reads report errors
        finally:
            os.close(descriptor)

    thread = threading.Thread(target=read, name=f"read-ahead {path.name}", daemon=True)
    thread.start()
    return thread
