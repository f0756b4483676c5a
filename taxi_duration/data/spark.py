"""A Spark session as the pipeline's Spark work wants it (predict's scoring, train_best's refit):
pyspark is an optional extra (pip install -e '.[spark]'), refused in one line where missing."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Any

from taxi_duration.core.errors import PipelineError

NEEDS_PYSPARK = "engine=spark needs pyspark; install it with pip install -e '.[spark]'"


def check_pyspark() -> None:
    """Fail in one line, before any run starts, when pyspark is not installed."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise PipelineError(NEEDS_PYSPARK) from None


def session(master: str, app: str) -> Any:
    """A Spark session on `master` whose executors run this interpreter (`app` names it in
    Spark's UI).

    Timestamps are read and cast in UTC, so wall-clock times come out as pandas reads them;
    nanosecond timestamps (which Spark cannot read as timestamps) come in as integers and are
    converted to microseconds, as the pandas engine's Arrow cast does.
    """
    check_pyspark()
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    # pyspark 4.3 warns on every UDF that it does not fully support pandas 3; the UDFs here only
    # hand plain numeric columns over, which works (tests/integration compares both engines).
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
    spark = (
        SparkSession.builder.master(master)
        .appName(f"nyc-taxi-duration-{app}")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.legacy.parquet.nanosAsLong", "true")
        # A malformed value becomes a missing one (as in the pandas engine), not a failed job.
        .config("spark.sql.ansi.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark
