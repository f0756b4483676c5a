"""One way for every step to fail: a single line naming the problem and the fix, exit non-zero."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

EXIT_USER_ERROR = 2
EXIT_LOST_SERVER = 3


class PipelineError(Exception):
    """A problem the user can fix (bad input, missing data, unreachable server).

    The message is one sentence that names the problem and then the fix; the CLI shell prints
    it without a traceback. Any other exception is a bug and keeps its traceback.
    """


def exits_cleanly(step: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a step's CLI: a PipelineError becomes `<step>: error: ...` on stderr and exit 2;
    a tracking server lost mid-step (MLflow gave up retrying) one line and exit 3.

    The step's MLflow run is ended FAILED by the `with start_run()` block the error passes
    through; exiting non-zero makes `mlflow run` record FAILED as well.
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except PipelineError as exc:
                print(f"{step}: error: {exc}", file=sys.stderr, flush=True)
                sys.exit(EXIT_USER_ERROR)
            except Exception as exc:
                from mlflow import get_tracking_uri

                from steps.preflight import lost_server_message

                message = lost_server_message(exc, get_tracking_uri())
                if message is None:
                    raise  # a bug: keep the traceback
                print(f"{step}: error: {message}", file=sys.stderr, flush=True)
                sys.exit(EXIT_LOST_SERVER)

        return wrapper

    return decorate
