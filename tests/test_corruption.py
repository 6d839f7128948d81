"""Damaged index files: every file of every backend truncated, emptied, zeroed,
overwritten with random bytes or deleted. A query answers exactly what a clean
index answers or says, in one line, what is wrong and how to fix it; llm's own
`llm similar` with that default index answers by brute force; a plain build
repairs it without needing the old files. Never a traceback, never a crash."""

import json
import os
import random
from pathlib import Path

import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli

from llm_vector_index import Index, close_indexes
from llm_vector_index.cli import index_group
from llm_vector_index.testing import clustered_vectors, write_embeddings

BACKENDS = {
    "exact": {},
    "faiss": {},
    "faiss-ivf": {"factory": "IVF8,Flat", "nprobe": 8},
    "hnswlib": {},
    "chroma": {},
}
DAMAGE = ["truncate", "empty", "zeros", "random", "missing"]
SKIP = {".llm-vector-index", "chroma.lock"}


def damage(path: Path, how: str, seed: int) -> None:
    size = path.stat().st_size
    if how == "missing":
        path.unlink()
    elif how == "truncate":
        os.truncate(path, size // 2)
    elif how == "empty":
        os.truncate(path, 0)
    elif how == "zeros":
        path.write_bytes(bytes(size))
    else:
        path.write_bytes(random.Random(seed).randbytes(max(size, 16)))


def same_file(a: str, b: str) -> bool:
    def key(name):
        parts = name.split("/")
        return parts[0], len(parts), parts[-1].split(".")[0]

    return key(a) == key(b)


def cli(group, *args):
    return CliRunner().invoke(group, [str(arg) for arg in args])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "The rows, and what a clean index answers, computed once."
    vectors = clustered_vectors(300, 16, clusters=6, seed=8)
    ids = [f"r{i:03d}" for i in range(300)]
    return ids, vectors


def build_index(db_path, db, reference, kind):
    ids, vectors = reference
    write_embeddings(db, "c", ids, vectors, updated=1000)
    backend = kind.split("-")[0]
    Index.create("ix", ["c"], db, backend=backend, options=BACKENDS[kind], default=True).build()
    Index.create("truth", ["c"], db, backend="exact").build()
    folder = db_path.parent / "embeddings.db.vector-indexes" / "ix"
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in SKIP)


def answers(db_path, name, query="r007"):
    result = cli(index_group, "similar", name, query, "-n", "5", "-d", db_path)
    return result, [
        json.loads(line)["id"] for line in result.output.splitlines() if line.startswith("{")
    ]


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_every_file_every_damage(db_path, db, reference, kind):
    files = build_index(db_path, db, reference, kind)
    root = db_path.parent / "embeddings.db.vector-indexes" / "ix"
    names = [str(path.relative_to(root)) for path in files]
    _, truth = answers(db_path, "truth")
    trials = outcomes = 0
    for name in names:
        for how in DAMAGE:
            trials += 1
            Index("ix", db).build(full=True)  # a clean index to damage
            # Names carry a generation (and Chroma a segment uuid): the same file now.
            target = next(
                p
                for p in root.rglob("*")
                if p.is_file() and same_file(str(p.relative_to(root)), name)
            )
            damage(target, how, seed=trials)
            where = f"{kind}: {target.relative_to(root)} {how}"
            result, found = answers(db_path, "ix")
            assert "Traceback" not in result.output, where
            if result.exit_code == 0:
                assert found == truth, where  # right, or...
            else:
                assert result.exit_code == 1, where + result.output  # ...one clear line
                assert result.stderr.startswith("Error: Index 'ix'"), where + result.stderr
                assert len(result.stderr.strip().splitlines()) == 1, where + result.stderr
                assert "llm index build ix" in result.stderr, where + result.stderr
                outcomes += 1
            # llm's own command, with ix as the default: brute force, right.
            theirs = cli(llm_cli, "similar", "c", "r007", "-n", "5", "-d", db_path)
            assert theirs.exit_code == 0, where + theirs.output
            assert [json.loads(line)["id"] for line in theirs.stdout.splitlines()] == truth, where
            # A plain build repairs it, reading llm's rows, not the old files.
            built = cli(index_group, "build", "ix", "-d", db_path)
            assert built.exit_code == 0, where + built.output
            result, found = answers(db_path, "ix")
            assert result.exit_code == 0 and found == truth, where + result.output
    assert trials == len(names) * len(DAMAGE) >= 10 and outcomes > 0
    print(
        f"{kind}: {trials} damaged files, {outcomes} refused in one line, "
        f"{trials - outcomes} answered right"
    )


@pytest.mark.parametrize("kind", ["exact", "faiss", "hnswlib"])
def test_files_from_another_index_are_not_searched(db_path, db, reference, kind):
    "A folder copied over from another index (same generation, same count) is refused."
    import shutil

    ids, vectors = reference
    build_index(db_path, db, reference, kind)
    write_embeddings(db, "d", ids, -vectors)  # another collection: other vectors
    backend = kind.split("-")[0]
    Index.create("other", ["d"], db, backend=backend, options=BACKENDS[kind]).build()
    Index("ix", db).build()
    Index("ix", db).set_refresh("manual")  # so the query cannot rebuild it first
    folder = db_path.parent / "embeddings.db.vector-indexes"
    shutil.rmtree(folder / "ix")
    shutil.copytree(folder / "other", folder / "ix")
    close_indexes()  # as a new process: this one still has the real files open
    result, _ = answers(db_path, "ix")
    assert result.exit_code == 1, result.output
    assert "files do not match its catalog" in result.stderr
    assert cli(index_group, "build", "ix", "-d", db_path).exit_code == 0
    _, found = answers(db_path, "ix")
    _, truth = answers(db_path, "truth")
    assert found == truth if kind == "exact" else len(set(found) & set(truth)) >= 4


KEYWORD_WORDS = ["amber", "birch", "cedar", "dune", "ember", "fjord", "grove", "heath"]
TANTIVY_LOCKS = {".tantivy-meta.lock", ".tantivy-writer.lock"}


def keyword_answers(db_path, word="cedar"):
    result = cli(
        index_group, "similar", "ix", "-c", word, "--mode", "keyword", "-n", "300", "-d", db_path
    )
    return result, [
        json.loads(line)["id"] for line in result.output.splitlines() if line.startswith("{")
    ]


def test_every_keyword_file_every_damage(db_path, db, reference):
    """The keyword index's files (tantivy's segments, its meta.json, the
    checks the plugin records) damaged each way: a keyword query answers what
    a clean index answers or refuses in one line, and a plain build repairs."""
    ids, vectors = reference
    texts = [f"{KEYWORD_WORDS[i % 8]} {KEYWORD_WORDS[i * 3 % 7]} row {i}" for i in range(300)]
    write_embeddings(db, "c", ids, vectors, contents=texts, updated=1000)
    Index.create("ix", ["c"], db, backend="exact", keywords=True).build()
    folder = db_path.parent / "embeddings.db.vector-indexes" / "ix" / "keywords"

    def kind(path):  # segment files are named by a new uuid on every full build
        return path.suffix if len(path.stem) == 32 else path.name

    kinds = sorted(
        {kind(p) for p in folder.iterdir() if p.is_file() and p.name not in SKIP | TANTIVY_LOCKS}
    )
    _, truth = keyword_answers(db_path)
    assert len(truth) > 50 and len(kinds) >= 6, kinds  # meta.json, checks, segment files
    trials = refused = 0
    for name in kinds:
        for how in DAMAGE:
            trials += 1
            Index("ix", db).build(full=True)
            target = next(p for p in folder.iterdir() if p.is_file() and kind(p) == name)
            damage(target, how, seed=trials)
            where = f"keywords/{target.name} {how}"
            result, found = keyword_answers(db_path)
            assert "Traceback" not in result.output, where
            if result.exit_code == 0:
                assert found == truth, where
            else:
                assert result.exit_code == 1, where + result.output
                assert result.stderr.startswith("Error: Index 'ix'"), where + result.stderr
                assert len(result.stderr.strip().splitlines()) == 1, where + result.stderr
                assert "llm index build ix" in result.stderr, where + result.stderr
                refused += 1
            built = cli(index_group, "build", "ix", "-d", db_path)
            assert built.exit_code == 0, where + built.output
            result, found = keyword_answers(db_path)
            assert result.exit_code == 0 and found == truth, where + result.output
    assert refused == trials, "every damage is seen: the checks cover every file"


def test_a_crafted_keyword_folder_whose_checks_match_is_refused_in_one_line(db_path, db, reference):
    "Checks recorded again over a damaged folder: tantivy's own error, as one line."
    from llm_vector_index import keywords

    ids, vectors = reference
    texts = [f"{KEYWORD_WORDS[i % 8]} row {i}" for i in range(300)]
    write_embeddings(db, "c", ids, vectors, contents=texts, updated=1000)
    Index.create("ix", ["c"], db, backend="exact", keywords=True).build()
    folder = db_path.parent / "embeddings.db.vector-indexes" / "ix" / "keywords"
    next(folder.glob("*.pos")).unlink()
    keywords._record_checks(folder)
    result, found = keyword_answers(db_path)
    assert result.exit_code == 1 and found == [], result.output
    assert result.stderr.startswith(
        "Error: Index 'ix' cannot be searched, its keyword files are damaged"
    )
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.endswith("run llm index build ix --full to rebuild them\n")
    assert cli(index_group, "build", "ix", "--full", "-d", db_path).exit_code == 0
    assert len(keyword_answers(db_path)[1]) == 38
