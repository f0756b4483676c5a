"""HPO trials as MLflow runs nested under the hpo run, each tagged model=xgboost, so the UI's
search (tags.`model` = 'xgboost'), compare and parallel-coordinates views find them; and read
back by train_best as the candidates it chooses from.

A trial costs two calls to start and one to finish, so logging stays cheap beside its fit even
against a remote server. Created with the client (not `start_run`): trials may run on Spark
executors, where there is no active run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, Run, RunTag

from taxi_duration.core.contracts import (
    MODEL_TAG,
    MODEL_TAG_VALUE,
    PARENT_RUN_TAG,
    STEP_TAG,
    TRIAL_STEP,
)
from taxi_duration.model import boosting
from taxi_duration.model.selection import Candidate
from taxi_duration.tracking import runs
from taxi_duration.tracking.runs import client


def start_trial(parent: Run, name: str, params: Mapping[str, Any]) -> str:
    """Create one trial's nested run with its parameters; returns its id."""
    run = client().create_run(
        parent.info.experiment_id,
        run_name=name,
        tags={
            PARENT_RUN_TAG: parent.info.run_id,
            MODEL_TAG: MODEL_TAG_VALUE,
            STEP_TAG: TRIAL_STEP,
        },
    )
    client().log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return str(run.info.run_id)


def finish_trial(run_id: str, metrics: Mapping[str, float], tags: Mapping[str, Any]) -> None:
    """Log a trial's results in one call and end its run FINISHED."""
    now = mlflow.utils.time.get_current_time_millis()
    client().log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )
    client().set_terminated(run_id, "FINISHED")


def fail_trial(run_id: str, error: str) -> None:
    """End a trial whose training raised as FAILED, with what it raised (tag `error`)."""
    client().set_tag(run_id, "error", error)
    client().set_terminated(run_id, "FAILED")


def name_trial(run_id: str, name: str, number: int) -> None:
    """Set a trial run's display name and number after the fact."""
    client().log_batch(run_id, tags=[RunTag("mlflow.runName", name), RunTag("trial", str(number))])


def candidates_of(hpo_run: Run) -> list[Candidate]:
    """The finished trials of an hpo run, as train_best chooses among them."""
    return [
        Candidate(
            run.info.run_id,
            boosting.parse_params(run.data.params),
            float(run.data.metrics["rmse"]),
            int(run.data.metrics["n_trees"]),
            run.info.run_name or "",
        )
        for run in runs.child_runs(hpo_run)
        if "rmse" in run.data.metrics
    ]
