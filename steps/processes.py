"""Is a process still there? Used to tell a download or a pipeline step that died (SIGKILL,
a closed laptop) from one that is still working (a leaf: only the standard library)."""

from __future__ import annotations

import os
from pathlib import Path

# Every step runs as `python -m steps.<name>`: a live pid whose command line lacks this is a
# reused pid that now belongs to some other program.
STEP_COMMAND_MARK = b"steps."


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this host)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pipeline_process_alive(pid: int) -> bool:
    """Whether `pid` is a live pipeline step (not a dead one, nor a reused pid)."""
    if not process_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        return STEP_COMMAND_MARK in cmdline.read_bytes()
    return True
