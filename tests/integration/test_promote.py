"""promote through its CLI (`python -m steps.promote`) on a private copy of the trained store:
moves to a number and to `previous`, the history that register and promote leave in the
registry, and the refusals (exit 2, one line, the run FAILED, the aliases and history unchanged).
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path

import mlflow
import pytest

from taxi_duration.core.contracts import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_SINCE_TAG,
    CHAMPION_UNTIL_TAG,
    EXPERIMENT_NAME,
    MODEL_NAME,
    PROMOTE,
    PROMOTION_FILE,
    REGISTER,
    STEP_TAG,
)
from taxi_duration.tracking.history import moves
from tests.conftest import TrainedStore, error_lines, run_step


def promote(store: TrainedStore, *args: str, **env: str):
    return run_step(
        PROMOTE,
        *args,
        cwd=store.root,
        MLFLOW_TRACKING_URI=store.uri,
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT_NAME,
        **env,
    )


def champion(store: TrainedStore) -> str:
    return str(store.client.get_registered_model(MODEL_NAME).aliases[CHAMPION])


def history(store: TrainedStore):
    return moves(store.client.get_registered_model(MODEL_NAME).tags)


def promote_runs(store: TrainedStore):
    experiment = store.client.get_experiment_by_name(EXPERIMENT_NAME)
    return store.client.search_runs(
        [experiment.experiment_id], f"tags.`{STEP_TAG}` = '{PROMOTE}'", max_results=100
    )


@pytest.fixture
def store(store_copy: TrainedStore) -> TrainedStore:
    """The trained store's model with a second version (a copy of v1's model): v1 champion and
    challenger, v2 neither."""
    v1 = store_copy.client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    mlflow.set_tracking_uri(store_copy.uri)  # the sqlite registry resolves models:/m-... with it
    try:
        v2 = store_copy.client.create_model_version(
            MODEL_NAME, v1.source, v1.run_id, tags=v1.tags, model_id=v1.model_id
        )
    finally:
        mlflow.set_tracking_uri("")
    assert (str(v1.version), str(v2.version)) == ("1", "2")
    return store_copy


def test_register_started_the_history_with_the_first_champion(store):
    (first,) = history(store)
    assert (first.version, first.previous, first.step) == ("1", "none", REGISTER)
    assert first.reason == "no champion yet" and first.by == getpass.getuser()
    v1 = store.client.get_model_version(MODEL_NAME, "1")
    assert v1.tags[CHAMPION_SINCE_TAG] == first.at and CHAMPION_UNTIL_TAG not in v1.tags


def test_promote_moves_champion_to_a_version_and_records_who_when_why(store):
    result = promote(store, "--version", "2", "--reason", "v1 overestimates airport trips")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "v1 -> v2: v1 overestimates airport trips" in result.stdout
    assert champion(store) == "2"
    assert str(store.client.get_registered_model(MODEL_NAME).aliases[CHALLENGER]) == "1"
    _, move = history(store)
    assert (move.version, move.previous, move.step) == ("2", "1", PROMOTE)
    assert move.by == getpass.getuser() and move.reason == "v1 overestimates airport trips"
    (run,) = promote_runs(store)
    assert run.info.status == "FINISHED" and move.run_id == run.info.run_id
    tags = run.data.tags
    assert (tags["from_version"], tags["to_version"], tags["moved_by"]) == ("1", "2", move.by)
    assert tags["moved_at"] == move.at and run.data.params["reason"] == move.reason
    assert "airport" in tags["mlflow.note.content"]
    assert store.client.get_model_version(MODEL_NAME, "2").tags[CHAMPION_SINCE_TAG] == move.at
    assert store.client.get_model_version(MODEL_NAME, "1").tags[CHAMPION_UNTIL_TAG] == move.at
    record = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(run.info.artifact_uri + "/" + PROMOTION_FILE)
        ).read_text()
    )
    assert record["version"] == "2" and record["previous"] == "1"


def test_previous_rolls_back_and_a_second_previous_returns(store):
    moved_by = {"MLFLOW_TRACKING_USERNAME": "ana"}
    assert promote(store, "--version", "2", "--reason", "try v2").returncode == 0
    back = promote(store, "--version", "previous", "--reason", "v2 goes crazy", **moved_by)
    assert back.returncode == 0, back.stderr[-3000:]
    assert champion(store) == "1"
    assert history(store)[-1].by == "ana"
    v1 = store.client.get_model_version(MODEL_NAME, "1")
    assert CHAMPION_UNTIL_TAG not in v1.tags  # champion again
    again = promote(store, "--version", "previous", "--reason", "v2 was fine after all")
    assert again.returncode == 0, again.stderr[-3000:]
    assert champion(store) == "2"
    assert [(m.version, m.previous) for m in history(store)] == [
        ("1", "none"),
        ("2", "1"),
        ("1", "2"),
        ("2", "1"),
    ]


def delete_v2(store: TrainedStore) -> None:
    store.client.delete_model_version(MODEL_NAME, "2")


@pytest.mark.parametrize(
    ("args", "prepare", "fragment"),
    [
        (["--model-name", "no-such-model", "--version", "1"], None, "no registered model"),
        (["--version", "7"], None, "has no version 7 (never registered, or deleted)"),
        (["--version", "2"], delete_v2, "has no version 2 (never registered, or deleted)"),
        (["--version", "previous"], None, "no previous champion"),
        (["--version", "1"], None, "already is the champion"),
        (["--version", "two"], None, "version must be a version number"),
        (["--version", "2", "--reason", "  "], None, "reason is empty"),
    ],
)
def test_promote_refuses_in_one_line_and_leaves_the_registry_as_it_was(
    store, args, prepare, fragment
):
    if prepare:
        prepare(store)
    before = history(store)
    if "--reason" not in args:
        args = [*args, "--reason", "because"]
    result = promote(store, *args)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("promote: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr
    assert [r.info.status for r in promote_runs(store)] == ["FAILED"]
    assert champion(store) == "1"
    assert history(store) == before
