"""``llm index evaluate``: recall against an exact scan and latency, or,
with labelled queries (``--qrels``), relevance of each query mode."""

from __future__ import annotations

import json
from typing import cast

import click

from .cli_options import database_option, open_database
from .cli_output import evaluation_table, progress_bar, sweep_table
from .evaluate import evaluate, sweep
from .index import Index
from .relevance import judge, judgement_table
from .relevance import load as load_judged


@click.command(name="evaluate")
@click.argument("names", nargs=-1, required=True)
@click.option("-n", "--number", type=int, default=10, show_default=True, help="k in recall@k")
@click.option(
    "--queries",
    type=int,
    default=100,
    show_default=True,
    help="How many queries (probes, or rows of --queries-from)",
)
@click.option(
    "--queries-from",
    metavar="COLLECTION",
    help="Use the vectors of this collection (same model) as queries",
)
@click.option(
    "--queries-file",
    type=click.File("r"),
    help="Use these texts as queries, one a line, embedded with the model",
)
@click.option(
    "--sweep", "sweep_", is_flag=True, help="Measure every value of each index's tunable setting"
)
@click.option("--plot", type=click.Path(dir_okay=False), help="With --sweep: draw it in this PNG")
@click.option(
    "--qrels",
    type=click.Path(exists=True, dir_okay=False),
    help="Judge relevance instead: labelled queries, JSON lines "
    '{"query": TEXT, "relevant": [ID, ...]} (or TREC qrels with --qrels-queries)',
)
@click.option(
    "--qrels-queries",
    type=click.Path(exists=True, dir_okay=False),
    help="With TREC --qrels: the queries, QID<TAB>TEXT lines",
)
@click.option("json_", "--json", is_flag=True, help="Output as JSON")
@database_option
def index_evaluate(
    names,
    number,
    queries,
    queries_from,
    queries_file,
    sweep_,
    plot,
    qrels,
    qrels_queries,
    json_,
    database,
):
    """
    Compare indexes: recall@k against an exact scan, and query latency

    Every index answers the same queries: by default probes, new points as
    far from the first index's stored rows as new text is (stored rows
    flatter a graph: see the tuning docs). Latency is the backend's search,
    one query at a time on one thread.

    \b
        llm index evaluate docs-hnsw
        llm index evaluate docs-exact docs-faiss docs-hnsw -n 20 --queries 500
        llm index evaluate docs-faiss --queries-from held-out-docs
        llm index evaluate docs-faiss docs-hnsw --queries-file questions.txt --json
        llm index evaluate docs-faiss docs-hnsw --sweep --plot curve.png

    With --qrels it judges relevance on queries a person labelled: nDCG@10,
    MRR@10 and recall@10/100 of each mode (vector; keyword and hybrid for an
    index with keywords), with p50 latency; --sweep adds hybrid at every
    fusion weight of both fusions. This is the number to tune fusion by.

    \b
        llm index evaluate docs-hybrid --qrels judged.jsonl
        llm index evaluate docs-hybrid --qrels judged.jsonl --sweep --plot weights.png
    """
    if plot and not sweep_:
        raise click.ClickException("--plot draws a sweep: add --sweep")
    if qrels_queries and not qrels:
        raise click.ClickException("--qrels-queries goes with --qrels")
    db = open_database(database)
    if qrels:
        _judge(db, names, load_judged(qrels, qrels_queries), sweep_, plot, json_)
        return
    texts = queries_file.read().splitlines() if queries_file else None
    indexes = [Index(name, db) for name in names]
    settings = {"queries": queries, "k": number, "queries_from": queries_from, "query_texts": texts}
    try:
        if sweep_:
            sweeps = []
            for index in indexes:
                with progress_bar(f"Sweeping {index.name}") as progress:
                    sweeps.append(sweep(index, **settings, progress=progress))
        else:
            with progress_bar("Evaluating") as progress:
                # a list of indexes in, a list of evaluations out
                results = cast(list, evaluate(indexes, **settings, progress=progress))
    finally:
        for index in indexes:
            index.close()
    if sweep_:
        if plot:
            from .plots import plot_sweeps

            plot_sweeps(sweeps, plot)
        if json_:
            click.echo(json.dumps([s.to_dict() for s in sweeps], indent=2))
        else:
            click.echo("\n\n".join(sweep_table(s) for s in sweeps))
        return
    if json_:
        click.echo(json.dumps([result.to_dict() for result in results], indent=2))
    else:
        click.echo(evaluation_table(results))


def _judge(db, names, judged, sweep_, plot, json_) -> None:
    "``llm index evaluate --qrels``: relevance of each mode of each index."
    results = {}
    for name in names:
        with Index(name, db) as index, progress_bar(f"Judging {name}") as progress:
            results[name] = judge(index, judged, sweep=sweep_, progress=progress)
    if plot:
        from .plots import plot_fusion_sweep

        plot_fusion_sweep(results, plot)
    if json_:
        click.echo(
            json.dumps({name: [r.to_dict() for r in rs] for name, rs in results.items()}, indent=2)
        )
        return
    click.echo(
        "\n\n".join(
            f"{name} ({len(judged)} queries)\n{judgement_table(rs)}" for name, rs in results.items()
        )
    )
