"""The README shows commands with flags: each must still exist as shown."""

import json
import re
import shlex
from pathlib import Path

import pytest
from llm.cli import cli as llm_cli

from llm_vector_index.cli import index_group

README = Path(__file__).parents[1] / "README.md"


def shown_commands() -> list[str]:
    "Every `llm ...` command in the README's code blocks and `$ llm ...` output lines."
    commands = []
    for block in re.findall(r"```\w*\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("llm "):
                commands.append(line)
    return commands


def test_readme_shows_commands():
    commands = shown_commands()
    assert any(c.startswith("llm index similar") for c in commands)
    assert any(c.startswith("llm similar") for c in commands)


@pytest.mark.parametrize("command", shown_commands())
def test_readme_command_exists_with_its_flags(command):
    words = shlex.split(command, comments=True)
    group, words = (index_group, words[2:]) if words[1] == "index" else (llm_cli, words[1:])
    if words[0].startswith("-"):  # `llm -T ...`: llm's default command, prompt
        words = [group.default_cmd_name, *words]
    name = words[0]
    assert name in group.commands, f"{command}: no command {name!r}"
    declared = {
        opt for param in group.commands[name].params for opt in (*param.opts, *param.secondary_opts)
    }
    for word in words[1:]:
        if word.startswith("-") and word != "-":
            assert word in declared, f"{command}: {word} is not an option of {name}"


def quick_start() -> list[str]:
    "The lines of the README's Quick start, as a new user would copy them."
    text = README.read_text()
    block = re.search(r"## Quick start\n.*?```bash\n(.*?)```", text, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def new_user(tmp_path):
    """A fresh llm user directory and a folder of Markdown files of its own
    (these docs), the example model on PATH's llm. The one setting made first:
    llm's default model is llm-echo, so that lines that prompt a model need no
    API key."""
    import os
    import shutil
    import subprocess
    import sys

    work = tmp_path / "work"
    shutil.copytree(README.parent / "docs", work / "docs", ignore=shutil.ignore_patterns("*.png"))
    user = tmp_path / "new-user"
    user.mkdir()
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "LLM_USER_PATH": str(user), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    env.pop("LLM_EMBEDDINGS_DB", None)
    subprocess.run(["llm", "models", "default", "echo"], env=env, cwd=work, check=True)
    return env, work


def test_the_quick_start_runs_as_written(tmp_path):
    """Every Quick start line, in order, in a shell, on a fresh llm user
    directory, with the example model, offline."""
    import subprocess

    env, work = new_user(tmp_path)
    outputs = {}
    for line in quick_start():
        result = subprocess.run(
            ["bash", "-c", line], env=env, cwd=work, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{line}\n{result.stderr}"
        assert "Traceback" not in result.stderr, f"{line}\n{result.stderr}"
        outputs[line.split("#")[0].strip()] = result.stdout
    found = [
        json.loads(row)
        for row in outputs['llm index similar docs-idx -c "vector search"'].splitlines()
    ]
    assert len(found) == 10 and all(row["id"].endswith(".md") for row in found)
    assert (
        "usage.md" not in outputs["llm index similar docs-idx usage.md -n 5 --plain"].split()[0:1]
    )
    assert outputs['llm similar docs -c "cats"'].count('"id"') == 10
    keyword = [
        json.loads(row)
        for row in outputs[
            'llm index similar docs-kw -c "check_output" --mode keyword'
        ].splitlines()
    ]
    assert "hybrid.md" in [row["id"] for row in keyword]  # the page about it says check_output
    assert all(row["score"] is None and row["keyword_score"] > 0 for row in keyword)


def code_blocks(path: Path) -> list[tuple[str, str]]:
    "(language, code) of each bash and python block of a Markdown file, in order."
    return re.findall(r"^```(bash|python)\n(.*?)^```", path.read_text(), flags=re.S | re.M)


def test_every_example_in_usage_md_runs_as_written(tmp_path):
    """docs/usage.md's examples, in order, after the Quick start's first line
    made the docs collection, as that page says: each block exits 0 without a
    traceback, and what the metadata examples store is found by --where."""
    import subprocess
    import sys

    env, work = new_user(tmp_path)
    blocks = code_blocks(README.parent / "docs" / "usage.md")
    assert len(blocks) >= 6
    outputs = []
    for language, code in [("bash", quick_start()[0]), *blocks]:
        command = ["bash", "-e", "-c", code] if language == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, env=env, cwd=work, capture_output=True, text=True)
        assert result.returncode == 0, f"{code}\n{result.stderr}"
        assert "Traceback" not in result.stderr, f"{code}\n{result.stderr}"
        outputs.append(result.stdout)
    assert any("docs-hnsw" in out.splitlines() for out in outputs)  # llm index default docs
    found = subprocess.run(
        ["llm", "index", "similar", "docs-idx", "-c", "cats", "--where", "kind", "doc"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(found) == 10 and all(json.loads(row)["metadata"] == {"kind": "doc"} for row in found)
    notes = subprocess.run(
        ["llm", "similar", "notes", "-c", "cat", "-n", "3"],
        env=env,
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stored = {json.loads(row)["id"]: json.loads(row)["metadata"] for row in notes.splitlines()}
    assert stored == {
        "note-1": {"kind": "note", "author": {"name": "Ann"}},
        "note-2": {"kind": "note"},
        "doc-1": {"kind": "doc"},
    }
