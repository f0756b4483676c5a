"""The pipeline's one kind of expected failure, and the exit codes a step ends with (a leaf)."""

from __future__ import annotations

EXIT_USER_ERROR = 2
EXIT_LOST_SERVER = 3


class PipelineError(Exception):
    """A problem the user can fix (bad input, missing data, unreachable server).

    The message is one sentence that names the problem and then the fix; the CLI shell prints
    it without a traceback (pipeline/cli.py). Any other exception is a bug and keeps its
    traceback.
    """
