"""Labelled sets of real text for judging relevance, built offline from what
ships with the machine (known-item sets: each query has one relevant document).

- ``stdlib``: the standard library's docstrings (read with ``ast``, nothing is
  imported). A docstring of two paragraphs or more gives a query (its first
  paragraph, the summary) and a document (the qualified name and the rest).
  One-paragraph docstrings stay in the corpus as documents no query is about.
- ``man3``: section 3 of the manual (the C library). A page gives a query
  (the description in its NAME line, "formatted output conversion") and a
  document (the page without that description: names, synopsis, body).
- ``identifiers``: the stdlib set's documents, each asked for by its bare
  name as a user types a name seen in code (``check_output`` for
  subprocess.check_output), where that name is snake_case and no other
  document has it: the case dense embeddings are known to miss.

A query that is the summary of two documents (``Return self==value.``) is
ambiguous and left out. Man sections 1 and 8 and Debian's package
descriptions are held out for acceptance: never build a set from them here.

    python benchmarks/relevance_sets.py          # prints each set's size

Rendered man pages are cached in bench-data/relevance/ (about 50 s once).
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import re
import subprocess
import sys
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "examples"))
from stdlib_corpus import NEVER, NOT_PUBLIC, _entries_in, _is_public, module_name  # noqa: E402

CACHE = ROOT / "bench-data" / "relevance"
MAN3 = Path("/usr/share/man/man3")
MAX_QUERIES = 1000


@dataclass
class LabelledSet:
    name: str
    documents: list[dict]  # {"id", "content"}
    queries: list[dict]  # {"query", "relevant": [id]}
    corpus: str | None = None  # the set whose documents these are, if another's


def _stable_order(items: list[dict], key: str) -> list[dict]:
    return sorted(items, key=lambda item: hashlib.sha1(item[key].encode()).digest())


def _known_items(name: str, pairs: list[tuple[str, str, str]], others: list[dict]) -> LabelledSet:
    "(id, query, document) triples -> a set; queries seen twice are dropped."
    seen = Counter(" ".join(query.lower().split()) for _, query, _ in pairs)
    documents = [{"id": id, "content": document} for id, _, document in pairs] + others
    queries = [
        {"query": query, "relevant": [id]}
        for id, query, _ in pairs
        if seen[" ".join(query.lower().split())] == 1
    ]
    return LabelledSet(
        name, _stable_order(documents, "id"), _stable_order(queries, "query")[:MAX_QUERIES]
    )


def stdlib_set(root: Path | None = None) -> LabelledSet:
    root = Path(root or sysconfig.get_paths()["stdlib"])
    pairs, others, found = [], [], set()
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        if any(part in NEVER | NOT_PUBLIC for part in relative.parts) or "-" in path.stem:
            continue
        try:
            tree = ast.parse(path.read_bytes())
        except (SyntaxError, ValueError):
            continue
        for name, _, docstring in _entries_in(tree, module_name(relative)):
            if not docstring or name in found or not _is_public(name, relative):
                continue
            found.add(name)
            paragraphs = [" ".join(p.split()) for p in docstring.strip().split("\n\n")]
            summary, rest = paragraphs[0], " ".join(paragraphs[1:])
            if 4 <= len(summary.split()) <= 40 and len(rest.split()) >= 15:
                pairs.append((name, summary, f"{name}\n{rest}"))
            else:
                others.append({"id": name, "content": f"{name}\n{' '.join(paragraphs)}"})
    return _known_items("stdlib", pairs, others)


def _rendered(page: Path) -> str:
    CACHE.mkdir(parents=True, exist_ok=True)
    cached = CACHE / (page.name.removesuffix(".gz") + ".txt")
    if not cached.exists():
        roff = gzip.decompress(page.read_bytes())
        text = subprocess.run(
            ["groff", "-man", "-Tutf8", "-P-cbou", "-rLL=200n"],
            input=roff,
            capture_output=True,
            check=False,
        ).stdout.decode("utf-8", "replace")
        cached.write_text(text)
    return cached.read_text()


def man3_set() -> LabelledSet:
    pairs = []
    for page in sorted(MAN3.glob("*.3.gz")):
        if page.is_symlink():
            continue
        text = _rendered(page)
        match = re.search(r"^NAME\n(.*?)\n(?=\S)", text, re.S | re.M)
        if not match:
            continue
        name_line = " ".join(match.group(1).split())
        names, dash, description = name_line.partition(" - ")
        if not dash or len(description.split()) < 2:
            continue
        body = text[match.end() :]
        # Running headers and footers repeat the page's name: drop them.
        lines = [line for line in body.splitlines() if not re.match(r"^\S+\(3\)\s", line)]
        document = " ".join(f"{names}\n{' '.join(lines)}".split())
        pairs.append((page.name.removesuffix(".3.gz"), description, document))
    return _known_items("man3", pairs, [])


def identifiers_set(stdlib: LabelledSet) -> LabelledSet:
    def bare(id: str) -> str:
        return id.rsplit(".", 1)[-1]

    seen = Counter(bare(document["id"]) for document in stdlib.documents)
    queries = [
        {"query": bare(document["id"]), "relevant": [document["id"]]}
        for document in stdlib.documents
        if seen[bare(document["id"])] == 1
        and "_" in bare(document["id"]).strip("_")
        and not bare(document["id"]).startswith("_")
    ]
    return LabelledSet(
        "identifiers",
        stdlib.documents,
        _stable_order(queries, "query")[:MAX_QUERIES],
        corpus=stdlib.name,
    )


def sets() -> list[LabelledSet]:
    stdlib = stdlib_set()
    return [stdlib, man3_set(), identifiers_set(stdlib)]


if __name__ == "__main__":
    for labelled in sets():
        words = sum(len(d["content"].split()) for d in labelled.documents)
        print(
            f"{labelled.name}: {len(labelled.documents):,} documents "
            f"({words / len(labelled.documents):.0f} words each), "
            f"{len(labelled.queries):,} queries"
        )
        for query in labelled.queries[:3]:
            print(f"  {query['query']!r} -> {query['relevant']}")
