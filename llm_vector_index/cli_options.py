"""What every ``llm index`` command shares: the group that turns library
errors into one line, ``-d/--database``, and opening the database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click
from click_default_group import DefaultGroup
from sqlite_utils import Database

from .database import open_embeddings
from .errors import VectorIndexError
from .fusion import FUSIONS, MODES


class IndexGroup(DefaultGroup):
    "A DefaultGroup that reports library errors as one clean line."

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VectorIndexError as error:
            raise click.ClickException(str(error)) from None
        except sqlite3.OperationalError as error:
            # e.g. a read-only database file: SQLite refuses before anything is written
            raise click.ClickException(f"Database error: {error}") from None
        except PermissionError as error:
            raise click.ClickException(f"Permission denied: {error.filename or error}") from None
        except BrokenPipeError:
            raise  # output piped to a command that stopped reading: not ours to report
        except OSError as error:  # a full disk, a read-only mount, anywhere
            where = f": {error.filename}" if error.filename else ""
            raise click.ClickException(f"{error.strerror or error}{where}") from None


def database_option(function):
    return click.option(
        "-d",
        "--database",
        type=click.Path(dir_okay=False, path_type=Path),
        envvar="LLM_EMBEDDINGS_DB",
        help="Embeddings database (default: llm's embeddings.db)",
    )(function)


def fusion_options(function):
    "``--mode`` and the fusion settings of a keyword or hybrid query."
    for option in reversed(
        [
            click.option(
                "--mode",
                type=click.Choice(MODES),
                help="vector, keyword or hybrid (default: hybrid with keywords)",
            ),
            click.option(
                "--fusion",
                type=click.Choice(FUSIONS),
                help="How hybrid fuses the two rankings (default: convex)",
            ),
            click.option(
                "--weight",
                type=click.FloatRange(0, 1),
                help="The vector side's share in hybrid (default 0.4; 0.5: alike)",
            ),
            click.option(
                "--depth",
                type=click.IntRange(1, 10_000),
                help="Candidates from each side (default: max(4 x N, 50))",
            ),
        ]
    ):
        function = option(function)
    return function


def open_database(path: Path | None) -> Database:
    "The embeddings database, refusing (without creating) a missing one."
    try:
        return open_embeddings(path)
    except VectorIndexError as error:
        raise click.ClickException(str(error)) from None
