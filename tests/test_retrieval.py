"""Retrieval for models, end to end through the llm CLI: the VectorIndex
toolbox (llm -T) and the index: fragment loader (llm -f), with llm-echo
replaying the tool calls a prompt asks for and llm logging what it did."""

import json

import llm_echo
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from llm.plugins import pm
from sqlite_utils import Database

from llm_vector_index import Index, plugin
from llm_vector_index.retrieval import VectorIndex, load_fragments

from .conftest import snapshot


@pytest.fixture(autouse=True)
def plugins():
    "llm's tests load no installed plugins: register ours and llm-echo."
    pm.register(plugin, name="test-vector-index")
    pm.register(llm_echo, name="test-llm-echo")
    try:
        yield
    finally:
        pm.unregister(name="test-vector-index")
        pm.unregister(name="test-llm-echo")


@pytest.fixture
def docs_index(db, db_path, text_collection, monkeypatch):
    monkeypatch.setenv("LLM_EMBEDDINGS_DB", str(db_path))
    index = Index.create("docs-idx", ["docs"], db, backend="exact")
    index.build()
    return index


def ask(*args):
    result = CliRunner().invoke(llm_cli, list(args), catch_exceptions=False)
    return result


def calling(*calls):
    "A prompt that makes llm-echo call these tools."
    return json.dumps(
        {
            "prompt": "look it up",
            "tool_calls": [{"name": name, "arguments": arguments} for name, arguments in calls],
        }
    )


def logged_tool_results(user_path):
    "What llm logged as the tools' answers, in order."
    logs = Database(user_path / "logs.db")
    return [
        json.loads(row["payload"])["output"]
        for row in logs.query("select payload from parts where type = 'tool_result' order by id")
    ]


def test_a_model_searches_an_index_through_llm_T(docs_index, texts, user_path):
    result = ask(
        "-m",
        "echo",
        "-T",
        'VectorIndex("docs-idx")',
        calling(
            ("VectorIndex_search", {"query": "cat dog", "number": 3}),
            ("VectorIndex_get", {"id": "doc-005"}),
        ),
    )
    assert result.exit_code == 0, result.output
    search, get = logged_tool_results(user_path)
    hits = json.loads(search)
    expected = docs_index.similar("cat dog", 3)
    assert [hit["id"] for hit in hits] == [entry.id for entry in expected]
    assert [hit["score"] for hit in hits] == [round(entry.score, 4) for entry in expected]
    first = hits[0]
    assert set(first) == {"id", "score", "content", "truncated", "metadata"}
    assert first["content"] == texts[first["id"]] and first["truncated"] is False
    assert first["metadata"] == {"n": int(first["id"][4:])}
    assert json.loads(get) == {"id": "doc-005", "content": texts["doc-005"], "metadata": {"n": 5}}
    # and the model was given them: llm-echo repeats its tool results
    assert json.dumps(search) in result.output


def test_content_is_trimmed_and_filters_apply(docs_index, texts, user_path):
    result = ask(
        "-m",
        "echo",
        "-T",
        'VectorIndex({"name": "docs-idx", "max_chars": 4})',
        calling(
            ("VectorIndex_search", {"query": "cat", "number": 50, "where": {"n": 7}}),
        ),
    )
    assert result.exit_code == 0, result.output
    [hits] = [json.loads(output) for output in logged_tool_results(user_path)]
    assert hits == [
        {
            "id": "doc-007",
            "score": hits[0]["score"],
            "content": texts["doc-007"][:4],
            "truncated": True,
            "metadata": {"n": 7},
        }
    ]


@pytest.mark.parametrize(
    "toolbox, call, message",
    [
        (
            'VectorIndex("docs-idx")',
            ("VectorIndex_search", {"query": "cat", "where": {"a'b": 1}}),
            'Error: Invalid metadata key "a\'b"',
        ),
        (
            'VectorIndex("docs-idx")',
            ("VectorIndex_search", {"query": "cat", "number": 0}),
            "Error: number must be a whole number from 1 to 50, got 0",
        ),
        (
            'VectorIndex("docs-idx")',
            ("VectorIndex_search", {"query": "  "}),
            "Error: query must be a non-empty text",
        ),
        (
            'VectorIndex("docs-idx")',
            ("VectorIndex_get", {"id": "missing"}),
            "Error: ID 'missing' not found in index 'docs-idx'",
        ),
    ],
)
def test_errors_a_model_causes_come_back_to_it_as_one_line(
    docs_index, db_path, user_path, toolbox, call, message
):
    before = snapshot(db_path, docs_index.path)
    result = ask("-m", "echo", "-T", toolbox, calling(call))
    assert result.exit_code == 0, result.output
    [output] = logged_tool_results(user_path)
    assert output.startswith(message) and "\n" not in output, output
    assert snapshot(db_path, docs_index.path) == before


@pytest.mark.parametrize(
    "toolbox, message",
    [
        (
            'VectorIndex("nope")',
            "Error: Index 'nope' does not exist (llm index list shows the indexes)\n",
        ),
        (
            'VectorIndex({"name": "docs-idx", "database": "/nowhere/x.db"})',
            "Error: Database not found: /nowhere/x.db\n",
        ),
    ],
)
def test_a_toolbox_that_cannot_work_is_said_before_the_prompt(
    docs_index, db_path, toolbox, message
):
    "The user's mistake, not the model's: llm says it when -T is read (issue 20, item 7)."
    before = snapshot(db_path, docs_index.path)
    result = ask("-m", "echo", "-T", toolbox, calling(("VectorIndex_search", {"query": "cat"})))
    assert result.exit_code == 1
    assert result.output.endswith(message) and result.output.count("\n") == 1, result.output
    assert snapshot(db_path, docs_index.path) == before


def test_the_fragment_loader_puts_the_top_hits_in_the_prompt(docs_index, texts, user_path):
    result = ask("-m", "echo", "-f", "index:docs-idx:2:cat dog", "answer using these")
    assert result.exit_code == 0, result.output
    expected = docs_index.similar("cat dog", 2)
    prompt = json.loads(result.output)["prompt"]
    for entry in expected:
        assert texts[entry.id] in prompt
    logs = Database(user_path / "logs.db")
    sources = [
        row["source"]
        for row in logs.query(
            "select f.source from fragments f join turn_fragments t on t.fragment_id = f.id "
            "order by t.[order]"
        )
    ]
    assert sources == [entry.id for entry in expected]


def test_fragment_queries_may_hold_colons_and_default_to_five_hits(docs_index):
    assert len(load_fragments("docs-idx:cat: dog")) == 5
    assert [f.source for f in load_fragments("docs-idx:3:cat: dog")] == [
        e.id for e in docs_index.similar("cat: dog", 3)
    ]


@pytest.mark.parametrize(
    "argument, message",
    [
        ("nope:cat", "Index 'nope' does not exist"),
        ("docs-idx", "Use index:NAME:QUERY or index:NAME:N:QUERY"),
        ("docs-idx:3:", "No query text after index:docs-idx:3:"),
        ("docs-idx:99:cat", "number must be a whole number from 1 to 50, got 99"),
    ],
)
def test_bad_fragment_arguments_are_one_line_errors(docs_index, db_path, argument, message):
    before = snapshot(db_path, docs_index.path)
    result = CliRunner().invoke(llm_cli, ["-m", "echo", "-f", f"index:{argument}", "x"])
    assert result.exit_code == 1
    assert f"Could not load fragment index:{argument}: {message}" in result.output
    assert "Traceback" not in result.output
    assert snapshot(db_path, docs_index.path) == before


def test_fragments_need_stored_content(db, db_path, monkeypatch):
    from llm_vector_index.testing import clustered_vectors, write_embeddings

    write_embeddings(db, "bare", ["a", "b"], clustered_vectors(2, 16), model="hash-16")
    Index.create("bare-idx", ["bare"], db, backend="exact").build()
    monkeypatch.setenv("LLM_EMBEDDINGS_DB", str(db_path))
    with pytest.raises(Exception, match="none has stored content: embed with --store"):
        load_fragments("bare-idx:anything")


def test_the_toolbox_from_python(docs_index, db_path, texts):
    toolbox = VectorIndex("docs-idx", database=str(db_path), max_chars=1000)
    hits = toolbox.search("cat dog", number=2)
    assert [hit["id"] for hit in hits] == [e.id for e in docs_index.similar("cat dog", 2)]
    assert toolbox.get("doc-001")["content"] == texts["doc-001"]
    names = sorted(tool.name for tool in toolbox.tools())
    assert names == ["VectorIndex_get", "VectorIndex_search"]
