"""The project's two MLflow plugins, active inside `mlflow run` once the project is installed
(registered in pyproject.toml). They sit on top of plain modules; no step imports them.

- PipelineExperimentProvider makes plain `mlflow run . -e main` log to `nyc-taxi-experiment`
  (created tagged as a model-training experiment) instead of MLflow's Default. MLflow creates
  the main run before any project code runs and asks `mlflow.default_experiment_provider`
  plugins only when nothing else chose an experiment, so `--experiment-name`,
  `--experiment-id` and MLFLOW_EXPERIMENT_NAME/ID still win.
- PreflightRequestHeaderProvider checks the tracking server once, before the first request of
  `mlflow run` (request-header plugins are the only hook MLflow calls that early).

Both answer only inside `mlflow run` of this project (its MLproject, or a git URL of a repository
named after it), so other code and other projects' `mlflow run` in the same environment keep
MLflow's usual behaviour.
"""

from __future__ import annotations

import sys
from pathlib import Path

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider
from mlflow.tracking.request_header.abstract_request_header_provider import RequestHeaderProvider

from taxi_duration.core.contracts import (
    EXPERIMENT_KIND_TAG,
    EXPERIMENT_NAME,
    MODEL_TRAINING_KIND,
    PROJECT_NAME,
)
from taxi_duration.core.errors import EXIT_USER_ERROR, PipelineError
from taxi_duration.tracking.server import check_can_write, check_tracking_server


def is_mlflow_run_command(argv: list[str]) -> bool:
    """True for `mlflow run ...` (and `python -m mlflow run ...`)."""
    return len(argv) >= 2 and Path(argv[0]).name in ("mlflow", "__main__.py") and argv[1] == "run"


def project_uri(argv: list[str]) -> str | None:
    """The project `mlflow run` was given (a folder or a git URL), as MLflow's own command line
    reads its arguments; None if there is none."""
    from mlflow.cli import run as run_command  # the `mlflow run` command itself

    try:
        context = run_command.make_context("run", list(argv[2:]), resilient_parsing=True)
    except Exception:  # an argument MLflow will refuse itself, in its own words
        return None
    uri = context.params.get("uri")
    return None if uri is None else str(uri)


def names_this_project(uri: str) -> bool:
    """Whether the project at `uri` is this one: a folder whose MLproject is named PROJECT_NAME,
    or a git URL whose repository (or `#subdirectory`) is. A git URL is judged by its name:
    MLflow chooses the experiment before it clones the repository."""
    folder = Path(uri).expanduser()
    if folder.is_dir():
        try:
            spec = yaml.safe_load((folder / "MLproject").read_text())
        except (OSError, yaml.YAMLError):
            return False
        return isinstance(spec, dict) and spec.get("name") == PROJECT_NAME
    repository, _, subdirectory = uri.partition("#")
    names = {repository.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")}
    names.add(subdirectory.rstrip("/").rsplit("/", 1)[-1])
    return PROJECT_NAME in names


def runs_this_project(argv: list[str]) -> bool:
    """True inside `mlflow run` of this project: the plugins act there and nowhere else."""
    if not is_mlflow_run_command(argv):
        return False
    uri = project_uri(argv)
    return uri is not None and names_this_project(uri)


def _exit_on(error: PipelineError) -> None:
    print(f"mlflow run: error: {error}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


class PipelineExperimentProvider(DefaultExperimentProvider):
    def in_context(self) -> bool:
        return runs_this_project(sys.argv)

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
        if not PreflightRequestHeaderProvider.checked and runs_this_project(sys.argv):
            PreflightRequestHeaderProvider.checked = True
            try:
                check_tracking_server(mlflow.get_tracking_uri())
            except PipelineError as exc:
                _exit_on(exc)
        return False

    def request_headers(self) -> dict[str, str]:
        return {}
