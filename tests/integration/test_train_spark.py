"""train_best on Spark (engine=spark, xgboost.spark on local[2]) against the local refit of the same
trial, from the trained store's hpo run: the same trial, a validation RMSE within 1% of the local
one, and a model that register takes like any other, loads, and predicts what its booster does."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from taxi_duration.core.contracts import (
    EXPERIMENT_NAME,
    MODEL_URI_TAG,
    STEP_TAG,
    matrix_split_path,
    trips_split_path,
)
from taxi_duration.model.boosting import score
from taxi_duration.model.features import load_matrix, load_preprocessor, model_input
from taxi_duration.model.spark_refit import ARROW_BATCH_BYTES, ARROW_BATCH_ROWS
from tests.conftest import TrainedStore, run_step

pytest.importorskip("pyspark")


def step(store: TrainedStore, module: str, *args: str, **env: str):
    done = run_step(
        module,
        *args,
        cwd=store.root,
        MLFLOW_TRACKING_URI=store.uri,
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT_NAME,
        **env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith(f"{module}: runs:/"))
    return store.client.get_run(line.split()[1].removeprefix("runs:/"))


def test_the_spark_refit_matches_the_local_one_and_registers_like_it(store_copy: TrainedStore):
    client = store_copy.client
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    (hpo,) = client.search_runs([experiment.experiment_id], f"tags.`{STEP_TAG}` = 'hpo'")
    hpo_uri = f"runs:/{hpo.info.run_id}"
    local = step(store_copy, "train_best", "--hpo-run", hpo_uri)
    spark = step(
        store_copy,
        "train_best",
        "--hpo-run", hpo_uri, "--engine", "spark", "--spark-master", "local[2]",
        "--num-workers", "2", "--early-stopping-rows", "500",
        # Arrow batches of 64 rows or 4 KiB: each trainer's partition arrives in many batches,
        # some with no validation row, as every partition of a real month does at Spark's
        # defaults of 10,000 rows and 64 MiB (the samples alone fit in one batch, which hid
        # xgboost.spark's KeyError; 64 MiB hid it up to about 3 million rows)
        PYSPARK_SUBMIT_ARGS=(
            f"--conf {ARROW_BATCH_ROWS}=64 --conf {ARROW_BATCH_BYTES}=4096 pyspark-shell"
        ),
    )  # fmt: skip
    assert spark.data.tags["selected_trial_run_id"] == local.data.tags["selected_trial_run_id"]
    assert spark.data.params["engine"] == "spark"
    # early stopping watched about 500 seeded rows; val_rmse is still the whole month's
    val_rows = local.data.metrics["val_rows"]
    assert spark.data.metrics["val_rows"] == val_rows
    assert 400 < spark.data.metrics["stopping_val_rows"] < 600 < val_rows
    assert spark.data.metrics["val_rmse"] == pytest.approx(local.data.metrics["val_rmse"], rel=0.01)
    assert spark.data.metrics["test_rmse"] == pytest.approx(
        local.data.metrics["test_rmse"], rel=0.01
    )
    assert spark.data.metrics["train_rows"] == local.data.metrics["train_rows"]

    registered = step(store_copy, "register", "--train-run", f"runs:/{spark.info.run_id}")
    version = registered.data.tags["model_version"]
    mlflow.set_tracking_uri(store_copy.uri)
    model_uri = f"models:/nyc-taxi-duration/{version}"
    loaded = mlflow.pyfunc.load_model(model_uri)
    featurize = client.get_run(hpo.data.params["features_run"].removeprefix("runs:/"))
    test = pd.read_parquet(
        client.download_artifacts(featurize.info.run_id, trips_split_path("test"))
    )
    served = loaded.predict(test)
    # The same numbers from the booster the Spark fit gave, read from the logged model itself.
    folder = Path(mlflow.artifacts.download_artifacts(spark.data.tags[MODEL_URI_TAG]))
    booster = xgb.Booster()
    booster.load_model(next(folder.rglob("booster.ubj")))
    preprocessor = load_preprocessor(next(folder.rglob("preprocessor.pkl")))
    matrix = preprocessor.transform(model_input(test, preprocessor.features))
    np.testing.assert_array_equal(
        served, booster.predict(xgb.DMatrix(matrix, enable_categorical=True))
    )
    val = load_matrix(
        Path(
            client.download_artifacts(
                featurize.info.run_id, matrix_split_path("val", "categorical")
            )
        )
    )
    assert spark.data.metrics["val_rmse"] == pytest.approx(score(booster, val), rel=1e-5)
