"""predict through its CLI against a private copy of the trained store: scoring, monitoring,
outputs, and the refusals of bad input (one line, exit 2, the run FAILED, no output file)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_duration.core.contracts import (
    CHAMPION,
    COMPARE_PREDICTION,
    DEFAULT_MODEL_URI,
    DRIFT_BY_MONTH_JSON,
    DRIFT_BY_MONTH_PLOT,
    METRICS_BY_MONTH_CSV,
    METRICS_BY_MONTH_JSON,
    MODEL_NAME,
    PREDICTION,
    RMSE_BY_MONTH_PLOT,
    STEP_TAG,
    TARGET,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import parse_model_uri
from taxi_duration.data.tlc import read_trips
from taxi_duration.model.monitoring import MODEL
from taxi_duration.pipeline.scoring import resolve
from tests.conftest import DATA_DIR, TrainedStore, error_lines, mlflow_run, run_step
from tests.integration.servers import S3
from tests.integration.tlc_server import TLCServer

EXPERIMENT = "predict-tests"


class Predict:
    """`python -m steps.predict` against one store copy, in its own experiment."""

    def __init__(self, store) -> None:
        self.store = store
        self.client = store.client
        self.env = {"MLFLOW_TRACKING_URI": store.uri, "MLFLOW_EXPERIMENT_NAME": EXPERIMENT}

    def run(self, *args: str, **env: str):
        return run_step("predict", *args, cwd=self.store.root, **{**self.env, **env})

    def ok(self, *args: str, **env: str):
        result = self.run(*args, **env)
        assert result.returncode == 0, result.stderr[-3000:]
        line = next(x for x in result.stdout.splitlines() if x.startswith("predict: runs:/"))
        return self.client.get_run(line.split()[1].removeprefix("runs:/")), result.stdout

    def runs(self):
        experiment = self.client.get_experiment_by_name(EXPERIMENT)
        return self.client.search_runs([experiment.experiment_id]) if experiment else []

    def artifact(self, run_id: str, path: str) -> Path:
        mlflow.set_tracking_uri(self.store.uri)
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))

    def step_run(self, step: str):
        """The trained store's run of a pipeline step."""
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        found = self.client.search_runs(experiments, f"tags.`{STEP_TAG}` = '{step}'")
        return found[0]


@pytest.fixture
def predict(store_copy) -> Predict:
    return Predict(store_copy)


def champion(predict: Predict) -> str:
    return str(predict.client.get_model_version_by_alias(MODEL_NAME, CHAMPION).version)


def assert_refused(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("predict: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def assert_failed_run(predict: Predict) -> None:
    assert [r.info.status for r in predict.runs()] == ["FAILED"]


def test_predict_scores_each_month_and_monitors_the_champion(predict):
    version = champion(predict)
    months = "2021-02..2021-03,2023-02"
    run, stdout = predict.ok(
        "--months", months, "--source", str(DATA_DIR), "--compare-to", f"models:/{MODEL_NAME}/1"
    )
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["model_name"] == MODEL_NAME and tags["model_version"] == version
    assert tags["model_uri"] == f"models:/{MODEL_NAME}/{version}"  # the version, not the alias
    assert tags["compare_model_version"] == "1"
    assert run.data.params["model_uri"] == DEFAULT_MODEL_URI

    # One metric point per month, at step YYYYMM.
    history = predict.client.get_metric_history(run.info.run_id, "rmse")
    assert [m.step for m in history] == [202102, 202103, 202302]
    rows = predict.client.get_metric_history(run.info.run_id, "rows")
    assert [m.value for m in rows] == [3000, 3000, 3000]

    # rows_scored is what featurize kept with the same filter; the champion's RMSE on its own
    # test month is the test RMSE train_best measured.
    featurize = predict.step_run("featurize")
    scored = {
        m.step: m.value for m in predict.client.get_metric_history(run.info.run_id, "rows_scored")
    }
    assert scored[202102] == featurize.data.metrics["val_rows_kept"]
    assert scored[202103] == featurize.data.metrics["test_rows_kept"]
    rmse = {m.step: m.value for m in history}
    assert rmse[202103] == pytest.approx(predict.step_run("train_best").data.metrics["test_rmse"])
    for name in ("mae", "bias", "compare_rmse", "compare_mae", "compare_bias"):
        steps = [m.step for m in predict.client.get_metric_history(run.info.run_id, name)]
        assert steps == [202102, 202103, 202302], name

    # The predictions: every row, the model's own numbers.
    path = predict.artifact(run.info.run_id, "predictions/green_2023-02.parquet")
    out = pd.read_parquet(path)
    raw = pd.read_parquet(DATA_DIR / "green_tripdata_2023-02.parquet")
    assert len(out) == len(raw) == 3000
    assert list(out.columns) == [
        "pickup_datetime",
        "PULocationID",
        "DOLocationID",
        "trip_distance",
        TARGET,
        PREDICTION,
        COMPARE_PREDICTION,
    ]
    mlflow.set_tracking_uri(predict.store.uri)
    expected = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/{version}").predict(
        raw  # the file's own rows: lpep_pickup_datetime and the rest, as a user hands them
    )
    np.testing.assert_array_equal(out[PREDICTION].to_numpy(), expected.astype("float64"))
    trips = read_trips(DATA_DIR / "green_tripdata_2023-02.parquet")
    minutes = (trips["dropoff_datetime"] - trips["pickup_datetime"]).dt.total_seconds() / 60
    np.testing.assert_array_equal(out[TARGET].to_numpy(), minutes.to_numpy())

    # The table, the chart, the datasets.
    table = json.loads(predict.artifact(run.info.run_id, METRICS_BY_MONTH_JSON).read_text())
    assert [(r["month"], r["role"]) for r in table][:2] == [
        ("2021-02", "model"),
        ("2021-02", "compare_to"),
    ]
    assert table[2]["rmse"] == pytest.approx(rmse[202103])
    csv = pd.read_csv(predict.artifact(run.info.run_id, METRICS_BY_MONTH_CSV))
    assert len(csv) == 6 and set(csv["model_uri"]) == {
        f"models:/{MODEL_NAME}/{version}",
        f"models:/{MODEL_NAME}/1",
    }
    assert predict.artifact(run.info.run_id, RMSE_BY_MONTH_PLOT).read_bytes()[:4] == b"\x89PNG"
    inputs = run.inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == [
        "green_tripdata_2021-02.parquet",
        "green_tripdata_2021-03.parquet",
        "green_tripdata_2023-02.parquet",
    ]
    assert {t.value for i in inputs for t in i.tags if t.key == "mlflow.data.context"} == {
        "inference"
    }
    assert "2021-03" in stdout and "rmse v" in stdout
    assert "| month | rows | rows_scored |" in run.data.tags["mlflow.note.content"]

    # Drift against the champion's reference profile, month by month.
    drift = json.loads(predict.artifact(run.info.run_id, DRIFT_BY_MONTH_JSON).read_text())
    assert [row["month"] for row in drift] == ["2021-02", "2021-03", "2023-02"]
    assert all(row["status"] in ("ok", "drift", "degraded") for row in drift)
    assert all(row["psi_pickup_hour"] is not None for row in drift)  # a time model
    history = predict.client.get_metric_history(run.info.run_id, "psi_pickup_zone")
    assert [m.step for m in history] == [202102, 202103, 202302]
    assert run.data.tags["status"] == ",".join(f"{r['month']}:{r['status']}" for r in drift)
    assert predict.artifact(run.info.run_id, DRIFT_BY_MONTH_PLOT).read_bytes()[:4] == b"\x89PNG"
    assert "| month | rows | rows_scored |" in run.data.tags["mlflow.note.content"]
    assert "status | max PSI |" in run.data.tags["mlflow.note.content"]


def test_predict_writes_to_an_output_folder_instead_of_artifacts(predict, tmp_path):
    folder = tmp_path / "predictions"
    run, _ = predict.ok("--months", "2021-03", "--source", str(DATA_DIR), "--output", str(folder))
    assert sorted(p.name for p in folder.iterdir()) == ["green_2021-03.parquet"]
    assert len(pd.read_parquet(folder / "green_2021-03.parquet")) == 3000
    artifacts = {a.path for a in predict.client.list_artifacts(run.info.run_id)}
    assert "predictions" not in artifacts and "monitoring" in artifacts


def test_predict_through_mlflow_run_with_the_mlproject_defaults(predict):
    """The MLproject entry point: empty compare_to and output arrive as empty strings."""
    result = mlflow_run(
        "-e",
        "predict",
        "--experiment-name",
        EXPERIMENT,
        cwd=predict.store.root,
        params={"months": "2021-03", "source": str(DATA_DIR)},
        MLFLOW_TRACKING_URI=predict.store.uri,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [run] = predict.runs()
    assert run.info.status == "FINISHED" and run.data.tags["model_version"] == champion(predict)
    assert "compare_rmse" not in run.data.metrics
    assert [a.path for a in predict.client.list_artifacts(run.info.run_id, "predictions")] == [
        "predictions/green_2021-03.parquet"
    ]


# --- refusals ----------------------------------------------------------------------------------


def test_predict_refuses_an_unknown_alias(predict, tmp_path):
    folder = tmp_path / "out"
    result = predict.run(
        "--months", "2021-03", "--source", str(DATA_DIR), "--model-uri",
        f"models:/{MODEL_NAME}@best", "--output", str(folder),
    )  # fmt: skip
    assert_refused(result, "has no alias 'best' (its aliases: @challenger (v1), @champion (v1))")
    assert_failed_run(predict)
    assert not folder.exists() or not list(folder.iterdir())


@pytest.mark.parametrize(
    ("model_uri", "fragment"),
    [
        ("models:/no-such-model@champion", "there is no registered model 'no-such-model'"),
        (f"models:/{MODEL_NAME}/99", r"has no version 99 \(its versions: 1\)"),
    ],
)
def test_resolving_refuses_an_unknown_model_or_version(store_copy, model_uri, fragment):
    """The same resolution in process (the CLI path is the test above): no process to start."""
    mlflow.set_tracking_uri(store_copy.uri)
    with pytest.raises(PipelineError, match=fragment):
        resolve(parse_model_uri(model_uri), MODEL, "model_uri")


@pytest.mark.parametrize(
    "code", ["403"]
)  # 404 answers the same way: tests/integration/test_download
def test_predict_refuses_a_month_tlc_has_not_published(predict, tmp_path, code):
    with TLCServer(DATA_DIR) as tlc:
        tlc.faults["green_tripdata_2023-02.parquet"] = code
        result = predict.run(
            "--months", "2021-03,2023-02", "--source", tlc.url,
            "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "out"),
        )  # fmt: skip
    assert_refused(result, "green_tripdata_2023-02.parquet is not published at", f"HTTP {code}")
    assert_failed_run(predict)
    assert list((tmp_path / "out").iterdir()) == []


def folder_with(tmp_path: Path, months: list[str]) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for month in months:
        shutil.copy(DATA_DIR / f"green_tripdata_{month}.parquet", folder)
    return folder


def test_predict_refuses_a_file_without_the_model_inputs(predict, tmp_path):
    folder = folder_with(tmp_path, ["2021-02", "2021-03"])
    path = folder / "green_tripdata_2021-03.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["trip_distance"]), path)
    result = predict.run("--months", "2021-02..2021-03", "--source", str(folder))
    assert_refused(result, "green_tripdata_2021-03.parquet lacks column(s) trip_distance")
    assert_failed_run(predict)
    [run] = predict.runs()
    assert predict.client.list_artifacts(run.info.run_id) == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ("drop", "has no pickup time column"),
        ("blank", "has 2 trips without a pickup time"),
    ],
)
def test_predict_refuses_a_month_a_time_model_cannot_score(predict, tmp_path, change, fragment):
    """The champion reads the pickup time: a file without it, or with trips that lack it, is
    refused before any month is scored, naming the file and the model."""
    folder = folder_with(tmp_path, ["2021-02", "2021-03"])
    path = folder / "green_tripdata_2021-03.parquet"
    table = pq.read_table(path)
    if change == "drop":
        table = table.drop_columns(["lpep_pickup_datetime"])
    else:
        index = table.schema.get_field_index("lpep_pickup_datetime")
        pickup = table.column(index).to_pylist()
        pickup[5] = pickup[700] = None
        table = table.set_column(
            index, "lpep_pickup_datetime", pa.array(pickup, pa.timestamp("us"))
        )
    pq.write_table(table, path)
    result = predict.run("--months", "2021-02..2021-03", "--source", str(folder))
    assert_refused(
        result,
        f"green_tripdata_2021-03.parquet {fragment}, which {MODEL_NAME} v1 (features=time) needs",
    )
    assert_failed_run(predict)


def test_a_month_failing_mid_way_leaves_no_predictions_file(predict, tmp_path):
    """2021-02 is scored and staged, 2021-03 then fails to read: nothing is published."""
    folder = folder_with(tmp_path, ["2021-02", "2021-03"])
    path = folder / "green_tripdata_2021-03.parquet"
    table = pq.read_table(path)
    names = pa.array([f"zone {z}" for z in table.column("PULocationID").to_pylist()])
    index = table.schema.get_field_index("PULocationID")
    pq.write_table(table.set_column(index, "PULocationID", names), path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "green_2021-01.parquet").write_bytes(b"an earlier run's file")
    result = predict.run(
        "--months", "2021-02..2021-03", "--source", str(folder), "--output", str(out)
    )
    assert_refused(result, "green_tripdata_2021-03.parquet has columns of unexpected types")
    assert_failed_run(predict)
    assert [p.name for p in out.iterdir()] == ["green_2021-01.parquet"]


def test_engine_spark_without_pyspark_says_how_to_install_it(predict, tmp_path):
    shim = tmp_path / "no_pyspark" / "pyspark"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError(\"No module named 'pyspark'\")\n")
    result = predict.run(
        "--months", "2021-03", "--source", str(DATA_DIR), "--engine", "spark",
        PYTHONPATH=f"{shim.parent}:{Path(__file__).resolve().parents[2]}",
    )  # fmt: skip
    assert_refused(result, "engine=spark needs pyspark; install it with pip install -e '.[spark]'")
    assert predict.runs() == []  # refused with the other parameters, before any run


# --- an s3:// output -----------------------------------------------------------------------------


@pytest.fixture
def s3(tmp_path):
    server = S3(tmp_path)
    yield server
    server.stop()


def test_predict_uploads_to_s3_after_scoring_and_refuses_a_missing_bucket(predict, s3):
    s3.create_bucket("predictions")
    env = s3.client_env()
    run, stdout = predict.ok(
        "--months", "2021-03", "--source", str(DATA_DIR),
        "--output", "s3://predictions/monthly", **env,
    )  # fmt: skip
    assert s3.keys("predictions") == ["monthly/green_2021-03.parquet"]
    assert run.data.tags["predictions"].startswith("s3://predictions/monthly")
    assert "s3://predictions/monthly/green_2021-03.parquet" in stdout

    result = predict.run(
        "--months", "2021-03", "--source", str(DATA_DIR), "--output", "s3://missing/x", **env
    )
    assert_refused(result, "S3 refused s3://missing/x", "check that the bucket exists")


def test_a_version_copied_to_another_registry_is_scored_from_its_own_tags(trained_store, tmp_path):
    """What scoring needs (the feature set, the duration filter) is on the version itself: the
    champion copied into a store that has none of its training runs is still monitored."""
    mlflow.set_tracking_uri(trained_store.uri)
    original = trained_store.client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    model_dir = mlflow.artifacts.download_artifacts(
        f"models:/{MODEL_NAME}/{original.version}", dst_path=str(tmp_path / "model")
    )
    other = TrainedStore(tmp_path / "other", trained_store.result)
    other.root.mkdir()
    client = other.client
    client.create_registered_model("copied")
    kept = {k: original.tags[k] for k in ("min_duration", "max_duration", "features")}
    client.create_model_version("copied", model_dir, "", tags=kept)
    client.create_model_version("copied", model_dir, "")  # no tags: nothing says its filter
    copied = Predict(other)

    run, _ = copied.ok(
        "--months", "2021-03", "--source", str(DATA_DIR), "--model-uri", "models:/copied/1"
    )
    rmse_original = float(original.tags["test_rmse"])
    assert run.data.metrics["rmse"] == pytest.approx(rmse_original, rel=1e-6)

    refused = copied.run(
        "--months", "2021-03", "--source", str(DATA_DIR), "--model-uri", "models:/copied/2"
    )
    assert_refused(refused, "copied v2 has neither min_duration/max_duration tags")
