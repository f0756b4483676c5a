"""Scoring on Spark (predict engine=spark): a TLC month read by Spark's own parquet reader into
the canonical trip columns, scored by the registered model as a Spark UDF, and written as the
same predictions file the pandas engine writes (same columns, types and numbers).

pyspark is an optional extra (pip install -e '.[spark]'). The month file is read from the
driver's disk (the download cache or the source folder) and the predictions are staged there
too: a cluster master needs those paths on a filesystem every executor sees.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from taxi_duration.core.contracts import (
    DISTANCE,
    DO,
    DROPOFF,
    PICKUP,
    PU,
    SCORING_COLUMNS,
    TARGET,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.data import outputs
from taxi_duration.data.tlc import COLUMN_ALIASES, trip_columns
from taxi_duration.tracking import pyfunc as model

_SPARK_TYPES = {
    PICKUP: "timestamp_ntz",
    DROPOFF: "timestamp_ntz",
    PU: "long",
    DO: "long",
    DISTANCE: "double",
}
_NANOS_PER_MICRO = 1000


def read_trips(spark: Any, path: Path) -> Any:
    """The month as a Spark DataFrame of the canonical trip columns, whatever the schema
    generation (int32 or int64 zones, us or ns timestamps) or taxi colour (lpep_/tpep_).

    Columns are matched as tlc.read_trips matches them (the footer is read with pyarrow first,
    so a file without the model's columns fails the same way); a missing pickup or dropoff time
    comes back empty.
    """
    from pyspark.sql import functions as F

    fields = trip_columns(path, optional=(PICKUP, DROPOFF))
    frame = spark.read.parquet(str(path))
    spark_types = {field.name: field.dataType.typeName() for field in frame.schema.fields}
    columns = []
    for canonical in COLUMN_ALIASES:
        field = fields.get(canonical)
        if field is None:
            column = F.lit(None).cast(_SPARK_TYPES[canonical])
        elif canonical in (PICKUP, DROPOFF) and spark_types[field.name] in ("long", "integer"):
            column = _timestamp_from_integer(field, path)
        else:
            _check_numeric(field, canonical, path)
            column = F.col(f"`{field.name}`").cast(_SPARK_TYPES[canonical])
        columns.append(column.alias(canonical))
    return frame.select(*columns)


def _check_numeric(field: pa.Field, canonical: str, path: Path) -> None:
    """Refuse what Arrow's cast in the pandas engine refuses too, with the same kind of line."""
    ok = (
        pa.types.is_timestamp(field.type)
        if canonical in (PICKUP, DROPOFF)
        else pa.types.is_integer(field.type)
        or pa.types.is_floating(field.type)
        or pa.types.is_decimal(field.type)
    )
    if not ok:
        raise PipelineError(
            f"{path.name} has columns of unexpected types ({field.name} is {field.type}); "
            "use a TLC trip-record file"
        )


def _timestamp_from_integer(field: pa.Field, path: Path) -> Any:
    """A time Spark read as an integer (a nanosecond timestamp, or plain int64 microseconds as
    Arrow's cast takes them) as a timestamp without time zone."""
    from pyspark.sql import functions as F

    unit = field.type.unit if pa.types.is_timestamp(field.type) else "us"
    if unit == "ns":
        # Integer division, truncating as Arrow's unsafe cast does: a double would lose the
        # last digits of a nanosecond count.
        micros = F.expr(f"`{field.name}` div {_NANOS_PER_MICRO}")
    elif unit == "us" and pa.types.is_integer(field.type):
        micros = F.col(f"`{field.name}`").cast("long")
    else:
        raise PipelineError(
            f"{path.name} stores {field.name} as {field.type}; use a TLC trip-record file"
        )
    return F.timestamp_micros(micros).cast("timestamp_ntz")


def score(trips: Any, udfs: Mapping[str, Any]) -> Any:
    """Add the actual minutes (dropoff - pickup, computed as the pandas engine does) and each
    model's predicted minutes (a column per UDF) to the trips: the predictions file's columns."""
    from pyspark.sql import functions as F

    def micros(column: str) -> Any:
        return F.unix_micros(F.col(column).cast("timestamp"))

    seconds = (micros(DROPOFF) - micros(PICKUP)).cast("double") / 1_000_000.0
    inputs = F.struct(*SCORING_COLUMNS)
    return trips.select(
        PICKUP,
        PU,
        DO,
        DISTANCE,
        (seconds / 60.0).alias(TARGET),
        *(udf(inputs).alias(column) for column, udf in udfs.items()),
    )


def udfs(spark: Any, model_uris: Mapping[str, str]) -> dict[str, Any]:
    """Each model (by its prediction column) as a Spark UDF; the URIs name fixed versions."""
    return {column: model.spark_udf(spark, uri) for column, uri in model_uris.items()}


def write(scored: Any, dest: Path, columns: Sequence[str]) -> None:
    """Write the scored month as one parquet file at `dest`: Spark writes its part files next to
    it, which are then concatenated in order (the row order of the input) and removed."""
    parts_dir = dest.with_name(f".{dest.name}.parts")
    scored.write.mode("overwrite").parquet(str(parts_dir))
    try:
        outputs.merge_parts(sorted(parts_dir.glob("part-*.parquet")), dest, columns)
    finally:
        shutil.rmtree(parts_dir, ignore_errors=True)
