"""Named points where the crash tests kill a build or a migration.

``LLM_VECTOR_INDEX_KILL_AT=saved`` makes the process SIGKILL itself when it
reaches the point named ``saved`` (see tests/test_kill.py): deterministic
crashes at the moments that matter (rows read, backend saved, folder
swapped, catalog mid-commit, catalog committed). Unset, a point costs one
dictionary lookup.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "LLM_VECTOR_INDEX_KILL_AT"


def point(name: str) -> None:
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)
