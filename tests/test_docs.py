"Docs that are generated (CLI help, SQL schema) must match the code."

import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).parent.parent / "docs"


def test_generated_docs_are_current():
    result = subprocess.run(
        [sys.executable, "-m", "cogapp", "--check", *sorted(map(str, DOCS.glob("*.md")))],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (
        "Generated docs are stale: run `cog -r docs/*.md`\n" + result.stdout + result.stderr
    )
