"""Which servers this machine lets an index contact, and with which secret.

A database is a file people share. A catalog row naming a Chroma server and
an environment variable must not make a query here send that variable's
secret, or the query's vector, to a host the database's author chose: a
crafted default index would do it from ``llm similar``, and from a
read-only Datasette by any visitor's SELECT. So a backend that declares a
``remote()`` (base.py) is opened from a catalog row only where llm's user
directory (this machine, this user) holds an approval naming exactly that
database file, that index, and the backend, address and secret variables
the row names now:

- ``llm index create NAME ... -o host H`` approves what it was given: the
  user typed the host and the variable here;
- ``llm index approve NAME`` approves an index that arrived in a database
  from elsewhere, once the user has read what it names;
- ``llm index drop`` withdraws it. A row edited later to name another host,
  port, scheme or variable matches no approval, nor does a copy of the
  database at another path.

Without one the backend is never constructed (no connection is made, no
secret is read): ``NotApproved``, one line, and ``llm similar`` answers by
brute force. The file holds names and addresses only, never a secret.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import llm
from sqlite_utils import Database

from . import paths
from .base import Remote, VectorIndex
from .errors import NotApproved, VectorIndexError
from .storage import atomic_write, exclusive_lock

FILE_NAME = "vector-index-approvals.json"


def approvals_path() -> Path:
    return llm.user_dir() / FILE_NAME


def remote_of(
    backend_class: type[VectorIndex], options: Mapping[str, Any], dimensions: int | None
) -> Remote | None:
    "The server an index of these (stored) options would contact, if any."
    # A bound classmethod has __func__; typeshed does not say so.
    if backend_class.remote.__func__ is VectorIndex.remote.__func__:  # type: ignore[attr-defined]
        return None  # keeps to its folder: no need to parse its options
    return backend_class.remote(backend_class.validate_options(options, dimensions))


def is_approved(db: Database, index_name: str, remote: Remote) -> bool:
    wanted = _entry(db, index_name, remote)
    return any(_same(entry, wanted) for entry in _read())


def require(db: Database, index_name: str, remote: Remote | None) -> None:
    "Refuse, before anything connects, a server this machine has not approved."
    if remote is None or is_approved(db, index_name, remote):
        return
    raise NotApproved(
        f"Index {index_name!r} names a {remote.describe()}, which this machine has "
        f"not approved for it: if you trust it, run llm index approve {index_name}"
    )


def approve(db: Database, index_name: str, remote: Remote) -> None:
    "Record that this index of this database may contact ``remote``."
    entry = _entry(db, index_name, remote)
    with _locked():
        kept = [e for e in _read() if not _same_index(e, entry)]
        _write([*kept, {**entry, "approved": time.time()}])


def withdraw(db: Database, index_name: str) -> bool:
    "Forget every approval of this index of this database; True if there was one."
    if not approvals_path().exists():
        return False
    entry = {"database": _database(db), "index": index_name}
    with _locked():
        entries = _read()
        kept = [e for e in entries if not _same_index(e, entry)]
        if len(kept) != len(entries):
            _write(kept)
    return len(kept) != len(entries)


def _database(db: Database) -> str:
    path = paths.database_path(db)
    return str(path.resolve()) if path is not None else ":memory:"


def _entry(db: Database, index_name: str, remote: Remote) -> dict[str, Any]:
    return {
        "database": _database(db),
        "index": index_name,
        "backend": remote.backend,
        "address": remote.address,
        "secrets": list(remote.secrets),
    }


_COMPARED = ("database", "index", "backend", "address", "secrets")


def _same(entry: Any, wanted: dict[str, Any]) -> bool:
    return isinstance(entry, dict) and all(entry.get(key) == wanted[key] for key in _COMPARED)


def _same_index(entry: Any, wanted: dict[str, Any]) -> bool:
    return isinstance(entry, dict) and all(
        entry.get(key) == wanted[key] for key in ("database", "index")
    )


def _read() -> list:
    path = approvals_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        raise VectorIndexError(
            f"Cannot read the approved servers in {path} ({error}): fix or delete it"
        ) from None
    entries = data.get("approvals") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise VectorIndexError(f"{path} does not hold a list of approvals: fix or delete it")
    return entries


def _write(entries: list) -> None:
    text = json.dumps({"approvals": entries}, indent=2) + "\n"
    atomic_write(approvals_path(), lambda f: f.write(text.encode()))


def _locked():
    path = approvals_path()
    return exclusive_lock(path.with_name(f".{path.name}.lock"))
