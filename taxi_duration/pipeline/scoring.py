"""What predict does with the models and the months: resolve each model URI once to a fixed
version, check that a month can be scored, score it in this process (pandas) or on Spark, read
the errors back from the predictions file, and log the month-by-month monitoring."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from taxi_duration.core.contracts import (
    COMPARE_PREDICTION,
    DROPOFF,
    FEATURIZE,
    METRICS_BY_MONTH_CSV,
    METRICS_BY_MONTH_JSON,
    PICKUP,
    PREDICTION,
    PREDICTION_INPUT_COLUMNS,
    RMSE_BY_MONTH_PLOT,
    SCORING_COLUMNS,
    TARGET,
    TRAIN_BEST,
    model_input_columns,
    predictions_file,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import ModelRef, Month
from taxi_duration.core.reuse import unquote
from taxi_duration.data import outputs
from taxi_duration.data.tlc import null_count, read_trips
from taxi_duration.model import monitoring
from taxi_duration.model.features import with_duration
from taxi_duration.model.figures import plot_metrics_by_month
from taxi_duration.model.monitoring import (
    COMPARE_TO,
    MODEL,
    NO_ERRORS,
    ErrorSums,
    ModelUsed,
    MonthResult,
)
from taxi_duration.tracking import pyfunc, registry, runs, spark

_BATCH_ROWS = 1 << 20  # rows read back from a predictions file at a time


# A predictions file may lack the times (no actual minutes then), never the model's inputs.
OPTIONAL_COLUMNS = (PICKUP, DROPOFF)


ROLE_COLUMN = {MODEL: PREDICTION, COMPARE_TO: COMPARE_PREDICTION}


def prediction_columns(models: Sequence[ModelUsed]) -> list[str]:
    """The predictions file's columns, in order."""
    return [*PREDICTION_INPUT_COLUMNS, *(m.column for m in models)]


def prediction_frame(trips: pd.DataFrame, predictions: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """The predictions file of a month: the trips' pickup time, zones and distance, the actual
    minutes (missing where a timestamp is) and one column of predicted minutes per model."""
    frame = with_duration(trips)[list(PREDICTION_INPUT_COLUMNS)]
    return frame.assign(**{c: np.asarray(p, dtype="float64") for c, p in predictions.items()})


def resolve_version(
    ref: ModelRef,
    aliases: Mapping[str, str] | None,
    version_exists: Callable[[str], bool],
    versions: Callable[[], list[str]],
    name: str,
) -> str:
    """The version number `ref` names, or a one-line refusal: no such model, alias or version.

    `aliases` is the registered model's alias -> version map (None: no such model);
    `version_exists` and `versions` ask the registry only when needed.
    """
    if aliases is None:
        raise PipelineError(
            f"{name} {ref}: there is no registered model {ref.name!r} in this tracking store; "
            "train and register one first (mlflow run . -e main) or check the name"
        )
    if ref.alias is not None:
        if ref.alias not in aliases:
            known = ", ".join(f"@{a} (v{v})" for a, v in sorted(aliases.items())) or "none"
            raise PipelineError(
                f"{name} {ref}: model {ref.name!r} has no alias {ref.alias!r} (its aliases: "
                f"{known}); use one of those or a version number"
            )
        return str(aliases[ref.alias])
    assert ref.version is not None
    if not version_exists(ref.version):
        known = ", ".join(versions()) or "none"
        raise PipelineError(
            f"{name} {ref}: model {ref.name!r} has no version {ref.version} (its versions: "
            f"{known}); use one of those or an alias such as @champion"
        )
    return ref.version


def resolve(ref: ModelRef, role: str, param: str) -> ModelUsed:
    """Resolve a model URI once, against the registry, to a fixed version."""
    found = registry.find_model(ref.name)
    version = resolve_version(
        ref,
        None if found is None else dict(found.aliases),
        lambda number: registry.live_version(ref.name, number) is not None,
        lambda: registry.version_numbers(ref.name),
        param,
    )
    uri = f"models:/{ref.name}/{version}"
    return ModelUsed(
        role, ref.name, version, str(ref), ROLE_COLUMN[role], pyfunc.features_of_model(uri)
    )


def check_inputs(path: Path, fields: Mapping[str, Any], models: Sequence[ModelUsed]) -> None:
    """Refuse, before scoring, a month a model cannot score: a time model needs every trip's
    pickup time (a file without the column, or with trips that lack it)."""
    needing = [m for m in models if PICKUP in model_input_columns(m.features)]
    if not needing:
        return
    if PICKUP not in fields:
        problem = "has no pickup time column"
    elif missing := null_count(path, fields[PICKUP].name):
        problem = f"has {missing:,} trips without a pickup time"
    else:
        return
    who = ", ".join(f"{m.label} (features={m.features})" for m in needing)
    raise PipelineError(
        f"{path.name} {problem}, which {who} needs; score it with a model trained with "
        "features=course, or fix the file"
    )


def training_filter(used: ModelUsed) -> tuple[float, float]:
    """min_duration and max_duration the version was trained with: from its own tags (register
    puts them there, so a version copied to another registry is scored alike), else, for a
    version registered before it did, from the featurize run it was trained from."""
    found = registry.live_version(used.name, used.version)
    assert found is not None  # resolved a moment ago
    tags = found.tags
    if "min_duration" in tags and "max_duration" in tags:
        return float(tags["min_duration"]), float(tags["max_duration"])
    try:
        trained = runs.upstream_run(f"runs:/{found.run_id}", TRAIN_BEST)
        params = runs.lineage(trained)[FEATURIZE].data.params
    except PipelineError as exc:
        raise PipelineError(
            f"{used.label} has neither min_duration/max_duration tags nor its training runs in "
            f"this store, so its duration filter is unknown ({exc}); tag the version with "
            "min_duration and max_duration"
        ) from None
    return float(unquote(params["min_duration"])), float(unquote(params["max_duration"]))


def model_tags(models: Sequence[ModelUsed]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for used in models:
        prefix = used.metric_prefix
        tags |= {
            f"{prefix}model_name": used.name,
            f"{prefix}model_version": used.version,
            f"{prefix}model_uri": used.uri,
        }
    return tags


def score_with_pandas(
    months: Mapping[Month, Path],
    models: Sequence[ModelUsed],
    staged: Path,
    taxi: str,
    bounds: tuple[float, float],
) -> list[MonthResult]:
    """Score each month in this process: read, predict with every model, write, read back."""
    loaded = {used.column: pyfunc.load(used.uri) for used in models}
    results = []
    for month, path in months.items():
        trips = read_trips(path, optional=OPTIONAL_COLUMNS)
        inputs = trips[list(SCORING_COLUMNS)]
        frame = prediction_frame(trips, {c: m.predict(inputs) for c, m in loaded.items()})
        dest = staged / predictions_file(taxi, str(month))
        outputs.write_frame(frame, dest)
        rows, errors = error_sums(dest, list(loaded), *bounds)
        results.append(MonthResult(month, rows, errors))
    return results


def score_with_spark(
    months: Mapping[Month, Path],
    models: Sequence[ModelUsed],
    staged: Path,
    taxi: str,
    master: str,
    bounds: tuple[float, float],
) -> list[MonthResult]:
    """Score each month on Spark: Spark's parquet reader, the models as UDFs, one file out."""
    session = spark.session(master)
    try:
        udfs = spark.udfs(session, {used.column: used.uri for used in models})
        results = []
        for month, path in months.items():
            trips = spark.read_trips(session, path)
            dest = staged / predictions_file(taxi, str(month))
            spark.write(spark.score(trips, udfs), dest, prediction_columns(models))
            rows, errors = error_sums(dest, list(udfs), *bounds)
            results.append(MonthResult(month, rows, errors))
        return results
    finally:
        session.stop()


def log_monitoring(results: Sequence[MonthResult], models: Sequence[ModelUsed]) -> pd.DataFrame:
    """Metrics per month (step YYYYMM), the table (json, csv), the chart and the description."""
    for result in results:
        runs.log_metrics(
            monitoring.month_metrics(result, models), step=monitoring.month_step(result.month)
        )
    table = monitoring.metrics_table(results, models)
    records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
    runs.log_json(records, METRICS_BY_MONTH_JSON)
    runs.log_table(table, METRICS_BY_MONTH_CSV)
    title = "Error by month (rows inside the training duration filter)"
    figure = plot_metrics_by_month(table, ["rmse", "bias"], title)
    runs.log_figure(figure, RMSE_BY_MONTH_PLOT)
    scored = " vs ".join(f"{m.label} ({m.requested})" for m in models)
    runs.set_description(f"Batch predictions of {scored}.\n\n{monitoring.markdown(table)}\n")
    return table


def error_sums(
    path: Path, columns: Sequence[str], min_duration: float, max_duration: float
) -> tuple[int, dict[str, ErrorSums]]:
    """Rows of a predictions file and, per prediction column, the errors on the rows inside the
    training filter; read a batch at a time. Both engines' metrics come from here."""
    rows, sums = 0, dict.fromkeys(columns, NO_ERRORS)
    source = pq.ParquetFile(path)
    for batch in source.iter_batches(batch_size=_BATCH_ROWS, columns=[TARGET, *columns]):
        actual = batch.column(TARGET).to_numpy(zero_copy_only=False)
        for column in columns:
            predicted = batch.column(column).to_numpy(zero_copy_only=False)
            sums[column] += ErrorSums.of(actual, predicted, min_duration, max_duration)
        rows += batch.num_rows
    return rows, sums
