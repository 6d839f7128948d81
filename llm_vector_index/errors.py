"""Errors raised by llm-vector-index.

Every error a user can cause is a ``VectorIndexError``; the CLI turns each into
one line on stderr and exit code 1.
"""


class VectorIndexError(Exception):
    "Base class for errors a user can cause and fix."


class UnknownBackend(VectorIndexError):
    "No backend of that name is registered."


class InvalidOptions(VectorIndexError, ValueError):
    "An option is unknown, of the wrong type or out of range."


class InvalidIndexName(VectorIndexError, ValueError):
    "The index name is empty or would escape the index folder."


class UnsafePath(VectorIndexError):
    "A path would leave the index folder, or a folder there is not the plugin's."


class DamagedFiles(VectorIndexError):
    "An index's files are damaged or missing: a full rebuild replaces them."


class BackendUnavailable(VectorIndexError):
    "A backend's server cannot be reached (down, refused, wrong address)."


class DamagedCatalog(VectorIndexError):
    """A catalog row of the index holds a value it cannot have (a crafted or
    damaged database): it can only be dropped."""


class NotApproved(VectorIndexError):
    """An index names a server (or a secret) this machine has not approved
    for it: see approvals.py."""


class IndexExists(VectorIndexError):
    "An index of that name already exists."


class UnknownCollection(VectorIndexError):
    "A collection named for an index does not exist."


class ModelMismatch(VectorIndexError):
    "Collections (or a collection and its index) use different embedding models."


class DimensionMismatch(VectorIndexError, ValueError):
    "A vector does not have the index's number of dimensions."


class IdNotFound(VectorIndexError, KeyError):
    "An ID is not in any collection the index covers."

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class IndexBusy(VectorIndexError):
    "Another process is building this index."


class CannotWrite(VectorIndexError):
    """A build could not write the index's files or the catalog (a full disk,
    a read-only mount or database, no permission): what was saved before is
    intact, and queries answer from it, saying it is behind."""


class NotBuilt(VectorIndexError):
    "The index has never been built."


def first_line(error: BaseException) -> str:
    "An exception from another library as one line: its first line, or its type."
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_count(value: object, name: str, most: int | None = None) -> int:
    """A count given by a caller (results, queries, a batch): a whole number of
    at least 1, and at most ``most`` where the caller caps it. ``True`` is no count."""
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < 1
        or (most is not None and value > most)
    ):
        bound = f"from 1 to {most}" if most is not None else "of at least 1"
        raise VectorIndexError(f"{name} must be a whole number {bound}, got {value!r}")
    return value
