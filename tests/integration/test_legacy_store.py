"""A store the pipeline filled before the pickup-time features (tests/data/legacy-store): a user
who pulls this version keeps their mlflow.db, and the champion in it, a zones-and-distance model
whose pickle names steps.model.TripDurationModel, must keep answering the same minutes: loaded in
a fresh process (MLflow puts the code it bundled with the model first), scored by `predict` (a
process that has imported this project's own code), compared by `register` with a time-aware
challenger, and served by `make serve`."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from taxi_duration.core.contracts import CHAMPION, DISTANCE, DO, MODEL_NAME, PU, REGISTRATION_FILE
from tests.conftest import (
    BIN_DIR,
    DATA_DIR,
    FAST_HPO,
    PROJECT_DIR,
    TrainedStore,
    mlflow_run,
    run_step,
)
from tests.integration.servers import Process, free_port, wait_until

LEGACY = DATA_DIR / "legacy-store"
# Where the store was made: its runs, experiments and model keep absolute artifact paths.
MADE_AT = "/tmp/legacy/"
# Each table and column of the store that holds such a path.
PATH_COLUMNS = (
    ("runs", "artifact_uri"),
    ("experiments", "artifact_location"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
)
EXPECTED = json.loads((LEGACY / "expected.json").read_text())
LEGACY_VERSION = "1"
LEGACY_TEST_RMSE = 6.682792  # its test RMSE on the green 2021-03 sample, as register tagged it


def relocated_copy(folder: Path) -> TrainedStore:
    """The legacy store copied into `folder`, its artifact paths pointing at the copy."""
    shutil.copytree(LEGACY, folder, ignore=shutil.ignore_patterns("*.md", "*.json"))
    with sqlite3.connect(folder / "mlflow.db") as db:
        for table, column in PATH_COLUMNS:
            db.execute(
                f"UPDATE {table} SET {column} = replace({column}, ?, ?)", (MADE_AT, f"{folder}/")
            )
    return TrainedStore(folder, subprocess.CompletedProcess([], 0))


@pytest.fixture
def legacy(tmp_path) -> TrainedStore:
    return relocated_copy(tmp_path / "legacy")


def records() -> pd.DataFrame:
    return pd.DataFrame(EXPECTED["records"])


def test_the_store_holds_a_champion_pickled_by_the_flat_steps_package(legacy):
    champion = legacy.client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(champion.version) == LEGACY_VERSION
    pickled = next((legacy.root / "mlruns").rglob("python_model.pkl")).read_bytes()
    assert b"steps.model" in pickled and b"TripDurationModel" in pickled


LOAD_AND_PREDICT = """
import json, sys
import mlflow, pandas as pd
{imports}
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/nyc-taxi-duration@champion")
print(json.dumps(model.predict(pd.DataFrame(json.loads(sys.argv[2]))).tolist()))
"""


@pytest.mark.parametrize(
    "imports",
    ["", "import steps.predict  # this project's code first, as in a step process"],
    ids=["fresh process", "after importing the steps"],
)
def test_the_legacy_champion_predicts_the_minutes_it_predicted_then(legacy, imports):
    script = LOAD_AND_PREDICT.format(imports=imports)
    given = records().assign(lpep_pickup_datetime="2021-03-01T08:15:00")  # ignored by it
    done = subprocess.run(
        [sys.executable, "-c", script, legacy.uri, given.to_json(orient="columns")],
        cwd=legacy.root,
        env={**os.environ, "PYTHONPATH": str(PROJECT_DIR)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(json.loads(done.stdout), EXPECTED["predictions"])


@pytest.mark.parametrize("engine", ["pandas", "spark"])
def test_predict_scores_the_legacy_champion_on_its_test_month(legacy, engine):
    if engine == "spark":
        pytest.importorskip("pyspark")
    done = run_step(
        "predict",
        "--months",
        "2021-03",
        "--source",
        str(DATA_DIR),
        "--engine",
        engine,
        "--spark-master",
        "local[2]",
        cwd=legacy.root,
        MLFLOW_TRACKING_URI=legacy.uri,
        MLFLOW_EXPERIMENT_NAME="monitoring",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    experiment = legacy.client.get_experiment_by_name("monitoring")
    (run,) = legacy.client.search_runs([experiment.experiment_id])
    assert run.data.tags["model_version"] == LEGACY_VERSION
    assert run.data.metrics["rmse"] == pytest.approx(LEGACY_TEST_RMSE, abs=1e-6)
    # It carries no reference profile: drift unavailable, a status from its error alone.
    assert run.data.tags["status"] == "2021-03:ok"
    assert not [name for name in run.data.metrics if name.startswith("psi_")]
    assert "its drift is unavailable" in run.data.tags["mlflow.note.content"]


def test_a_time_challenger_is_compared_with_the_legacy_champion_on_raw_records(legacy):
    """A yellow test month: the course champion is re-scored on the challenger's test trips,
    raw records with the pickup time it ignores, and the better of the two stays champion."""
    months = {"taxi": "yellow", "train_month": "2023-02", "val_month": "2023-03"}
    params = {"source": str(DATA_DIR), **FAST_HPO, **months, "test_month": "2023-04"}
    done = mlflow_run("-e", "main", cwd=legacy.root, params=params, MLFLOW_TRACKING_URI=legacy.uri)
    assert done.returncode == 0, done.stderr[-3000:]
    client = legacy.client
    register = client.search_runs(
        [client.get_experiment_by_name("nyc-taxi-experiment").experiment_id],
        "tags.`pipeline.step` = 'register' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]
    record = json.loads(
        Path(client.download_artifacts(register.info.run_id, REGISTRATION_FILE)).read_text()
    )
    champion = record["comparison"]["champion"]
    assert champion["version"] == LEGACY_VERSION
    assert champion["how"].startswith("re-scored on the candidate's")
    assert champion["how"].endswith("test rows of 2023-04")
    challenger = client.get_model_version(MODEL_NAME, record["version"])
    assert challenger.tags["features"] == "time"
    candidate = record["comparison"]["candidate"]
    winner = LEGACY_VERSION if champion["test_rmse"] <= candidate["test_rmse"] else None
    champion_now = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert str(champion_now.version) == (winner or record["version"])


def test_make_serve_serves_the_legacy_champion(legacy, tmp_path):
    venv = Path(sys.executable).parent.parent
    port = free_port()
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN_DIR
    )
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": legacy.uri}
    env.pop("VIRTUAL_ENV", None)
    argv = [
        "make", "-s", "-C", str(PROJECT_DIR), "serve", f"VENV={venv}",
        "-o", str(venv / "bin" / ".installed"), f"SERVE_PORT={port}",
    ]  # fmt: skip
    process = Process("make serve", argv, env, tmp_path / "serve.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/ping", timeout=2).ok, "make serve", process, 240)
        body = {"dataframe_split": json.loads(records().to_json(orient="split", index=False))}
        answer = requests.post(f"{url}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        np.testing.assert_array_equal(answer.json()["predictions"], EXPECTED["predictions"])
        missing = {"dataframe_records": [{PU: 74, DO: 75}]}
        refused = requests.post(f"{url}/invocations", json=missing, timeout=60)
        assert refused.status_code == 400
        assert f"lack column(s) {DISTANCE}" in refused.json()["message"]
    finally:
        process.stop()
