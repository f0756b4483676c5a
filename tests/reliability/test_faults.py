"""Faults injected for real: a killed pipeline, two pipelines at once, a killed download, odd
data, bad parameters, hostile model input, and secrets in the environment.

Each test says what it injects and what must hold afterwards. They run real `mlflow run`
processes on small real TLC samples against a temp SQLite store.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import EXPERIMENT_NAME, MODEL_NAME, STEP_TAG
from taxi_duration.data.tlc import cache_folder
from tests.conftest import (
    DATA_DIR,
    FAST_HPO,
    error_lines,
    mlflow_run,
    mlflow_run_command,
    run_step,
    subprocess_env,
)
from tests.integration.tlc_server import TLCServer

PARAMS = {"source": str(DATA_DIR), **FAST_HPO}
MONTHS = ("2021-01", "2021-02", "2021-03")


def store(root: Path) -> tuple[str, MlflowClient]:
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return uri, MlflowClient(uri)


def runs_in(client: MlflowClient, experiment: str = EXPERIMENT_NAME, query: str = ""):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], query, max_results=5000) if exp else []


def running(client: MlflowClient):
    return [
        r
        for exp in client.search_experiments()
        for r in client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    ]


def wait_for(predicate, seconds: float = 240, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def freeze_mid_trial(client: MlflowClient, experiment: str, session_id: int) -> None:
    """Stop the pipeline's hpo process (SIGSTOP) at a moment when one of its trials is RUNNING,
    so that a kill then leaves a trial behind for sure. A trial on the samples lasts a fraction
    of a second, and a look at the store at the wrong moment sees none running, or sees the
    search over: so hpo is let run in short slices, stopped after each, until a look finds a
    trial running."""
    deadline = time.monotonic() + 240
    hpo = None
    while hpo is None and time.monotonic() < deadline:
        found = subprocess.run(
            ["pgrep", "-s", str(session_id), "-f", "^python[0-9.]* -m steps.hpo "],
            capture_output=True,
            text=True,
        ).stdout.split()
        hpo = int(found[0]) if found else None
        time.sleep(0.02)
    assert hpo is not None, "the pipeline never started hpo"
    query = "tags.`model` = 'xgboost' and attributes.status = 'RUNNING'"
    while time.monotonic() < deadline:
        os.kill(hpo, signal.SIGSTOP)
        try:
            if runs_in(client, experiment, query):
                return
        except MlflowException as exc:  # stopped while it held the store's write lock: go on
            if "database is locked" not in str(exc):
                raise
        os.kill(hpo, signal.SIGCONT)
        # Longer slices while it starts up, short ones once its trials have begun.
        started = runs_in(client, experiment, "tags.`model` = 'xgboost'")
        time.sleep(0.003 if started else 0.05)
    raise AssertionError("never caught hpo during a trial")


def latest_main(client: MlflowClient, experiment: str = EXPERIMENT_NAME):
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs(
        [exp.experiment_id],
        f"tags.`{STEP_TAG}` = 'main'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]


# --- a laptop lid closed mid-run: every process of the pipeline SIGKILLed at once ------------


def test_pipeline_killed_mid_hpo_is_cleaned_up_and_resumed_by_the_next_main(store_copy):
    # The trained store's main ran with the same parameters, never interrupted: the reference.
    # This pipeline runs beside it in an experiment of its own, so nothing of it is reused.
    root, uri, client = store_copy.root, store_copy.uri, store_copy.client
    expected = latest_main(client)
    lid = ("--experiment-name", "lid-closed")
    pipeline = subprocess.Popen(
        mlflow_run_command("-e", "main", *lid, params=PARAMS),
        cwd=root,
        env=subprocess_env(MLFLOW_TRACKING_URI=uri),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        freeze_mid_trial(client, "lid-closed", pipeline.pid)
    finally:  # also when the freeze fails: no stopped pipeline outlives the test
        os.killpg(pipeline.pid, signal.SIGKILL)  # mlflow run, main and hpo, all at once
        pipeline.wait(timeout=30)
    before = {r.data.tags.get(STEP_TAG) for r in running(client)}
    assert {"main", "hpo"} <= before  # what a killed pipeline leaves: RUNNING runs

    rerun = mlflow_run("-e", "main", *lid, cwd=root, params=PARAMS, MLFLOW_TRACKING_URI=uri)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "as KILLED" in rerun.stdout
    assert running(client) == []
    killed = runs_in(client, "lid-closed", "attributes.status = 'KILLED'")
    assert {r.data.tags.get(STEP_TAG) for r in killed} >= {"main", "hpo", "hpo_trial"}
    resumed = latest_main(client, "lid-closed")
    assert resumed.data.tags["reused"] == "ingest,featurize"
    for metric in ("best_val_rmse", "val_rmse", "test_rmse"):
        assert resumed.data.metrics[metric] == pytest.approx(expected.data.metrics[metric])
    champion = client.get_model_version_by_alias(MODEL_NAME, "champion")
    assert float(champion.tags["test_rmse"]) == pytest.approx(expected.data.metrics["test_rmse"])


# --- two pipelines at once on one SQLite store ------------------------------------------------


def test_two_mains_at_once_both_finish_and_the_better_model_is_the_one_champion(store_copy):
    # Beside the trained store's pipeline: both mains reuse its ingest and featurize runs, then
    # search, train and register at the same time, each with its own seed, into a new model.
    root, uri, client = store_copy.root, store_copy.uri, store_copy.client
    model = "two-at-once"
    pipelines = [
        subprocess.Popen(
            mlflow_run_command(
                "-e",
                "main",
                # the gate by RMSE alone: whichever registers second, the better model wins
                params={**PARAMS, "seed": str(seed), "model_name": model, "min_confidence": "0"},
            ),
            cwd=root,
            env=subprocess_env(MLFLOW_TRACKING_URI=uri),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for pipeline in pipelines:
        _, stderr = pipeline.communicate(timeout=600)
        assert pipeline.returncode == 0, stderr[-3000:]
    mains = runs_in(client, query=f"tags.`{STEP_TAG}` = 'main'")
    assert len(mains) == 3 and {m.info.status for m in mains} == {"FINISHED"}
    raced = [m for m in mains if m.data.params["seed"] in ("1", "2")]
    assert [m.data.tags["reused"] for m in raced] == ["ingest,featurize"] * 2
    versions = client.search_model_versions(f"name = '{model}'")
    assert len(versions) == 2
    best = min(versions, key=lambda v: float(v.tags["test_rmse"]))
    champion = client.get_model_version_by_alias(model, "champion")
    assert str(champion.version) == str(best.version)
    assert running(client) == []


# --- a download killed half way ------------------------------------------------------------------


def test_a_download_killed_half_way_leaves_no_partial_file_once_ingest_reruns(tmp_path):
    uri, _ = store(tmp_path)
    cache = tmp_path / "cache"
    with TLCServer(DATA_DIR) as server:
        server.faults["green_tripdata_2021-01.parquet"] = "stall"
        args = ["--source", server.url, "--cache-dir", str(cache)]
        ingest = subprocess.Popen(
            [sys.executable, "-m", "steps.ingest", *args],
            cwd=tmp_path,
            env=subprocess_env(MLFLOW_TRACKING_URI=uri),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        folder = cache_folder(cache, server.url)  # the downloads from this source
        wait_for(lambda: list(folder.glob(".*.part")), what="a download in progress")
        ingest.send_signal(signal.SIGKILL)
        ingest.wait(timeout=30)
        assert [p.name for p in folder.glob(".*.part")]  # what SIGKILL leaves behind

        server.faults.clear()
        rerun = run_step("ingest", *args, cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
    names = [f"green_tripdata_{m}.parquet" for m in MONTHS]
    assert [p.name for p in cache.iterdir()] == [folder.name]
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        names + [f"{name}.source.json" for name in names]
    )


# --- odd data: handled by a documented rule and counted, or refused in one line -----------------


def month_folder(tmp_path: Path, edit_train) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for month in MONTHS:
        shutil.copy(DATA_DIR / f"green_tripdata_{month}.parquet", folder)
    train = folder / "green_tripdata_2021-01.parquet"
    pq.write_table(edit_train(pq.read_table(train)), train)
    return folder


def with_column(table: pa.Table, name: str, values) -> pa.Table:
    index = table.column_names.index(name)
    return table.set_column(index, name, pa.array(values, type=table.schema.field(name).type))


def odd_but_usable(table: pa.Table) -> pa.Table:
    """Extra and renamed columns, an all-null column, bad distances, unknown zones, strays."""
    n = table.num_rows
    distance = table.column("trip_distance").to_pylist()
    distance[:10] = [-2.5] * 5 + [48_000.0] * 5
    pu = table.column("PULocationID").to_pylist()
    pu[10:20] = [0] * 5 + [999] * 5
    pickup = table.column("lpep_pickup_datetime").to_pylist()
    dropoff = table.column("lpep_dropoff_datetime").to_pylist()
    for i in range(20, 30):  # a few stray pickups from another year, as TLC files have
        pickup[i] = pickup[i].replace(year=2009)
        dropoff[i] = dropoff[i].replace(year=2009)
    table = with_column(table, "trip_distance", distance)
    table = with_column(table, "PULocationID", pu)
    table = with_column(table, "lpep_pickup_datetime", pickup)
    table = with_column(table, "lpep_dropoff_datetime", dropoff)
    table = table.append_column("surprise", pa.array(["x"] * n))
    table = with_column(table, "fare_amount", [None] * n)  # an all-null column we do not use
    return table.rename_columns(
        [c.lower() if c == "DOLocationID" else c for c in table.column_names]
    )


def test_odd_data_is_handled_by_documented_rules_and_counted(tmp_path):
    uri, client = store(tmp_path)
    folder = month_folder(tmp_path, odd_but_usable)
    ingest = run_step("ingest", "--source", str(folder), cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    assert ingest.returncode == 0, ingest.stderr[-2000:]
    ingest_uri = ingest.stdout.split()[1]
    featurize = run_step(
        "featurize", "--ingest-run", ingest_uri, cwd=tmp_path, MLFLOW_TRACKING_URI=uri
    )
    assert featurize.returncode == 0, featurize.stderr[-2000:]
    ingested = client.get_run(ingest_uri.removeprefix("runs:/")).data.metrics
    assert ingested["train_rows_outside_month"] >= 10
    metrics = client.get_run(featurize.stdout.split()[1].removeprefix("runs:/")).data.metrics
    assert metrics["train_invalid_distance"] >= 10
    assert metrics["train_unknown_zone"] >= 10
    assert metrics["train_rows_kept"] > 2500


@pytest.mark.parametrize(
    ("edit", "step", "message"),
    [
        (lambda t: t.drop_columns(["PULocationID"]), "ingest", "lacks column(s) PULocationID"),
        (
            lambda t: with_column(
                t,
                "lpep_pickup_datetime",
                [p.replace(year=2019) for p in t.column("lpep_pickup_datetime").to_pylist()],
            ),
            "ingest",
            "are not in 2021-01; the file does not hold that month",
        ),
        (
            lambda t: with_column(t, "lpep_dropoff_datetime", [None] * t.num_rows),
            "featurize",
            "0 of 3000 rows left with duration in [1.0, 60.0] minutes",
        ),
    ],
    ids=["missing-column", "wrong-month", "all-null-dropoff"],
)
def test_unusable_data_is_refused_in_one_line(tmp_path, edit, step, message):
    uri, client = store(tmp_path)
    folder = month_folder(tmp_path, edit)
    result = run_step("ingest", "--source", str(folder), cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
    if step == "featurize":
        assert result.returncode == 0, result.stderr[-2000:]
        result = run_step(
            "featurize",
            "--ingest-run",
            result.stdout.split()[1],
            cwd=tmp_path,
            MLFLOW_TRACKING_URI=uri,
        )
    assert result.returncode == 2
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert running(client) == []


# --- bad parameters: refused before any download ---------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"train_month": "2021-1"}, "YYYY-MM"),
        ({"train_month": "2021-04"}, "train < val < test"),
        ({"max_evals": "-5"}, "max_evals must be at least 1"),
        ({"encoding": "hashing"}, "encoding must be one of"),
        ({"model_name": "taxi/duration"}, "not usable in a models:/ URI"),
        ({"force": "tune"}, "unknown step(s) tune"),
    ],
)
def test_bad_parameters_are_refused_before_any_download(tmp_path, params, message):
    uri, client = store(tmp_path)
    with TLCServer(DATA_DIR) as server:
        args = ["--source", server.url, "--cache-dir", str(tmp_path / "cache")]
        for key, value in params.items():
            args += [f"--{key.replace('_', '-')}", value]
        result = run_step("main", *args, cwd=tmp_path, MLFLOW_TRACKING_URI=uri)
        assert sum(server.hits.values()) == 0
    assert result.returncode == 2
    assert len(error_lines(result.stderr)) == 1 and message in error_lines(result.stderr)[0]
    assert runs_in(client) == []


# --- the served model and secrets, on one pipeline run with credentials in its environment ------

SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEYID0000042",
    "AWS_SECRET_ACCESS_KEY": "fake/Secret+Access/Key/0123456789abcdef",
    "MLFLOW_TRACKING_USERNAME": "pipeline-user",
    "MLFLOW_TRACKING_PASSWORD": "hunter2-not-a-real-password",
}


@pytest.fixture(scope="module")
def pipeline_with_secrets(tmp_path_factory):
    root = tmp_path_factory.mktemp("secrets")
    uri, client = store(root)
    result = mlflow_run("-e", "main", cwd=root, params=PARAMS, MLFLOW_TRACKING_URI=uri, **SECRETS)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, uri, client, result


def test_no_secret_reaches_a_param_tag_artifact_or_log_line(pipeline_with_secrets):
    root, _, client, result = pipeline_with_secrets
    secrets = [
        SECRETS["AWS_ACCESS_KEY_ID"],
        SECRETS["AWS_SECRET_ACCESS_KEY"],
        SECRETS["MLFLOW_TRACKING_PASSWORD"],
    ]
    for run in runs_in(client):
        logged = " ".join([*run.data.params.values(), *run.data.tags.values()])
        assert not any(s in logged for s in secrets), run.info.run_id
    stored = [root / "mlflow.db", *(p for p in (root / "mlruns").rglob("*") if p.is_file())]
    assert len(stored) > 20
    for path in stored:
        content = path.read_bytes()
        assert not any(s.encode() in content for s in secrets), path
    assert not any(s in result.stdout + result.stderr for s in secrets)


def predict_in_fresh_process(uri: str, frame_code: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        f"""
        import mlflow, numpy as np, pandas as pd
        model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@champion")
        print(np.round(model.predict({frame_code}), 2).tolist())
        """
    )
    env = subprocess_env(MLFLOW_TRACKING_URI=uri)
    env.pop("PYTHONPATH")
    return subprocess.run(
        [sys.executable, "-c", script], env=env, cwd="/", capture_output=True, text=True
    )


def test_served_model_answers_odd_records_and_refuses_unusable_ones(pipeline_with_secrets):
    _, uri, _, _ = pipeline_with_secrets
    ok = predict_in_fresh_process(
        uri,
        "pd.DataFrame({'lpep_pickup_datetime': ['2021-03-02T08:00'] * 4,"
        " 'PULocationID': [74, 999, 74.0, None], 'DOLocationID': [75, 75, 75, 75],"
        " 'trip_distance': [1.2, 1.2, -3.0, 1.2]})",
    )
    assert ok.returncode == 0, ok.stderr[-2000:]
    minutes = [float(x) for x in ok.stdout.strip().strip("[]").split(",")]
    assert len(minutes) == 4 and all(0 < m < 120 for m in minutes)  # unknown zone = missing

    missing = predict_in_fresh_process(
        uri,
        "pd.DataFrame({'pickup_datetime': ['2021-03-02T08:00'], 'PULocationID': [74],"
        " 'trip_distance': [1.2]})",
    )
    assert missing.returncode != 0 and "DOLocationID" in missing.stderr.splitlines()[-1]
    no_time = predict_in_fresh_process(
        uri, "pd.DataFrame({'PULocationID': [74], 'DOLocationID': [75], 'trip_distance': [1.2]})"
    )
    assert no_time.returncode != 0 and "lack a pickup time" in no_time.stderr.splitlines()[-1]

    wrong_type = predict_in_fresh_process(
        uri,
        "pd.DataFrame({'pickup_datetime': ['2021-03-02T08:00'], 'PULocationID': ['Astoria'],"
        " 'DOLocationID': [75], 'trip_distance': [1.2]})",
    )
    assert wrong_type.returncode != 0
    last = wrong_type.stderr.splitlines()[-1]
    assert "PULocationID" in last and "xgboost" not in last.lower()
