"""The hook a plugin implements to add vector index backends.

It lives on llm's own plugin manager, so a backend is just another llm plugin:
``llm install`` installs it, ``llm plugins`` lists it.
"""

from pluggy import HookimplMarker, HookspecMarker

hookspec = HookspecMarker("llm")
hookimpl = HookimplMarker("llm")


@hookspec
def register_vector_index_backends(register):
    "Register VectorIndex subclasses, e.g. register(MyIndex)"
