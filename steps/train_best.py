"""train_best: refit the chosen HPO trial on every row, with autologging; log the servable model.

Input: hpo_run (runs:/<id> of an hpo run). Parameters: rmse_tolerance (minutes; 0 = the best
trial, > 0 = the cheapest trial, fewest trees x depth, whose RMSE is within that of the best);
engine (local: in this process; spark: xgboost.spark on a Spark DataFrame read from the splits'
parquet, the rows never in pandas on the driver, categorical encoding only), spark_master and
num_workers (the Spark trainers). Both engines give the same kind of booster and model.
hpo may have searched on a sample of the rows (hpo_sample_rows); the refit trains on all rows of
the training month(s), its early stopping scoring a seeded sample of early_stopping_rows rows of
the validation month after every round (default 500000; 0 = the whole month), and its
validation RMSE is measured on the whole month.
Artifacts: the pyfunc model `model` (raw records in, minutes out; signature and input example),
predictions/test.parquet (its predictions of the test trips, which register pairs with the
champion's); inside the model, reference_profile.json (the training trips' distance deciles,
zone, hour and weekday mix and the test month's prediction deciles: what predict measures a
month's drift against; the training trips are read a batch at a time, the deciles from a
seeded sample of a million distances), preprocessor/preprocessor.pkl, autolog's per-iteration
metrics and importances, and pictures of the test month: plots/test_predictions.png (predicted
vs actual), plots/test_errors.png (error by distance band, pickup hour and day of the week),
plots/feature_importance.png (each input's share of the gain). The model's metadata names its
feature set and input columns; its input example holds five test trips as a request carries them.
Metrics: val_rmse, test_rmse, training_seconds, n_trees, train_rows and val_rows (the rows the
refit used: every row, whatever sample hpo searched on), stopping_val_rows and stopping_val_rmse
(the rows early stopping watched, and the RMSE on them), and MLflow's standard regression
metrics of the test month (mlflow.models.evaluate: root_mean_squared_error,
mean_absolute_error, r2_score, mean_absolute_percentage_error, max_error, ...), which are also
linked to the logged model. Tags model_uri (models:/m-...), features, encoding.
The run's description (its page in the MLflow UI) sums them up.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click
import numpy as np
import pandas as pd

from taxi_duration.core.contracts import (
    BOOSTER_FILE,
    DEFAULT_EARLY_STOPPING_ROWS,
    FEATURE_IMPORTANCE_PLOT,
    FEATURIZE,
    LIBRARY,
    MODEL_NAME_IN_RUN,
    MODEL_URI_TAG,
    OUTPUT_DIGEST_TAG,
    PREDICTION,
    PREPROCESSOR_DIR,
    PREPROCESSOR_PATH,
    PROJECT_DIR,
    REFERENCE_PROFILE_FILE,
    SPLITS,
    TARGET,
    TEST_ERRORS_PLOT,
    TEST_PREDICTIONS_FILE,
    TEST_PREDICTIONS_PLOT,
    TRAIN_BEST,
    matrix_split_path,
    trips_split_path,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import (
    check_positive,
    check_refit_engine,
    check_sample_rows,
    check_tolerance,
)
from taxi_duration.core.reuse import digest_files, digest_values
from taxi_duration.data.parquet import read_batches
from taxi_duration.data.spark import check_pyspark
from taxi_duration.data.spark import session as spark_session
from taxi_duration.model import boosting
from taxi_duration.model.drift import COUNTED_COLUMNS, reference_profile
from taxi_duration.model.features import (
    load_matrix,
    load_preprocessor,
    matrix_columns,
    matrix_file_columns,
    rmse,
)
from taxi_duration.model.figures import (
    error_tables,
    plot_errors,
    plot_feature_importance,
    plot_predictions,
)
from taxi_duration.model.selection import (
    describe_refit,
    importance_by_input,
    input_example,
    select_trial,
)
from taxi_duration.model.spark_refit import refit_on_spark
from taxi_duration.pipeline.cli import exits_cleanly
from taxi_duration.tracking import pyfunc, runs
from taxi_duration.tracking.trials import candidates_of


@click.command(help=__doc__)
@click.option("--hpo-run", required=True, help="runs:/<id> of an hpo run.")
@click.option("--rmse-tolerance", type=float, default=0.0, show_default=True)
@click.option("--engine", default="local", show_default=True, help="local or spark.")
@click.option("--spark-master", default="local[*]", show_default=True)
@click.option("--num-workers", type=int, default=2, show_default=True, help="Spark trainers.")
@click.option(
    "--early-stopping-rows",
    type=int,
    default=DEFAULT_EARLY_STOPPING_ROWS,
    show_default=True,
    help="Validation rows early stopping scores (0 = all).",
)
@exits_cleanly(TRAIN_BEST)
def main(
    hpo_run: str,
    rmse_tolerance: float,
    engine: str,
    spark_master: str,
    num_workers: int,
    early_stopping_rows: int,
) -> None:
    check_tolerance(rmse_tolerance)
    check_refit_engine(engine)
    check_positive(num_workers, "num_workers")
    check_sample_rows(early_stopping_rows, "early_stopping_rows")
    if engine == "spark":
        check_pyspark()
    with runs.step_run(TRAIN_BEST) as run:
        runs.log_params(
            {
                "hpo_run": hpo_run,
                "rmse_tolerance": rmse_tolerance,
                "engine": engine,
                "spark_master": spark_master,
                "num_workers": num_workers,
                "early_stopping_rows": early_stopping_rows,
            }
        )
        hpo = runs.read_upstream(TRAIN_BEST, hpo_run)
        chosen = select_trial(candidates_of(hpo), rmse_tolerance)
        featurize = runs.lineage(hpo)[FEATURIZE]
        fid, encoding = featurize.info.run_id, featurize.data.tags["encoding"]
        paths = {s: runs.download(fid, matrix_split_path(s, encoding)) for s in SPLITS}
        test_trips = pd.read_parquet(runs.download(fid, trips_split_path("test")))
        preprocessor_path = runs.download(fid, PREPROCESSOR_PATH)
        preprocessor = load_preprocessor(preprocessor_path)

        budget = hpo.data.params
        seed = int(budget["seed"])
        stopping = (int(budget["num_boost_round"]), int(budget["early_stopping_rounds"]), seed)
        if engine == "spark":
            if encoding != "categorical":
                raise PipelineError(
                    f"engine=spark refits the categorical encoding only, and this run's is "
                    f"{encoding}; refit it with engine=local"
                )
            spark = spark_session(spark_master, TRAIN_BEST)
            try:
                fit = refit_on_spark(
                    spark,
                    chosen.params,
                    paths["train"],
                    paths["val"],
                    matrix_file_columns(paths["train"]),
                    *stopping,
                    num_workers,
                    early_stopping_rows,
                )
            finally:
                spark.stop()
            train_rows = int(featurize.data.metrics["train_rows_kept"])
            val = load_matrix(paths["val"])
        else:
            train, val = (load_matrix(paths[s]) for s in ("train", "val"))
            train_rows = train.rows
            watched = boosting.stopping_rows(val, early_stopping_rows, seed)
            dtrain, dval = boosting.dmatrices(train, watched)
            del train, watched
            runs.autolog_xgboost()
            fit = boosting.fit(chosen.params, dtrain, dval, *stopping)
            del dtrain, dval
        val_rmse = fit.val_rmse if fit.val_rows == val.rows else boosting.score(fit.booster, val)
        rows = {
            "train_rows": train_rows,
            "val_rows": val.rows,
            "stopping_val_rows": fit.val_rows,
            "stopping_val_rmse": fit.val_rmse,
        }
        del val
        test = load_matrix(paths["test"])
        test_pred = fit.booster.predict(boosting.dmatrix(test))
        test_rmse = rmse(test.y, test_pred)

        training = runs.download(fid, trips_split_path("train"))
        profile = reference_profile(
            lambda: read_batches(training, COUNTED_COLUMNS),
            test_pred,
            preprocessor.features,
            test_rmse,
            seed=seed,
        )
        with tempfile.TemporaryDirectory() as tmp:
            booster_path = Path(tmp) / BOOSTER_FILE
            fit.booster.save_model(booster_path)
            booster_digest = digest_files(Path(tmp), [booster_path.name])
            profile_path = Path(tmp) / REFERENCE_PROFILE_FILE
            profile_path.write_text(json.dumps(profile.to_dict()))
            model_uri = pyfunc.log_model(
                preprocessor.features,
                name=MODEL_NAME_IN_RUN,
                python_model=pyfunc.TripDurationModel(),
                artifacts={
                    pyfunc.BOOSTER_ARTIFACT: str(booster_path),
                    pyfunc.PREPROCESSOR_ARTIFACT: str(preprocessor_path),
                    pyfunc.PROFILE_ARTIFACT: str(profile_path),
                },
                code_paths=[str(PROJECT_DIR / LIBRARY)],
                input_example=input_example(test_trips, preprocessor.features),
            )
            predictions = Path(tmp) / Path(TEST_PREDICTIONS_FILE).name
            pd.DataFrame({PREDICTION: test_pred}).to_parquet(predictions, index=False)
            runs.log_artifact(predictions, str(Path(TEST_PREDICTIONS_FILE).parent))
        runs.log_artifact(preprocessor_path, PREPROCESSOR_DIR)
        y_test = test_trips[TARGET].to_numpy()
        runs.log_figure(plot_predictions(y_test, test_pred, "test"), TEST_PREDICTIONS_PLOT)
        errors = error_tables(test_trips, y_test, np.asarray(test_pred))
        runs.log_figure(plot_errors(errors, "test"), TEST_ERRORS_PLOT)
        shares = importance_by_input(
            fit.booster.get_score(importance_type="total_gain"),
            matrix_columns(preprocessor),
        )
        runs.log_figure(plot_feature_importance(shares), FEATURE_IMPORTANCE_PLOT)
        metrics = {
            "val_rmse": val_rmse,
            "test_rmse": test_rmse,
            "training_seconds": fit.seconds,
            "n_trees": fit.n_trees,
            "selected_trial_rmse": chosen.rmse,
        }
        runs.log_metrics({**metrics, **rows})
        data = runs.data_tags(hpo)
        standard = pyfunc.evaluate_predictions(
            y_test,
            np.asarray(test_pred),
            model_uri.removeprefix("models:/"),
            f"{data.get('taxi', '?')} {data.get('test_month', '?')} test trips",
        )
        runs.set_tags(
            {
                **runs.data_tags(hpo),
                "encoding": encoding,
                "features": preprocessor.features,
                "selected_trial_run_id": chosen.run_id,
                MODEL_URI_TAG: model_uri,
                # register reads the model and featurize's test trips (covered by hpo's digest)
                OUTPUT_DIGEST_TAG: digest_values(runs.output_digest(hpo), booster_digest),
            }
        )
        test_month = runs.data_tags(hpo).get("test_month", "?")
        runs.set_description(
            describe_refit(
                chosen,
                rmse_tolerance,
                {**standard, **metrics},
                test_month,
                errors,
                shares,
                model_uri,
                preprocessor.features,
            )
        )
        print(
            f"train_best: runs:/{run.info.run_id} trial {chosen.run_id} -> val RMSE "
            f"{val_rmse:.4f}, test RMSE {test_rmse:.4f}, model {model_uri}"
        )


if __name__ == "__main__":
    main()
