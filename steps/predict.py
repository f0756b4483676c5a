"""predict: score TLC months with a registered model, and monitor its error month by month.

Parameters: model_uri (models:/<name>@<alias> or models:/<name>/<version>, default the
champion), compare_to (optional: a second model URI, scored on the same rows), taxi
(green|yellow), months (2021-04, a list 2021-04,2021-05 or a range 2021-04..2021-06), source and
cache_dir (TLC's URL base or a local folder, and the download cache, as for ingest), engine
(pandas: in this process; spark: mlflow.pyfunc.spark_udf on a DataFrame read by Spark),
spark_master (engine=spark), output (a folder or an s3:// prefix for the predictions; empty:
the run's artifacts).
Aliases are resolved once, at the start; tags model_name, model_version, model_uri (and
compare_model_name, compare_model_version, compare_model_uri) name the versions scored.
Artifacts: predictions/<taxi>_<month>.parquet (unless output is set): pickup time, zones,
distance, duration (actual minutes, missing without both timestamps), predicted_duration (and
compare_predicted_duration); monitoring/metrics_by_month.{json,csv}; monitoring/rmse_by_month.png
(RMSE and bias by month, a line per model).
Metrics per month, logged with step = the month as YYYYMM (202104 for 2021-04): rows,
rows_scored (rows whose actual duration lies in the model's training filter, the
min_duration..max_duration of the featurize run it was trained from), rmse, mae and bias (mean
predicted minus actual minutes) on those (compare_rmse, compare_mae, compare_bias for
compare_to). Inputs: each month as a dataset (context inference),
logged by reference: its URL or path, the digest of the file and its columns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from steps import model, monitoring, outputs, registry, runs, spark_scoring
from steps.cli import exits_cleanly
from steps.config import (
    ModelRef,
    Month,
    check_engine,
    check_output,
    check_taxi,
    parse_model_uri,
    parse_month_spec,
)
from steps.contracts import (
    COMPARE_PREDICTION,
    DEFAULT_CACHE_DIR,
    DEFAULT_MODEL_URI,
    DROPOFF,
    FEATURIZE,
    INFERENCE_CONTEXT,
    METRICS_BY_MONTH_CSV,
    METRICS_BY_MONTH_JSON,
    PICKUP,
    PREDICT,
    PREDICTION,
    PREDICTION_INPUT_COLUMNS,
    PREDICTIONS_DIR,
    RMSE_BY_MONTH_PLOT,
    SCORING_COLUMNS,
    TLC_URL,
    TRAIN_BEST,
    model_input_columns,
    predictions_file,
    tlc_file_name,
)
from steps.errors import PipelineError
from steps.features import with_duration
from steps.figures import plot_metrics_by_month
from steps.monitoring import COMPARE_TO, MODEL, ModelUsed, MonthResult
from steps.reuse import unquote
from steps.tlc import (
    COLUMN_KINDS,
    fetch_month,
    month_location,
    null_count,
    parquet_digest,
    read_trips,
    trip_columns,
)

# A predictions file may lack the times (no actual minutes then), never the model's inputs.
OPTIONAL_COLUMNS = (PICKUP, DROPOFF)
ROLE_COLUMN = {MODEL: PREDICTION, COMPARE_TO: COMPARE_PREDICTION}
# What both engines read from a month file (the dataset's schema, as MLflow types).
# --- the pure core ------------------------------------------------------------------------------


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


# --- the shell: registry, data, engines, logging ----------------------------------------------


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
        role, ref.name, version, str(ref), ROLE_COLUMN[role], model.features_of_model(uri)
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
    """min_duration and max_duration of the featurize run the version was trained from."""
    found = registry.live_version(used.name, used.version)
    assert found is not None  # resolved a moment ago
    try:
        trained = runs.upstream_run(f"runs:/{found.run_id}", TRAIN_BEST)
        params = runs.lineage(trained)[FEATURIZE].data.params
    except PipelineError as exc:
        raise PipelineError(
            f"{used.label} has no training lineage in this store, so its duration filter is "
            f"unknown ({exc})"
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
    loaded = {used.column: model.load(used.uri) for used in models}
    results = []
    for month, path in months.items():
        trips = read_trips(path, optional=OPTIONAL_COLUMNS)
        inputs = trips[list(SCORING_COLUMNS)]
        frame = prediction_frame(trips, {c: m.predict(inputs) for c, m in loaded.items()})
        dest = staged / predictions_file(taxi, str(month))
        outputs.write_frame(frame, dest)
        rows, errors = outputs.error_sums(dest, list(loaded), *bounds)
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
    spark = spark_scoring.session(master)
    try:
        udfs = spark_scoring.udfs(spark, {used.column: used.uri for used in models})
        results = []
        for month, path in months.items():
            trips = spark_scoring.read_trips(spark, path)
            dest = staged / predictions_file(taxi, str(month))
            spark_scoring.write(spark_scoring.score(trips, udfs), dest, prediction_columns(models))
            rows, errors = outputs.error_sums(dest, list(udfs), *bounds)
            results.append(MonthResult(month, rows, errors))
        return results
    finally:
        spark.stop()


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


@click.command(help=__doc__)
@click.option("--model-uri", default=DEFAULT_MODEL_URI, show_default=True)
@click.option("--compare-to", default="", help="A second model URI, scored on the same rows.")
@click.option("--taxi", default="green", show_default=True)
@click.option("--months", required=True, help="2021-04, 2021-04,2021-05 or 2021-04..2021-06.")
@click.option("--source", default=TLC_URL, show_default=True, help="URL base or local folder.")
@click.option("--cache-dir", default=DEFAULT_CACHE_DIR, show_default=True, help="Download cache.")
@click.option("--engine", default="pandas", show_default=True, help="pandas or spark.")
@click.option("--spark-master", default="local[*]", show_default=True)
@click.option("--output", default="", help="Folder or s3:// prefix; empty: run artifacts.")
@exits_cleanly(PREDICT)
def main(
    model_uri: str,
    compare_to: str,
    taxi: str,
    months: str,
    source: str,
    cache_dir: str,
    engine: str,
    spark_master: str,
    output: str,
) -> None:
    check_taxi(taxi)
    wanted = parse_month_spec(months)
    refs = {MODEL: parse_model_uri(model_uri)}
    if compare_to.strip():
        refs[COMPARE_TO] = parse_model_uri(compare_to, "compare_to")
    check_engine(engine)
    destination = check_output(output)
    if engine == "spark":
        spark_scoring.check_pyspark()
    with runs.step_run(PREDICT) as run:
        runs.log_params(
            {
                "model_uri": model_uri,
                "compare_to": compare_to,
                "taxi": taxi,
                "months": months,
                "source": source,
                "cache_dir": cache_dir,
                "engine": engine,
                "spark_master": spark_master,
                "output": output,
            }
        )
        params = {MODEL: "model_uri", COMPARE_TO: "compare_to"}
        models = [resolve(ref, role, params[role]) for role, ref in refs.items()]
        runs.set_tags({**model_tags(models), "taxi": taxi})
        bounds = training_filter(models[0])
        outputs.check_writable(destination)
        cache = Path(cache_dir).expanduser()
        paths = {month: fetch_month(source, taxi, str(month), cache) for month in wanted}
        for month, path in paths.items():  # every file's columns, before scoring any of them
            check_inputs(path, trip_columns(path, optional=OPTIONAL_COLUMNS), models)
            runs.log_dataset_reference(
                month_location(source, taxi, str(month)),
                tlc_file_name(taxi, str(month)),
                parquet_digest(path),
                COLUMN_KINDS,
                INFERENCE_CONTEXT,
            )

        started = time.perf_counter()
        with outputs.staging(destination) as staged:
            if engine == "spark":
                results = score_with_spark(paths, models, staged, taxi, spark_master, bounds)
            else:
                results = score_with_pandas(paths, models, staged, taxi, bounds)
            seconds = time.perf_counter() - started
            names = [predictions_file(taxi, str(r.month)) for r in results]
            if destination:
                where = outputs.publish(staged, names, destination)
                runs.set_tags({"predictions": outputs.describe(destination, "")})
            else:
                runs.log_artifacts(staged, PREDICTIONS_DIR)
                where = [f"{PREDICTIONS_DIR}/{name}" for name in names]
        rows = sum(r.rows for r in results)
        runs.log_metrics({"scoring_seconds": seconds, "rows_per_second": rows / seconds})
        table = log_monitoring(results, models)

        scored = ", ".join(f"{m.label} ({m.requested})" for m in models)
        print(f"predict: runs:/{run.info.run_id} {scored} on {taxi} {months}: {rows} rows")
        print(monitoring.wide(table).to_string(index=False, float_format="{:.3f}".format))
        print(f"predictions: {where[0]}" + (f" ... ({len(where)} files)" if len(where) > 1 else ""))


if __name__ == "__main__":
    main()
