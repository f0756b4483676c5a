"""docker/'s two images built and run for real, without a Docker engine (tests/docker/podman.py).

The tracking server image, built as compose.yaml builds it, runs compose.yaml's `mlflow server`
command line against PostgreSQL and S3 (moto) on 127.0.0.1, as tests/integration/test_remote.py
does with the venv's MLflow; the pipeline image runs its own command (`mlflow run . -e main`)
against it on the committed samples; the test process then finds the champion on the server
and scores trips with it. Both images start from a local Debian bookworm image (BASE_IMAGE) that
also carries this machine's CA bundle and pip settings, which the Dockerfiles never see.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import (
    EXPERIMENT_NAME,
    MODEL_NAME,
    PARENT_RUN_TAG,
    STEP_TAG,
    STEPS,
)
from tests.conftest import DATA_DIR, FAST_HPO, PROJECT_DIR, error_lines, subprocess_env
from tests.docker.podman import (
    PREFIX,
    Container,
    build,
    config_of,
    missing_tools,
    prune,
    remove_stale_containers,
    store_lock,
    trusted_base_image,
)
from tests.integration.servers import (
    COMPOSE_FILE,
    HOST,
    S3,
    Postgres,
    Process,
    compose_service,
    free_port,
    server_command,
    wait_until,
)

# Two trials: the image's wiring is under test, not the search.
PARAMS = {"source": "/data", **FAST_HPO, "max_evals": "2"}
DATABASE, BUCKET = "mlflow_image", "mlflow-image"


@dataclass(frozen=True)
class Images:
    pipeline: str
    server: str


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docker")


@pytest.fixture(scope="module")
def images(logs: Path) -> Images:
    """Both images, built from the checkout under test on the local base image: the pipeline
    image as the docs build it (from the repository root), the server image from compose.yaml's
    build section (its context and Dockerfile), as `docker compose up --build` would."""
    if os.geteuid() != 0:
        pytest.skip("tests/docker builds and runs images with podman and buildah as root")
    if problem := missing_tools():
        pytest.fail(problem, pytrace=False)
    log = logs / "build.log"
    server = compose_service("mlflow")["build"]
    server_context = COMPOSE_FILE.parent / server["context"]
    found = Images(
        f"localhost/{PREFIX}/pipeline:latest", f"localhost/{PREFIX}/mlflow-server:latest"
    )
    try:
        with store_lock():
            remove_stale_containers()
            base = {"BASE_IMAGE": trusted_base_image(log)}
            build(PROJECT_DIR / "docker" / "Dockerfile", PROJECT_DIR, found.pipeline, log, base)
            build(server_context / server["dockerfile"], server_context, found.server, log, base)
            prune(log)
    except RuntimeError as error:
        pytest.fail(f"{error}\n(whole output: {log})", pytrace=False)
    return found


@pytest.fixture(scope="module")
def server(images: Images, logs: Path) -> Iterator[str]:
    """compose.yaml's `mlflow server` in a container of the server image, its PostgreSQL and
    S3 on 127.0.0.1 in place of the compose services; stopped and removed at the end."""
    with ExitStack() as cleanup:
        postgres = Postgres()
        cleanup.callback(postgres.stop)
        postgres.start()
        postgres.create_database(DATABASE)
        s3 = S3(logs)
        cleanup.callback(s3.stop)
        s3.create_bucket(BUCKET)
        port = free_port()
        values = {
            "POSTGRES_USER": postgres.user,
            "POSTGRES_PASSWORD": postgres.password,
            "POSTGRES_DB": DATABASE,
            "MINIO_ROOT_USER": s3.access_key,
            "MINIO_ROOT_PASSWORD": s3.secret_key,
            "MLFLOW_BUCKET": BUCKET,
            "MLFLOW_ALLOWED_HOSTS": f"{HOST}:{port}",
        }
        addresses = {"postgres:5432": f"{HOST}:{postgres.port}", "minio:9000": f"{HOST}:{s3.port}"}
        flags = {"--host": HOST, "--port": str(port), "--workers": "1"}
        argv, env = server_command(values, addresses, flags)
        container = Container(images.server, "server", logs / "build.log")
        cleanup.callback(container.remove)
        process = Process(
            "mlflow server (image)", container.command(argv, env), os.environ, logs / "server.log"
        )
        cleanup.callback(process.stop)
        uri = f"http://{HOST}:{port}"

        def api_answers() -> bool:
            search = f"{uri}/api/2.0/mlflow/experiments/search"
            return requests.get(search, params={"max_results": 1}, timeout=5).status_code == 200

        try:
            wait_until(api_answers, process.name, process, timeout=180)
        except RuntimeError as error:  # the server's own last words, without our traceback
            pytest.fail(str(error), pytrace=False)
        yield uri


@pytest.fixture(scope="module")
def pipeline(images: Images, server: str, logs: Path) -> tuple[int, str]:
    """The pipeline image's own command, the samples mounted at /data: (exit code, output)."""
    command = config_of(images.pipeline)["Cmd"]
    assert isinstance(command, list)
    params = [arg for key, value in PARAMS.items() for arg in ("-P", f"{key}={value}")]
    env = {"MLFLOW_TRACKING_URI": server, "OMP_NUM_THREADS": "1"}
    container = Container(images.pipeline, "pipeline", logs / "build.log")
    process = None
    try:
        argv = container.command([*command, *params], env, volumes=[f"{DATA_DIR}:/data:ro"])
        process = Process("pipeline image", argv, os.environ, logs / "pipeline.log")
        process.popen.wait(timeout=900)
        return process.popen.returncode, process.log_tail(200_000)
    finally:
        if process is not None:
            process.stop()
        container.remove()


def finished(pipeline: tuple[int, str]) -> str:
    returncode, output = pipeline
    if returncode != 0:
        lines = "\n".join(error_lines(output))
        message = f"the pipeline image exited {returncode}:\n{lines}\n{output[-3000:]}"
        pytest.fail(message, pytrace=False)
    return output


def test_pipeline_image_runs_main_against_the_server_image(pipeline, server):
    output = finished(pipeline)
    assert f"{MODEL_NAME} version 1, alias champion" in output
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    mains = [r for r in runs if r.data.tags.get(STEP_TAG) == "main"]
    assert len(mains) == 1
    steps = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == mains[0].info.run_id]
    assert sorted(r.data.tags[STEP_TAG] for r in steps) == sorted(STEPS)
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert len(runs) == 1 + len(STEPS) + int(PARAMS["max_evals"])  # main, steps, trials


def test_champion_from_the_image_scores_trips_outside_it(pipeline, server):
    finished(pipeline)
    version = MlflowClient(server).get_model_version_by_alias(MODEL_NAME, "champion")
    assert version.version == "1"
    script = textwrap.dedent(
        f"""
        import mlflow, pandas as pd
        trips = pd.read_parquet({str(DATA_DIR / "green_tripdata_2021-03.parquet")!r}).head(200)
        model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@champion")
        at = "2021-03-02T10:00:00"
        short_and_long = pd.DataFrame({{"lpep_pickup_datetime": [at, at],
            "PULocationID": [74, 74], "DOLocationID": [75, 138], "trip_distance": [0.8, 9.5]}})
        print(float(model.predict(trips).mean()), *model.predict(short_and_long))
        """
    )
    env = subprocess_env(MLFLOW_TRACKING_URI=server)
    env.pop("PYTHONPATH")  # what the server gives, not the checkout
    done = subprocess.run(
        [sys.executable, "-c", script], cwd="/", env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    mean, short, long = map(float, done.stdout.split()[-3:])
    assert 5 < mean < 40
    assert 1 < short < long < 60
