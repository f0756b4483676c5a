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
    parse_model_uri,
    parse_month_spec,
)
from taxi_duration.data import outputs
from taxi_duration.data.tlc import (
    COLUMN_KINDS,
    fetch_month,
    month_location,
    parquet_digest,
    trip_columns,
)
from taxi_duration.model import monitoring
from taxi_duration.model.monitoring import COMPARE_TO, MODEL
from taxi_duration.pipeline.cli import exits_cleanly
from taxi_duration.pipeline.scoring import (
    OPTIONAL_COLUMNS,
    check_inputs,
    log_monitoring,
    model_tags,
    resolve,
    score_with_pandas,
    score_with_spark,
    training_filter,
)
from taxi_duration.tracking import runs
from taxi_duration.tracking import spark as spark_scoring


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
