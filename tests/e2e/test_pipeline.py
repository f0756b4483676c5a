"""`mlflow run . -e main` end to end, as a user types it: no tracking URI set (the embedded
sqlite:///mlflow.db in the working directory), no --experiment-name, small real TLC samples."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import (
    DISTRIBUTIONS_PLOT,
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_NAME,
    FEATURE_IMPORTANCE_PLOT,
    MODEL_NAME,
    MODEL_TAG,
    MODEL_TRAINING_KIND,
    PARENT_RUN_TAG,
    SEARCH_PLOT,
    STEP_TAG,
    STEPS,
    TEST_ERRORS_PLOT,
    TEST_PREDICTIONS_PLOT,
)
from taxi_duration.pipeline.orchestration import run_name
from tests.conftest import DATA_DIR, FAST_HPO, error_lines, mlflow_run, subprocess_env

PARAMS = {"source": str(DATA_DIR), **FAST_HPO}


@pytest.fixture(scope="module")
def pipeline(trained_store):
    """The session's plain `mlflow run <project> -e main` in a fresh directory (conftest)."""
    return trained_store.root, trained_store.result, trained_store.client


def runs_of(client, experiment_name=EXPERIMENT_NAME):
    experiment = client.get_experiment_by_name(experiment_name)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def test_main_lands_in_the_pipeline_experiment_beside_its_store(pipeline):
    cwd, _, client = pipeline
    assert (cwd / "mlflow.db").is_file()
    assert (cwd / "mlruns").is_dir()  # artifacts sit beside the store
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    assert experiment.artifact_location.startswith(str(cwd / "mlruns"))
    default = client.get_experiment_by_name("Default")
    assert default is None or client.search_runs([default.experiment_id]) == []


def test_main_has_five_nested_step_runs_and_trials_under_hpo(pipeline):
    _, _, client = pipeline
    runs = runs_of(client)
    mains = [r for r in runs if r.data.tags.get(STEP_TAG) == "main"]
    assert len(mains) == 1
    main = mains[0]
    children = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == main.info.run_id]
    assert sorted(r.data.tags["mlflow.project.entryPoint"] for r in children) == sorted(STEPS)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.info.run_name for r in children} == set(STEPS)
    trials_name = f"{FAST_HPO['max_evals']} trials"
    assert main.info.run_name == f"green 2021-01/2021-02/2021-03 time categorical {trials_name}"
    assert main.info.run_name == run_name(main.data.params)
    hpo = next(r for r in children if r.data.tags[STEP_TAG] == "hpo")
    trials = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == hpo.info.run_id]
    assert len(trials) == int(FAST_HPO["max_evals"])
    assert all(t.data.tags[MODEL_TAG] == "xgboost" for t in trials)
    # each step received its upstream by run URI
    by_step = {r.data.tags[STEP_TAG]: r for r in children}
    assert (
        by_step["featurize"].data.params["ingest_run"] == f"runs:/{by_step['ingest'].info.run_id}"
    )
    assert by_step["register"].data.params["train_run"] == (
        f"runs:/{by_step['train_best'].info.run_id}"
    )


def test_every_step_logs_artifacts_of_its_own(pipeline):
    _, _, client = pipeline
    runs = {r.data.tags.get(STEP_TAG): r for r in runs_of(client)}
    expected = {
        "ingest": {"raw", "profile.json", "plots"},
        "featurize": {"preprocessor", "matrices", "trips", "featurize_summary.json"},
        "hpo": {"trials.csv", "best_params.json", "plots"},
        "train_best": {"preprocessor", "plots"},
        "register": {"registration.json"},
        "main": {"summary.json"},
    }
    for step, paths in expected.items():
        listed = {a.path for a in client.list_artifacts(runs[step].info.run_id)}
        assert paths <= listed, (step, listed)
    pictures = {
        "ingest": [DISTRIBUTIONS_PLOT],
        "hpo": [SEARCH_PLOT],
        "train_best": [TEST_PREDICTIONS_PLOT, TEST_ERRORS_PLOT, FEATURE_IMPORTANCE_PLOT],
    }
    for step, paths in pictures.items():
        listed = {a.path for a in client.list_artifacts(runs[step].info.run_id, "plots")}
        assert set(paths) <= listed, (step, listed)


def test_runs_describe_themselves_in_markdown(pipeline):
    _, _, client = pipeline
    runs = {r.data.tags.get(STEP_TAG): r for r in runs_of(client)}
    opening = {
        "ingest": "**green** taxi trips from",
        "featurize": "Kept the trips lasting **1 to 60 minutes**",
        "hpo": f"Searched **{FAST_HPO['max_evals']}** XGBoost configurations",
        "train_best": "Retrained trial-",
        "main": "The whole pipeline on **green** taxi trips",
    }
    for step, start in opening.items():
        assert runs[step].data.tags["mlflow.note.content"].startswith(start), step
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND


def test_main_prints_a_summary_and_logs_it(pipeline):
    cwd, result, client = pipeline
    assert "pipeline finished" in result.stdout
    assert "best validation RMSE" in result.stdout and "test RMSE" in result.stdout
    assert f"{MODEL_NAME} version 1, alias champion" in result.stdout
    assert "mlflow ui --backend-store-uri sqlite:///" in result.stdout
    main = next(r for r in runs_of(client) if r.data.tags.get(STEP_TAG) == "main")
    mlflow.set_tracking_uri(f"sqlite:///{cwd / 'mlflow.db'}")
    summary_path = mlflow.artifacts.download_artifacts(
        run_id=main.info.run_id, artifact_path="summary.json"
    )
    summary = json.loads(Path(summary_path).read_text())
    assert summary["model_version"] == "1" and summary["promoted"] is True
    assert main.data.metrics["test_rmse"] == pytest.approx(summary["test_rmse"])


def test_champion_loads_in_a_fresh_process_and_predicts_raw_records(pipeline):
    cwd, _, client = pipeline
    version = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert version.tags["test_month"] == "2021-03"
    script = textwrap.dedent(
        f"""
        import mlflow, pandas as pd
        raw = pd.read_parquet({str(DATA_DIR / "green_tripdata_2021-03.parquet")!r}).head(200)
        model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@champion")
        minutes = model.predict(raw)  # full TLC rows: extra columns are ignored
        at = "2021-03-02T10:00:00"
        short = model.predict(pd.DataFrame({{"lpep_pickup_datetime": [at],
            "PULocationID": [74], "DOLocationID": [75], "trip_distance": [0.8]}}))
        long = model.predict(pd.DataFrame({{"lpep_pickup_datetime": [at],
            "PULocationID": [74], "DOLocationID": [138], "trip_distance": [9.5]}}))
        print(len(minutes), float(minutes.mean()), float(short[0]), float(long[0]))
        """
    )
    # A fresh process that knows only the store: not the project, not the test's PYTHONPATH.
    env = subprocess_env(MLFLOW_TRACKING_URI=f"sqlite:///{cwd / 'mlflow.db'}")
    env.pop("PYTHONPATH")
    out = subprocess.run(
        [sys.executable, "-c", script], cwd="/", env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-3000:]
    n, mean, short, long = out.stdout.split()[-4:]
    assert int(n) == 200
    assert 5 < float(mean) < 40
    assert 1 < float(short) < float(long) < 60


def test_a_step_runs_alone_from_a_run_uri(store_copy):
    cwd, client = store_copy.root, store_copy.client
    hpo = next(r for r in runs_of(client) if r.data.tags.get(STEP_TAG) == "hpo")
    result = mlflow_run(
        "-e",
        "train_best",
        cwd=cwd,
        params={"hpo_run": f"runs:/{hpo.info.run_id}", "rmse_tolerance": "0.5"},
        MLFLOW_TRACKING_URI="",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    alone = [
        r
        for r in runs_of(client)
        if r.data.tags.get(STEP_TAG) == "train_best" and PARENT_RUN_TAG not in r.data.tags
    ]
    assert len(alone) == 1 and alone[0].info.status == "FINISHED"
    assert alone[0].data.params["rmse_tolerance"] == "0.5"


def test_bad_parameter_fails_main_before_any_step(tmp_path):
    result = mlflow_run(
        "-e",
        "main",
        cwd=tmp_path,
        params={**PARAMS, "train_month": "2021-13"},
        MLFLOW_TRACKING_URI="",
    )
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert lines == ["main: error: train_month '2021-13' has no month 13; use 01..12"]
    assert "Traceback" not in result.stderr.split("main: error:")[1]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = runs_of(client)
    assert [r.info.status for r in runs] == ["FAILED"]  # main only; no step launched


def test_failing_step_fails_main_registers_nothing_and_honours_experiment_name(tmp_path):
    result = mlflow_run(
        "-e",
        "main",
        "--experiment-name",
        "my-experiment",
        cwd=tmp_path,
        params={**PARAMS, "test_month": "2021-06"},
        MLFLOW_TRACKING_URI="",
    )
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert lines[0].startswith("ingest: error: green_tripdata_2021-06.parquet is not in")
    assert lines[1].startswith("main: error: step ingest failed")
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = runs_of(client, "my-experiment")
    assert sorted(r.data.tags[STEP_TAG] for r in runs) == ["ingest", "main"]
    # MLflow created this experiment; main tagged it before the first step
    experiment = client.get_experiment_by_name("my-experiment")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    assert {r.info.status for r in runs} == {"FAILED"}
    assert client.get_experiment_by_name(EXPERIMENT_NAME) is None
    assert client.search_registered_models() == []
