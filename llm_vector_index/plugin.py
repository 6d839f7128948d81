"The llm plugin entry point: adds the ``llm index`` command group."

from .hookspecs import hookimpl
from .registry import add_hookspecs

add_hookspecs()


@hookimpl
def register_commands(cli):
    from .cli import index_group

    cli.add_command(index_group, name="index")
