"""Makes plain `mlflow run . -e main` log to `nyc-taxi-experiment` instead of MLflow's Default.

MLflow creates the main run before any project code runs and asks registered
`mlflow.default_experiment_provider` plugins for an experiment only when nothing else chose
one, so `--experiment-name`, `--experiment-id` and MLFLOW_EXPERIMENT_NAME/ID still win. The
provider answers only inside the `mlflow run` command, so other code in the same environment
keeps MLflow's usual default. Registered in pyproject.toml; active once the project is installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

from steps.contracts import EXPERIMENT_NAME


def is_mlflow_run_command(argv: list[str]) -> bool:
    """True for `mlflow run ...` (and `python -m mlflow run ...`)."""
    return len(argv) >= 2 and Path(argv[0]).name in ("mlflow", "__main__.py") and argv[1] == "run"


def _exit_unless_writable(experiment_id: str) -> None:
    """One line and exit 2 if the logged-in user may only read the experiment."""
    import mlflow

    from steps.errors import EXIT_USER_ERROR, PipelineError
    from steps.preflight import check_can_write  # imports this module: import late

    try:
        check_can_write(mlflow.get_tracking_uri(), experiment_id, EXPERIMENT_NAME)
    except PipelineError as exc:
        print(f"mlflow run: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)


class PipelineExperimentProvider(DefaultExperimentProvider):
    def in_context(self) -> bool:
        return is_mlflow_run_command(sys.argv)

    def get_experiment_id(self) -> str:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is not None:
            _exit_unless_writable(str(experiment.experiment_id))
            return str(experiment.experiment_id)
        try:
            return str(client.create_experiment(EXPERIMENT_NAME))
        except MlflowException:  # created meanwhile by a concurrent run
            experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
            if experiment is None:
                raise
            return str(experiment.experiment_id)
