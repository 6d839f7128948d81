"""Relevance: how well a ranking finds what a person marked as relevant
(nDCG@10, MRR@10, recall@10 and @100), and the labelled queries it is judged
on: JSON lines ``{"query": TEXT, "relevant": [ID, ...]}`` (or ``{ID: GRADE}``
for graded judgements), or TREC qrels (``QID 0 DOCID GRADE``) with a file of
queries (``QID<TAB>TEXT`` lines, or JSON lines ``{"id": QID, "text": TEXT}``).

Agreement with an exact scan (recall against brute force, evaluate.py) says
the index finds what llm's brute force finds; these numbers say whether that
is what the user meant.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from .errors import VectorIndexError

METRICS = ("ndcg@10", "mrr@10", "recall@10", "recall@100")
DEPTH = 100  # the deepest rank any metric reads


@dataclass(frozen=True)
class Judged:
    "One labelled query: its text and the grade of each relevant id (> 0)."

    query: str
    relevant: dict[str, float]


def scores(ranked: Sequence[str], relevant: dict[str, float]) -> dict[str, float]:
    "Every metric in METRICS for one ranking (ids, best first)."
    gains = [relevant.get(id, 0.0) for id in ranked[:DEPTH]]
    ideal = sorted(relevant.values(), reverse=True)[:10]
    dcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(gains[:10]))
    idcg = sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    first = next((i for i, g in enumerate(gains[:10]) if g > 0), None)
    found = [id for id in ranked[:DEPTH] if id in relevant]
    return {
        "ndcg@10": dcg / idcg if idcg else 0.0,
        "mrr@10": 1 / (first + 1) if first is not None else 0.0,
        "recall@10": len(set(found) & set(ranked[:10])) / len(relevant),
        "recall@100": len(set(found)) / len(relevant),
    }


def mean_scores(rankings: Sequence[Sequence[str]], judged: Sequence[Judged]) -> dict[str, float]:
    "The mean of each metric over the queries (rankings in the same order)."
    totals = dict.fromkeys(METRICS, 0.0)
    for ranked, query in zip(rankings, judged):
        for metric, value in scores(ranked, query.relevant).items():
            totals[metric] += value
    return {metric: total / max(len(judged), 1) for metric, total in totals.items()}


def load(path: str | Path, queries: str | Path | None = None) -> list[Judged]:
    """Labelled queries from a JSON lines file, or from TREC qrels plus a
    queries file. Refused in one line, naming the file and line, when a line
    is not what it should be or no query has a relevant id."""
    path = Path(path)
    lines = _lines(path)
    if queries is None:
        judged = [_json_line(path, number, line) for number, line in lines]
    else:
        judged = _trec(path, lines, Path(queries))
    judged = [query for query in judged if query.relevant]
    if not judged:
        raise VectorIndexError(f"{path}: no query with a relevant id")
    return judged


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise VectorIndexError(
            f"Cannot read {path}: {getattr(error, 'strerror', None) or error}"
        ) from None
    return [(number, line) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _json_line(path: Path, number: int, line: str) -> Judged:
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    query = value.get("query") if isinstance(value, dict) else None
    relevant = value.get("relevant") if isinstance(value, dict) else None
    if isinstance(relevant, list) and all(isinstance(id, str) for id in relevant):
        relevant = dict.fromkeys(relevant, 1.0)
    if not (
        isinstance(query, str)
        and query.strip()
        and isinstance(relevant, dict)
        and all(
            isinstance(g, (int, float)) and not isinstance(g, bool) and math.isfinite(g)
            for g in relevant.values()
        )
    ):
        raise VectorIndexError(
            f'{path}:{number}: expected {{"query": TEXT, "relevant": [ID, ...]}}'
        )
    return Judged(query, {id: float(g) for id, g in relevant.items() if g > 0})


def _trec(path: Path, lines: list[tuple[int, str]], queries_path: Path) -> list[Judged]:
    texts: dict[str, str] = {}
    for number, line in _lines(queries_path):
        if line.lstrip().startswith("{"):
            try:
                value = json.loads(line)
                qid, text = str(value["id"]), value["text"]
            except (ValueError, KeyError, TypeError):
                raise VectorIndexError(
                    f'{queries_path}:{number}: expected {{"id": QID, "text": TEXT}}'
                ) from None
        else:
            qid, tab, text = line.partition("\t")
            if not tab:
                raise VectorIndexError(f"{queries_path}:{number}: expected QID<TAB>TEXT")
        texts[qid.strip()] = text
    relevant: dict[str, dict[str, float]] = {}
    for number, line in lines:
        fields = line.split()
        try:
            qid, _, id, grade = fields
            value = float(grade)
        except ValueError:
            raise VectorIndexError(f"{path}:{number}: expected QID 0 DOCID GRADE") from None
        if qid not in texts:
            raise VectorIndexError(f"{path}:{number}: query {qid!r} is not in {queries_path}")
        if value > 0:
            relevant.setdefault(qid, {})[id] = value
    return [Judged(texts[qid], grades) for qid, grades in relevant.items()]


@dataclass
class Judgement:
    "One mode (and fusion setting) judged on labelled queries."

    label: str  # e.g. "hybrid convex w=0.5"
    mode: str
    settings: dict
    scores: dict[str, float]
    p50_ms: float
    queries: int

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "mode": self.mode,
            "settings": self.settings,
            **self.scores,
            "p50_ms": self.p50_ms,
            "queries": self.queries,
        }


SWEEP_WEIGHTS = tuple(round(0.1 * step, 1) for step in range(11))


def judge(
    index,
    judged: Sequence[Judged],
    *,
    sweep: bool = False,
    progress=None,
) -> list[Judgement]:
    """Each mode the index offers (vector; keyword and hybrid with keywords)
    on the labelled queries, with p50 latency of a query through the plugin
    (the text embedded once beforehand, outside the timing). ``sweep``: hybrid
    at every weight of SWEEP_WEIGHTS for each fusion, at the index's depth."""
    import statistics
    import time

    import llm

    from . import fusion, hybrid

    texts = [query.query for query in judged]
    model = llm.get_embedding_model(index.record.model)
    vectors = list(model.embed_multi(texts))
    plans: list[tuple[str, str, dict[str, Any]]] = [("vector", "vector", {})]
    if index.record.keywords:
        own = {key: index.record.keywords[key] for key in fusion.DEFAULTS}
        plans += [("keyword", "keyword", {}), (_label("hybrid", own), "hybrid", {})]
        if sweep:
            plans += [
                (
                    _label("hybrid", {**own, "fusion": name, "weight": weight}),
                    "hybrid",
                    {"fusion": name, "weight": weight},
                )
                for name in fusion.FUSIONS
                for weight in SWEEP_WEIGHTS
            ]
    results = []
    for label, mode, settings in plans:
        # The top 10 as a query for 10 returns them (each side's depth is
        # then what a user's query gets), timed; the top 100 for recall@100.
        tops, deep, timings = [], [], []
        for text, vector in zip(texts, vectors):
            started = time.perf_counter()
            entries = hybrid.answer(
                index, text, 10, mode, partial(_given, vector), settings=settings or None
            )
            timings.append((time.perf_counter() - started) * 1000)
            tops.append([entry.id for entry in entries])
            deep.append(
                [
                    entry.id
                    for entry in hybrid.answer(
                        index,
                        text,
                        DEPTH,
                        mode,
                        partial(_given, vector),
                        settings=settings or None,
                    )
                ]
            )
        if progress:
            progress(1, len(plans))
        scores = mean_scores(tops, judged)
        scores["recall@100"] = mean_scores(deep, judged)["recall@100"]
        results.append(
            Judgement(label, mode, settings, scores, statistics.median(timings), len(judged))
        )
    return results


def _label(mode: str, settings: dict) -> str:
    depth = f", depth {settings['depth']}" if settings.get("depth") else ""
    return f"{mode} {settings['fusion']} w={settings['weight']:g}{depth}"


def judgement_table(results: Sequence[Judgement]) -> str:
    header = "| mode | nDCG@10 | MRR@10 | recall@10 | recall@100 | p50 ms |"
    lines = [header, "|---|---|---|---|---|---|"]
    for result in results:
        s = result.scores
        lines.append(
            f"| {result.label} | {s['ndcg@10']:.3f} | {s['mrr@10']:.3f} | "
            f"{s['recall@10']:.3f} | {s['recall@100']:.3f} | {result.p50_ms:.2f} |"
        )
    return "\n".join(lines)


def _given(vector: Any) -> Any:
    "The query's vector, already embedded (hybrid.answer asks for it by a call)."
    return vector
