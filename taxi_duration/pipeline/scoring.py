"""What predict does with the models and the months: resolve each model URI once to a fixed
version, check that a month can be scored, score it in this process (pandas) or on Spark, read
the errors back from the predictions file, and log the month-by-month monitoring."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from taxi_duration.core.contracts import (
    COMPARE_PREDICTION,
    DRIFT_BY_MONTH_CSV,
    DRIFT_BY_MONTH_JSON,
    DRIFT_BY_MONTH_PLOT,
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
from taxi_duration.data.parquet import record_batches
from taxi_duration.data.spark import session as spark_session
from taxi_duration.data.tlc import null_count, read_trips
from taxi_duration.model import monitoring
from taxi_duration.model.drift import (
    COUNTED_COLUMNS,
    DRIFT_PSI,
    TOLERANCE,
    WATCH_PSI,
    Counts,
    Profile,
    measure,
    status_without_profile,
)
from taxi_duration.model.features import with_duration
from taxi_duration.model.figures import plot_drift_by_month, plot_metrics_by_month
from taxi_duration.model.monitoring import (
    COMPARE_TO,
    MODEL,
    NO_ERRORS,
    ErrorSums,
    ModelUsed,
    MonthResult,
    in_training_filter,
)
from taxi_duration.tracking import pyfunc, registry, runs, spark

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


@dataclass(frozen=True)
class Monitor:
    """What a month of the model is measured against: the duration filter it was trained with,
    its reference profile (None: registered before models carried one) and its test RMSE, and
    the thresholds of the month's status."""

    bounds: tuple[float, float]
    profile: Profile | None
    test_rmse: float | None
    drift_psi: float = DRIFT_PSI
    tolerance: float = TOLERANCE

    def result(
        self, month: Month, rows: int, errors: dict[str, ErrorSums], counts: Counts | None
    ) -> MonthResult:
        """The month's result for the model: its errors, its drift and its status."""
        rmse = errors[PREDICTION].rmse
        if self.profile is None or counts is None:
            status = status_without_profile(rmse, self.test_rmse, self.tolerance)
            return MonthResult(month, rows, errors, None, status)
        drift = measure(self.profile, counts, rmse, self.drift_psi, self.tolerance)
        return MonthResult(month, rows, errors, drift, drift.status)


def monitor_of(used: ModelUsed, drift_psi: float, tolerance: float) -> Monitor:
    """The monitor of a resolved version: its filter, profile and test RMSE."""
    found = registry.live_version(used.name, used.version)
    test_rmse = found.tags.get("test_rmse") if found is not None else None
    return Monitor(
        training_filter(used),
        pyfunc.reference_profile(used.uri),
        None if test_rmse is None else float(test_rmse),
        drift_psi,
        tolerance,
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
    monitor: Monitor,
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
        results.append(monitor.result(month, *read_back(dest, list(loaded), monitor)))
    return results


def score_with_spark(
    months: Mapping[Month, Path],
    models: Sequence[ModelUsed],
    staged: Path,
    taxi: str,
    master: str,
    monitor: Monitor,
) -> list[MonthResult]:
    """Score each month on Spark: Spark's parquet reader, the models as UDFs, one file out."""
    session = spark_session(master, "predict")
    try:
        udfs = spark.udfs(session, {used.column: used.uri for used in models})
        results = []
        for month, path in months.items():
            trips = spark.read_trips(session, path)
            dest = staged / predictions_file(taxi, str(month))
            spark.write(spark.score(trips, udfs), dest, prediction_columns(models))
            results.append(monitor.result(month, *read_back(dest, list(udfs), monitor)))
        return results
    finally:
        session.stop()


def log_monitoring(
    results: Sequence[MonthResult], models: Sequence[ModelUsed], monitor: Monitor
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics per month (step YYYYMM), the error and drift tables (json, csv), their charts
    and the description; returns both tables."""
    for result in results:
        runs.log_metrics(
            monitoring.month_metrics(result, models), step=monitoring.month_step(result.month)
        )
    table = monitoring.metrics_table(results, models)
    drift = monitoring.drift_table(results)
    for frame, json_path, csv_path in (
        (table, METRICS_BY_MONTH_JSON, METRICS_BY_MONTH_CSV),
        (drift, DRIFT_BY_MONTH_JSON, DRIFT_BY_MONTH_CSV),
    ):
        records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
        runs.log_json(records, json_path)
        runs.log_table(frame, csv_path)
    title = "Error by month (rows inside the training duration filter)"
    runs.log_figure(plot_metrics_by_month(table, ["rmse", "bias"], title), RMSE_BY_MONTH_PLOT)
    if monitor.profile is not None:
        figure = plot_drift_by_month(drift, WATCH_PSI, monitor.drift_psi)
        runs.log_figure(figure, DRIFT_BY_MONTH_PLOT)
    runs.set_description(monitoring_description(models, table, drift, monitor))
    return table, drift


def monitoring_description(
    models: Sequence[ModelUsed], table: pd.DataFrame, drift: pd.DataFrame, monitor: Monitor
) -> str:
    """The predict run's description: the table of months, and what made each status."""
    scored = " vs ".join(f"{m.label} ({m.requested})" for m in models)
    reasons = "\n".join(
        f"- **{month}: {status}**" + (f": {why}" if why else "")
        for month, status, why in zip(
            drift["month"], drift["status"], drift["reasons"], strict=True
        )
    )
    rule = (
        f"A month is **degraded** when its RMSE is more than {monitor.tolerance:.0%} above the "
        f"model's own test RMSE, **drift** when an input or the predictions moved by a PSI of "
        f"{monitor.drift_psi:g} or more from the training data (the model's reference profile), "
        "else **ok**."
    )
    if monitor.profile is None:
        rule += (
            f" {models[0].label} was registered before models carried a reference profile: "
            "its drift is unavailable, its status comes from its error alone."
        )
    return (
        f"Batch predictions of {scored}.\n\n{monitoring.markdown(table, drift)}\n\n"
        f"{reasons}\n\n{rule}\n"
    )


def read_back(
    path: Path, columns: Sequence[str], monitor: Monitor
) -> tuple[int, dict[str, ErrorSums], Counts | None]:
    """A predictions file's rows; per prediction column, the errors on the rows inside the
    training filter; and (when the model has a profile) the model's trips and predictions
    counted into the profile's bins: the rows inside the filter, or every row of a month without
    actual minutes (a serving log). Read a batch at a time: both engines' figures come from
    here, in bounded memory whatever the month's size."""
    rows, sums = 0, dict.fromkeys(columns, NO_ERRORS)
    profile = monitor.profile
    scored = everything = profile.empty_counts() if profile else None
    wanted = [TARGET, *columns, *(COUNTED_COLUMNS if profile else ())]
    for batch in record_batches(path, wanted):
        actual = batch.column(TARGET).to_numpy(zero_copy_only=False)
        for column in columns:
            predicted = batch.column(column).to_numpy(zero_copy_only=False)
            sums[column] += ErrorSums.of(actual, predicted, *monitor.bounds)
        rows += batch.num_rows
        if profile is not None and scored is not None and everything is not None:
            frame = batch.to_pandas()
            keep = in_training_filter(np.asarray(actual, dtype="float64"), *monitor.bounds)
            scored += profile.count(frame[keep], frame[PREDICTION].to_numpy()[keep])
            everything += profile.count(frame, frame[PREDICTION].to_numpy())
    counts = scored if scored is not None and scored.rows else everything
    return rows, sums, counts
