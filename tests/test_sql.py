"""SQL functions (sql.py) through a plain sqlite3 connection and through
Datasette's own client, joined back to llm's embeddings table."""

import asyncio
import importlib.metadata
import json

import pytest
from datasette.app import Datasette

from llm_vector_index import Index
from llm_vector_index.testing import write_embeddings

from .conftest import snapshot, sql_connection

JOINED = """
    select hit.value ->> 'id' as id, hit.value ->> 'score' as score, e.content
    from json_each({call}) hit
    join collections c on c.name = hit.value ->> 'collection'
    join embeddings e on e.collection_id = c.id and e.id = hit.value ->> 'id'
    order by hit.key
"""


@pytest.fixture
def built(db, vectors_collection):
    index = Index.create("ix", ["vecs"], db, backend="faiss")
    index.build()
    return index


@pytest.fixture
def conn(db_path, built):
    with sql_connection(db_path) as connection:
        yield connection


def test_similar_joined_back_to_embeddings(conn, built):
    rows = conn.execute(JOINED.format(call="vector_index_similar('ix', 'v007', 5)")).fetchall()
    expected = built.similar_by_id("v007", 5)
    assert [row[0] for row in rows] == [entry.id for entry in expected]
    assert [row[1] for row in rows] == pytest.approx([entry.score for entry in expected])
    assert [row[2] for row in rows] == [entry.content for entry in expected]
    [raw] = conn.execute("select vector_index_similar('ix', 'v007', 1)").fetchone()
    [hit] = json.loads(raw)
    assert hit == {
        "id": expected[0].id,
        "score": pytest.approx(expected[0].score),
        "collection": "vecs",
    }


def test_search_by_llm_blob_or_json_array(conn, built, vectors_collection):
    _ids, vectors = vectors_collection
    rows = conn.execute(
        JOINED.format(
            call=(
                "vector_index_search('ix', (select embedding from embeddings where id = 'v011'), 3)"
            )
        )
    ).fetchall()
    assert rows[0][0] == "v011" and rows[0][1] == pytest.approx(1.0)
    assert [row[0] for row in rows] == [e.id for e in built.similar_by_vector(vectors[11], 3)]
    as_json = json.dumps(vectors[11].tolist())
    [raw] = conn.execute("select vector_index_search('ix', ?, 3)", [as_json]).fetchone()
    assert [hit["id"] for hit in json.loads(raw)] == [row[0] for row in rows]


@pytest.mark.parametrize(
    "call, message",
    [
        ("vector_index_similar('nope', 'v001', 5)", "Index 'nope' does not exist"),
        ("vector_index_similar('ix', 'missing', 5)", "ID 'missing' not found in index 'ix'"),
        ("vector_index_similar('ix', 'v001', 0)", "k must be a whole number from 1 to 1000, got 0"),
        (
            "vector_index_similar('ix', 'v001', 'ten')",
            "k must be a whole number from 1 to 1000, got 'ten'",
        ),
        ("vector_index_similar('ix', null, 5)", "id must be text, got NULL"),
        ("vector_index_similar(null, 'v001', 5)", "Index name must be text, got NULL"),
        (
            "vector_index_search('ix', x'00000000', 5)",
            "embedding must be a blob of 24 float32 values (96 bytes), got 4 bytes",
        ),
        (
            "vector_index_search('ix', 'not json', 5)",
            "embedding must be llm's float32 blob or a JSON array of numbers, got str",
        ),
        (
            "vector_index_search('ix', '[1, 2]', 5)",
            "Query vector has 2 dimensions, index 'ix' has 24",
        ),
        ("vector_index_search('ix', zeroblob(96), 5)", "Query vector is all zeros"),
        (
            "vector_index_search('ix', '[1' || printf('%.400c', '0') || ', 2]', 5)",
            "Query vector must be a flat sequence of numbers",
        ),
        (
            "vector_index_search('ix', '[[1, 2], [3, 4]]', 5)",
            "Query vector must be a flat sequence of numbers",
        ),
        (
            "vector_index_search('ix', '[true, false]', 5)",
            "embedding must be llm's float32 blob or a JSON array of numbers, got str",
        ),
    ],
)
def test_bad_input_is_one_clear_error(conn, db_path, built, call, message):
    before = snapshot(db_path, built.path)
    [raw] = conn.execute(f"select {call}").fetchone()
    error = json.loads(raw)
    assert list(error) == ["error"] and error["error"].startswith(message), error
    assert snapshot(db_path, built.path) == before


def test_a_rebuilt_index_is_reopened_and_a_stale_one_never_built_inside_a_query(
    conn, db, db_path, built, vectors_collection
):
    _ids, vectors = vectors_collection
    far = -vectors[3]

    def first():
        found = conn.execute(
            "select vector_index_search('ix', ?, 1)", [json.dumps(far.tolist())]
        ).fetchone()[0]
        return json.loads(found)[0]

    assert first()["id"] != "late"
    write_embeddings(db, "vecs", ["late"], far[None])
    generation = built.record.generation
    # Stale: answered from the last build; the query wrote nothing.
    assert first()["id"] != "late"
    assert Index("ix", db).record.generation == generation
    Index("ix", db).build()  # another connection builds
    assert first()["id"] == "late"


@pytest.fixture
def datasette_plugin():
    "Datasette's tests load no installed plugins either: register ours as its entry point would."
    from datasette.plugins import pm

    from llm_vector_index import datasette_plugin

    [entry_point] = [
        e for e in importlib.metadata.entry_points(group="datasette") if e.name == "vector_index"
    ]
    assert entry_point.load() is datasette_plugin  # what an installed Datasette loads
    pm.register(datasette_plugin, name="test-vector-index")
    yield
    pm.unregister(name="test-vector-index")


def test_datasette_runs_them(db_path, built, datasette_plugin):
    datasette = Datasette([str(db_path)])
    sql = JOINED.format(call="vector_index_similar('ix', 'v007', 3)")

    async def run():
        return await datasette.client.get(
            f"/{db_path.stem}.json", params={"sql": sql, "_shape": "array"}
        )

    response = asyncio.run(run())
    assert response.status_code == 200, response.text
    rows = response.json()
    expected = built.similar_by_id("v007", 3)
    assert [row["id"] for row in rows] == [entry.id for entry in expected]
    assert [row["content"] for row in rows] == [entry.content for entry in expected]
    assert rows[0]["score"] == pytest.approx(expected[0].score)
