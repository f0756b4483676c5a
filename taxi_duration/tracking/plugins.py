"""The project's two MLflow plugins, active inside `mlflow run` once the project is installed
(registered in pyproject.toml). They sit on top of plain modules; no step imports them.

- PipelineExperimentProvider makes plain `mlflow run . -e main` log to `nyc-taxi-experiment`
  (created tagged as a model-training experiment) instead of MLflow's Default. MLflow creates
  the main run before any project code runs and asks `mlflow.default_experiment_provider`
  plugins only when nothing else chose an experiment, so `--experiment-name`,
  `--experiment-id` and MLFLOW_EXPERIMENT_NAME/ID still win.
- PreflightRequestHeaderProvider checks the tracking server once, before the first request of
  `mlflow run` (request-header plugins are the only hook MLflow calls that early).

Both answer only inside the `mlflow run` command, so other code in the same environment keeps
MLflow's usual behaviour.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from taxi_duration.core.contracts import EXPERIMENT_KIND_TAG, EXPERIMENT_NAME, MODEL_TRAINING_KIND
from taxi_duration.core.errors import EXIT_USER_ERROR, PipelineError
from taxi_duration.tracking.server import check_can_write, check_tracking_server


def is_mlflow_run_command(argv: list[str]) -> bool:
    """True for `mlflow run ...` (and `python -m mlflow run ...`)."""
    return len(argv) >= 2 and Path(argv[0]).name in ("mlflow", "__main__.py") and argv[1] == "run"


def _exit_on(error: PipelineError) -> None:
    print(f"mlflow run: error: {error}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


class PipelineExperimentProvider(DefaultExperimentProvider):
    def in_context(self) -> bool:
        return is_mlflow_run_command(sys.argv)

    def get_experiment_id(self) -> str:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is not None:
            experiment_id = str(experiment.experiment_id)
            try:
                check_can_write(mlflow.get_tracking_uri(), experiment_id, EXPERIMENT_NAME)
            except PipelineError as exc:
                _exit_on(exc)
            return experiment_id
        try:
            return str(
                client.create_experiment(
                    EXPERIMENT_NAME, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND}
                )
            )
        except MlflowException:  # created meanwhile by a concurrent run
            experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
            if experiment is None:
                raise
            return str(experiment.experiment_id)


class PreflightRequestHeaderProvider(RequestHeaderProvider):
    """Adds no header. MLflow asks request-header plugins before every request, so this is where
    `mlflow run` can check the server once, before it starts retrying or creating runs."""

    checked = False

    def in_context(self) -> bool:
        if not PreflightRequestHeaderProvider.checked and is_mlflow_run_command(sys.argv):
            PreflightRequestHeaderProvider.checked = True
            try:
                check_tracking_server(mlflow.get_tracking_uri())
            except PipelineError as exc:
                _exit_on(exc)
        return False

    def request_headers(self) -> dict[str, str]:
        return {}
