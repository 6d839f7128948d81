"""Chroma client handling shared by the chroma backend and the migration:
connecting (a local directory or a server), collection names, and cosine
collections. ``import chromadb`` (about a second) happens only in here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .base import require
from .errors import BackendUnavailable, VectorIndexError, first_line

NAME_RULE = "3-512 characters of [a-zA-Z0-9._-], starting and ending with a letter or digit"
_VALID_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]$")


def chromadb():
    return require("chromadb", "chroma")


def connect(
    *,
    path: Path | None = None,
    host: str = "",
    port: int = 8000,
    ssl: bool = False,
    headers: dict[str, str] | None = None,
):
    "A client for a local directory (``path``) or a server (``host``)."
    module = chromadb()
    from chromadb.config import Settings

    quiet = Settings(anonymized_telemetry=False)
    if not host:
        if path is None:
            raise TypeError("connect() needs a path or a host")
        try:
            Path(path).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise VectorIndexError(
                f"Cannot use {path} as a Chroma directory: {error.strerror or error}"
            ) from None
        try:
            return module.PersistentClient(path=str(path), settings=quiet)
        except BaseException:
            forget_local_system(str(path))
            raise
    try:
        client = module.HttpClient(
            host=host, port=port, ssl=ssl, headers=headers or {}, settings=quiet
        )
        client.heartbeat()
    except Exception as error:  # noqa: BLE001 (refused, DNS, TLS, auth: one line, no traceback)
        raise BackendUnavailable(
            f"Cannot reach Chroma server at {host}:{port}: {first_line(error)}"
        ) from None
    return client


def forget_local_system(path: str) -> None:
    """Chroma keeps one System per directory for the whole process, even one
    whose start failed (a damaged store): stop and drop it, so that the
    directory is opened afresh (a store rebuilt in its place, or a new
    ``ef_search``, which Chroma reads only when it loads a graph). Every
    client on the old System is dead afterwards."""
    from chromadb.api.shared_system_client import SharedSystemClient

    system = SharedSystemClient._identifier_to_system.pop(path, None)
    SharedSystemClient._identifier_to_refcount.pop(path, None)
    if system is not None:
        with suppress(Exception):
            system.stop()


@contextmanager
def server_errors(host: str, port: int) -> Iterator[None]:
    """A server that fails mid-way (it died, the network dropped, it refused)
    as one clear ``BackendUnavailable``, not a client library's traceback."""
    if not host:
        yield
        return
    try:
        yield
    except VectorIndexError:
        raise
    except Exception as error:  # noqa: BLE001 (whatever the client raises: one line)
        raise BackendUnavailable(
            f"Chroma server at {host}:{port} failed: {first_line(error)}"
        ) from None


def token_headers(token: str, header: str = "Authorization") -> dict[str, str]:
    "Auth headers for a token: ``Authorization: Bearer T`` or ``X-Chroma-Token: T``."
    if not token:
        return {}
    return {header: f"Bearer {token}" if header.lower() == "authorization" else token}


def is_valid_name(name: str) -> bool:
    return bool(_VALID_NAME.match(name)) and ".." not in name


def derive_name(text: str, suffix: str = "") -> str:
    "A valid collection name made from any text (stable for the same input)."
    stem = re.sub(r"[^a-zA-Z0-9._-]+", "-", text).strip("._-")
    stem = re.sub(r"\.{2,}", ".", stem)[: 500 - len(suffix)].strip("._-")
    name = f"{stem}{suffix}" if stem else f"llm{suffix}"
    return name if len(name) >= 3 else f"llm-{name}"


def space_of(collection) -> str | None:
    "The distance space an existing Chroma collection was created with."
    configuration = getattr(collection, "configuration_json", None) or {}
    space = (configuration.get("hnsw") or {}).get("space")
    if space is None and collection.metadata:
        space = collection.metadata.get("hnsw:space")
    return space or "l2"  # Chroma's default


def cosine_collection(client, name: str, **hnsw: Any):
    """Get or create a collection in cosine space with no embedding function
    (Chroma defaults to l2, which cannot change later; its default embedding
    function would download a model). Refuses an existing non-cosine one."""
    collection = client.get_or_create_collection(
        name,
        configuration={"hnsw": {"space": "cosine", **hnsw}},
        embedding_function=None,
    )
    space = space_of(collection)
    if space != "cosine":
        raise VectorIndexError(
            f"Chroma collection {name!r} exists with distance space {space!r}; "
            "llm's similarity is cosine: choose another --chroma-collection"
        )
    return collection
