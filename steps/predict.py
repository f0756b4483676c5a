"""predict: score TLC months with a registered model; monitor its error and drift month by month.

Parameters: model_uri (models:/<name>@<alias> or models:/<name>/<version>, default the
champion), compare_to (optional: a second model URI, scored on the same rows), taxi
(green|yellow), months (2021-04, a list 2021-04,2021-05 or a range 2021-04..2021-06), source and
cache_dir (TLC's URL base or a local folder, and the download cache, as for ingest), engine
(pandas: in this process; spark: mlflow.pyfunc.spark_udf on a DataFrame read by Spark),
spark_master (engine=spark), output (a folder or an s3:// prefix for the predictions; empty:
the run's artifacts), drift_psi (0.25) and tolerance (0.1): a month is `degraded` when its RMSE
is more than `tolerance` above the model's own test RMSE, `drift` when an input (distance,
pickup and dropoff zone, and for a time model pickup hour and weekday) or the predictions moved
by a PSI of drift_psi or more from the model's reference profile, else `ok`.
Aliases are resolved once, at the start; tags model_name, model_version, model_uri (and
compare_model_name, compare_model_version, compare_model_uri) name the versions scored; tag
status lists each month's.
Artifacts: predictions/<taxi>_<month>.parquet (unless output is set): pickup time, zones,
distance, duration (actual minutes, missing without both timestamps), predicted_duration (and
compare_predicted_duration); monitoring/metrics_by_month.{json,csv}; monitoring/rmse_by_month.png
(RMSE and bias by month, a line per model); monitoring/drift_by_month.{json,csv,png} (status,
PSI of each input and of the predictions, unknown zone and missing distance shares).
Metrics per month, logged with step = the month as YYYYMM (202104 for 2021-04): rows,
rows_scored (rows whose actual duration lies in the model's training filter, the
min_duration..max_duration it was trained with), rmse, mae and bias (mean predicted minus actual
minutes) on those (compare_rmse, compare_mae, compare_bias for compare_to), status_code (0 ok,
1 drift, 2 degraded, -1 unknown), psi_<input>, unknown_zone_share, missing_distance_share.
Inputs: each month as a dataset (context inference), logged by reference: its URL or path, the
digest of the file and its columns. A model registered before models carried a reference
profile is scored as well, its drift marked unavailable.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from taxi_duration.core.contracts import (
    DEFAULT_CACHE_DIR,
    DEFAULT_MODEL_URI,
    INFERENCE_CONTEXT,
    PREDICT,
    PREDICTIONS_DIR,
    TLC_URL,
    predictions_file,
    tlc_file_name,
)
from taxi_duration.core.params import (
    check_engine,
    check_output,
    check_taxi,
    check_thresholds,
    parse_model_uri,
    parse_month_spec,
)
from taxi_duration.data import outputs
from taxi_duration.data.spark import check_pyspark
from taxi_duration.data.tlc import (
    COLUMN_KINDS,
    fetch_month,
    month_location,
    parquet_digest,
    trip_columns,
)
from taxi_duration.model import monitoring
from taxi_duration.model.drift import DRIFT_PSI, TOLERANCE
from taxi_duration.model.monitoring import COMPARE_TO, MODEL
from taxi_duration.pipeline.cli import exits_cleanly
from taxi_duration.pipeline.scoring import (
    OPTIONAL_COLUMNS,
    check_inputs,
    log_monitoring,
    model_tags,
    monitor_of,
    resolve,
    score_with_pandas,
    score_with_spark,
)
from taxi_duration.tracking import runs


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
@click.option(
    "--drift-psi",
    type=float,
    default=DRIFT_PSI,
    show_default=True,
    help="A month whose inputs or predictions moved by this PSI or more is `drift`.",
)
@click.option(
    "--tolerance",
    type=float,
    default=TOLERANCE,
    show_default=True,
    help="A month whose RMSE is more than this share above the model's test RMSE is `degraded`.",
)
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
    drift_psi: float,
    tolerance: float,
) -> None:
    check_taxi(taxi)
    check_thresholds(drift_psi, tolerance)
    wanted = parse_month_spec(months)
    refs = {MODEL: parse_model_uri(model_uri)}
    if compare_to.strip():
        refs[COMPARE_TO] = parse_model_uri(compare_to, "compare_to")
    check_engine(engine)
    destination = check_output(output)
    if engine == "spark":
        check_pyspark()
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
                "drift_psi": drift_psi,
                "tolerance": tolerance,
            }
        )
        params = {MODEL: "model_uri", COMPARE_TO: "compare_to"}
        models = [resolve(ref, role, params[role]) for role, ref in refs.items()]
        runs.set_tags({**model_tags(models), "taxi": taxi})
        monitor = monitor_of(models[0], drift_psi, tolerance)
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
                results = score_with_spark(paths, models, staged, taxi, spark_master, monitor)
            else:
                results = score_with_pandas(paths, models, staged, taxi, monitor)
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
        table, drift = log_monitoring(results, models, monitor)
        runs.set_tags({"status": ",".join(f"{r.month}:{r.status}" for r in results)})

        scored = ", ".join(f"{m.label} ({m.requested})" for m in models)
        print(f"predict: runs:/{run.info.run_id} {scored} on {taxi} {months}: {rows} rows")
        print(monitoring.wide(table, drift).to_string(index=False, float_format="{:.3f}".format))
        print(f"predictions: {where[0]}" + (f" ... ({len(where)} files)" if len(where) > 1 else ""))


if __name__ == "__main__":
    main()
