"""`make demo` end to end at a tiny size: the real llm command, the real model,
every backend; with no network at all where `unshare -n` is allowed."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

llm_minilm_onnx = pytest.importorskip("llm_minilm_onnx")
if not llm_minilm_onnx.available():
    pytest.skip("the example model's packages are not installed", allow_module_level=True)

ROOT = Path(__file__).parents[1]


def offline_prefix() -> list[str]:
    "`unshare -n` where this user may cut the network off, else nothing."
    if shutil.which("unshare") is None:
        return []
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n"] if probe.returncode == 0 else []


def test_demo_runs_end_to_end(tmp_path):
    environment = {**os.environ, "DEMO_SIZE": "200", "DEMO_DIR": str(tmp_path / "demo")}
    result = subprocess.run(
        [*offline_prefix(), sys.executable, str(ROOT / "examples" / "demo.py")],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = result.stdout
    assert result.returncode == 0, output[-3000:] + result.stderr[-3000:]
    assert "200 docstrings from" in output
    for name in ("stdlib-exact", "stdlib-faiss", "stdlib-hnswlib", "stdlib-chroma"):
        assert f"Full build of {name}: 200 indexed, 0 removed, 200 rows" in output
        assert f"Build of {name}: 1 indexed, 2 removed, 198 rows" in output
        row = re.search(rf"\| {name} +\| +([\d.]+) \| +([\d.]+) \| +(\d+)x \|", output)
        assert row is not None, output[-2000:]
        assert float(row.group(2)) >= 0.95
    assert "$ llm similar stdlib -c 'a queue that threads can share' -n 3" in output
    assert "--where module" in output and "--prefix" in output
    assert "Full build of stdlib-words: 200 indexed, 0 removed, 200 rows" in output
    assert re.search(r"Deleted .*: gone\. Re-embedded .*: now found", output)
    # The demo's database is an ordinary llm database, left for the user.
    assert (tmp_path / "demo" / "embeddings.db").exists()
