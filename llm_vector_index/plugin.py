"""The llm plugin entry point: the ``llm index`` command group, the
``VectorIndex`` toolbox (``llm -T``) and the ``index:`` fragment loader."""

from .hookspecs import hookimpl
from .registry import add_hookspecs

add_hookspecs()


@hookimpl
def register_commands(cli):
    from .cli import index_group

    cli.add_command(index_group, name="index")


@hookimpl
def register_tools(register):
    from .retrieval import VectorIndex

    register(VectorIndex)


@hookimpl
def register_fragment_loaders(register):
    from .retrieval import load_fragments

    register("index", load_fragments)
