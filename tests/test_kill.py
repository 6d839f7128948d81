"""SIGKILL at any moment: builds (full and incremental) and migrate-chroma run
in a child process that is killed at named points (faults.py: rows read,
backend saved, folder swapped, catalog mid-commit, catalog committed) and
after random delays. After every kill: llm's tables are exactly what they
were; a query answers what a clean build answers, or says the index is stale
or damaged; the next plain build repairs it.

Children are forked from a forkserver that has already imported the heavy
libraries, so a kill costs milliseconds, not a Python start."""

import hashlib
import json
import os
import random
import signal

import numpy as np
import pytest
from sqlite_utils import Database

from llm_vector_index import DamagedFiles, Index
from llm_vector_index.index import _warned
from llm_vector_index.testing import clustered_vectors, write_embeddings

from . import workers

# Each search width set, so untuned: this file is about kills, and its checks
# ask approximate backends for 4 of the true top 5 on queries from clusters
# the data does not have, through churn that the first build's tuning (to the
# cheapest width, on 300 rows) could not foresee.
BACKENDS = {
    "exact": {},
    "faiss": {"ef_search": 64},
    "hnswlib": {"ef": 64},
    "chroma": {"ef_search": 100},
    "pgvector": {"dsn_env": "PGVECTOR_DSN", "ef_search": 64},
}
FULL_POINTS = ["scanned", "saved", "swapped", "committing", "committed"]
INCREMENTAL_POINTS = ["scanned", "saved", "committing", "committed"]
KILLS_PER_BACKEND = 52
DIMENSIONS = 16
KILLED = {}  # backend -> kills that landed (summarised by the last test)
TIMES = []  # seconds from a build's start to a random kill that landed
BUILD_SECONDS = []  # how long repair builds take: random delays span that


def in_child(context, target, args, kill_at=None, delay=None) -> bool:
    "Run ``target`` in a forked child; True if it was killed."
    ready = context.Event()
    child = context.Process(target=target, args=(*args, kill_at, ready))
    child.start()
    assert ready.wait(60), "child did not start"
    if delay is not None:
        child.join(delay)
        if child.is_alive():
            os.kill(child.pid, signal.SIGKILL)
            TIMES.append(delay)
    child.join(60)
    assert child.exitcode is not None, "child hung"
    assert child.exitcode in (0, -signal.SIGKILL), f"child failed: {child.exitcode}"
    return child.exitcode == -signal.SIGKILL


def llm_tables(db_path) -> str:
    "A digest of llm's own tables, row by row."
    db = Database(db_path)
    digest = hashlib.sha256()
    for table, order in (("collections", "id"), ("embeddings", "collection_id, id")):
        for row in db.execute(f"select * from {table} order by {order}"):
            digest.update(repr(row).encode())
    db.conn.close()
    return digest.hexdigest()


def current_rows(db):
    rows = db.execute("select id, embedding from embeddings order by id").fetchall()
    return [r[0] for r in rows], np.stack([np.frombuffer(r[1], "<f4") for r in rows])


def truth(db, query, k=5):
    ids, vectors = current_rows(db)
    scores = vectors @ query / np.linalg.norm(vectors, axis=1) / np.linalg.norm(query)
    return [ids[i] for i in np.argsort(-scores, kind="stable")[:k]]


def mutate(db, rng, step):
    "Some adds, changes and deletes, as llm would write them."
    ids, _vectors = current_rows(db)
    fresh = clustered_vectors(6, DIMENSIONS, clusters=3, seed=step) * rng.choice([-1, 1])
    write_embeddings(db, "c", [f"s{step}-{i}" for i in range(3)], fresh[:3])
    changed = rng.sample(ids, 3)
    write_embeddings(db, "c", changed, fresh[3:])
    gone = rng.sample([i for i in ids if i not in changed], 2)
    db.execute(f"delete from embeddings where id in ({','.join('?' * len(gone))})", gone)
    db.conn.commit()


def agrees(found, expected, exact) -> bool:
    "The exact backend answers exactly; an approximate one finds 4 of the top 5."
    return found == expected if exact else len(set(found) & set(expected)) >= 4


def check_after_kill(db_path, capsys, queries, exact):
    "A query is right, or says stale/damaged; then a plain build repairs it."
    db = Database(db_path)
    ids = set(current_rows(db)[0])
    index = Index("ix", db)
    stale = not index.is_current()
    warned = False
    try:
        for query in queries:
            try:
                found = [e.id for e in index.similar_by_vector(query, 5)]
            except DamagedFiles as error:
                assert "llm index build ix" in str(error)
                break
            assert set(found) <= ids  # never a row that is gone
            warned |= "is behind its collections" in capsys.readouterr().err
            if not stale:
                assert agrees(found, truth(db, query), exact)
        # Stale answers are allowed only with the warning (said once per generation).
        assert not stale or warned or (str(index.path), index.record.generation) in _warned
    finally:
        index.close()
    with Index("ix", db) as index:
        report = index.build()
        BUILD_SECONDS.append(report.seconds)
        assert report.rows == len(ids) == index.backend().count()
        for query in queries:
            found = [e.id for e in index.similar_by_vector(query, 5)]
            assert agrees(found, truth(db, query), exact)
    assert db.execute("select count(*) from vector_index_labels").fetchone()[0] == len(ids)
    db.conn.close()


def share_postgres(request, monkeypatch, user_path) -> str:
    "The session's real Postgres in PGVECTOR_DSN, here and in the children."
    dsn = request.getfixturevalue("postgres_server").dsn
    monkeypatch.setenv("PGVECTOR_DSN", dsn)
    (user_path / workers.ENVIRONMENT_FILE).write_text(json.dumps({"PGVECTOR_DSN": dsn}))
    return dsn


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_kill_builds_at_every_point(
    db_path, db, backend, forkserver, capsys, user_path, request, monkeypatch
):
    if backend == "pgvector":
        share_postgres(request, monkeypatch, user_path)
    rng = random.Random(backend)
    write_embeddings(
        db,
        "c",
        [f"r{i:03d}" for i in range(300)],
        clustered_vectors(300, DIMENSIONS, clusters=6, seed=1),
        updated=1000,
    )
    Index.create(
        "ix", ["c"], db, backend=backend, options=BACKENDS[backend], refresh="manual"
    ).build()
    BUILD_SECONDS.clear()
    queries = clustered_vectors(3, DIMENSIONS, clusters=6, seed=99)
    plan = [(True, point, None) for point in FULL_POINTS] + [
        (False, point, None) for point in INCREMENTAL_POINTS
    ]
    plan = plan * 3
    plan += [(rng.random() < 0.5, None, rng.random()) for _ in range(KILLS_PER_BACKEND * 3)]
    kills = step = 0
    for full, point, share in plan:
        if kills >= KILLS_PER_BACKEND and point is None:
            break
        # A random moment within what a build of this index takes here.
        delay = None if share is None else share * 1.5 * float(np.median(BUILD_SECONDS))
        step += 1
        mutate(db, rng, step)
        before = llm_tables(db_path)
        killed = in_child(
            forkserver, workers.build, (db_path, "ix", full, user_path), kill_at=point, delay=delay
        )
        kills += killed
        assert llm_tables(db_path) == before, (backend, full, point, delay)
        check_after_kill(db_path, capsys, queries, exact=backend == "exact")
    KILLED[backend] = kills
    print(
        f"{backend}: {kills} kills in {step} builds; random kills "
        f"{np.percentile(TIMES, [10, 50, 90]).round(3)} s into builds of "
        f"{np.median(BUILD_SECONDS):.3f} s"
    )
    TIMES.clear()
    assert kills >= KILLS_PER_BACKEND


def test_kill_migrations(db_path, db, forkserver, tmp_path, user_path):
    from llm_vector_index.migrate import migrate_to_chroma

    rng = random.Random(5)
    write_embeddings(
        db,
        "c",
        [f"r{i:03d}" for i in range(400)],
        clustered_vectors(400, DIMENSIONS, clusters=6, seed=2),
    )
    target = tmp_path / "chroma"
    kills = 0
    for trial in range(12):
        mutate(db, rng, 1000 + trial)
        before = llm_tables(db_path)
        point, delay = ("migrate-sent", None) if trial % 2 else (None, rng.uniform(0.0, 0.5))
        kills += in_child(
            forkserver, workers.migrate, (db_path, target, user_path), kill_at=point, delay=delay
        )
        assert llm_tables(db_path) == before
        report = migrate_to_chroma(db, ["c"], path=target, sync_deletes=True)
        assert report.llm_rows == report.chroma_rows and not report.mismatches
    KILLED["migrate-chroma"] = kills
    assert kills >= 6


def related_state(db_path) -> str:
    "A digest of the saved related rows and what the plugin keeps about them."
    db = Database(db_path)
    digest = hashlib.sha256()
    for table in ("related", "vector_index_related", "vector_index_related_rows"):
        for row in db.execute(f"select * from {table} order by 1, 2, 3, 4"):
            digest.update(repr(row).encode())
    db.conn.close()
    return digest.hexdigest()


def test_kill_related_saves(db_path, db, forkserver, user_path):
    """Killed mid-write (inside the transaction) or at a random moment: the
    table and its snapshot are the last save's, whole; the next save is
    what a full pass finds."""
    rng = random.Random(7)
    write_embeddings(
        db, "c", [f"r{i:03d}" for i in range(400)], clustered_vectors(400, DIMENSIONS, 6, seed=3)
    )
    with Index.create("ix", ["c"], db, backend="exact") as index:
        index.build()
        index.save_related("related", 5)
    kills = 0
    for trial in range(8):
        mutate(db, rng, 3000 + trial)
        with Index("ix", db) as index:
            index.build()  # the kill falls in the save, not in a build it starts
        before = related_state(db_path)
        point, delay = ("related-writing", None) if trial % 2 else (None, rng.uniform(0.0, 0.3))
        killed = in_child(
            forkserver, workers.related, (db_path, user_path), kill_at=point, delay=delay
        )
        kills += killed
        if killed:
            assert related_state(db_path) == before
        with Index("ix", Database(db_path)) as index:
            index.save_related("related", 5)
            index.save_related("check", 5, full=True)
        saved = Database(db_path)
        assert (
            saved.execute(
                "select collection, id, other_id, score, rank from related order by 1, 2, 5"
            ).fetchall()
            == saved.execute(
                "select collection, id, other_id, score, rank from [check] order by 1, 2, 5"
            ).fetchall()
        )
    KILLED["related"] = kills
    assert kills >= 4


def test_kill_pgvector_migrations(db_path, db, forkserver, user_path, postgres_server, monkeypatch):
    """Killed at a committed batch or at a random moment (mid-COPY, mid-index),
    a migration leaves Postgres consistent: the next run completes it, equal
    to llm's rows, and resumes rather than starting again."""
    from llm_vector_index.migrate_pgvector import migrate_to_pgvector

    monkeypatch.setenv("PGVECTOR_DSN", postgres_server.dsn)
    (user_path / workers.ENVIRONMENT_FILE).write_text(
        json.dumps({"PGVECTOR_DSN": postgres_server.dsn})
    )
    rng = random.Random(6)
    write_embeddings(
        db, "c", [f"r{i:03d}" for i in range(400)], clustered_vectors(400, DIMENSIONS, seed=2)
    )
    kills = resumed = 0
    try:
        for trial in range(12):
            mutate(db, rng, 2000 + trial)
            before = llm_tables(db_path)
            point, delay = ("migrate-sent", None) if trial % 2 else (None, rng.uniform(0.0, 0.4))
            kills += in_child(
                forkserver,
                workers.migrate_pgvector,
                (db_path, user_path),
                kill_at=point,
                delay=delay,
            )
            assert llm_tables(db_path) == before
            report = migrate_to_pgvector(db, ["c"], dsn_env="PGVECTOR_DSN", sync_deletes=True)
            resumed += bool(report.resumed)
            assert report.llm_rows == report.postgres_rows and not report.mismatches
    finally:
        postgres_server.sql("drop table if exists public.c, public.llm_vector_index_migrations")
    KILLED["migrate-pgvector"] = kills
    assert kills >= 6 and resumed >= 6


VOCABULARY = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def texts_for(ids, rng):
    return [f"{' '.join(rng.sample(VOCABULARY, 3))} {id}" for id in ids]


def keyword_truth(db, word):
    "The rows whose stored text has the word: what a keyword query must find."
    return {
        id
        for id, content in db.execute("select id, content from embeddings")
        if word in content.split()
    }


# exact saves atomically, chroma does not: both ways of keeping the keyword
# index in step with the vectors' generation.
@pytest.mark.parametrize("backend", ["exact", "chroma", "pgvector"])
def test_kill_builds_of_an_index_with_keywords(
    db_path, db, backend, forkserver, user_path, request, monkeypatch
):
    """The keyword index lives in the index folder and is committed inside
    the same generation protocol: after any kill its answers are the last
    build's or refused, and the next build puts them right. (With pgvector
    the vectors are committed by Postgres, the keywords in the folder.)"""
    if backend == "pgvector":
        share_postgres(request, monkeypatch, user_path)
    rng = random.Random(f"keywords-{backend}")
    ids = [f"r{i:03d}" for i in range(200)]
    write_embeddings(
        db,
        "c",
        ids,
        clustered_vectors(200, DIMENSIONS, clusters=6, seed=1),
        contents=texts_for(ids, rng),
        updated=1000,
    )
    Index.create(
        "ix", ["c"], db, backend=backend, options=BACKENDS[backend], refresh="manual", keywords=True
    ).build()
    plan = (
        [(True, point, None) for point in FULL_POINTS]
        + [(False, point, None) for point in INCREMENTAL_POINTS]
        + [(rng.random() < 0.5, None, rng.uniform(0.0, 0.3)) for _ in range(4)]
    )
    for step, (full, point, delay) in enumerate(plan):
        current = [row[0] for row in db.execute("select id from embeddings")]
        changed = rng.sample(current, 4) + [f"k{step}-{i}" for i in range(2)]
        write_embeddings(
            db,
            "c",
            changed,
            clustered_vectors(6, DIMENSIONS, seed=step),
            contents=texts_for(changed, rng),
        )
        db.execute("delete from embeddings where id = ?", [rng.choice(current)])
        db.conn.commit()
        before = llm_tables(db_path)
        in_child(
            forkserver, workers.build, (db_path, "ix", full, user_path), kill_at=point, delay=delay
        )
        assert llm_tables(db_path) == before
        word = rng.choice(VOCABULARY)
        with Index("ix", db) as index:
            try:
                found = {e.id for e in index.similar(word, 500, mode="keyword")}
            except DamagedFiles as error:
                assert "llm index build ix" in str(error)
            else:
                rows = {row[0] for row in db.execute("select id from embeddings")}
                assert found <= rows  # never a row that is gone
                if index.is_current():
                    assert found == keyword_truth(db, word)
        with Index("ix", db) as index:
            index.build()
            found = {e.id for e in index.similar(word, 500, mode="keyword")}
            assert found == keyword_truth(db, word), (step, full, point, delay)
            assert index.record.keyword_rows == index.count()
