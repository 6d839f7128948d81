"""A database that names a server cannot send a secret, or anything else, to
it: a remote backend is opened from a catalog row only where this machine
approved that database's index for exactly that address and secret variable
(approvals.py). A real listening socket proves no byte reaches a host the
database chose."""

import json
import shutil
import socket
import sqlite3
import threading

import llm
import pytest
from click.testing import CliRunner
from llm.cli import cli as llm_cli
from sqlite_utils import Database

from llm_vector_index import Index, NotApproved, sql
from llm_vector_index import collection as integration
from llm_vector_index.cli import index_group

from .conftest import snapshot

SECRET = "sk-live-do-not-send"


def run(*args):
    return CliRunner().invoke(index_group, [str(arg) for arg in args])


class Listener:
    "A real socket on 127.0.0.1 that counts every connection and keeps every byte sent to it."

    def __init__(self):
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.socket.settimeout(0.2)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self.received = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.socket.accept()
            except OSError:
                continue
            self.connections += 1
            conn.settimeout(0.5)
            try:
                while chunk := conn.recv(65536):
                    self.received += chunk
            except OSError:
                pass
            conn.close()

    def close(self):
        self._stop.set()
        self._thread.join()
        self.socket.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def arrived(db_path, db, text_collection, chroma_server, user_path, tmp_path, monkeypatch):
    """A database from elsewhere: its default index was made on another
    machine (another llm user directory) against a real Chroma server."""
    Index.create(
        "shared",
        ["docs"],
        db,
        backend="chroma",
        default=True,
        options={"host": chroma_server["host"], "port": chroma_server["port"]},
    ).build()
    here = tmp_path / "this-machine"
    here.mkdir()
    monkeypatch.setenv("LLM_USER_PATH", str(here))
    monkeypatch.setenv("SECRET_API_KEY", SECRET)
    return db_path


def point_at(db_path, **options):
    "Edit the catalog row as a database's author could."
    db = Database(db_path)
    stored = json.loads(db.execute("select options from vector_indexes").fetchone()[0])
    db.execute("update vector_indexes set options = ?", [json.dumps({**stored, **options})])
    db.conn.commit()


def make_stale(db_path):
    "A row changed since the last build: a query would build first (the full path)."
    db = Database(db_path)
    llm.Collection("docs", db).embed("doc-new", "horse cherry 7", store=True)


def files(db_path):
    return snapshot(db_path, db_path.parent / "embeddings.db.vector-indexes")


@pytest.fixture
def crafted(arrived, listener):
    point_at(arrived, host="127.0.0.1", port=listener.port, token_env="SECRET_API_KEY")
    make_stale(arrived)
    return arrived


REFUSAL = (
    "Error: Index 'shared' names a chroma server http://127.0.0.1:{port} with the "
    "secret in $SECRET_API_KEY, which this machine has not approved for it: if you "
    "trust it, run llm index approve shared\n"
)


def test_llm_similar_answers_by_brute_force_and_sends_nothing(crafted, listener):
    before = files(crafted)
    result = CliRunner().invoke(
        llm_cli, ["similar", "docs", "-c", "http client", "-n", "3", "-d", str(crafted)]
    )
    assert result.exit_code == 0, result.output
    db = Database(crafted)
    brute_force = integration.ORIGINALS["similar"](llm.Collection("docs", db), "http client", 3)
    assert [json.loads(line) for line in result.stdout.splitlines()] == [
        {"id": e.id, "score": e.score, "content": e.content, "metadata": e.metadata}
        for e in brute_force
    ]
    assert result.stderr == (
        f"Warning: default index of 'docs' not used ({REFUSAL.format(port=listener.port)[7:-1]}); "
        "answering with llm's brute-force scan\n"
    )
    assert listener.connections == 0 and listener.received == b""
    assert files(crafted) == before


@pytest.mark.parametrize(
    "command",
    [
        ["similar", "shared", "-c", "http client"],
        ["similar", "shared", "doc-001"],
        ["build", "shared"],
        ["build", "shared", "--full"],
        ["evaluate", "shared"],
        ["build", "shared", "--target-recall", "0.9"],
    ],
)
def test_every_command_refuses_in_one_line_and_sends_nothing(crafted, listener, command):
    before = files(crafted)
    result = run(*command, "-d", crafted)
    assert result.exit_code == 1
    assert result.stderr == REFUSAL.format(port=listener.port)
    assert listener.connections == 0 and listener.received == b""
    assert files(crafted) == before


def test_a_select_sends_nothing(crafted, listener):
    "Datasette's case: any visitor's SELECT on a read-only database."
    before = files(crafted)
    conn = sqlite3.connect(f"file:{crafted}?mode=ro", uri=True)
    sql.register(conn)
    blob = conn.execute("select embedding from embeddings where id = 'doc-001'").fetchone()[0]
    for query, args in [
        ("select vector_index_search('shared', ?, 5)", [blob]),
        ("select vector_index_similar('shared', 'doc-001', 5)", []),
    ]:
        answer = json.loads(conn.execute(query, args).fetchone()[0])
        assert answer == {"error": REFUSAL.format(port=listener.port)[7:-1]}
    conn.close()
    assert listener.connections == 0 and listener.received == b""
    assert files(crafted) == before


def test_show_and_list_say_it_is_not_approved_and_send_nothing(crafted, listener):
    shown = run("show", "shared", "-d", crafted)
    assert shown.exit_code == 0, shown.output
    details = json.loads(shown.output)
    assert details["server"] == f"http://127.0.0.1:{listener.port}"
    assert details["secrets"] == ["SECRET_API_KEY"] and details["approved"] is False
    assert "chroma_collection" not in details  # the backend was never opened
    listed = run("list", "-d", crafted)
    assert (
        f"  server http://127.0.0.1:{listener.port}, NOT approved here: see "
        "llm index approve shared\n"
    ) in listed.output
    assert SECRET not in shown.output + listed.output
    assert listener.connections == 0 and listener.received == b""


def test_drop_does_not_contact_a_server_never_approved(crafted, listener):
    result = run("drop", "shared", "-d", crafted)
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "Dropped index shared (its data on the server, if any, remains: this machine never "
        f"approved its chroma server http://127.0.0.1:{listener.port} with the secret in "
        "$SECRET_API_KEY, so it was not contacted)\n"
    )
    assert not Index.exists(Database(crafted), "shared")
    assert not (crafted.parent / "embeddings.db.vector-indexes" / "shared").exists()
    assert listener.connections == 0 and listener.received == b""


def test_an_approval_lets_it_work_and_names_what_it_approved(arrived, chroma_server):
    db = Database(arrived)
    with pytest.raises(NotApproved):
        Index("shared", db).similar("cat", 3)
    result = run("approve", "shared", "-d", arrived)
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"Approved index shared: it may contact the chroma server "
        f"http://127.0.0.1:{chroma_server['port']}\n"
    )
    answer = run("similar", "shared", "-c", "horse cherry", "-n", "3", "-d", arrived)
    assert answer.exit_code == 0, answer.output
    assert len(answer.output.splitlines()) == 3
    assert json.loads(run("show", "shared", "-d", arrived).output)["approved"] is True
    withdrawn = run("approve", "shared", "--withdraw", "-d", arrived)
    assert withdrawn.stderr == "Withdrew the approval of index shared\n"
    assert run("similar", "shared", "doc-001", "-d", arrived).exit_code == 1


@pytest.mark.parametrize(
    "edit",
    [
        {"port": "listener"},
        {"token_env": "SECRET_API_KEY"},
        {"ssl": True},
        {"host": "localhost"},
    ],
)
def test_a_row_edited_after_its_approval_is_not_approved(arrived, listener, edit):
    assert run("approve", "shared", "-d", arrived).exit_code == 0
    point_at(arrived, **{k: listener.port if v == "listener" else v for k, v in edit.items()})
    make_stale(arrived)
    result = run("similar", "shared", "doc-001", "-d", arrived)
    assert result.exit_code == 1
    assert "which this machine has not approved for it" in result.stderr
    assert listener.connections == 0 and listener.received == b""


def test_an_approval_is_for_one_database_file(arrived, tmp_path, chroma_server):
    assert run("approve", "shared", "-d", arrived).exit_code == 0
    copy = tmp_path / "copy" / "embeddings.db"
    copy.parent.mkdir()
    copy.write_bytes(arrived.read_bytes())
    shutil.copytree(
        arrived.parent / "embeddings.db.vector-indexes",
        copy.parent / "embeddings.db.vector-indexes",
    )
    result = run("similar", "shared", "doc-001", "-d", copy)
    assert result.exit_code == 1 and "has not approved" in result.stderr
    assert run("similar", "shared", "doc-001", "-d", arrived).exit_code == 0


def test_creating_it_here_is_the_approval(db_path, db, text_collection, chroma_server, user_path):
    created = run(
        "create",
        "mine",
        "docs",
        "-b",
        "chroma",
        "-o",
        "host",
        chroma_server["host"],
        "-o",
        "port",
        chroma_server["port"],
        "--build",
        "-d",
        db_path,
    )
    assert created.exit_code == 0, created.output
    approved = json.loads((user_path / "vector-index-approvals.json").read_text())["approvals"]
    assert [(a["index"], a["address"], a["secrets"]) for a in approved] == [
        ("mine", f"http://127.0.0.1:{chroma_server['port']}", [])
    ]
    assert approved[0]["database"] == str(db_path.resolve())
    assert run("similar", "mine", "doc-001", "-d", db_path).exit_code == 0
    assert run("drop", "mine", "-d", db_path).exit_code == 0
    assert json.loads((user_path / "vector-index-approvals.json").read_text()) == {"approvals": []}


def test_an_index_without_a_server_has_nothing_to_approve(db_path, db, text_collection):
    Index.create("local", ["docs"], db, backend="exact")
    result = run("approve", "local", "-d", db_path)
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: Index 'local' (exact) contacts no server: there is " "nothing to approve\n"
    )


def test_a_damaged_approvals_file_approves_nothing(arrived, listener):
    point_at(arrived, port=listener.port)
    (llm.user_dir() / "vector-index-approvals.json").write_text("{not json")
    result = run("similar", "shared", "doc-001", "-d", arrived)
    assert result.exit_code == 1
    assert "vector-index-approvals.json" in result.stderr and "fix or delete it" in result.stderr
    assert listener.connections == 0
