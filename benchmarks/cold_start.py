"""A first query from a cold page cache (issue 23): ``llm --version`` and
``llm index similar NAME ID`` as whole processes, each right after the page
cache is dropped (needs root), and warm, medians of ``--runs``.

    python benchmarks/cold_start.py --database big.db --index NAME --id ROW_ID

Build the index first (for example the 1M synthetic rows of
benchmarks/scale.py, or your own collection): this script only reads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--index", required=True)
    parser.add_argument("--id", required=True, help="a stored row's id to query by")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ["LLM_EMBEDDINGS_DB"] = args.database
    commands = {
        "llm --version": [scale.LLM, "--version"],
        f"llm index similar {args.index} ID": [
            scale.LLM,
            "index",
            "similar",
            args.index,
            args.id,
            "-n",
            "10",
        ],
    }
    cold: dict[str, list[float]] = {label: [] for label in commands}
    warm: dict[str, list[float]] = {label: [] for label in commands}
    for _ in range(args.runs):
        for label, command in commands.items():
            seconds = scale.cold_cache(*command)
            if seconds is None:
                raise SystemExit("Dropping the page cache needs root")
            cold[label].append(seconds)
            warm[label].append(scale.whole_process(*command)[0])
    print(f"| command (median of {args.runs}) | cold page cache s | warm s |")
    print("|---|---|---|")
    for label in commands:
        print(
            f"| `{label}` | {statistics.median(cold[label]):.2f} | "
            f"{statistics.median(warm[label]):.2f} |"
        )


if __name__ == "__main__":
    main()
