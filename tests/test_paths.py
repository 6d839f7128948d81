"""A database is a file people share: no name, path or folder read from it, or
found beside it, may lead a command to write or delete outside the index
folder, or to delete a folder the plugin did not make."""

import json
import os

import llm
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from sqlite_utils import Database

from llm_vector_index import Index, InvalidIndexName, UnsafePath
from llm_vector_index import collection as integration
from llm_vector_index.cli import index_group
from llm_vector_index.paths import MARKER

from .conftest import snapshot


def run(*args):
    return CliRunner().invoke(index_group, [str(arg) for arg in args])


def llm_similar(db_path, *args):
    return CliRunner().invoke(llm_cli, ["similar", *map(str, args), "-d", str(db_path)])


@pytest.fixture
def victim(tmp_path):
    "Somebody's folder next to the database, shaped like an index folder."
    folder = tmp_path / "victim"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    (folder / MARKER).touch()  # even a planted marker must not make it ours
    (folder / "generation").write_text("1")
    return folder


@pytest.fixture
def built(db_path, db, vectors_collection):
    Index.create("ix", ["vecs"], db, backend="exact", default=True).build()
    return db_path


def folder_of(db_path):
    return db_path.parent / "embeddings.db.vector-indexes"


def rename_in_catalog(db_path, name):
    db = Database(db_path)
    db.execute("update vector_indexes set name = ? where name = 'ix'", [name])
    db.conn.commit()


def hostile_names(victim):
    # The index folder is tmp/embeddings.db.vector-indexes; victim is tmp/victim.
    return ["../victim", str(victim), "ix/../../victim", "..", "ok\n", "./../victim"]


@pytest.mark.parametrize("which", range(6))
@pytest.mark.parametrize(
    "command", [["build"], ["build", "--full"], ["similar", "v001"], ["show"], ["evaluate"]]
)
def test_crafted_name_in_catalog_touches_nothing(built, victim, which, command):
    name = hostile_names(victim)[which]
    rename_in_catalog(built, name)
    before = snapshot(built, folder_of(built), victim)
    result = run(command[0], name, *command[1:], "-d", built)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith(f"Error: Invalid index name {name!r}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert snapshot(built, folder_of(built), victim) == before


@pytest.mark.parametrize("which", range(6))
def test_drop_of_a_crafted_name_removes_only_its_catalog_row(built, victim, which):
    name = hostile_names(victim)[which]
    rename_in_catalog(built, name)
    files = snapshot(folder_of(built), victim)
    result = run("drop", name, "-d", built)
    assert result.exit_code == 0, result.output
    assert Database(built).execute("select count(*) from vector_indexes").fetchone()[0] == 0
    assert snapshot(folder_of(built), victim) == files


@pytest.mark.parametrize("which", range(6))
def test_llm_similar_with_a_crafted_default_answers_by_brute_force(built, db, victim, which):
    name = hostile_names(victim)[which]
    rename_in_catalog(built, name)
    # Stale, so auto refresh would rebuild: the case that replaced the victim.
    db["embeddings"].update((1, "v010"), {"updated": 2000})
    db.conn.commit()
    before = snapshot(folder_of(built), victim)
    result = llm_similar(built, "vecs", "v003", "-n", "4")
    assert result.exit_code == 0, result.output
    brute_force = integration.ORIGINALS["similar_by_id"](llm.Collection("vecs", db), "v003", 4)
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"id": e.id, "score": e.score, "content": e.content, "metadata": e.metadata}
        for e in brute_force
    ]
    assert "default index of 'vecs' not used (Invalid index name" in result.stderr
    assert snapshot(folder_of(built), victim) == before
    # Python users who name the index get the error, not a silent fallback.
    with pytest.raises(InvalidIndexName):
        Index(name, db).build(full=True)
    assert snapshot(folder_of(built), victim) == before


def test_index_folder_that_is_a_link_outside_is_refused(built, db, victim):
    folder = folder_of(built) / "ix"
    folder.rename(folder_of(built) / "moved")
    folder.symlink_to(victim, target_is_directory=True)
    before = snapshot(built, victim)
    for command in (["build", "ix", "--full"], ["drop", "ix"], ["similar", "ix", "v001"]):
        result = run(*command, "-d", built)
        assert result.exit_code == 1, result.output
        assert "Error: Refusing to use" in result.stderr and "leads outside" in result.stderr
    assert snapshot(built, victim) == before
    assert folder.is_symlink()


def test_staging_folder_that_is_a_link_outside_is_refused(built, tmp_path, victim):
    Index.create("victim", ["vecs"], Database(built), backend="exact").build()
    # .rebuild -> tmp, so .rebuild/victim would be the victim itself.
    (folder_of(built) / ".rebuild").symlink_to(tmp_path, target_is_directory=True)
    before = snapshot(victim)
    result = run("build", "victim", "--full", "-d", built)
    assert result.exit_code == 1
    assert "Refusing to use" in result.stderr
    assert snapshot(victim) == before


def test_leftover_links_beside_the_index_are_not_followed(built, victim):
    left = folder_of(built) / f".ix.retired-{os.getpid() + 1}"
    left.symlink_to(victim, target_is_directory=True)
    leftover = folder_of(built) / ".ix.retired-1"  # a killed build's own copy
    (folder_of(built) / "ix").rename(leftover)
    before = snapshot(victim)
    result = run("build", "ix", "--full", "-d", built)
    assert result.exit_code == 0, result.output
    assert snapshot(victim) == before and left.is_symlink()
    assert not leftover.exists()  # ours: cleaned up
    (folder_of(built) / "ix").rename(leftover)  # killed again...
    Index("ix", Database(built)).build(full=True)
    Index("ix", Database(built)).build()  # ...an incremental build cleans up too
    assert not leftover.exists()
    assert not (folder_of(built) / ".rebuild").exists()  # no empty staging folder left


def test_a_folder_the_plugin_did_not_make_is_never_deleted(db_path, db, vectors_collection):
    Index.create("first", ["vecs"], db).build()  # the index folder is the plugin's
    theirs = folder_of(db_path) / "notes"
    theirs.mkdir(parents=True)
    (theirs / "mine.txt").write_text("not an index")
    before = snapshot(db_path, theirs)
    result = run("create", "notes", "vecs", "-d", db_path)
    assert result.exit_code == 1
    assert "exists but was not made by llm-vector-index" in result.stderr
    assert snapshot(db_path, theirs) == before
    # The same folder appearing after create: build refuses, drop leaves it.
    Index.create("other", ["vecs"], db).build()
    (folder_of(db_path) / "other").rename(folder_of(db_path) / "other-old")
    (folder_of(db_path) / "other").mkdir()
    (folder_of(db_path) / "other" / "mine.txt").write_text("not an index")
    with pytest.raises(UnsafePath, match="exists but was not made by llm-vector-index"):
        Index("other", db).build(full=True)
    Index("other", db).delete()
    assert (folder_of(db_path) / "other" / "mine.txt").read_text() == "not an index"


def test_an_empty_folder_left_by_a_kill_before_its_marker_is_taken_over(
    db_path, db, vectors_collection
):
    "mark() makes the folder, then the marker: a kill between leaves it empty."
    Index.create("ix", ["vecs"], db, backend="exact").build()
    staging = folder_of(db_path) / ".rebuild" / "ix"
    staging.mkdir(parents=True)  # as a full build killed inside mark() leaves it
    assert Index("ix", db).build(full=True).rows == 200
    assert not staging.exists()
    staging.mkdir(parents=True)
    (staging / "theirs.txt").write_text("not empty: not ours")
    with pytest.raises(UnsafePath, match="exists but was not made by llm-vector-index"):
        Index("ix", db).build(full=True)
    assert (staging / "theirs.txt").read_text() == "not empty: not ours"


def test_index_folders_carry_the_marker(built):
    assert (folder_of(built) / "ix" / MARKER).is_file()
    shown = json.loads(run("show", "ix", "-d", built).output)
    assert shown["path"] == str(folder_of(built) / "ix")


@pytest.mark.parametrize(
    "command",
    [
        ["build", "ix"],
        ["build", "ix", "--full"],
        ["drop", "ix"],
        ["similar", "ix", "v001"],
        ["create", "notes", "vecs"],
        ["show", "ix"],
    ],
)
def test_an_index_folder_that_is_a_link_is_refused(built, victim, command):
    "A shared tarball's x.db.vector-indexes -> somewhere else: nothing is written there."
    elsewhere = victim
    (elsewhere / ".notes.lock").write_text("theirs")  # shaped like a lock file of ours
    folder = folder_of(built)
    folder.rename(folder.with_name("moved"))
    folder.symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(built, elsewhere)
    result = run(*command, "-d", built)
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"Error: Refusing to use {folder}: it is a link (to {elsewhere}), "
        "and an index folder must be a real folder beside its database\n"
    )
    assert snapshot(built, elsewhere) == before and folder.is_symlink()


def test_an_index_folder_the_plugin_did_not_make_is_refused(db_path, db, vectors_collection):
    folder = folder_of(db_path)
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    before = snapshot(db_path, folder)
    result = run("create", "notes", "vecs", "--build", "-d", db_path)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {folder} exists but was not made by llm-vector-index "
        "(it holds 'precious.txt'): move it away\n"
    )
    assert snapshot(db_path, folder) == before


def test_an_index_folder_of_an_earlier_version_is_adopted(built):
    "Earlier versions wrote no marker into the index folder itself."
    (folder_of(built) / MARKER).unlink()
    result = run("similar", "ix", "v001", "-n", "2", "-d", built)
    assert result.exit_code == 0, result.output
    assert (folder_of(built) / MARKER).is_file()


def test_an_index_folder_replaced_by_a_file_is_one_line(built):
    folder = folder_of(built)
    folder.rename(folder.with_name("moved"))
    folder.write_text("not a folder")
    before = snapshot(built, folder)
    for command in (["drop", "ix"], ["build", "ix"], ["similar", "ix", "v001"]):
        result = run(*command, "-d", built)
        assert result.exit_code == 1
        assert result.stderr == f"Error: Refusing to use {folder}: it is not a folder\n"
    assert snapshot(built, folder) == before


def test_drop_leaves_no_lock_file_behind(built):
    assert {p.name for p in folder_of(built).iterdir()} >= {".ix.lock", ".ix.commit"}
    assert run("drop", "ix", "-d", built).exit_code == 0
    assert sorted(p.name for p in folder_of(built).iterdir()) == [MARKER]
