"""The project's MLflow plugins act only for `mlflow run` of this project: another team's
MLproject, run with `mlflow run` in the same environment, gets MLflow's own behaviour (its run in
MLflow's Default experiment, no preflight of ours)."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import EXPERIMENT_NAME
from tests.conftest import mlflow_run

OTHER_MLPROJECT = """\
name: other-team-forecast
entry_points:
  main:
    command: "python -c 'print(42)'"
"""


def test_another_projects_mlflow_run_keeps_mlflows_own_default_experiment(tmp_path):
    other = tmp_path / "other-project"
    other.mkdir()
    (other / "MLproject").write_text(OTHER_MLPROJECT)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    done = mlflow_run("-e", "main", cwd=tmp_path, project=other, MLFLOW_TRACKING_URI=uri)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "mlflow run: error" not in done.stderr
    client = MlflowClient(uri)
    assert client.get_experiment_by_name(EXPERIMENT_NAME) is None
    (run,) = client.search_runs(["0"])  # MLflow's Default experiment, as without the plugins
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "main"
