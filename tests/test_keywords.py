"""The keyword index beside the vector index, and keyword and hybrid queries
(keywords.py, hybrid.py, fusion.py), on real SQLite and real tantivy."""

import json
import re
import shutil

import llm
import pytest

from llm_vector_index import Index
from llm_vector_index.errors import VectorIndexError
from llm_vector_index.fusion import fuse

from .conftest import snapshot

BACKENDS = ["exact", "faiss", "hnswlib"]


def keyword_ids(index, text, number=10, **kwargs):
    return [entry.id for entry in index.similar(text, number, mode="keyword", **kwargs)]


@pytest.fixture
def notes(db):
    collection = llm.Collection("notes", db, model_id="hash-16")
    collection.embed_multi_with_metadata(
        [
            ("run", "subprocess.check_output runs a command and returns its output", {"k": "a"}),
            ("join", "os.path.join joins path components", {"k": "a"}),
            ("cats", "cats are small furry animals", {"k": "b"}),
            ("dogs", "dogs bark at the postman", {"k": "b"}),
            ("checks", "check the output of each test", {"k": "b"}),
        ],
        store=True,
    )
    return collection


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_keyword_index_finds_the_words_and_hybrid_is_the_default(db, notes, backend):
    index = Index.create("n", ["notes"], db, backend=backend, keywords=True)
    report = index.build()
    assert report.without_text == 0 and index.record.keyword_rows == 5
    assert keyword_ids(index, "check_output")[0] == "run"
    assert keyword_ids(index, "postman") == ["dogs"]
    assert keyword_ids(index, "nothing matches this") == []
    found = index.similar("furry cats", 3)  # hybrid: an index with keywords
    assert found[0].id == "cats"
    assert found[0].fused is not None and found[0].keyword_rank == 1
    # score stays llm's cosine for the query, whichever side found the row
    cosine = {e.id: e.score for e in notes.similar("furry cats", number=5)}
    assert all(entry.score == pytest.approx(cosine[entry.id]) for entry in found)
    vector = index.similar("furry cats", 5, mode="vector")
    assert [e.id for e in vector] == [e.id for e in notes.similar("furry cats", number=5)]
    assert all(e.fused is None and e.keyword_rank is None for e in vector)


def test_keyword_mode_embeds_nothing(db, notes):
    index = Index.create("n", ["notes"], db, backend="exact", keywords=True)
    index.build()
    db.execute("update collections set model = 'not-installed' where name = 'notes'")
    index.record.model = "not-installed"
    assert keyword_ids(index, "bark") == ["dogs"]
    [entry] = index.similar("bark", mode="keyword")
    assert entry.score is None and entry.keyword_score > 0 and entry.content.startswith("dogs")
    with pytest.raises(VectorIndexError, match="not-installed"):
        index.similar("bark", mode="hybrid")


@pytest.mark.parametrize("backend", BACKENDS)
def test_builds_keep_the_keywords_in_step(db, notes, backend):
    index = Index.create("n", ["notes"], db, backend=backend, keywords=True)
    index.build()
    notes.embed("cats", "cats chase mice", store=True)  # changed
    notes.embed("new", "a parrot repeats words", store=True)  # added
    db.execute("delete from embeddings where id = 'dogs'")  # deleted
    notes.embed("silent", None, store=False) if False else None
    report = index.build()
    assert not report.full and report.added == 2 and report.deleted == 1
    assert keyword_ids(index, "furry") == []
    assert keyword_ids(index, "mice") == ["cats"]
    assert keyword_ids(index, "parrot") == ["new"]
    assert keyword_ids(index, "postman") == []
    assert index.record.keyword_rows == 5
    reopened = Index("n", db)  # another process's view: the saved files
    assert keyword_ids(reopened, "parrot") == ["new"]


def test_rows_without_text_take_part_through_the_vector_side(db, notes):
    notes.embed_multi([("bare", "text that is not stored")], store=False)
    index = Index.create("n", ["notes"], db, backend="exact", keywords=True)
    report = index.build()
    assert report.without_text == 1 and index.record.keyword_rows == 5 and index.count() == 6
    assert "bare" in [e.id for e in index.similar("text that is not stored", 6)]
    assert "bare" not in keyword_ids(index, "stored")


def test_filters_apply_to_the_keyword_side_and_number_rows_come_back(db, notes):
    index = Index.create("n", ["notes"], db, backend="exact", keywords=True)
    index.build()
    assert keyword_ids(index, "output", where={"k": "b"}) == ["checks"]
    assert keyword_ids(index, "output", prefix="ru") == ["run"]
    hybrid = index.similar("output", 4, where={"k": "b"})
    assert {e.id for e in hybrid} == {"cats", "dogs", "checks"}  # all that match
    assert hybrid[0].id == "checks"
    assert len(index.similar("output", 5)) == 5


@pytest.mark.parametrize("backend", BACKENDS)
def test_rows_deleted_since_the_build_never_come_back_and_number_rows_do(db, backend):
    "An index behind its collections: winners that are gone make each side look deeper."
    many = llm.Collection("many", db, model_id="hash-16")
    many.embed_multi(
        [(f"r{i:03d}", f"row {i} of shared words {'apple ' * (i % 7)}") for i in range(400)],
        store=True,
    )
    index = Index.create("m", ["many"], db, backend=backend, keywords=True, refresh="manual")
    index.build()
    # Each side's first 60: every candidate a first look at depth 50 finds.
    gone = {entry.id for entry in index.similar("apple words", 60, mode="vector")}
    gone |= set(keyword_ids(index, "apple words", 60))
    db.conn.executemany("delete from embeddings where id = ?", [(id,) for id in gone])
    db.conn.commit()
    for mode in ("hybrid", "keyword"):
        found = [e.id for e in index.similar("apple words", 10, mode=mode)]
        assert len(found) == 10 and not set(found) & gone, (mode, found)
    assert len(index.similar("apple words", 400 - len(gone))) == 400 - len(gone)


def test_equal_scores_come_in_label_order_wherever_tantivy_keeps_them(db):
    "Rows rewritten since (their old labels, a new segment) tie with the rest."
    same = llm.Collection("same", db, model_id="hash-16")
    same.embed_multi([(f"r{i:03d}", "the same words") for i in range(100)], store=True)
    index = Index.create("s", ["same"], db, backend="exact", keywords=True)
    index.build()
    same.embed_multi([(f"r{i:03d}", "the same words.") for i in range(10)], store=True)
    assert index.build().added == 10
    expected = [f"r{i:03d}" for i in range(10)]
    assert keyword_ids(index, "same words", 10) == expected
    assert [e.id for e in index.similar("same words", 10, mode="keyword")] == expected


@pytest.mark.parametrize(
    "text",
    [
        '"check_output',
        "check* OR -output",
        "NEAR(check output)",
        "+check -output",
        "text:check label:1 names:check_output",
        "((check output",
        "output)",
        "AND",
        '"',
        "*",
        "-",
        "check^3 output~2",
        "\x00check",
        "check\u200boutput",
    ],
)
def test_query_syntax_is_only_words(db, notes, text):
    index = Index.create("n", ["notes"], db, backend="exact", keywords=True)
    index.build()
    found = keyword_ids(index, text)  # never raises
    # the same rows as the words alone: no character is an operator
    assert found == keyword_ids(index, re.sub(r"[^\w]+", " ", text))


def test_operators_are_words_too(db, notes):
    index = Index.create("n", ["notes"], db, backend="exact", keywords=True)
    index.build()
    assert keyword_ids(index, "AND") == ["run"]  # the one text with "and"
    assert keyword_ids(index, "-postman") == ["dogs"]  # not "everything but"
    assert keyword_ids(index, "NOT cats") == ["cats"]


def test_keywords_are_added_to_an_index_and_dropped(db, notes, db_path):
    index = Index.create("n", ["notes"], db, backend="faiss")
    index.build()
    with pytest.raises(VectorIndexError, match="no keyword index for --mode keyword: add one"):
        index.similar("bark", mode="keyword")
    index.set_keywords(True)
    with pytest.raises(VectorIndexError, match="run llm index build n"):
        index.similar("bark", mode="keyword")
    assert index.build().full  # the next build fills it
    assert keyword_ids(index, "bark") == ["dogs"]
    index.set_keywords({"fusion": "rrf", "weight": 0.7})  # same text: nothing to rebuild
    assert index.record.keyword_rows == 5 and not index.build().full
    assert index.record.keywords["fusion"] == "rrf"
    index.set_keywords(False)
    assert not (index.path / "keywords").exists()
    vector = index.similar("bark", 2)  # vector again
    assert [e.id for e in vector] == [e.id for e in notes.similar("bark", number=2)]
    assert vector[0].fused is None


def test_bad_keyword_settings_change_nothing(db, notes, db_path):
    index = Index.create("n", ["notes"], db, backend="exact", keywords=True)
    index.build()
    before = snapshot(db_path, index.path)
    for bad, message in [
        ({"fusion": "sum"}, "fusion must be one of rrf, convex"),
        ({"weight": 2}, "weight must be a number from 0 to 1"),
        ({"depth": 0}, "depth must be a whole number from 1 to 10000"),
        ({"tokenizer": "x"}, "Unknown keyword tokenizer 'x'"),
        ({"colour": 1}, "Unknown fusion setting 'colour'"),
    ]:
        with pytest.raises(VectorIndexError, match=message):
            index.set_keywords(bad)
        with pytest.raises(VectorIndexError, match=message):
            Index.create("m", ["notes"], db, keywords=bad)
        if "tokenizer" not in bad:
            with pytest.raises(VectorIndexError, match=message):
                index.similar("bark", **bad)
    with pytest.raises(VectorIndexError, match="mode must be one of vector, keyword, hybrid"):
        index.similar("bark", mode="fuzzy")
    assert snapshot(db_path, index.path) == before
    assert not Index.exists(db, "m")


def test_a_damaged_or_missing_keyword_index_is_one_line_and_a_build_repairs_it(db, notes):
    index = Index.create("n", ["notes"], db, backend="exact", keywords=True)
    index.build()
    shutil.rmtree(index.path / "keywords")
    fresh = Index("n", db)
    with pytest.raises(VectorIndexError, match=r"files are damaged .*keyword index is missing"):
        fresh.similar("bark", mode="keyword")
    assert fresh.build().full
    assert keyword_ids(fresh, "bark") == ["dogs"]
    (fresh.path / "keywords" / "meta.json").write_text("{not json")
    again = Index("n", db)
    with pytest.raises(VectorIndexError, match=r"files are damaged .*keyword index"):
        again.similar("bark", mode="keyword")
    assert again.build().full and keyword_ids(again, "bark") == ["dogs"]


def test_the_catalog_refuses_crafted_keyword_settings(db, notes):
    index = Index.create("n", ["notes"], db, backend="exact", keywords=True)
    index.build()
    for value in ['{"tokenizer": "../x"}', '{"fusion": "rrf", "depth": 1e9}', "[1]", "nope"]:
        db.execute("update vector_indexes set keywords = ? where name = 'n'", [value])
        with pytest.raises(VectorIndexError, match=r"damaged catalog row .*keywords"):
            Index("n", db)


def test_fusion_rankings():
    vector = [("a", 0.9), ("b", 0.8), ("c", 0.1)]
    keyword = [("c", 12.0), ("d", 3.0)]
    rrf = fuse(vector, keyword, "rrf", 0.5)
    assert [f.key for f in rrf][:2] == ["c", "a"]  # found by both sides
    assert rrf[0].vector_rank == 3 and rrf[0].keyword_rank == 1
    convex = fuse(vector, keyword, "convex", 0.5)
    # a: 0.5 * 1 + 0; c: 0.5 * 0 (lowest cosine) + 0.5 * 1: a tie, in the vector side's order
    assert [(f.key, f.value) for f in convex][:2] == [("a", 0.5), ("c", 0.5)]
    assert [f.key for f in fuse(vector, keyword, "convex", 1.0)][:3] == ["a", "b", "c"]
    assert [f.key for f in fuse(vector, keyword, "rrf", 0.0)][:2] == ["c", "d"]
    assert json.dumps([f.value for f in fuse([], [], "rrf", 0.5)]) == "[]"


def run(*args, input=None):
    from click.testing import CliRunner

    from llm_vector_index.cli import index_group

    return CliRunner().invoke(index_group, [str(arg) for arg in args], input=input)


def test_the_cli_creates_queries_and_changes_keywords(db, notes, db_path):
    created = run("create", "n", "notes", "-b", "exact", "--keywords", "--build", "-d", db_path)
    assert created.exit_code == 0, created.output
    assert "5 indexed, 0 removed, 5 rows" in created.stderr
    found = run("similar", "n", "-c", "check_output", "--mode", "keyword", "-d", db_path)
    rows = [json.loads(line) for line in found.output.splitlines()]
    assert rows[0]["id"] == "run" and rows[0]["keyword_rank"] == 1
    assert rows[0]["score"] is None and rows[0]["keyword_score"] > 0
    hybrid = run("similar", "n", "-c", "furry cats", "-n", "2", "--fusion", "rrf", "-d", db_path)
    first = json.loads(hybrid.output.splitlines()[0])
    assert first["id"] == "cats" and {"fused", "vector_rank", "keyword_rank"} <= set(first)
    plain = run("similar", "n", "-c", "furry cats", "-n", "1", "--plain", "-d", db_path)
    assert plain.output.startswith("cats (") and "vector #1, keyword #1]" in plain.output
    vector = run("similar", "n", "-c", "furry cats", "--mode", "vector", "-d", db_path)
    assert set(json.loads(vector.output.splitlines()[0])) == {"id", "score", "content", "metadata"}
    assert run("list", "-d", db_path).output.startswith("n: exact + keywords over notes\n")
    shown = json.loads(run("show", "n", "-d", db_path).output)
    assert shown["keywords"] == {
        "tokenizer": "names",
        "fusion": "convex",
        "weight": 0.4,
        "depth": None,
        "rows": 5,
    }
    changed = run("keywords", "n", "--weight", "0.7", "-d", db_path)
    assert (
        changed.exit_code == 0
        and "weight 0.7" in changed.stderr
        and "it is built" in changed.stderr
    )
    dropped = run("keywords", "n", "--drop", "-d", db_path)
    assert (
        dropped.exit_code == 0
        and json.loads(run("show", "n", "-d", db_path).output)["keywords"] is None
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["similar", "n", "v1", "--mode", "keyword"], "A query by ID is a vector query"),
        (["similar", "n", "-c", "x", "--mode", "fuzzy"], "Invalid value for '--mode'"),
        (["similar", "n", "-c", "x", "--weight", "2"], "Invalid value for '--weight'"),
        (["similar", "n", "-c", "x", "--depth", "0"], "Invalid value for '--depth'"),
        (["keywords", "n", "--mode", "keyword"], "--mode is for queries"),
        (["keywords", "n", "--tokenizer", "x"], "Invalid value for '--tokenizer'"),
    ],
)
def test_cli_refusals_change_nothing(db, notes, db_path, args, message):
    run("create", "n", "notes", "-b", "exact", "--build", "-d", db_path)
    before = snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes")
    result = run(*args, "-d", db_path)
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output
    assert snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes") == before


def test_llm_similar_and_collection_similar_use_a_default_index_with_keywords(db, notes, db_path):
    from click.testing import CliRunner
    from llm.cli import cli as llm_cli

    index = Index.create("n", ["notes"], db, backend="exact", keywords=True, default=True)
    index.build()
    hybrid = [e.id for e in index.similar("postman", 3)]
    assert [e.id for e in notes.similar("postman", number=3)] == hybrid
    assert [e.id for e in notes.similar("postman", number=3, mode="keyword")] == ["dogs"]
    vector = notes.similar("postman", number=3, mode="vector")
    assert [e.id for e in vector] == [e.id for e in notes.similar("postman", number=3, index=False)]
    result = CliRunner().invoke(
        llm_cli, ["similar", "notes", "-c", "postman", "-n", "3", "-d", str(db_path)]
    )
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["id"] for line in result.output.splitlines()] == hybrid
    with pytest.raises(ValueError, match="mode='keyword' needs an index with keywords"):
        notes.similar("postman", mode="keyword", index=False)


def test_the_toolbox_fragments_and_sql_take_a_mode(db, notes, db_path, monkeypatch):
    import sqlite3

    from llm_vector_index import sql
    from llm_vector_index.retrieval import VectorIndex, load_fragments

    monkeypatch.setenv("LLM_EMBEDDINGS_DB", str(db_path))
    Index.create("n", ["notes"], db, backend="exact", keywords=True).build()
    toolbox = VectorIndex("n")
    [hit] = toolbox.search("postman", 1, mode="keyword")
    assert hit["id"] == "dogs" and hit["score"] is None
    assert toolbox.search("postman", 1)[0]["score"] is not None  # hybrid: a cosine
    with pytest.raises(VectorIndexError, match="mode must be one of"):
        toolbox.search("postman", 1, mode="exact")
    fragments = load_fragments("n:keyword:2:check_output")
    assert [f.source for f in fragments] == ["run", "checks"]
    assert [f.source for f in load_fragments("n:keyword:postman")] == ["dogs"]
    conn = sqlite3.connect(db_path)
    sql.register(conn)
    [[found]] = conn.execute("select vector_index_keywords('n', 'postman', 5)").fetchall()
    [hit] = json.loads(found)
    assert hit["id"] == "dogs" and hit["score"] is None and hit["keyword_rank"] == 1
    [[found]] = conn.execute(
        "select vector_index_hybrid('n', 'postman', embedding, 2) from embeddings "
        "where id = 'dogs'"
    ).fetchall()
    hits = json.loads(found)
    assert hits[0]["id"] == "dogs" and hits[0]["fused"] is not None
    assert hits[0]["score"] == pytest.approx(1.0)
    for call, message in [
        ("vector_index_keywords('n', '', 5)", "text must be non-empty text"),
        ("vector_index_keywords('n', 3, 5)", "text must be non-empty text, got int"),
        ("vector_index_keywords('n', 'x', 5000)", "k must be"),
        ("vector_index_hybrid('n', 'x', 'nope', 5)", "embedding must be"),
    ]:
        [[answer]] = conn.execute(f"select {call}").fetchall()
        assert message in json.loads(answer)["error"]


def test_evaluate_judges_each_mode_on_labelled_queries(db, notes, db_path, tmp_path):
    run("create", "n", "notes", "-b", "exact", "--keywords", "--build", "-d", db_path)
    qrels = tmp_path / "judged.jsonl"
    qrels.write_text(
        "\n".join(
            json.dumps(q)
            for q in [
                {"query": "check_output", "relevant": ["run"]},
                {"query": "the postman", "relevant": ["dogs"]},
                {"query": "furry animals", "relevant": {"cats": 2, "dogs": 1}},
            ]
        )
        + "\n"
    )
    result = run("evaluate", "n", "--qrels", qrels, "--json", "-d", db_path)
    assert result.exit_code == 0, result.output
    judged = {r["mode"]: r for r in json.loads(result.output)["n"]}
    assert set(judged) == {"vector", "keyword", "hybrid"}
    assert judged["keyword"]["mrr@10"] == pytest.approx((1 + 1 + 1) / 3)
    assert all(
        0 <= r["ndcg@10"] <= 1 and r["p50_ms"] > 0 and r["queries"] == 3 for r in judged.values()
    )
    # TREC qrels and a queries file give the same numbers
    trec, topics = tmp_path / "qrels.txt", tmp_path / "topics.tsv"
    trec.write_text("1 0 run 1\n2 0 dogs 1\n3 0 cats 2\n3 0 dogs 1\n3 0 join 0\n")
    topics.write_text("1\tcheck_output\n2\tthe postman\n3\tfurry animals\n")
    again = run(
        "evaluate", "n", "--qrels", trec, "--qrels-queries", topics, "--json", "-d", db_path
    )
    assert {r["mode"]: r["ndcg@10"] for r in json.loads(again.output)["n"]} == {
        mode: r["ndcg@10"] for mode, r in judged.items()
    }
    swept = run(
        "evaluate", "n", "--qrels", qrels, "--sweep", "--plot", tmp_path / "w.png", "-d", db_path
    )
    assert swept.exit_code == 0, swept.output
    assert "| hybrid rrf w=0.7 |" in swept.output and "| keyword |" in swept.output
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json\n", "judged.jsonl:1: expected"),
        ('{"query": "x", "relevant": "run"}\n', "judged.jsonl:1: expected"),
        ('{"query": "", "relevant": ["run"]}\n', "judged.jsonl:1: expected"),
        ('{"query": "x", "relevant": {"run": "high"}}\n', "judged.jsonl:1: expected"),
        ('{"query": "x", "relevant": []}\n', "no query with a relevant id"),
    ],
)
def test_bad_labelled_queries_are_one_line(db, notes, db_path, tmp_path, text, message):
    run("create", "n", "notes", "-b", "exact", "--keywords", "--build", "-d", db_path)
    qrels = tmp_path / "judged.jsonl"
    qrels.write_text(text)
    before = snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes")
    result = run("evaluate", "n", "--qrels", qrels, "-d", db_path)
    assert result.exit_code == 1 and message in result.output and "Traceback" not in result.output
    assert snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes") == before


def test_binary_content_is_a_vector_query_unless_a_mode_is_asked_for(db, notes):
    index = Index.create("n", ["notes"], db, backend="exact", keywords=True)
    index.build()
    # a vector query: it reaches the model (which here takes no binary data)
    with pytest.raises(VectorIndexError, match="does not support binary data"):
        index.similar(b"postman", 1)
    with pytest.raises(VectorIndexError, match="need text, not binary content"):
        index.similar(b"postman", 1, mode="hybrid")


def test_without_tantivy_installed_keywords_are_refused_in_one_line(
    db, notes, db_path, monkeypatch
):
    import sys

    index = Index.create("n", ["notes"], db, backend="exact")
    index.build()
    before = snapshot(db_path, index.path)
    monkeypatch.setitem(sys.modules, "tantivy", None)  # as if not installed
    for attempt in (
        lambda: Index.create("m", ["notes"], db, keywords=True),
        lambda: index.set_keywords(True),
    ):
        with pytest.raises(
            VectorIndexError, match=r"need tantivy: llm install " r"'llm-vector-index\[keywords\]'"
        ):
            attempt()
    assert snapshot(db_path, index.path) == before and not Index.exists(db, "m")


def test_hybrid_over_several_collections_fuses_the_same_row_once(db, notes):
    other = llm.Collection("more", db, model_id="hash-16")
    other.embed_multi(
        [("parrot", "a parrot repeats output"), ("run", "run output twice")], store=True
    )
    index = Index.create("n", ["notes", "more"], db, backend="exact", keywords=True)
    index.build()
    both = index.similar("output", 10)
    keys = [(e.collection, e.id) for e in both]
    assert len(keys) == len(set(keys)) == 7 and ("more", "run") in keys and ("notes", "run") in keys
    found = [e for e in both if e.keyword_rank is not None]
    assert all(e.vector_rank is not None for e in found)  # all 7 on both sides: fused once
    only_more = index.similar("output", 10, collection="more")
    assert {e.id for e in only_more} == {"parrot", "run"} and all(
        e.collection is None for e in only_more
    )
    assert all(e.vector_rank is not None and e.keyword_rank is not None for e in only_more)


@pytest.fixture(scope="module")
def ranked(tmp_path_factory):
    "A keyword index of 6,000 rows whose scores for 'common rare w3' spread and tie."
    import numpy as np

    from llm_vector_index.keywords import KeywordIndex

    keyword_index = KeywordIndex.create(tmp_path_factory.mktemp("kw") / "keywords")
    texts = [
        "common " * (1 + i % 3) + ("rare " if i % 7 == 0 else "") + f"w{i % 50} filler{i % 11}"
        for i in range(6000)
    ]
    # labels out of the order the documents are stored in, as after rewrites:
    # tantivy's order of equal scores is then not the labels' order
    labels = np.random.default_rng(0).permutation(6000)
    keyword_index.add(labels.tolist(), [texts[label] for label in labels], replace=False)
    keyword_index.commit()
    yield keyword_index
    keyword_index.close()


# (allowed rows, k, which): with 6,000 rows these take each way of
# filtering: the labels matched in the query (a few), tantivy's term set
# (more, and k large against them), the unfiltered ranking read deep enough
# (many), past a cut-off inside a run of equal scores ("tied": a long run
# that starts past the 100th row, and the lowest rows), and that ranking
# given up for the term set when the allowed rows rank low ("lowest").
@pytest.mark.parametrize(
    "size,k,which",
    [
        (5, 10, "random"),
        (200, 10, "random"),
        (300, 500, "random"),
        (1500, 10, "random"),
        (5999, 3, "random"),
        (1500, 5, "tied"),
        (1500, 10, "lowest"),
        (300, 10, "lowest"),
        (100, 10, "runs"),
        (120, 40, "runs"),
        (600, 10, "run"),
        (600, 60, "run"),
        (3000, 10, "random"),
        (3000, 10, "tied"),
        (2500, 60, "random"),
        (2500, 10, "lowest"),
    ],
)
def test_a_filtered_keyword_search_is_the_unfiltered_ranking_filtered(ranked, size, k, which):
    import numpy as np

    scores, labels = ranked.search("common rare w3", 6000)  # every row matches, in order
    if which == "random":
        allowed = np.random.default_rng(size + k).choice(6000, size, replace=False)
    elif which == "lowest":  # the worst ranked: reading the ranking deep finds too few
        allowed = labels[-size:]
    elif which == "run":  # one run: a range over the label's fast field
        allowed = np.arange(2000, 2000 + size)
    elif which == "runs":  # consecutive labels, as an id prefix gives: ranges in the query
        starts = np.random.default_rng(size).choice(5900, 8, replace=False)
        allowed = np.concatenate(
            [np.arange(s, s + n) for s, n in zip(starts, [1, 2, 2, 3, size // 2, 5, 8, 10])]
        )
    else:
        starts = np.flatnonzero(np.diff(scores, prepend=np.inf) != 0)
        lengths = np.diff(starts, append=len(scores))
        start = next(s for s, n in zip(starts, lengths) if s > 100 and n >= 40)
        run = labels[scores == scores[start]]
        allowed = np.concatenate([run, labels[-(size - len(run)) :]])
    keep = np.isin(labels, allowed)
    asked = AskedOnly(allowed)
    for given in (allowed, asked):  # the labels, or only whether some are allowed
        found = ranked.search("common rare w3", k, given)
        assert found[1].tolist() == labels[keep][:k].tolist()
        assert found[0].tolist() == scores[keep][:k].tolist()
    assert len(set(scores[keep][: k + 1].tolist())) < k + 1  # ties at stake
    # Many allowed rows are checked among the ranked ones, not read, as long
    # as the ranking need not be read too deep for them.
    assert asked.read == (k > 40 or size <= 2000 or which == "lowest")


class AskedOnly:
    """Allowed rows as a filter's first query knows them (keywords.Allowed):
    not read yet, asked about label by label; reading them is counted."""

    def __init__(self, labels):
        from llm_vector_index.keyword_filter import LabelSet

        self.labels = LabelSet(labels)
        self.read = False

    def known(self):
        return None

    def more_than(self, limit):
        return len(self.labels) > limit

    def label_set(self):
        self.read = True
        return self.labels

    def allows(self, labels):
        return self.labels.allows(labels)


def test_a_first_filtered_keyword_query_checks_ranked_rows_and_a_repeated_one_reads_them(
    db, monkeypatch
):
    """A filter allowing many rows is not read whole for its first keyword
    query: the ranked rows are looked up in the label map instead. Asked
    again (the database unchanged), its labels are read once and kept.
    Either way the answer is the unfiltered ranking, filtered. (Where the
    last full build ordered the labels, a prefix's are read from their
    runs' ends instead: tests/test_ordered_labels.py; this index's are
    not, as in a database no full build has touched since catalog m008.)"""
    from llm_vector_index.filters import Filter

    many = llm.Collection("many", db, model_id="hash-16")
    many.embed_multi_with_metadata(
        [
            (
                f"{'a' if i % 4 else 'b'}{i:04d}",
                f"row {i} words {'apple ' * (i % 7)}{'pear' if i % 3 == 0 else ''}",
                {"m": i % 2},
            )
            for i in range(3200)
        ],
        store=True,
    )
    index = Index.create("m", ["many"], db, backend="exact", keywords=True)
    index.build()
    db.execute("update vector_indexes set ordered_labels = null")
    db.conn.commit()
    index.reload()
    everything = index.similar("apple pear", 3200, mode="keyword")
    reads = []
    read = Filter.matching_labels
    monkeypatch.setattr(
        Filter, "matching_labels", lambda self, *args: reads.append(self) or read(self, *args)
    )

    def found(**kwargs):
        return [
            (e.id, e.keyword_score)
            for e in index.similar("apple pear", 10, mode="keyword", **kwargs)
        ]

    # (prefix, where, whether the first query reads the labels): 2,400 rows
    # start with a (more than keyword_filter.READ_LIMIT), 1,200 of them with m 1
    # (counted as 2,400: the metadata filter is not counted), 800 with b.
    for prefix, where, read_first in (("A", {}, False), ("a", {"m": 1}, False), ("b", {}, True)):
        expected = [
            (e.id, e.keyword_score)
            for e in everything
            if e.id.startswith(prefix.lower())
            and all(e.metadata[key] == value for key, value in where.items())
        ][:10]
        reads.clear()
        assert found(prefix=prefix, where=where) == expected
        assert len(reads) == read_first, prefix
        assert found(prefix=prefix, where=where) == expected
        assert found(prefix=prefix, where=where) == expected
        assert len(reads) == 1, prefix  # read once, by the second query or the first


def test_a_filtered_search_reads_the_ranking_only_where_that_costs_less():
    """keyword_filter.from_ranking's choice at 100k rows: a run of 1,000
    labels (an id prefix allowing 1%) goes into the query as terms, one run
    of 10,000 (10%) as a range over the fast field, 10,000 in eight runs
    and 30,000 in one are found by reading the ranking (232 and 98 rows),
    scattered ones too; a first query with many allowed asks about ranked
    rows only."""
    import numpy as np

    from llm_vector_index.keyword_filter import InQuery, LabelSet, from_ranking

    ranking = np.random.default_rng(0).permutation(100_000)
    depths = []

    def read(depth):
        depths.append(depth)
        return np.linspace(10, 1, 100_000)[:depth], ranking[:depth]

    def chosen(labels):
        depths.clear()
        return from_ranking(read, 100_000, 10, labels, True)

    one_percent = LabelSet(np.arange(5_000, 6_000))
    assert chosen(one_percent) == InQuery(one_percent, scan=False) and depths == []
    one_run = LabelSet(np.arange(20_000, 30_000))
    assert chosen(one_run) == InQuery(one_run, scan=True) and depths == []
    eight_runs = LabelSet(
        np.concatenate([np.arange(i, i + 1250) for i in range(0, 80_000, 10_000)])
    )
    _scores, labels = chosen(eight_runs)
    assert depths == [232] and len(labels) >= 10
    assert (
        labels.tolist()
        == [label for label in ranking[:232].tolist() if eight_runs.allows(np.array([label]))[0]][
            : len(labels)
        ]
    )
    _scores, labels = chosen(LabelSet(np.arange(30_000, 60_000)))
    assert depths == [98] and len(labels) >= 10
    _scores, labels = chosen(LabelSet(ranking[::7][:3_000]))
    assert len(depths) == 1 and len(labels) >= 10

    class FirstQuery(LabelSet):
        def known(self):
            return None

        def label_set(self):
            raise AssertionError("read whole")

    _scores, labels = chosen(FirstQuery(np.arange(20_000, 30_000)))
    assert depths == [232] and len(labels) >= 10
