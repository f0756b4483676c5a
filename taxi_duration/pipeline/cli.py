"""The thin shell every entry point's click command wears: one line per failure, exit non-zero."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from taxi_duration.core.errors import EXIT_LOST_SERVER, EXIT_USER_ERROR, PipelineError
from taxi_duration.tracking import runs
from taxi_duration.tracking.server import lost_server_message

P = ParamSpec("P")
R = TypeVar("R")


def exits_cleanly(step: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a step's CLI: a PipelineError becomes `<step>: error: ...` on stderr and exit 2;
    a tracking server lost mid-step (MLflow gave up retrying) one line and exit 3.

    The step's MLflow run is ended FAILED by the `with step_run()` block the error passes
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
                message = lost_server_message(exc, runs.tracking_uri())
                if message is None:
                    raise  # a bug: keep the traceback
                print(f"{step}: error: {message}", file=sys.stderr, flush=True)
                sys.exit(EXIT_LOST_SERVER)

        return wrapper

    return decorate
