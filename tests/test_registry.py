"Backends come through llm's plugin manager, ours and third-party ones alike."

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from llm.plugins import pm

from llm_vector_index import Option, UnknownBackend, get_backend, get_backends, hookimpl
from llm_vector_index.backends.exact import ExactIndex
from llm_vector_index.cli import index_group
from llm_vector_index.testing import VectorIndexContract


class ReversedExact(ExactIndex):
    "A third-party backend: exact search, its own name and option."

    name = "reversed-exact"
    options = (Option("greeting", str, "hello", "Says hello"),)


class ThirdPartyPlugin:
    __name__ = "ThirdPartyPlugin"

    @hookimpl
    def register_vector_index_backends(self, register):
        register(ReversedExact)


@pytest.fixture
def third_party():
    pm.register(ThirdPartyPlugin(), name="llm-third-party")
    try:
        yield
    finally:
        pm.unregister(name="llm-third-party")


def test_builtins_registered_through_the_hook():
    backends = get_backends()
    assert {"exact", "faiss"} <= set(backends)
    assert backends["faiss"].plugin == "llm_vector_index.backends.faiss"


def test_unknown_backend_lists_available():
    with pytest.raises(
        UnknownBackend,
        match="Unknown backend 'nope'; available: auto, chroma, exact, faiss, hnswlib",
    ):
        get_backend("nope")


def test_third_party_backend_end_to_end(third_party, db_path, vectors_collection):
    assert get_backend("reversed-exact").plugin == "llm-third-party"
    runner = CliRunner()
    assert (
        "reversed-exact: exact (plugin llm-third-party)"
        in runner.invoke(index_group, ["backends"]).output
    )
    result = runner.invoke(
        index_group,
        [
            "create",
            "tp",
            "vecs",
            "-b",
            "reversed-exact",
            "-o",
            "greeting",
            "hi",
            "--build",
            "-d",
            str(db_path),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [
        json.loads(line)
        for line in runner.invoke(
            index_group, ["similar", "tp", "v003", "-n", "3", "-d", str(db_path)]
        ).output.splitlines()
    ]
    assert len(rows) == 3 and "v003" not in [row["id"] for row in rows]


class TestThirdPartyContract(VectorIndexContract):
    backend_class = ReversedExact


def test_registering_a_non_backend_is_a_type_error():
    class BadPlugin:
        __name__ = "BadPlugin"

        @hookimpl
        def register_vector_index_backends(self, register):
            register(dict)

    pm.register(BadPlugin(), name="bad-plugin")
    try:
        with pytest.raises(TypeError, match=r"not a subclass of llm_vector_index\.VectorIndex"):
            get_backends()
    finally:
        pm.unregister(name="bad-plugin")


def run_llm(tmp_path, *args):
    env = {**os.environ, "LLM_USER_PATH": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "llm", *args], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_installed_plugin_is_listed_by_llm(tmp_path):
    plugins = json.loads(run_llm(tmp_path, "plugins"))
    ours = [plugin for plugin in plugins if plugin["name"] == "llm-vector-index"]
    assert ours and "register_commands" in ours[0]["hooks"]
    assert "Manage vector indexes" in run_llm(tmp_path, "--help")
    assert "faiss: approximate" in run_llm(tmp_path, "index", "backends")


def test_loading_the_plugin_imports_no_heavy_library():
    code = (
        "import sys, llm.cli; "
        "heavy = [m for m in ('faiss', 'hnswlib', 'chromadb') if m in sys.modules]; "
        "assert 'llm_vector_index.plugin' in sys.modules; print(heavy)"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "[]"
