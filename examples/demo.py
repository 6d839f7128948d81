"""The main job on real text: the Python standard library's docstrings,
embedded with a real sentence model (all-MiniLM-L6-v2, int8 ONNX, offline),
searched through every backend beside llm's own brute force.

Run it with ``make demo`` (which installs the project and the example model
plugin in examples/llm-minilm-onnx). It drives the real ``llm`` command, as a
user would, and prints each command before its output:

1. ``llm embed-multi`` the docstrings into a fresh database (DEMO_DIR);
2. ``llm index create ... --build`` one index per backend;
3. natural queries through ``llm index similar -c``, plain ``llm similar``
   with a default index, a ``--where module ...`` filter and a prefix; an
   index with keywords, where a name the vectors miss is found by its words
   and a paraphrase the words miss by its meaning, and hybrid finds both;
4. re-embeds an entry with new text and deletes two, builds incrementally,
   and shows that the answers follow;
5. a table measured right here: per backend, time per query and recall@10
   against llm's own brute force, and the speed-up.

Environment: DEMO_SIZE (default: the public API, about 4,600 entries; a
number; or ``all``, about 11,000), DEMO_DIR (default ``demo-data``).
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import stdlib_corpus

MODEL = "minilm"
COLLECTION = "stdlib"
BACKENDS = {  # index name: (backend, its options)
    "stdlib-exact": ("exact", []),
    "stdlib-faiss": ("faiss", []),
    "stdlib-hnswlib": ("hnswlib", []),
    "stdlib-chroma": ("chroma", []),
}
SHOWN_QUERIES = [
    "parse a URL into its parts",
    "run a command and capture its output",
    "compare two files line by line",
    "a queue that threads can share",
]
# Held out: none of them is stored. They measure recall against llm's own
# brute force and the time per query.
MEASURED_QUERIES = [
    *SHOWN_QUERIES,
    "read a compressed archive",
    "send an email with an attachment",
    "format a date as text",
    "generate a random number between two values",
    "walk a directory tree recursively",
    "encode bytes as base64",
    "serialize an object to JSON",
    "match text against a regular expression",
    "create a temporary file that is deleted afterwards",
    "measure how long a piece of code takes",
    "open a network connection to a server",
    "read a CSV file row by row",
    "compute a hash of a file's contents",
    "copy a directory and everything in it",
    "schedule a coroutine to run later",
    "parse command line arguments",
    "log a warning message",
    "wrap long text to a given width",
    "find files whose names match a pattern",
    "convert a string to a decimal number exactly",
    "store key value pairs on disk",
    "decode a web page's HTML entities",
    "sort a list while keeping it sorted on insert",
    "lock shared state between threads",
]
# Queries where one side alone misses the entry meant and hybrid search
# finds it (benchmarks/hybrid.py measures this over a thousand queries).
RESCUES = [  # (query, the entry meant)
    ("use_errno", "ctypes.CFUNCTYPE"),  # a name: the words find it
    ("tell whether a year has 366 days", "calendar.isleap"),  # no word in common
]
WIDTH = 110


def shown(path: Path | str) -> str:
    "A path as the user would type it: relative to here when it is below here."
    path = Path(path)
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def heading(text: str) -> None:
    print(f"\n\033[1m## {text}\033[0m", flush=True)


def llm(*args: str, show: bool = True, echo: bool = True) -> str:
    "Run the real `llm` command (this venv's), printing the command and its output."
    if show:
        print(
            f"\n$ llm {shlex.join(shown(a) if a.startswith('/') else a for a in args)}", flush=True
        )
    result = subprocess.run([sys.executable, "-m", "llm", *args], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"llm {shlex.join(args)} failed:\n{result.stderr}")
    if echo:
        for line in (result.stderr + result.stdout).splitlines():
            print(f"  {line}"[:WIDTH])
    return result.stdout


def hits(*args: str) -> list[dict]:
    "Run a similar command (JSON lines out) and print its hits one per line."
    rows = json_lines(llm(*args, echo=False))
    for row in rows:
        print(f"  {row['score']:.3f}  {row['id']:<40} {row['content']}"[:WIDTH])
    return rows


def embed_corpus(work: Path, size: str | None) -> list[dict]:
    entries = stdlib_corpus.sample(size)
    corpus = work / "docstrings.jsonl"
    with open(corpus, "w") as out:
        for entry in entries:
            out.write(json.dumps({"id": entry["id"], "content": entry["content"]}) + "\n")
    print(
        f"{len(entries):,} docstrings from {stdlib_corpus.sysconfig.get_paths()['stdlib']}"
        f" (first paragraph of each; DEMO_SIZE={size or 'public'})"
    )
    started = time.perf_counter()
    llm("embed-multi", COLLECTION, str(corpus), "--format", "nl", "-m", MODEL, "--store")
    seconds = time.perf_counter() - started
    print(f"  {len(entries):,} embedded in {seconds:.1f}s ({len(entries) / seconds:,.0f}/s)")
    # llm embed-multi stores no metadata: module and kind go in with one UPDATE.
    from sqlite_utils import Database

    db = Database(os.environ["LLM_EMBEDDINGS_DB"])
    with db.conn:
        db.conn.executemany(
            "update embeddings set metadata = ? where id = ? and collection_id = "
            "(select id from collections where name = ?)",
            [(json.dumps(e["metadata"]), e["id"], COLLECTION) for e in entries],
        )
    return entries


def measure(queries: list[str]) -> list[dict]:
    """Per backend: median ms per query (in this process, indexes held open as
    an application would) and recall@10 against llm's brute force."""
    import llm as llm_library
    from sqlite_utils import Database

    from llm_vector_index import Index

    db = Database(os.environ["LLM_EMBEDDINGS_DB"])
    collection = llm_library.Collection(COLLECTION, db)
    vectors = list(collection.model().embed_multi(queries))

    def timed(search) -> tuple[float, list[list]]:
        times, results = [], []
        for vector in vectors:
            started = time.perf_counter()
            entries = search(vector)
            times.append(time.perf_counter() - started)
            results.append(entries)
        return statistics.median(times) * 1000, results

    def recall_at_10(found: list, expected: list) -> float:
        """Share of llm's top 10 found. Docstrings repeat (``queue.Queue.put``
        and ``asyncio.queues.Queue.put`` share theirs), so a row that ties
        with llm's 10th score is as right as the one llm happened to list."""
        ids = {entry.id for entry in expected}
        cutoff = expected[-1].score - 1e-9
        return min(1.0, sum(e.id in ids or e.score >= cutoff for e in found) / len(expected))

    brute_ms, truth = timed(lambda v: collection.similar_by_vector(v, 10, index=False))
    rows = [{"name": "llm similar (brute force)", "ms": brute_ms, "recall": 1.0}]
    for name in BACKENDS:
        index = Index(name, db)
        index.similar_by_vector(vectors[0], 10)  # open it once, as an app would
        ms, found = timed(lambda v, index=index: index.similar_by_vector(v, 10))
        recall = statistics.mean(map(recall_at_10, found, truth))
        rows.append({"name": name, "ms": ms, "recall": recall})
        index.close()
    for row in rows:
        row["speedup"] = brute_ms / row["ms"]
    return rows


def print_table(rows: list[dict], entries: int, queries: int) -> None:
    print(
        f"\n{entries:,} docstrings, {queries} held-out queries, median per query, "
        "recall@10 against llm's brute force"
    )
    print(f"\n| {'index':<26} | {'ms/query':>9} | {'recall@10':>9} | {'speed-up':>8} |")
    print(f"|{'-' * 28}|{'-' * 10}:|{'-' * 10}:|{'-' * 9}:|")
    for row in rows:
        print(
            f"| {row['name']:<26} | {row['ms']:>9.2f} | {row['recall']:>9.3f} | "
            f"{row['speedup']:>7.0f}x |"
        )


def json_values(text: str) -> list:
    "Every JSON value printed one after another (llm-echo prints one a response)."
    decoder, values, position = json.JSONDecoder(), [], 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        value, position = decoder.raw_decode(text, position)
        values.append(value)
    return values


def hybrid(ids: set[str]) -> None:
    heading("Words and meaning together: keyword, vector and hybrid search")
    llm("index", "create", "stdlib-words", COLLECTION, "--keywords", "--build")
    for text, meant in RESCUES:
        if meant not in ids:
            continue  # a small DEMO_SIZE
        places = {}
        for mode in ("vector", "keyword", "hybrid"):
            found = [
                row["id"]
                for row in json_lines(
                    llm(
                        "index",
                        "similar",
                        "stdlib-words",
                        "-c",
                        text,
                        "--mode",
                        mode,
                        "-n",
                        "10",
                        echo=False,
                    )
                )
            ]
            places[mode] = f"#{found.index(meant) + 1}" if meant in found else "not in the top 10"
        print(
            f"  {meant}, the entry meant: "
            + ", ".join(f"{mode} {place}" for mode, place in places.items())
        )
        assert places["hybrid"] != "not in the top 10", f"hybrid search missed {meant}"


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.strip()]


def retrieval(ids: set[str]) -> None:
    heading("Put it to work: a model's tool, a prompt's fragments, SQL")
    if "echo" not in llm("models", show=False, echo=False):
        print("(llm-echo is not installed: `make demo` installs it; skipped)")
        return
    print(
        "(llm-echo stands in for a model, offline: it makes the tool call its prompt asks "
        "for and repeats what it was given)"
    )
    call = {
        "prompt": "How do I run a command and capture its output?",
        "tool_calls": [
            {
                "name": "VectorIndex_search",
                "arguments": {"query": "run a command and capture its output", "number": 3},
            }
        ],
    }
    output = llm("-m", "echo", "-T", 'VectorIndex("stdlib-faiss")', json.dumps(call), echo=False)
    [result] = [r for value in json_values(output) for r in value.get("tool_results", [])]
    print("  the tool answered the model with:")
    for hit in json.loads(result["output"]):
        print(f"  {hit['score']:.3f}  {hit['id']:<40} {hit['content']}"[:WIDTH])
    output = llm(
        "-m",
        "echo",
        "-f",
        "index:stdlib-faiss:3:compare two files line by line",
        "Which function should I use?",
        echo=False,
    )
    print("  the prompt the model received:")
    for line in json_values(output)[0]["prompt"].splitlines():
        print(f"    {line}"[:WIDTH])
    import sqlite3

    from llm_vector_index.sql import register

    sql = (
        "select hit.value ->> 'score', e.id, e.content "
        "from json_each(vector_index_similar('stdlib-faiss', ?, 3)) hit "
        "join embeddings e on e.id = hit.value ->> 'id' order by hit.key"
    )
    anchor = "subprocess.check_output" if "subprocess.check_output" in ids else sorted(ids)[0]
    print(f"\n$ sqlite3 (with llm_vector_index.sql.register): {sql.replace('?', repr(anchor))}")
    conn = sqlite3.connect(os.environ["LLM_EMBEDDINGS_DB"])
    register(conn)
    rows = conn.execute(sql, [anchor]).fetchall()
    conn.close()
    for score, id, content in rows:
        print(f"  {score:.3f}  {id:<40} {content}"[:WIDTH])


def main() -> None:
    work = Path(os.environ.get("DEMO_DIR", "demo-data")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("embeddings.db", "embeddings.db.vector-indexes"):
        if (work / stale).exists():
            subprocess.run(["rm", "-rf", str(work / stale)], check=True)
    os.environ["LLM_USER_PATH"] = str(work / "llm-user")
    os.environ["LLM_EMBEDDINGS_DB"] = str(work / "embeddings.db")
    size = os.environ.get("DEMO_SIZE")

    heading("A real model, offline")
    llm("embed-models", "default", show=False, echo=False)
    models = llm("embed-models", show=False, echo=False)
    if "minilm-l6-v2-int8" not in models:
        sys.exit("The example model is not installed: run `make demo`")
    print(next(line for line in models.splitlines() if "minilm" in line))

    heading("Embed the standard library's docstrings with llm embed-multi")
    entries = embed_corpus(work, size)
    ids = {entry["id"] for entry in entries}

    heading("One index per backend")
    for name, (backend, options) in BACKENDS.items():
        llm("index", "create", name, COLLECTION, "--backend", backend, *options, "--build")
    llm("index", "list")

    heading("Ask in plain words")
    print("(each command prints llm's JSON lines; shown here as score, id, content)")
    for text in SHOWN_QUERIES:
        hits("index", "similar", "stdlib-faiss", "-c", text, "-n", "3")

    heading("llm's own `llm similar`, through a default index")
    llm("index", "default", COLLECTION, "stdlib-faiss")
    hits("similar", COLLECTION, "-c", "a queue that threads can share", "-n", "3")

    heading("Filters: metadata with --where, ids with --prefix")
    module = (
        "pathlib"
        if any(e["metadata"]["module"] == "pathlib" for e in entries)
        else entries[0]["metadata"]["module"]
    )
    hits(
        "index",
        "similar",
        "stdlib-hnswlib",
        "-c",
        "read a whole file as text",
        "--where",
        "module",
        module,
        "-n",
        "3",
    )
    prefix = "shutil." if any(i.startswith("shutil.") for i in ids) else entries[0]["id"][:2]
    hits(
        "index",
        "similar",
        "stdlib-exact",
        "-c",
        "copy a directory and everything in it",
        "--prefix",
        prefix,
        "-n",
        "3",
    )

    hybrid(ids)
    retrieval(ids)

    heading("Change one entry, delete two, build again: only they are read")
    before = hits("index", "similar", "stdlib-faiss", "-c", SHOWN_QUERIES[3], "-n", "3")
    deleted = [row["id"] for row in before[:2]]
    changed = "json.dumps" if "json.dumps" in ids else sorted(ids - set(deleted))[0]
    new_text = "Parse a URL into its parts: scheme, host, path, query and fragment."
    llm(
        "embed",
        COLLECTION,
        changed,
        "-c",
        new_text,
        "--store",
        "--metadata",
        json.dumps({"module": changed.rsplit(".", 1)[0], "kind": "changed"}),
    )
    print(
        f"\n$ sqlite-utils query {shown(os.environ['LLM_EMBEDDINGS_DB'])} "
        f"\"delete from embeddings where id in ({', '.join(map(repr, deleted))})\""
    )
    from sqlite_utils import Database

    db = Database(os.environ["LLM_EMBEDDINGS_DB"])
    with db.conn:
        db.conn.executemany("delete from embeddings where id = ?", [(i,) for i in deleted])
    for name in BACKENDS:
        llm("index", "build", name)
    after = hits("index", "similar", "stdlib-faiss", "-c", SHOWN_QUERIES[3], "-n", "3")
    assert not set(deleted) & {row["id"] for row in after}, "a deleted row came back"
    url = hits("similar", COLLECTION, "-c", SHOWN_QUERIES[0], "-n", "3")
    assert changed in [row["id"] for row in url], "the re-embedded entry was not found"
    print(
        f"\nDeleted {', '.join(deleted)}: gone. Re-embedded {changed}: now found "
        "for the URL question, with its new text."
    )

    heading("Measured here: every backend against llm's brute force")
    rows = measure(MEASURED_QUERIES)
    print_table(rows, len(entries) - len(deleted), len(MEASURED_QUERIES))
    low = [row["name"] for row in rows if row["recall"] < 0.95]
    if low:
        print(f"\nBelow recall@10 0.95: {', '.join(low)}")
    print(
        f"\nEverything is in {shown(work)}/: try\n  LLM_EMBEDDINGS_DB={shown(work)}/embeddings.db "
        f"LLM_USER_PATH={shown(work)}/llm-user .venv/bin/llm index similar stdlib-faiss -c '...'"
    )


if __name__ == "__main__":
    main()
