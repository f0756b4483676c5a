"""What the registry says about the model, on the trained store (read only) and private copies
of it: MLflow's standard metrics linked to the logged model, the descriptions register writes,
and register's gate with min_improvement through its CLI (`python -m steps.register`).
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest

from taxi_duration.core.contracts import (
    CHALLENGER,
    CHAMPION,
    EXPERIMENT_NAME,
    HPO,
    MAIN,
    MODEL_NAME,
    MODEL_URI_TAG,
    REGISTER,
    REGISTRATION_FILE,
    RMSE_METRIC,
    SCORING_COLUMNS,
    STEP_TAG,
    TRAIN_BEST,
)
from tests.conftest import TrainedStore, error_lines, run_step

STANDARD_METRICS = {
    RMSE_METRIC,
    "mean_absolute_error",
    "mean_squared_error",
    "r2_score",
    "mean_absolute_percentage_error",
    "max_error",
    "example_count",
}
DESCRIPTION = "mlflow.note.content"


def step_runs(store: TrainedStore, step: str, status: str | None = None):
    experiment = store.client.get_experiment_by_name(EXPERIMENT_NAME)
    query = f"tags.`{STEP_TAG}` = '{step}'"
    if status:
        query += f" and attributes.status = '{status}'"
    return store.client.search_runs([experiment.experiment_id], query, max_results=100)


def step(store: TrainedStore, module: str, *args: str):
    return run_step(
        module,
        *args,
        cwd=store.root,
        MLFLOW_TRACKING_URI=store.uri,
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT_NAME,
    )


def registration(store: TrainedStore, run_id: str) -> dict:
    mlflow.set_tracking_uri(store.uri)
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=REGISTRATION_FILE)
    finally:
        mlflow.set_tracking_uri("")
    return json.loads(Path(path).read_text())


def test_train_best_logs_mlflows_standard_metrics_linked_to_the_logged_model(trained_store):
    (trained,) = step_runs(trained_store, TRAIN_BEST)
    metrics = trained.data.metrics
    assert set(metrics) >= STANDARD_METRICS
    assert metrics[RMSE_METRIC] == pytest.approx(metrics["test_rmse"], rel=1e-6)
    assert 0 < metrics["r2_score"] < 1 and metrics["max_error"] >= metrics[RMSE_METRIC]
    model_id = trained.data.tags[MODEL_URI_TAG].removeprefix("models:/")
    logged = trained_store.client.get_logged_model(model_id)
    linked = {m.key: m for m in logged.metrics if m.dataset_name}
    assert set(linked) >= STANDARD_METRICS
    rmse = linked[RMSE_METRIC]
    assert rmse.value == pytest.approx(metrics["test_rmse"], rel=1e-6)
    assert rmse.run_id == trained.info.run_id
    assert rmse.dataset_name == "green 2021-03 test trips"
    # The registered version is that logged model (the SQL registry keeps it as the source).
    version = trained_store.client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert version.source == f"models:/{model_id}"


def test_register_describes_the_model_the_version_and_its_run(trained_store):
    client = trained_store.client
    model = client.get_registered_model(MODEL_NAME)
    assert "**in minutes**" in model.description
    assert all(f"`{column}`" in model.description for column in SCORING_COLUMNS)
    assert f"mlflow.pyfunc.load_model('models:/{MODEL_NAME}@{CHAMPION}')" in model.description
    assert "`make serve`" in model.description
    (trained,) = step_runs(trained_store, TRAIN_BEST)
    version = client.get_model_version(MODEL_NAME, "1")
    assert f"[train_best run `{trained.info.run_id}`]" in version.description
    assert "green taxi trips: trained on 2021-01, validated on 2021-02, tested on 2021-03" in (
        version.description
    )
    assert f"test RMSE: **{trained.data.metrics['test_rmse']:.3f} minutes**" in (
        version.description
    )
    assert "- **became champion**: no champion yet" in version.description
    (registered,) = step_runs(trained_store, REGISTER)
    assert registered.data.tags[DESCRIPTION].startswith(
        f"Registered `{MODEL_NAME}` **v1** from [train_best run `{trained.info.run_id}`]"
    )
    assert registered.data.params["min_improvement"] == "0.0"


def test_register_with_a_large_min_improvement_keeps_the_champion_and_says_why(store_copy):
    client = store_copy.client
    client.update_registered_model(MODEL_NAME, description="Ours: do not touch.")
    (hpo,) = step_runs(store_copy, HPO)
    cheap = step(store_copy, TRAIN_BEST, "--hpo-run", f"runs:/{hpo.info.run_id}")
    assert cheap.returncode == 0, cheap.stderr[-3000:]
    train_uri = next(w for w in cheap.stdout.split() if w.startswith("runs:/"))
    result = step(store_copy, REGISTER, "--train-run", train_uri, "--min-improvement", "100")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "champion stays" in result.stdout
    assert str(client.get_registered_model(MODEL_NAME).aliases[CHAMPION]) == "1"
    assert str(client.get_registered_model(MODEL_NAME).aliases[CHALLENGER]) == "2"
    registered = next(
        r for r in step_runs(store_copy, REGISTER) if r.data.params["train_run"] == train_uri
    )
    record = registration(store_copy, registered.info.run_id)
    assert record["promote"] is False and record["version"] == "2"
    assert "by min_improvement 100; champion stays" in record["reason"]
    compared = record["comparison"]
    champion_rmse = float(client.get_model_version(MODEL_NAME, "1").tags["test_rmse"])
    assert compared["metric"] == RMSE_METRIC and compared["min_improvement"] == 100
    # the same test rows, so re-scoring (for the paired confidence) gives v1 its recorded RMSE
    rows = compared["rows"]["count"]
    assert compared["champion"] == {
        "version": "1",
        "test_rmse": pytest.approx(champion_rmse),
        "how": f"re-scored on the candidate's {rows:,} test rows of 2021-03",
        "not_compared_because": None,
    }
    assert compared["candidate"]["version"] == "2" and compared["candidate"]["test_rmse"] > 0
    assert "minimum absolute change check failed" in compared["validation"]
    v2 = client.get_model_version(MODEL_NAME, "2")
    assert "- **challenger; v1 stays champion**: test RMSE" in v2.description
    assert "| champion | v1 |" in registered.data.tags[DESCRIPTION]
    assert "**100 minutes**" in registered.data.tags[DESCRIPTION]
    # A description someone wrote is theirs.
    assert client.get_registered_model(MODEL_NAME).description == "Ours: do not touch."


def test_register_refuses_a_negative_min_improvement_in_one_line(store_copy):
    (trained,) = step_runs(store_copy, TRAIN_BEST)
    before = len(step_runs(store_copy, REGISTER))
    result = step(
        store_copy,
        REGISTER,
        "--train-run",
        f"runs:/{trained.info.run_id}",
        "--min-improvement",
        "-0.5",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result.stderr)
    assert line.startswith("register: error: min_improvement must be >= 0")
    assert "Traceback" not in result.stderr
    assert len(step_runs(store_copy, REGISTER, "FAILED")) == 1
    assert len(step_runs(store_copy, REGISTER)) == before + 1
    assert [str(v.version) for v in store_copy.client.search_model_versions()] == ["1"]


def test_main_refuses_a_negative_min_improvement_before_any_step(store_copy):
    result = step(store_copy, MAIN, "--min-improvement", "-1")
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result.stderr)
    assert line.startswith("main: error: min_improvement must be >= 0")
    assert step_runs(store_copy, MAIN, "FAILED") == []
