"""The monthly loop with real `mlflow run`: retrain monitors the champion on a new month and
retrains on the latest window by its policy, refuses a month the source lacks before any work,
registers nothing new when run again for the same month, leaves one champion when two run at
once; backtest replays the cycle into models of its own. On a private copy of the session's
trained store (green 2021-01/02/03), with the committed samples and the fewest trials that run a
cycle."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from taxi_duration.core.contracts import (
    BACKTEST_JSON,
    CHAMPION,
    EXPERIMENT_NAME,
    MODEL_NAME,
    PARENT_RUN_TAG,
    STEP_TAG,
)
from taxi_duration.tracking import history
from tests.conftest import (
    DATA_DIR,
    TrainedStore,
    error_lines,
    mlflow_run,
    mlflow_run_command,
    subprocess_env,
)

# A cycle's main needs only to run: two trials of few trees.
CYCLE = {"max_evals": "2", "num_boost_round": "60", "early_stopping_rounds": "10"}


@pytest.fixture(scope="module")
def months(tmp_path_factory) -> Path:
    """A folder of the green months 2021-01..05: the newest is 2021-05 (month=latest)."""
    folder = tmp_path_factory.mktemp("months")
    for month in range(1, 6):
        shutil.copy(DATA_DIR / f"green_tripdata_2021-0{month}.parquet", folder)
    return folder


@pytest.fixture(scope="module")
def store(trained_store, tmp_path_factory) -> TrainedStore:
    return trained_store.copy_to(tmp_path_factory.mktemp("loop"))


def run(store: TrainedStore, entry: str, params: dict[str, str], experiment: str = EXPERIMENT_NAME):
    return mlflow_run(
        "-e",
        entry,
        "--experiment-name",
        experiment,
        cwd=store.root,
        params={**CYCLE, **params},
        MLFLOW_TRACKING_URI=store.uri,
    )


def latest(store: TrainedStore, step: str, experiment: str = EXPERIMENT_NAME):
    exp = store.client.get_experiment_by_name(experiment)
    return store.client.search_runs(
        [exp.experiment_id],
        f"tags.`{STEP_TAG}` = '{step}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )[0]


def children(store: TrainedStore, parent) -> list:
    return store.client.search_runs(
        [parent.info.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}'"
    )


def versions(store: TrainedStore, name: str = MODEL_NAME) -> list[str]:
    return sorted(str(v.version) for v in store.client.search_model_versions(f"name = '{name}'"))


def champion(store: TrainedStore, name: str = MODEL_NAME) -> str:
    return str(store.client.get_model_version_by_alias(name, CHAMPION).version)


def test_a_month_the_source_lacks_is_refused_before_any_work(store, months):
    done = run(store, "retrain", {"month": "2021-06", "source": str(months)})
    assert done.returncode != 0
    assert error_lines(done.stderr) == [
        f"retrain: error: green_tripdata_2021-06.parquet is not in {months}; put the month "
        "there or use the TLC URL as source"
    ]
    refused = latest(store, "retrain")
    assert refused.info.status == "FAILED"
    assert children(store, refused) == []  # no predict, no main


def test_policy_never_monitors_the_champion_and_trains_nothing(store, months):
    before = versions(store)
    done = run(store, "retrain", {"month": "2021-04", "source": str(months), "policy": "never"})
    assert done.returncode == 0, done.stderr[-3000:]
    retrained = latest(store, "retrain")
    tags = retrained.data.tags
    assert (tags["decision"], tags["month"], tags["champion_before"]) == ("keep", "2021-04", "1")
    assert tags["status"] in ("ok", "drift", "degraded")
    (monitor,) = children(store, retrained)
    assert monitor.data.tags[STEP_TAG] == "predict"
    assert monitor.data.tags["model_version"] == "1" and "psi_distance" in monitor.data.metrics
    assert retrained.data.metrics["champion_rmse"] == pytest.approx(monitor.data.metrics["rmse"])
    assert "Decision: **keep**: policy never: monitor only." in tags["mlflow.note.content"]
    assert versions(store) == before


def test_retrain_trains_on_the_latest_window_and_again_registers_nothing(store, months):
    before = versions(store)
    done = run(store, "retrain", {"month": "latest", "source": str(months), "policy": "always"})
    assert done.returncode == 0, done.stderr[-3000:]
    retrained = latest(store, "retrain")
    assert retrained.data.tags["month"] == "2021-05"  # the newest month in the folder
    nested = {r.data.tags[STEP_TAG]: r for r in children(store, retrained)}
    assert set(nested) == {"predict", "main"}
    main = nested["main"]
    assert (main.data.params["train_month"], main.data.params["val_month"]) == (
        "2021-03",
        "2021-04",
    )
    assert main.data.params["test_month"] == "2021-05"
    new = sorted(set(versions(store)) - set(before))
    assert len(new) == 1 and retrained.data.tags["challenger"] == new[0]
    assert retrained.data.tags["champion_after"] == champion(store)
    note = retrained.data.tags["mlflow.note.content"]
    assert f"challenger **v{new[0]}**" in note and "tested on 2021-05" in note

    again = run(store, "retrain", {"month": "2021-05", "source": str(months), "policy": "always"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert "reused" in again.stdout.splitlines()[-1]
    assert versions(store) == sorted([*before, *new])  # nothing new registered
    main = next(
        r for r in children(store, latest(store, "retrain")) if r.data.tags[STEP_TAG] == "main"
    )
    assert children(store, main) == []  # every step of the window reused


def test_two_retrains_of_one_month_at_once_leave_one_champion(store, months):
    command = mlflow_run_command(
        "-e",
        "retrain",
        "--experiment-name",
        "two-at-once",
        params={
            **CYCLE,
            "month": "2021-04",
            "source": str(months),
            "policy": "always",
            "seed": "3",
        },
    )
    env = subprocess_env(MLFLOW_TRACKING_URI=store.uri)
    both = [
        subprocess.Popen(
            command,
            cwd=store.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=600) for process in both]
    assert [p.returncode for p in both] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]
    exp = store.client.get_experiment_by_name("two-at-once")
    assert store.client.search_runs([exp.experiment_id], "attributes.status != 'FINISHED'") == []
    model = store.client.get_registered_model(MODEL_NAME)
    now = str(model.aliases[CHAMPION])
    moves = history.moves(model.tags)
    assert moves[-1].version == now  # the history ends at the one champion
    chain = [m for m in moves if m.version != m.previous]
    assert [m.previous for m in chain[1:]] == [m.version for m in chain[:-1]]


def test_backtest_replays_the_cycle_into_models_of_its_own(store, months):
    production = (versions(store), champion(store))
    done = run(
        store, "backtest", {"months": "2021-04..2021-05", "source": str(months)}, "backtests"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (versions(store), champion(store)) == production  # production untouched
    replayed = latest(store, "backtest", "backtests")
    models = {p: replayed.data.tags[f"model.{p}"] for p in ("always", "on_drift")}
    for name in models.values():
        assert name.startswith("nyc-taxi-duration-backtest-") and versions(store, name)
    client = store.client
    table = json.loads(
        Path(client.download_artifacts(replayed.info.run_id, BACKTEST_JSON)).read_text()
    )
    assert [row["month"] for row in table] == ["2021-04", "2021-05"]
    assert table[1]["frozen_rmse"] > 0 and table[1]["always_retrained"] is True
    frozen = [m.step for m in client.get_metric_history(replayed.info.run_id, "frozen_rmse")]
    assert frozen == [202104, 202105]
    assert {"always_mean_rmse", "on_drift_retrains"} <= set(replayed.data.metrics)
    note = replayed.data.tags["mlflow.note.content"]
    assert "the model trained for 2021-04 is the **frozen** one" in note
    assert "| 2021-05 |" in note
    retrains = [r for r in children(store, replayed) if r.data.tags[STEP_TAG] == "retrain"]
    assert len(retrains) == 4  # each policy, each month: the same cycle as retrain
