"""The thin shell every entry point's click command wears: one line per failure, exit non-zero;
and the options of training that main, retrain and backtest share."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import click

from taxi_duration.core.contracts import (
    DEFAULT_CACHE_DIR,
    DEFAULT_EARLY_STOPPING_ROWS,
    DEFAULT_FEATURES,
    DEFAULT_HPO_SAMPLE_ROWS,
    DEFAULT_MIN_CONFIDENCE,
    TLC_URL,
)
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


# main's training options, as retrain and backtest pass them on to it (every option of main but
# its months, the model name and force): defined once, so the three take the same defaults.
TRAINING_OPTIONS = (
    click.option("--taxi", default="green", show_default=True),
    click.option("--source", default=TLC_URL, show_default=True, help="URL base or folder."),
    click.option("--cache-dir", default=DEFAULT_CACHE_DIR, show_default=True),
    click.option("--features", default=DEFAULT_FEATURES, show_default=True, help="time or course."),
    click.option("--encoding", default="categorical", show_default=True),
    click.option("--min-duration", type=float, default=1.0, show_default=True),
    click.option("--max-duration", type=float, default=60.0, show_default=True),
    click.option("--max-evals", type=int, default=50, show_default=True),
    click.option("--seed", type=int, default=42, show_default=True),
    click.option("--num-boost-round", type=int, default=1000, show_default=True),
    click.option("--early-stopping-rounds", type=int, default=50, show_default=True),
    click.option("--backend", default="local", show_default=True),
    click.option("--parallelism", type=int, default=2, show_default=True),
    click.option("--spark-master", default="local[*]", show_default=True),
    click.option("--hpo-sample-rows", type=int, default=DEFAULT_HPO_SAMPLE_ROWS, show_default=True),
    click.option("--rmse-tolerance", type=float, default=0.0, show_default=True),
    click.option("--engine", default="local", show_default=True, help="Refit: local or spark."),
    click.option("--num-workers", type=int, default=2, show_default=True, help="Spark trainers."),
    click.option(
        "--early-stopping-rows", type=int, default=DEFAULT_EARLY_STOPPING_ROWS, show_default=True
    ),
    click.option("--min-improvement", type=float, default=0.0, show_default=True),
    click.option("--min-confidence", type=float, default=DEFAULT_MIN_CONFIDENCE, show_default=True),
)


def training_options(command: Callable[P, R]) -> Callable[P, R]:
    """Add TRAINING_OPTIONS to a click command."""
    for option in reversed(TRAINING_OPTIONS):
        command = option(command)
    return command
