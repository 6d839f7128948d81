"""Backend lookup: every backend, built-in or third-party, comes through the
``register_vector_index_backends`` hook on llm's plugin manager."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import llm
from llm.plugins import pm

from . import hookspecs
from .base import VectorIndex
from .errors import UnknownBackend, VectorIndexError

# Our own backends are ordinary plugins too, registered like llm's
# DEFAULT_PLUGINS: importing these modules must stay cheap (no faiss import).
DEFAULT_BACKEND_PLUGINS = (
    "llm_vector_index.backends.exact",
    "llm_vector_index.backends.faiss",
    "llm_vector_index.backends.hnswlib",
    "llm_vector_index.backends.chroma",
    "llm_vector_index.backends.pgvector",
    "llm_vector_index.backends.auto",
)


@dataclass(frozen=True)
class BackendInfo:
    name: str
    cls: type[VectorIndex]
    plugin: str  # the llm plugin that registered it


def add_hookspecs() -> None:
    "Teach llm's plugin manager our hook (once; pluggy refuses a second spec)."
    caller = getattr(pm.hook, "register_vector_index_backends", None)
    if caller is None or caller.spec is None:
        pm.add_hookspecs(hookspecs)


def _register_default_backends() -> None:
    for module_name in DEFAULT_BACKEND_PLUGINS:
        if pm.get_plugin(module_name) is None:
            pm.register(importlib.import_module(module_name), module_name)


def get_backends() -> dict[str, BackendInfo]:
    "All registered backends by name, built-ins first."
    add_hookspecs()
    llm.load_plugins()
    _register_default_backends()
    backends: dict[str, BackendInfo] = {}
    for impl in reversed(pm.hook.register_vector_index_backends.get_hookimpls()):
        plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)

        def register(cls, _plugin_name=plugin_name):
            if not (isinstance(cls, type) and issubclass(cls, VectorIndex)):
                raise TypeError(
                    f"Plugin {_plugin_name} registered {cls!r}, which is not a "
                    "subclass of llm_vector_index.VectorIndex"
                )
            if not getattr(cls, "name", None):
                raise TypeError(f"Backend {cls!r} has no name")
            backends.setdefault(cls.name, BackendInfo(cls.name, cls, _plugin_name))

        impl.function(register=register)
    return backends


def get_backend(name: str) -> BackendInfo:
    "The backend registered under ``name``, or ``UnknownBackend`` naming the others."
    backends = get_backends()
    try:
        return backends[name]
    except KeyError:
        available = ", ".join(sorted(backends))
        raise UnknownBackend(f"Unknown backend {name!r}; available: {available}") from None


def masked_options(backend: str, options: Mapping[str, Any]) -> dict:
    "``options`` with the values of secret options (tokens) masked, for output."
    try:
        secret = {o.name for o in get_backend(backend).cls.options if o.secret}
    except VectorIndexError:  # its plugin is not installed any more
        secret = set()
    return {key: "********" if key in secret and value else value for key, value in options.items()}
