"""vector_index_agg over rows a query selects (sql_aggregate.py), and
vector_index_encode / vector_index_decode, through a plain sqlite3
connection on a real llm database."""

import json

import llm
import numpy as np
import pytest

from llm_vector_index import Index, sql_aggregate
from llm_vector_index.testing import write_embeddings

from .conftest import snapshot, sql_connection

ROWS = 3000


@pytest.fixture
def tagged(db):
    "3,000 rows in two tags, some vectors repeated (ties), one of another width, one all zeros."
    vectors = np.random.default_rng(7).standard_normal((ROWS, 16)).astype("<f4")
    vectors[100:103] = vectors[2000]  # ties with r2000
    ids = [f"r{i:04d}" for i in range(ROWS)]
    metadatas = [{"tag": "howto" if i % 3 else "other"} for i in range(ROWS)]
    write_embeddings(db, "docs", ids, vectors, metadatas=metadatas)
    db.execute("update embeddings set embedding = x'0000' where id = 'r0001'")
    db.execute("update embeddings set embedding = ? where id = 'r0004'", [bytes(64)])
    db.conn.commit()
    return vectors


@pytest.fixture
def conn(db_path, tagged):
    with sql_connection(db_path) as connection:
        yield connection


def llm_ranking(db, query, where=lambda metadata: True):
    "llm's own scores over the rows, best first, ties in the order the scan reads them."
    rows = db.execute("select id, embedding, metadata from embeddings order by rowid").fetchall()
    scored = [
        (id, llm.cosine_similarity(llm.decode(blob), query.tolist()))
        for id, blob, metadata in rows
        if len(blob) == 4 * len(query) and any(blob) and where(json.loads(metadata))
    ]
    return sorted(scored, key=lambda pair: -pair[1])


@pytest.mark.parametrize("chunk", [sql_aggregate.CHUNK, 7])
def test_agg_is_llms_ranking_of_the_rows_sql_chose(db, conn, tagged, monkeypatch, chunk):
    monkeypatch.setattr(sql_aggregate, "CHUNK", chunk)  # small: many merges of the best
    query = tagged[2000] + 0.05
    [raw] = conn.execute(
        "select vector_index_agg(id, embedding, :q, 10) from embeddings "
        "where json_extract(metadata, '$.tag') = 'howto'",
        {"q": query.tobytes()},
    ).fetchone()
    hits = json.loads(raw)
    expected = llm_ranking(db, query, lambda metadata: metadata["tag"] == "howto")[:10]
    assert [hit["id"] for hit in hits] == [id for id, _ in expected]
    assert [hit["score"] for hit in hits] == pytest.approx([s for _, s in expected], abs=1e-12)
    # r2000 and its three copies tie: in the order the rows arrived.
    assert [hit["id"] for hit in hits[:3]] == ["r0100", "r0101", "r2000"]  # r0102: 'other'


def test_agg_over_a_whole_collection_is_llms_similar(db, conn, tagged):
    # (llm's scan raises on the other collection's blob of another width.)
    write_embeddings(db, "clean", [f"c{i}" for i in range(500)], tagged[:500])
    query = tagged[5] + 0.1
    [raw] = conn.execute(
        "select vector_index_agg(id, embedding, :q, 5) from embeddings "
        "where collection_id = (select id from collections where name = 'clean')",
        {"q": json.dumps(query.tolist())},  # a JSON array does as well as a blob
    ).fetchone()
    expected = llm.Collection("clean", db, create=False).similar_by_vector(query.tolist(), 5)
    assert [hit["id"] for hit in json.loads(raw)] == [entry.id for entry in expected]
    assert [hit["score"] for hit in json.loads(raw)] == pytest.approx(
        [entry.score for entry in expected], abs=1e-12
    )


def test_the_report_counts_what_it_skipped(conn, tagged):
    [raw] = conn.execute(
        "select vector_index_agg_report(id, embedding, :q, 3) from embeddings",
        {"q": tagged[9].tobytes()},
    ).fetchone()
    report = json.loads(raw)
    assert report["rows"] == ROWS and len(report["hits"]) == 3
    assert report["hits"][0] == {"id": "r0009", "score": pytest.approx(1.0)}
    assert report["skipped"] == {
        "not float32 values of the query's width": 1,
        "NaN, infinite or all zeros": 1,
    }


def test_one_result_per_group(conn, tagged):
    rows = conn.execute(
        "select json_extract(metadata, '$.tag') as tag, "
        "vector_index_agg(id, embedding, :q, 1) ->> '$[0].id' from embeddings "
        "group by tag order by tag",
        {"q": tagged[9].tobytes()},
    ).fetchall()
    assert rows[0][0] == "howto" and rows[1] == ("other", "r0009")
    assert rows[0][1] != "r0009"


def test_no_rows_is_null(conn, tagged):
    query = {"q": tagged[0].tobytes()}
    sql = "select {}(vector_index_agg(id, embedding, :q, 3){}) from embeddings where 0"
    assert conn.execute(sql.format("", ""), query).fetchone() == (None,)
    assert conn.execute(sql.format("coalesce", ", '[]'"), query).fetchone() == ("[]",)


@pytest.mark.parametrize(
    "compare, k, message",
    [
        (":q", 0, "k must be a whole number from 1 to 1000, got 0"),
        (":q", 1001, "k must be a whole number from 1 to 1000, got 1001"),
        (":q", "ten", "k must be a whole number from 1 to 1000, got 'ten'"),
        (
            "'not a vector'",
            5,
            "compare_embedding must be llm's float32 blob or a JSON array of numbers, got str",
        ),
        ("'[0, 0, 0]'", 5, "compare_embedding must be a non-zero vector of finite numbers"),
        ("'[1, NaN]'", 5, "compare_embedding must be a non-zero vector of finite numbers"),
        (
            "case when rowid % 2 then :q else vector_index_encode('[1, 2]') end",
            5,
            "compare_embedding and k must be the same for every row of a group",
        ),
    ],
)
def test_bad_arguments_are_an_error_value_and_change_nothing(
    db_path, conn, tagged, compare, k, message
):
    before = snapshot(db_path)
    [raw] = conn.execute(
        f"select vector_index_agg(id, embedding, {compare}, :k) from embeddings",
        {"q": tagged[0].tobytes(), "k": k},
    ).fetchone()
    assert json.loads(raw)["error"].startswith(message)
    assert snapshot(db_path) == before


def test_encode_and_decode_are_llms(conn):
    values = [0.1, -2.5, 3e38, 1e-45]
    [blob] = conn.execute("select vector_index_encode(?)", [json.dumps(values)]).fetchone()
    assert blob == llm.encode(values)
    [decoded] = conn.execute("select vector_index_decode(?)", [blob]).fetchone()
    assert json.loads(decoded) == list(llm.decode(blob))
    [back] = conn.execute("select vector_index_decode(vector_index_encode('[1, 2.5]'))").fetchone()
    assert json.loads(back) == [1.0, 2.5]
    # A stored row, as llm wrote it.
    [stored] = conn.execute(
        "select vector_index_decode(embedding) from embeddings where id = 'r0007'"
    ).fetchone()
    assert len(json.loads(stored)) == 16


@pytest.mark.parametrize(
    "call, message",
    [
        ("vector_index_encode('[1, true]')", "vector_index_encode takes a JSON array"),
        ("vector_index_encode('[]')", "vector_index_encode takes a JSON array"),
        ("vector_index_encode('[1e39]')", "vector_index_encode takes a JSON array"),
        ("vector_index_encode(x'00')", "vector_index_encode takes a JSON array"),
        ("vector_index_decode(x'000000')", "vector_index_decode takes llm's float32 blob"),
        ("vector_index_decode('[1]')", "vector_index_decode takes llm's float32 blob, got str"),
        ("vector_index_decode(NULL)", "vector_index_decode takes llm's float32 blob, got NULL"),
    ],
)
def test_encode_and_decode_refuse_what_is_no_vector(db_path, conn, call, message):
    before = snapshot(db_path)
    [raw] = conn.execute(f"select {call}").fetchone()
    assert json.loads(raw)["error"].startswith(message)
    assert snapshot(db_path) == before


@pytest.fixture
def notes(db):
    collection = llm.Collection("notes", db, model_id="hash-16")
    collection.embed_multi(
        [
            ("run", "subprocess.check_output runs a command and returns its output"),
            ("join", "os.path.join joins path components"),
            ("cats", "cats are small furry animals"),
            ("dogs", "dogs bark at the postman"),
        ],
        store=True,
    )
    return collection


def test_query_embeds_the_text_with_the_indexs_model(db_path, db, notes):
    index = Index.create("ix", ["notes"], db, backend="exact")
    index.build()
    with sql_connection(db_path) as connection:
        [raw] = connection.execute(
            "select vector_index_query('ix', :q, 2)", {"q": "a command's output"}
        ).fetchone()
    expected = index.similar("a command's output", 2)
    assert [(hit["id"], hit["collection"]) for hit in json.loads(raw)] == [
        (entry.id, "notes") for entry in expected
    ]
    assert [hit["score"] for hit in json.loads(raw)] == pytest.approx([e.score for e in expected])
    assert json.loads(raw)[0]["id"] == "run"


@pytest.mark.parametrize(
    "name, text, k, message",
    [
        ("ix", "x" * 2001, 3, "text to embed must be at most 2000 characters, got 2001"),
        ("ix", "", 3, "text must be non-empty text, got str"),
        ("ix", None, 3, "text must be non-empty text, got NULL"),
        ("ix", "cats", 1001, "k must be a whole number from 1 to 1000"),
        ("nope", "cats", 3, "Index 'nope' does not exist"),
        ("other", "cats", 3, "Embedding model 'test-model' of index 'other' is not installed"),
    ],
)
def test_query_refuses_in_one_line_and_changes_nothing(db_path, db, notes, name, text, k, message):
    Index.create("ix", ["notes"], db, backend="exact").build()
    write_embeddings(db, "vectors", ["v1", "v2"], np.eye(2, 4, dtype="<f4"))  # model test-model
    Index.create("other", ["vectors"], db, backend="exact").build()
    before = snapshot(db_path, db_path.parent / "embeddings.vector-indexes")
    with sql_connection(db_path) as connection:
        [raw] = connection.execute("select vector_index_query(?, ?, ?)", [name, text, k]).fetchone()
    assert json.loads(raw)["error"].startswith(message)
    assert snapshot(db_path, db_path.parent / "embeddings.vector-indexes") == before
