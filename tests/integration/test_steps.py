"""Each step through its CLI (`python -m steps.<step>`) against a temp SQLite store, chained by
run URI as `main` chains them, then each step's refusals of bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import (
    BEST_PARAMS_FILE,
    CHALLENGER,
    CHAMPION,
    FEATURE_IMPORTANCE_PLOT,
    FEATURIZE_SUMMARY_FILE,
    MODEL_TAG,
    MODEL_URI_TAG,
    PARENT_RUN_TAG,
    PROFILE_FILE,
    REGISTRATION_FILE,
    STEP_TAG,
    TEST_ERRORS_PLOT,
    TEST_PREDICTIONS_PLOT,
    TRIALS_FILE,
)
from tests.conftest import DATA_DIR, FAST_HPO, error_lines, run_step

EXPERIMENT = "steps-integration"


class Store:
    """A temp SQLite tracking store and the env that points the steps at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.env = {"MLFLOW_TRACKING_URI": self.uri, "MLFLOW_EXPERIMENT_NAME": EXPERIMENT}
        self.client = MlflowClient(self.uri)

    def run(self, module: str, *args: str):
        return run_step(module, *args, cwd=self.root, **self.env)

    def ok(self, module: str, *args: str) -> str:
        """Run a step that must succeed; return the run URI it printed."""
        result = self.run(module, *args)
        assert result.returncode == 0, result.stderr[-3000:]
        line = next(x for x in result.stdout.splitlines() if x.startswith(f"{module}: runs:/"))
        return line.split()[1]

    def runs(self, status: str | None = None):
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        query = f"attributes.status = '{status}'" if status else ""
        return self.client.search_runs([exp.experiment_id], query) if exp else []

    def artifact(self, run_id: str, path: str) -> Path:
        mlflow.set_tracking_uri(self.uri)
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path))


def rid(uri: str) -> str:
    return uri.removeprefix("runs:/")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """ingest -> featurize -> hpo -> train_best -> register, once, shared by the tests below."""
    store = Store(tmp_path_factory.mktemp("steps"))
    store.env["TMPDIR"] = str(tmp_path_factory.mktemp("steps-tmp"))  # see the last chain test
    uris = {"ingest": store.ok("ingest", "--source", str(DATA_DIR))}
    uris["featurize"] = store.ok("featurize", "--ingest-run", uris["ingest"])
    hpo_args = [f"--{k.replace('_', '-')}={v}" for k, v in FAST_HPO.items()]
    uris["hpo"] = store.ok("hpo", "--features-run", uris["featurize"], *hpo_args)
    uris["train_best"] = store.ok("train_best", "--hpo-run", uris["hpo"])
    uris["register"] = store.ok("register", "--train-run", uris["train_best"])
    return store, uris


def test_ingest_logs_splits_as_datasets_artifacts_and_row_counts(chain):
    store, uris = chain
    run = store.client.get_run(rid(uris["ingest"]))
    assert run.data.tags[STEP_TAG] == "ingest"
    assert run.data.metrics["train_rows"] == 3000
    contexts = {
        tag.value
        for i in run.inputs.dataset_inputs
        for tag in i.tags
        if tag.key == "mlflow.data.context"
    }
    assert contexts == {"training", "validation", "testing"}
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {
        "green_tripdata_2021-01.parquet",
        "green_tripdata_2021-02.parquet",
        "green_tripdata_2021-03.parquet",
    }
    raw = pq.read_table(store.artifact(run.info.run_id, "raw/train.parquet"))
    assert raw.num_rows == 3000
    profile = json.loads(store.artifact(run.info.run_id, PROFILE_FILE).read_text())
    assert profile["val"]["month"] == "2021-02" and profile["val"]["rows"] == 3000
    assert run.data.tags["train_month"] == "2021-01"


def test_featurize_logs_preprocessor_matrices_and_kept_rows(chain):
    store, uris = chain
    run = store.client.get_run(rid(uris["featurize"]))
    for split in ("train", "val", "test"):
        kept, dropped = (
            run.data.metrics[f"{split}_rows_kept"],
            run.data.metrics[f"{split}_rows_dropped"],
        )
        assert kept + dropped == 3000 and 2700 < kept < 3000
    assert run.data.metrics["n_features"] == 5  # zones, distance, pickup hour and weekday
    assert run.data.tags["features"] == "time"
    paths = {a.path for a in store.client.list_artifacts(run.info.run_id, "matrices")}
    assert paths == {"matrices/train.parquet", "matrices/val.parquet", "matrices/test.parquet"}
    assert store.client.list_artifacts(run.info.run_id, "preprocessor")[0].path.endswith(".pkl")
    summary = json.loads(store.artifact(run.info.run_id, FEATURIZE_SUMMARY_FILE).read_text())
    assert summary["train"]["rows_kept"] == run.data.metrics["train_rows_kept"]


def test_hpo_logs_every_trial_as_a_nested_xgboost_run(chain):
    store, uris = chain
    hpo = store.client.get_run(rid(uris["hpo"]))
    trials = store.client.search_runs(
        [hpo.info.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{hpo.info.run_id}'"
    )
    assert len(trials) == int(FAST_HPO["max_evals"])
    assert all(t.data.tags[MODEL_TAG] == "xgboost" for t in trials)
    assert all({"rmse", "training_seconds"} <= set(t.data.metrics) for t in trials)
    assert all("max_depth" in t.data.params for t in trials)
    best = min(t.data.metrics["rmse"] for t in trials)
    assert hpo.data.metrics["best_rmse"] == pytest.approx(best)
    assert "best_max_depth" in hpo.data.params
    table = pd.read_csv(store.artifact(hpo.info.run_id, TRIALS_FILE))
    assert len(table) == len(trials) and table["rmse"].is_monotonic_increasing
    assert json.loads(store.artifact(hpo.info.run_id, BEST_PARAMS_FILE).read_text())["rmse"] == (
        pytest.approx(best)
    )
    # The UI's search box query finds the trials.
    found = store.client.search_runs([hpo.info.experiment_id], "tags.`model` = 'xgboost'")
    assert {t.info.run_id for t in found} == {t.info.run_id for t in trials}


def test_train_best_logs_a_model_that_takes_raw_records(chain):
    store, uris = chain
    run = store.client.get_run(rid(uris["train_best"]))
    assert {"val_rmse", "test_rmse", "training_seconds"} <= set(run.data.metrics)
    assert "validation-rmse" in run.data.metrics  # autolog's per-iteration metric
    hpo = store.client.get_run(rid(uris["hpo"]))
    assert run.data.metrics["val_rmse"] == pytest.approx(hpo.data.metrics["best_rmse"], rel=1e-6)
    mlflow.set_tracking_uri(store.uri)
    model = mlflow.pyfunc.load_model(run.data.tags[MODEL_URI_TAG])
    raw = pd.read_parquet(DATA_DIR / "green_tripdata_2021-03.parquet").head(50)
    minutes = model.predict(
        raw[["lpep_pickup_datetime", "PULocationID", "DOLocationID", "trip_distance"]]
    )
    assert len(minutes) == 50 and 1 < float(minutes.mean()) < 60
    plots = {a.path for a in store.client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {TEST_PREDICTIONS_PLOT, TEST_ERRORS_PLOT, FEATURE_IMPORTANCE_PLOT}


def test_register_creates_a_tagged_champion_version(chain):
    store, uris = chain
    version = store.client.get_model_version_by_alias("nyc-taxi-duration", CHAMPION)
    assert version.run_id == rid(uris["train_best"])
    assert version.tags["test_month"] == "2021-03" and version.tags["taxi"] == "green"
    assert float(version.tags["test_rmse"]) > 0
    assert store.client.get_model_version_by_alias("nyc-taxi-duration", CHALLENGER).version == (
        version.version
    )
    record = json.loads(store.artifact(rid(uris["register"]), REGISTRATION_FILE).read_text())
    assert record["promote"] is True and record["reason"] == "no champion yet"


def test_a_worse_model_is_registered_as_challenger_and_champion_stays(chain):
    store, uris = chain
    # Tolerance 100 picks the cheapest trial; make it worse still by re-registering it against
    # a champion whose recorded test RMSE is unbeatable.
    champion = store.client.get_model_version_by_alias("nyc-taxi-duration", CHAMPION)
    store.client.set_model_version_tag("nyc-taxi-duration", champion.version, "test_rmse", "0.01")
    cheap = store.ok("train_best", "--hpo-run", uris["hpo"], "--rmse-tolerance", "100")
    register = store.ok("register", "--train-run", cheap)
    record = json.loads(store.artifact(rid(register), REGISTRATION_FILE).read_text())
    assert record["promote"] is False and "champion stays" in record["reason"]
    assert store.client.get_model_version_by_alias("nyc-taxi-duration", CHAMPION).version == (
        champion.version
    )
    challenger = store.client.get_model_version_by_alias("nyc-taxi-duration", CHALLENGER)
    assert str(challenger.version) == record["version"]


# --- refusals: one line, exit 2, the run FAILED, nothing left behind --------------------------


def test_the_steps_leave_nothing_in_the_temp_folder(chain):
    """The upstream artifacts a step downloads (a month's splits and matrices) are removed when
    its run ends: five steps later, their temp folder is empty."""
    store, _ = chain
    assert list(Path(store.env["TMPDIR"]).iterdir()) == []


def assert_refused(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path)


def test_ingest_refuses_a_month_missing_from_the_folder(store):
    result = store.run("ingest", "--source", str(DATA_DIR), "--test-month", "2021-06")
    assert_refused(result, "green_tripdata_2021-06.parquet is not in")
    assert [r.info.status for r in store.runs()] == ["FAILED"]


def test_ingest_refuses_a_bad_month_before_starting_a_run(store):
    assert_refused(store.run("ingest", "--train-month", "2021-13"), "01..12")
    assert store.runs() == []


def test_ingest_refuses_a_file_with_missing_columns(store, tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    for month in ("2021-01", "2021-02", "2021-03"):
        shutil.copy(DATA_DIR / f"green_tripdata_{month}.parquet", folder)
    table = pq.read_table(folder / "green_tripdata_2021-02.parquet").drop_columns(["PULocationID"])
    pq.write_table(table, folder / "green_tripdata_2021-02.parquet")
    assert_refused(store.run("ingest", "--source", str(folder)), "lacks column(s) PULocationID")
    assert [r.info.status for r in store.runs()] == ["FAILED"]


def test_featurize_refuses_zero_rows_after_filtering(store):
    ingest = store.ok("ingest", "--source", str(DATA_DIR))
    result = store.run(
        "featurize", "--ingest-run", ingest, "--min-duration", "5000", "--max-duration", "6000"
    )
    assert_refused(result, "0 of 3000 rows", "widen min_duration/max_duration")
    assert sorted(r.info.status for r in store.runs()) == ["FAILED", "FINISHED"]


def test_hpo_refuses_max_evals_below_one(store):
    assert_refused(
        store.run("hpo", "--features-run", "runs:/0123456789abcdef", "--max-evals", "0"),
        "max_evals must be at least 1",
    )
    assert store.runs() == []


def test_a_step_refuses_an_upstream_run_of_the_wrong_kind(store):
    ingest = store.ok("ingest", "--source", str(DATA_DIR))
    assert_refused(store.run("hpo", "--features-run", ingest), "is a ingest run, not a 'featurize'")
    assert_refused(store.run("hpo", "--features-run", "runs:/deadbeef"), "not found")
    assert not [r for r in store.runs() if r.info.status == "RUNNING"]


def test_register_refuses_a_model_name_the_registry_cannot_address(store):
    assert_refused(
        store.run("register", "--train-run", "runs:/x", "--model-name", "a/b"), "models:/ URI"
    )
    assert store.client.search_registered_models() == []
