"""`mlflow run` against a tracking server as on a VM, and from a git URL.

One PostgreSQL and one S3 (moto) serve three `mlflow server`s started with docker/compose.yaml's
command line: proxied artifacts (clients need only the tracking URI), direct S3 access (clients
also need the S3 endpoint and keys), and basic auth. The whole pipeline runs once against each,
the three at the same time; then the failures a user meets first (no login, another user's
experiment, an unreachable server, a server that rejects the Host header) and a run from a
`git://` URL served by `git daemon`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import (
    BEST_PARAMS_FILE,
    EXPERIMENT_NAME,
    FEATURIZE_SUMMARY_FILE,
    MODEL_NAME,
    MODEL_URI_TAG,
    PARENT_RUN_TAG,
    PLOTS_DIR,
    PROFILE_FILE,
    REGISTRATION_FILE,
    STEP_TAG,
    STEPS,
    SUMMARY_FILE,
    TRIALS_FILE,
    runs_table_url,
)
from tests.conftest import (
    DATA_DIR,
    FAST_HPO,
    PROJECT_DIR,
    error_lines,
    mlflow_run,
    subprocess_env,
)
from tests.integration.servers import (
    AUTH,
    DIRECT,
    PROXIED,
    S3,
    MlflowServer,
    Postgres,
    free_port,
    git_daemon,
    new_secret,
)

MODES = (PROXIED, DIRECT, AUTH)
PARAMS = {"source": str(DATA_DIR), **FAST_HPO}
# Client settings the test process itself must not carry: each run gets exactly what its mode
# needs, nothing inherited.
CLIENT_SETTINGS = ("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_", "MLFLOW_EXPERIMENT_")
# What each step run must have written, as run artifacts, to the bucket.
STEP_ARTIFACTS = {
    "ingest": ["raw/train.parquet", PROFILE_FILE],
    "featurize": ["preprocessor/preprocessor.pkl", FEATURIZE_SUMMARY_FILE],
    "hpo": [TRIALS_FILE, BEST_PARAMS_FILE],
    "train_best": [f"{PLOTS_DIR}/test_predictions.png"],
    "register": [REGISTRATION_FILE],
    "main": [SUMMARY_FILE],
}
MODEL_FILES = ["MLmodel", "python_model.pkl", "artifacts/booster.ubj", "artifacts/preprocessor.pkl"]


@dataclass
class Stack:
    postgres: Postgres
    s3: S3
    servers: dict[str, MlflowServer]
    users: dict[str, str]  # basic-auth users of the auth server: name -> password

    def secrets(self) -> list[str]:
        """Every credential in play; none may end up in a param, a tag or an artifact."""
        auth = self.servers[AUTH]
        return [
            self.s3.secret_key,
            self.postgres.password,
            auth.admin_password,
            *self.users.values(),
        ]

    def login(self, user: str) -> dict[str, str]:
        return {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": self.users[user]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """PostgreSQL, S3 and the three servers, started together; all stopped at the end."""
    workdir = tmp_path_factory.mktemp("stack")
    with pytest.MonkeyPatch.context() as env, ExitStack() as cleanup:
        for name in list(os.environ):
            if name.startswith(CLIENT_SETTINGS):
                env.delenv(name)
        postgres = Postgres()
        cleanup.callback(postgres.stop)
        postgres.start()
        s3 = S3(workdir)
        cleanup.callback(s3.stop)
        servers: dict[str, MlflowServer] = {}
        for mode in MODES:
            servers[mode] = MlflowServer(mode, postgres, s3, workdir / mode)
            cleanup.callback(servers[mode].stop)
        for server in servers.values():
            server.wait_ready()
        users = {"alice": new_secret("alice"), "bob": new_secret("bob")}
        for user, password in users.items():
            servers[AUTH].create_user(user, password)
        yield Stack(postgres, s3, servers, users)


def run_env(stack: Stack, mode: str) -> dict[str, str]:
    """A client's environment in `mode`: the tracking URI (+ S3 keys if direct, + a login)."""
    server = stack.servers[mode]
    return server.client_env(**(stack.login("alice") if mode == AUTH else {}))


@pytest.fixture(scope="module")
def pipelines(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, subprocess.CompletedProcess[str]]:
    """`mlflow run <project> -e main` once per mode, the three at the same time."""
    cwd = {mode: tmp_path_factory.mktemp(f"run-{mode}") for mode in MODES}
    with ThreadPoolExecutor(len(MODES)) as pool:
        futures = {
            mode: pool.submit(
                mlflow_run, "-e", "main", cwd=cwd[mode], params=PARAMS, **run_env(stack, mode)
            )
            for mode in MODES
        }
        return {mode: future.result() for mode, future in futures.items()}


def finished(result: subprocess.CompletedProcess[str]) -> None:
    """Fail with the pipeline's own error lines and the end of its stderr unless it exited 0."""
    if result.returncode != 0:
        lines = "\n".join(error_lines(result.stderr))
        pytest.fail(
            f"mlflow run exited {result.returncode}:\n{lines}\n--- stderr ---\n"
            f"{result.stderr[-2500:]}",
            pytrace=False,
        )


@contextmanager
def client_of(stack: Stack, mode: str) -> Iterator[MlflowClient]:
    """An MlflowClient of `mode`'s server (the admin on the auth server), for assertions."""
    server = stack.servers[mode]
    env = server.client_env()
    if mode == AUTH:
        admin, password = server.admin or ("", "")
        env |= {"MLFLOW_TRACKING_USERNAME": admin, "MLFLOW_TRACKING_PASSWORD": password}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        yield MlflowClient(server.uri)


def all_runs(client: MlflowClient) -> list[Run]:
    experiments = client.search_experiments()
    return list(client.search_runs([e.experiment_id for e in experiments], max_results=5000))


def bucket_key(uri: str, server: MlflowServer) -> str:
    """The bucket key an artifact URI of this server resolves to."""
    parsed = urlparse(uri)
    if parsed.scheme == "mlflow-artifacts":  # proxied: under --artifacts-destination
        return f"{urlparse(server.artifact_root).path.strip('/')}/{parsed.path.lstrip('/')}"
    assert parsed.scheme == "s3" and parsed.netloc == server.bucket, uri
    return parsed.path.lstrip("/")


# --- the pipeline against each server ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_pipeline_runs_as_a_tree_of_finished_runs(stack, pipelines, mode):
    result = pipelines[mode]
    finished(result)
    assert f"{MODEL_NAME} version 1, alias champion" in result.stdout
    with client_of(stack, mode) as client:
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        link = runs_table_url(stack.servers[mode].uri, experiment.experiment_id)
        assert f"browse the runs at    {link}\n" in result.stdout
        runs = client.search_runs([experiment.experiment_id], max_results=1000)
        mains = [r for r in runs if r.data.tags.get(STEP_TAG) == "main"]
        assert len(mains) == 1
        children = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == mains[0].info.run_id]
        assert sorted(r.data.tags[STEP_TAG] for r in children) == sorted(STEPS)
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert len(runs) == 1 + len(STEPS) + int(FAST_HPO["max_evals"])  # main, steps, trials
        assert len(all_runs(client)) == len(runs)  # none in Default


@pytest.mark.parametrize("mode", MODES)
def test_run_artifacts_and_model_files_are_in_the_bucket(stack, pipelines, mode):
    finished(pipelines[mode])
    server = stack.servers[mode]
    keys = set(stack.s3.keys(server.bucket))
    with client_of(stack, mode) as client:
        runs = all_runs(client)
        for run in runs:
            step = run.data.tags.get(STEP_TAG)
            if mode == DIRECT:
                assert run.info.artifact_uri.startswith(f"s3://{server.bucket}/")
            else:  # proxied: the client never sees the bucket
                assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
            for path in STEP_ARTIFACTS.get(step or "", []):
                assert f"{bucket_key(run.info.artifact_uri, server)}/{path}" in keys, (step, path)
        # The champion's files: the model train_best logged (its tag names it).
        version = client.get_model_version_by_alias(MODEL_NAME, "champion")
        trained = client.get_run(version.run_id)
        assert trained.data.tags[STEP_TAG] == "train_best"
        model_id = trained.data.tags[MODEL_URI_TAG].removeprefix("models:/")
        model = client.get_logged_model(model_id)
        prefix = bucket_key(model.artifact_location, server)
        missing = [f for f in MODEL_FILES if f"{prefix}/{f}" not in keys]
        assert not missing, (prefix, sorted(keys))


@pytest.mark.parametrize("mode", MODES)
def test_champion_loads_in_a_fresh_process_that_knows_only_the_server(stack, pipelines, mode):
    finished(pipelines[mode])
    script = textwrap.dedent(
        f"""
        import mlflow, pandas as pd
        raw = pd.read_parquet({str(DATA_DIR / "green_tripdata_2021-03.parquet")!r}).head(200)
        model = mlflow.pyfunc.load_model("models:/{MODEL_NAME}@champion")
        minutes = model.predict(raw)
        at = "2021-03-02T10:00:00"
        short = model.predict(pd.DataFrame({{"lpep_pickup_datetime": [at],
            "PULocationID": [74], "DOLocationID": [75], "trip_distance": [0.8]}}))
        long = model.predict(pd.DataFrame({{"lpep_pickup_datetime": [at],
            "PULocationID": [74], "DOLocationID": [138], "trip_distance": [9.5]}}))
        print(len(minutes), float(minutes.mean()), float(short[0]), float(long[0]))
        """
    )
    env = subprocess_env(**run_env(stack, mode))
    env.pop("PYTHONPATH")  # not the project: only what the server gives
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    n, mean, short, long = out.stdout.split()[-4:]
    assert int(n) == 200
    assert 5 < float(mean) < 40
    assert 1 < float(short) < float(long) < 60


@pytest.mark.parametrize("mode", MODES)
def test_no_credential_is_logged_in_params_tags_or_artifacts(stack, pipelines, mode, tmp_path):
    finished(pipelines[mode])
    secrets = [s.encode() for s in stack.secrets()]
    server = stack.servers[mode]

    def leaks(data: bytes) -> list[bytes]:
        return [s for s in secrets if s in data]

    with client_of(stack, mode) as client:
        runs = all_runs(client)
        assert runs
        for run in runs:
            logged = "\n".join([*run.data.params.values(), *run.data.tags.values()])
            assert not leaks(logged.encode()), run.info.run_id
            dst = tmp_path / run.info.run_id
            dst.mkdir()
            local = mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, dst_path=str(dst), tracking_uri=server.uri
            )
            for path in Path(local).rglob("*"):
                if path.is_file():
                    assert not leaks(path.read_bytes()), path
        for version in client.search_model_versions(f"name = '{MODEL_NAME}'"):
            assert not leaks("\n".join(version.tags.values()).encode())
    # Everything else the runs wrote (the logged model's files): straight from the bucket.
    for key in stack.s3.keys(server.bucket):
        assert not leaks(stack.s3.read(server.bucket, key)), key


# --- failures a user meets first ----------------------------------------------------------------


def run_count(stack: Stack, mode: str) -> int:
    with client_of(stack, mode) as client:
        return len(all_runs(client))


def test_auth_without_a_login_fails_with_one_line_and_creates_no_run(stack, tmp_path):
    server = stack.servers[AUTH]
    before = run_count(stack, AUTH)
    result = mlflow_run("-e", "main", cwd=tmp_path, params=PARAMS, **server.client_env())
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"mlflow run: error: the tracking server at {server.uri} ")
    assert "requires a login (HTTP 401)" in lines[0]
    assert "Traceback" not in result.stderr
    assert run_count(stack, AUTH) == before


def test_auth_second_user_cannot_write_the_first_users_experiment(stack, pipelines, tmp_path):
    finished(pipelines[AUTH])
    server = stack.servers[AUTH]
    with client_of(stack, AUTH) as client:
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        before = client.search_runs([experiment.experiment_id], max_results=1000)
    result = mlflow_run(
        "-e", "main", cwd=tmp_path, params=PARAMS, **server.client_env(**stack.login("bob"))
    )
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert "'bob'" in lines[0] and "403" in lines[0], lines[0]
    assert "Traceback" not in result.stderr
    with client_of(stack, AUTH) as client:
        after = client.search_runs([experiment.experiment_id], max_results=1000)
    assert {r.info.run_id for r in after} == {r.info.run_id for r in before}


def test_unreachable_server_fails_within_seconds_naming_the_uri(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = mlflow_run("-e", "main", cwd=tmp_path, params=PARAMS, MLFLOW_TRACKING_URI=uri)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"mlflow run: error: cannot reach the tracking server at {uri} ")
    assert elapsed < 30, elapsed  # not MLflow's minutes of retries


def test_rejected_host_header_fails_at_once_suggesting_allowed_hosts(stack, tmp_path):
    # The servers run with --allowed-hosts 127.0.0.1:PORT (MLFLOW_ALLOWED_HOSTS of the compose
    # file), so the same server reached as localhost is a VM reached by a name not listed.
    server = stack.servers[PROXIED]
    uri = f"http://localhost:{server.port}"
    assert "--allowed-hosts" in server.argv and f"127.0.0.1:{server.port}" in server.argv
    before = run_count(stack, PROXIED)
    result = mlflow_run("-e", "main", cwd=tmp_path, params=PARAMS, MLFLOW_TRACKING_URI=uri)
    assert result.returncode != 0
    lines = error_lines(result.stderr)
    assert lines == [
        f"mlflow run: error: the tracking server at {uri} rejected the Host header "
        f"'localhost:{server.port}' (HTTP 403); start it with --allowed-hosts "
        f"'localhost:{server.port}' (or list every name clients use)"
    ], result.stderr[-3000:]
    assert "ingest" not in result.stdout + result.stderr  # stopped before any step
    assert run_count(stack, PROXIED) == before


# --- from a git URL -----------------------------------------------------------------------------


def git(*args: str, cwd: Path = PROJECT_DIR) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True, timeout=120
    ).stdout.strip()


def test_run_from_a_git_url_tags_every_run_with_the_commit(tmp_path):
    """The committed HEAD (what CI tests on a clean clone), served by git daemon."""
    commit = git("rev-parse", "HEAD")
    repos = tmp_path / "repos"
    git("clone", "--quiet", "--bare", str(PROJECT_DIR), str(repos / "nyc-taxi-duration.git"))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (tmp_path / "run").mkdir()
    with git_daemon(repos, tmp_path) as base:
        url = f"{base}/nyc-taxi-duration.git"
        result = mlflow_run(
            "-e",
            "main",
            "--version",
            commit,
            cwd=tmp_path / "run",
            params=PARAMS,
            project=url,
            MLFLOW_TRACKING_URI=store,
            PYTHONPATH="",  # the steps come from MLflow's clone, not this checkout
        )
    finished(result)
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    main = next(r for r in runs if r.data.tags.get(STEP_TAG) == "main")
    children = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == main.info.run_id]
    assert sorted(r.data.tags[STEP_TAG] for r in children) == sorted(STEPS)
    for run in [main, *children]:  # the steps, too, ran from MLflow's clone
        assert run.info.status == "FINISHED"
        assert run.data.tags.get("mlflow.source.git.commit") == commit, run.data.tags
        assert run.data.tags.get("mlflow.source.git.repoURL") == url, run.data.tags
