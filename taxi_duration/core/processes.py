"""Is a process still there? Used to tell a download or a pipeline step that died (SIGKILL,
a closed laptop) from one that is still working; and how much memory this one used at most
(a leaf: only the standard library)."""

from __future__ import annotations

import os
import resource
import sys
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


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (what `time -v` calls maximum RSS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 / (1024 if sys.platform == "darwin" else 1)  # bytes on macOS, else KiB
