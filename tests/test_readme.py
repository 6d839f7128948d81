"""The README shows commands with flags: each must still exist as shown."""

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
    declared = {opt for param in group.commands[name].params
                for opt in (*param.opts, *param.secondary_opts)}
    for word in words[1:]:
        if word.startswith("-") and word != "-":
            assert word in declared, f"{command}: {word} is not an option of {name}"
