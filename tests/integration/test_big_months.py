"""Big months through the steps' CLIs on the committed samples: a training window of three yellow
months stacked by ingest, then hpo searching on a seeded sample and train_best refitting the
chosen trial on every row."""

from __future__ import annotations

import json

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest

from taxi_duration.core.contracts import (
    MODEL_URI_TAG,
    PARENT_RUN_TAG,
    PROFILE_FILE,
    SCORING_COLUMNS,
    TARGET,
    TRIP_COLUMNS,
    matrix_split_path,
    raw_split_path,
    trips_split_path,
)
from taxi_duration.data.tlc import parquet_digest, source_fingerprint
from taxi_duration.model import boosting, features
from tests.conftest import DATA_DIR, FAST_HPO
from tests.integration.test_steps import Store, rid

WINDOW = ["2023-02", "2023-03", "2023-04"]
MONTHS = ["--taxi", "yellow", "--train-month", "2023-02..2023-04"]
MONTHS += ["--val-month", "2024-01", "--test-month", "2024-03", "--source", str(DATA_DIR)]
SAMPLE = 500  # rows of each split the search runs on (the samples keep ~970 of 1000 a month)
STOPPING = 400  # validation rows the sampled refit's early stopping watches


@pytest.fixture(scope="module")
def window(tmp_path_factory):
    """ingest of a three-month window -> featurize -> hpo on a sample -> train_best, once."""
    store = Store(tmp_path_factory.mktemp("big"))
    uris = {"ingest": store.ok("ingest", *MONTHS)}
    uris["featurize"] = store.ok("featurize", "--ingest-run", uris["ingest"])
    hpo_args = [f"--{k.replace('_', '-')}={v}" for k, v in FAST_HPO.items()]
    hpo_args += ["--hpo-sample-rows", str(SAMPLE)]
    uris["hpo"] = store.ok("hpo", "--features-run", uris["featurize"], *hpo_args)
    uris["hpo_again"] = store.ok("hpo", "--features-run", uris["featurize"], *hpo_args)
    uris["train_best"] = store.ok("train_best", "--hpo-run", uris["hpo"])
    uris["train_best_sampled"] = store.ok(
        "train_best", "--hpo-run", uris["hpo"], "--early-stopping-rows", str(STOPPING)
    )
    return store, uris


def test_ingest_stacks_the_window_and_logs_each_month_as_a_dataset(window):
    store, uris = window
    run = store.client.get_run(rid(uris["ingest"]))
    assert run.data.metrics["train_rows"] == 3 * 1000
    assert run.data.metrics["val_rows"] == run.data.metrics["test_rows"] == 1000
    assert run.data.tags["train_month"] == "2023-02..2023-04"
    assert run.data.tags["val_month"] == "2024-01" and run.data.tags["test_month"] == "2024-03"
    inputs = {
        i.dataset.name: ({t.key: t.value for t in i.tags}["mlflow.data.context"], i.dataset)
        for i in run.inputs.dataset_inputs
    }
    expected = {
        **{f"yellow_tripdata_{m}.parquet": "training" for m in WINDOW},
        "yellow_tripdata_2024-01.parquet": "validation",
        "yellow_tripdata_2024-03.parquet": "testing",
    }
    assert {name: context for name, (context, _) in inputs.items()} == expected
    for name, (_, dataset) in inputs.items():  # named by the file's own digest and location
        assert dataset.digest == parquet_digest(DATA_DIR / name)
        assert json.loads(dataset.source)["uri"] == str(DATA_DIR / name)
        assert "trip_distance" in dataset.schema and "passenger_count" not in dataset.schema
    # reuse is keyed on every file of the window
    every = [*WINDOW, "2024-01", "2024-03"]
    assert run.data.tags["pipeline.input_digest"] == source_fingerprint(
        str(DATA_DIR), "yellow", every
    )


def test_ingest_writes_the_stacked_months_with_only_the_columns_it_needs(window):
    store, uris = window
    train = pq.read_table(store.artifact(rid(uris["ingest"]), raw_split_path("train")))
    assert tuple(train.column_names) == TRIP_COLUMNS  # yellow's extra columns are never read
    assert train.num_rows == 3000
    months = pd.Series(train.column("pickup_datetime").to_pandas()).dt.strftime("%Y-%m")
    assert set(WINDOW) <= set(months.unique())
    profile = json.loads(store.artifact(rid(uris["ingest"]), PROFILE_FILE).read_text())
    assert profile["train"]["month"] == "2023-02..2023-04"
    assert profile["train"]["rows"] == 3000
    assert profile["train"]["rows_outside_month"] == int((~months.isin(WINDOW)).sum())


def test_hpo_searches_on_a_seeded_sample_and_records_it(window):
    store, uris = window
    hpo = store.client.get_run(rid(uris["hpo"]))
    assert hpo.data.params["hpo_sample_rows"] == str(SAMPLE)
    assert hpo.data.params["search_train_rows"] == str(SAMPLE)
    assert hpo.data.params["search_val_rows"] == str(SAMPLE)
    assert hpo.data.params["sample_seed"] == "42"

    def outcomes(uri):
        run = store.client.get_run(rid(uri))
        trials = store.client.search_runs(
            [run.info.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{run.info.run_id}'"
        )
        return sorted((t.data.tags["trial"], t.data.metrics["rmse"]) for t in trials)

    first = outcomes(uris["hpo"])
    assert len(first) == int(FAST_HPO["max_evals"])
    assert first == outcomes(uris["hpo_again"])  # same seed, same sample, same search
    again = store.client.get_run(rid(uris["hpo_again"]))
    assert again.data.tags["pipeline.output_digest"] == hpo.data.tags["pipeline.output_digest"]


def test_train_best_refits_on_every_row_and_validates_on_the_whole_month(window):
    store, uris = window
    trained = store.client.get_run(rid(uris["train_best"]))
    featurized = store.client.get_run(rid(uris["featurize"])).data.metrics
    assert trained.data.metrics["train_rows"] == featurized["train_rows_kept"] > SAMPLE
    assert trained.data.metrics["val_rows"] == featurized["val_rows_kept"] > SAMPLE
    # its validation RMSE is the logged model's on every kept validation trip
    val = pd.read_parquet(store.artifact(rid(uris["featurize"]), trips_split_path("val")))
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model(trained.data.tags[MODEL_URI_TAG])
    predicted = model.predict(val[list(SCORING_COLUMNS)])
    assert features.rmse(val[TARGET].to_numpy(), predicted) == pytest.approx(
        trained.data.metrics["val_rmse"], rel=1e-5
    )


def test_train_best_stops_on_a_sample_and_still_validates_on_the_whole_month(window):
    store, uris = window
    whole = store.client.get_run(rid(uris["train_best"])).data
    sampled = store.client.get_run(rid(uris["train_best_sampled"])).data
    val_rows = whole.metrics["val_rows"]
    # the default (500,000) is more than the month: early stopping watched all of it
    assert whole.params["early_stopping_rows"] == "500000"
    assert whole.metrics["stopping_val_rows"] == val_rows
    assert whole.metrics["stopping_val_rmse"] == pytest.approx(whole.metrics["val_rmse"])
    # the sampled refit watched STOPPING seeded rows, and measured val_rmse on every row
    assert sampled.params["early_stopping_rows"] == str(STOPPING)
    assert sampled.metrics["stopping_val_rows"] == STOPPING < val_rows
    assert sampled.metrics["val_rows"] == val_rows
    mlflow.set_tracking_uri(store.uri)
    booster = mlflow.pyfunc.load_model(sampled.tags[MODEL_URI_TAG]).unwrap_python_model().booster
    val = features.load_matrix(
        store.artifact(rid(uris["featurize"]), matrix_split_path("val", "categorical"))
    )
    seed = int(store.client.get_run(rid(uris["hpo"])).data.params["seed"])  # the search's
    watched = boosting.stopping_rows(val, STOPPING, seed)
    assert sampled.metrics["stopping_val_rmse"] == pytest.approx(
        boosting.score(booster, watched), rel=1e-5
    )
    assert sampled.metrics["val_rmse"] == pytest.approx(boosting.score(booster, val), rel=1e-5)
    assert sampled.metrics["val_rmse"] != pytest.approx(sampled.metrics["stopping_val_rmse"])
