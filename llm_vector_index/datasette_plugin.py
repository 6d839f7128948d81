"""Datasette plugin entry point: the SQL functions of sql.py on every
connection, so ``datasette embeddings.db`` can query vector indexes, and a
search page for each index: a canned query with a text box (``:q``).
Loaded by Datasette only (``pip install datasette`` alongside the plugin)."""

from __future__ import annotations

import sqlite3

from datasette import hookimpl

from .paths import is_valid_name

RESULTS = 10  # hits a search page shows

# One SQL query is the whole page: the text embedded with the index's model
# (hybrid where the index has keywords), its hits joined back to llm's rows.
# An empty box shows nothing; an error (a model not installed here, text too
# long) shows as one row saying so, rather than as no results.
SEARCH_SQL = """with answer as (
  select case when trim(:q) = '' then '[]'
         else vector_index_query('{name}', :q, {results}) end as hits
)
select hit.key + 1 as rank, e.id, round(hit.value ->> 'score', 3) as score, e.content
from answer, json_each(answer.hits) hit
join collections c on c.name = hit.value ->> 'collection'
join embeddings e on e.collection_id = c.id and e.id = hit.value ->> 'id'
where json_type(answer.hits) = 'array'
union all
select null, null, null, 'Error: ' || (answer.hits ->> 'error')
from answer where json_type(answer.hits) = 'object'
order by 1"""


@hookimpl
def prepare_connection(conn):
    from .sql import register

    register(conn)


@hookimpl
def canned_queries(datasette, database):
    async def search_pages():
        try:
            result = await datasette.get_database(database).execute(
                "select name, model from vector_indexes order by name"
            )
        except sqlite3.Error:  # no indexes here (or no catalog we can read)
            return {}
        return search_queries([(row[0], row[1]) for row in result.rows])

    return search_pages


def search_queries(indexes: list[tuple[object, object]]) -> dict[str, dict]:
    """A canned query per index, ``search-NAME``. Names come from the
    database file: only a valid index name (letters, digits, ``.``, ``_``,
    ``-``: nothing that could end the SQL string) gets a page."""
    queries = {}
    for name, model in indexes:
        if not isinstance(name, str) or not is_valid_name(name):
            continue
        queries[f"search-{name}"] = {
            "sql": SEARCH_SQL.format(name=name, results=RESULTS),
            "title": f"Search {name}",
            "description": (
                f"The {RESULTS} rows nearest your text in vector index {name}"
                + (f", embedded with {model}" if isinstance(model, str) else "")
            ),
            "params": ["q"],
            "hide_sql": True,
        }
    return queries
