"""A real text corpus every machine with Python has: the standard library's
docstrings, read from its source files with ``ast`` (nothing is imported, so
no module runs: ``antigravity`` would open a browser).

Each entry: id = the qualified name (``urllib.parse.urlsplit``), content = the
docstring's first paragraph, metadata = ``{"module": ..., "kind": ...}`` with
kind one of module, class, function, method.

Order: public names first (no part starting with ``_``, no tests, no IDLE or
tkinter), then everything else; within each tier a stable pseudo-random order
(a hash of the id), so the first N entries are a fair sample at any N and the
same on every machine with the same Python.

    python examples/stdlib_corpus.py 5000 > docstrings.jsonl
"""

from __future__ import annotations

import ast
import hashlib
import json
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

# Folders that are not the library's public API: tests, tools, vendored code.
NOT_PUBLIC = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "pydoc_data",
    "__phello__",
}
NEVER = {"site-packages", "dist-packages", "__pycache__"}


def first_paragraph(docstring: str) -> str:
    "The docstring up to its first blank line, on one line."
    paragraph = docstring.strip().split("\n\n", 1)[0]
    return " ".join(paragraph.split())


def module_name(relative: Path) -> str:
    parts = list(relative.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _entries_in(tree: ast.Module, module: str) -> Iterator[tuple[str, str, str]]:
    "(qualified name, kind, docstring) for the module, its classes, functions, methods."
    yield module, "module", ast.get_docstring(tree) or ""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{module}.{node.name}", "function", ast.get_docstring(node) or ""
        elif isinstance(node, ast.ClassDef):
            yield f"{module}.{node.name}", "class", ast.get_docstring(node) or ""
            for member in node.body:
                if isinstance(member, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    yield (
                        f"{module}.{node.name}.{member.name}",
                        "method",
                        ast.get_docstring(member) or "",
                    )


def _is_public(name: str, relative: Path) -> bool:
    return not any(part in NOT_PUBLIC for part in relative.parts) and not any(
        part.startswith("_") for part in name.split(".")
    )


def entries(root: Path | None = None, *, private: bool = True) -> list[dict]:
    """Every documented name in the standard library, in the order described
    above (``private=False``: the public tier only, read in a third of the time)."""
    root = Path(root or sysconfig.get_paths()["stdlib"])
    skipped = NEVER if private else NEVER | NOT_PUBLIC
    found = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in skipped for part in relative.parts) or "-" in path.stem:
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue  # e.g. the deliberately broken files of the test suite
        module = module_name(relative)
        for name, kind, docstring in _entries_in(tree, module):
            content = first_paragraph(docstring)
            if content and name not in found:
                found[name] = {
                    "id": name,
                    "content": content,
                    "metadata": {"module": module, "kind": kind},
                    "public": _is_public(name, relative),
                }
    return sorted(
        (entry for entry in found.values() if private or entry["public"]),
        key=lambda entry: (not entry["public"], hashlib.sha1(entry["id"].encode()).digest()),
    )


def public_count(all_entries: list[dict]) -> int:
    return sum(entry["public"] for entry in all_entries)


def sample(size: str | int | None) -> list[dict]:
    """The first ``size`` entries; ``None``: the public tier; ``"all"``: everything."""
    if size in (None, "", "public"):
        return entries(private=False)
    if size == "all":
        return entries()
    size = int(size)
    public = entries(private=False)
    return public[:size] if size <= len(public) else entries()[:size]


if __name__ == "__main__":
    chosen = sample(sys.argv[1] if len(sys.argv) > 1 else None)
    for entry in chosen:
        print(json.dumps({"id": entry["id"], "content": entry["content"]}))
