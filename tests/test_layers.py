"""The package's modules import one another without a circle, counting the
imports made only for type checking: index.py (the facade) sits on top, and
what it uses receives what it needs (a record, a database, a small protocol
such as query.Queried or holding.HeldIndex), never the facade itself."""

import ast
from pathlib import Path

import llm_vector_index

PACKAGE = Path(llm_vector_index.__file__).parent


def imports_within_the_package() -> dict[str, set[str]]:
    "Module -> the package's modules it imports (``from . import x`` included)."
    modules = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): path
        for path in PACKAGE.rglob("*.py")
    }
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                found.add(target)
                found.update(f"{target}.{alias.name}" for alias in node.names)
        graph[name] = {other for other in found if other in modules and other != name}
    return graph


def cycle_from(graph: dict[str, set[str]]) -> list[str] | None:
    "One import circle, as the modules along it, or None."
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if name in trail:
            return [*trail[trail.index(name) :], name]
        if name in done:
            return None
        for other in sorted(graph[name]):
            if circle := visit(other, [*trail, name]):
                return circle
        done.add(name)
        return None

    for name in sorted(graph):
        if circle := visit(name, []):
            return circle
    return None


def test_no_module_imports_its_way_back_to_itself():
    graph = imports_within_the_package()
    assert "llm_vector_index.index" in graph["llm_vector_index.cli"]  # the graph is real
    assert cycle_from(graph) is None


def test_the_cycle_finder_finds_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycle_from(graph) == ["a", "b", "c", "a"]
    assert cycle_from({"a": {"b"}, "b": set()}) is None
