"""Faults around a tracking server (PostgreSQL + S3 behind `mlflow server`, as on a VM): the
server stopped and restarted during a run, the server gone for good, two pipelines at once.

The pipelines share one experiment, as a user's runs on one server do: after the first, each
reuses the ingest and featurize runs and searches with its own budget or seed, so the faults
land in `hpo` and after it. Each test checks the runs it made (those not there before it)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import STEP_TAG
from tests.conftest import DATA_DIR, FAST_HPO, error_lines, mlflow_run_command, subprocess_env
from tests.integration.servers import PROXIED, S3, MlflowServer, Postgres
from tests.reliability.test_faults import wait_for

PARAMS = {"source": str(DATA_DIR), **FAST_HPO}
EXPERIMENT = "server-faults"


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    workdir = tmp_path_factory.mktemp("server-faults")
    with pytest.MonkeyPatch.context() as env, ExitStack() as cleanup:
        for name in list(os.environ):
            if name.startswith(("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_")):
                env.delenv(name)
        postgres = Postgres()
        cleanup.callback(postgres.stop)
        postgres.start()
        s3 = S3(workdir)
        cleanup.callback(s3.stop)
        server = MlflowServer(PROXIED, postgres, s3, workdir / "server", name="faults")
        cleanup.callback(lambda: server.stop())
        yield server.wait_ready()


def start_main(server: MlflowServer, cwd, **params: str) -> subprocess.Popen:
    command = mlflow_run_command(
        "-e", "main", "--experiment-name", EXPERIMENT, params={**PARAMS, **params}
    )
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=subprocess_env(**server.client_env()),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def trials_logged(client: MlflowClient, earlier: frozenset[str]) -> bool:
    """Whether a trial run not in `earlier` is there (False while the server is away)."""
    try:
        return any(step == "hpo_trial" for step, _ in statuses(client, earlier).values())
    except Exception:
        return False


def statuses(
    client: MlflowClient, earlier: frozenset[str] = frozenset()
) -> dict[str, tuple[str, str]]:
    """(step, status) of each run of the experiment, but those in `earlier`."""
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
    return {
        r.info.run_id: (r.data.tags.get(STEP_TAG, ""), r.info.status)
        for r in runs
        if r.info.run_id not in earlier
    }


def test_server_stopped_and_restarted_mid_run_loses_no_result(server, tmp_path):
    client = MlflowClient(server.uri)
    earlier = frozenset(statuses(client))
    pipeline = start_main(server, tmp_path, max_evals="8")
    wait_for(lambda: trials_logged(client, earlier), what="the first trial")
    server.stop()
    subprocess.run(["sleep", "5"], check=True)  # down long enough for calls to fail and retry
    server.restart()
    _, stderr = pipeline.communicate(timeout=600)
    assert pipeline.returncode == 0, stderr[-3000:]
    runs = statuses(client, earlier)
    assert {status for _, status in runs.values()} == {"FINISHED"}
    assert sum(step == "hpo_trial" for step, _ in runs.values()) == 8
    (main,) = [client.get_run(rid) for rid, (step, _) in runs.items() if step == "main"]
    assert {"best_val_rmse", "test_rmse"} <= set(main.data.metrics)


def test_server_gone_for_good_fails_in_one_line_and_the_next_main_resumes(server, tmp_path):
    client = MlflowClient(server.uri)
    earlier = frozenset(statuses(client))
    impatient = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    command = mlflow_run_command(
        "-e", "main", "--experiment-name", EXPERIMENT, params={**PARAMS, "max_evals": "9"}
    )
    pipeline = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=subprocess_env(**server.client_env(), **impatient),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(lambda: trials_logged(client, earlier), what="the first trial")
    server.stop()
    _, stderr = pipeline.communicate(timeout=600)
    assert pipeline.returncode != 0
    lost = [line for line in error_lines(stderr) if "lost the tracking server" in line]
    assert lost and lost[0].startswith("hpo: error: lost the tracking server at http://")
    server.restart()

    rerun = subprocess.run(
        command,
        cwd=tmp_path,
        env=subprocess_env(**server.client_env()),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "as KILLED" in rerun.stdout  # what the lost server left RUNNING is ended
    runs = statuses(client, earlier)
    assert "RUNNING" not in {status for _, status in runs.values()}
    mains = [s for step, s in runs.values() if step == "main"]
    assert "FINISHED" in mains


def test_two_mains_at_once_against_one_server_end_with_one_best_champion(server, tmp_path):
    client = MlflowClient(server.uri)
    model = "concurrent-taxi"
    # the gate by RMSE alone: whichever registers second, the better model wins
    pipelines = [
        start_main(server, tmp_path, seed=str(seed), model_name=model, min_confidence="0")
        for seed in (1, 2)
    ]
    for pipeline in pipelines:
        _, stderr = pipeline.communicate(timeout=600)
        assert pipeline.returncode == 0, stderr[-3000:]
    versions = client.search_model_versions(f"name = '{model}'")
    assert len(versions) == 2
    best = min(versions, key=lambda v: float(v.tags["test_rmse"]))
    assert str(client.get_model_version_by_alias(model, "champion").version) == str(best.version)
