"""Many registers writing to one registry at the same instant, on purpose, round after round.

MLflow's SQL registry writes an alias, a tag or a new version by looking it up and then
inserting it, so two writers that miss the same row both insert and the second one fails
(UniqueViolation on PostgreSQL, UNIQUE constraint on SQLite). Here WRITERS writers (PROCESSES
processes of THREADS threads), each doing what `register` does to the registry
(steps.register.publish), are released by a barrier at one instant, ROUNDS times, each round
into a new model (the first alias writes of a model are the ones that race). Two writers of a
round register the same train run, as two `register`s of one run would; every other round the
versions exist already, so the writers' first writes are alias writes, all at once. Against a
PostgreSQL-backed `mlflow server` (two workers) and against SQLite.

After every round: no writer failed, every run has exactly one version carrying its tags, the
best run's version is `champion`, and `challenger` names one of the round's versions.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from steps.contracts import CHALLENGER, CHAMPION
from tests.conftest import subprocess_env
from tests.integration.servers import PROXIED, S3, MlflowServer, Postgres

PROCESSES = 4
THREADS = 4  # writers per process
WRITERS = PROCESSES * THREADS
ROUNDS = 10
# Writers 2k and 2k+1 register the same run, so a round has WRITERS // 2 runs.
WRITERS_PER_RUN = 2
DATA_TAGS = {
    "taxi": "green",
    "train_month": "2021-01",
    "val_month": "2021-02",
    "test_month": "2021-03",
}
# How far ahead of "now" a round's start is set: long enough for every writer to see it.
LEAD_SECONDS = 0.5
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception): ")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """PostgreSQL and S3 behind `mlflow server`, as docker/compose.yaml runs them."""
    workdir = tmp_path_factory.mktemp("registry-races")
    with pytest.MonkeyPatch.context() as env, ExitStack() as cleanup:
        for name in list(os.environ):
            if name.startswith(("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_")):
                env.delenv(name)
        postgres = Postgres()
        cleanup.callback(postgres.stop)
        postgres.start()
        s3 = S3(workdir)
        cleanup.callback(s3.stop)
        # Two workers, as the compose file runs it: requests really run in parallel.
        server = MlflowServer(PROXIED, postgres, s3, workdir / "server", name="races", workers=2)
        cleanup.callback(lambda: server.stop())
        yield server.wait_ready()


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}"
    return str(request.getfixturevalue("server").uri)


def make_plan(client: MlflowClient, prefix: str) -> dict:
    """ROUNDS rounds, each a new model and WRITERS writers over WRITERS // WRITERS_PER_RUN runs,
    the runs' test RMSEs shuffled so the best is a different writer each round.

    Even rounds start from nothing: the writers race to create the model and the versions, then
    on the aliases. In odd rounds the versions already exist (a rerun of register), so every
    writer's first write is an alias write, all at the same instant.
    """
    experiment = client.create_experiment(f"{prefix}-races")
    rng = random.Random(prefix)
    rounds = []
    for number in range(ROUNDS):
        model = f"{prefix}-{number}"
        n_runs = WRITERS // WRITERS_PER_RUN
        rmses = [5.0 + 0.01 * i for i in rng.sample(range(n_runs), n_runs)]
        run_ids = [client.create_run(experiment).info.run_id for _ in range(n_runs)]
        if number % 2:
            client.create_registered_model(model)
            for run_id, rmse in zip(run_ids, rmses, strict=True):
                tags = {**DATA_TAGS, "test_rmse": f"{rmse:.6f}"}
                client.create_model_version(model, f"runs:/{run_id}/model", run_id, tags=tags)
        rounds.append(
            {
                "model": model,
                "data_tags": DATA_TAGS,
                "writers": {
                    str(w): {
                        "run_id": run_ids[w // WRITERS_PER_RUN],
                        "rmse": rmses[w // WRITERS_PER_RUN],
                    }
                    for w in range(WRITERS)
                },
            }
        )
    processes = {
        str(p): [str(w) for w in range(WRITERS) if w % PROCESSES == p] for p in range(PROCESSES)
    }
    return {"rounds": rounds, "processes": processes}


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(".partial")
    partial.write_text(text)
    partial.replace(path)


def wait_for_files(paths: list[Path], writers: list[subprocess.Popen], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        dead = [w for w in writers if w.poll() is not None and w.returncode != 0]
        if dead or time.monotonic() > deadline:
            missing = [p.name for p in paths if not p.exists()]
            raise AssertionError(f"writers stalled or died; missing {missing}")
        time.sleep(0.02)


def race(uri: str, folder: Path) -> tuple[dict, list[list[dict]], list[int]]:
    """Run every round; returns the plan, each round's outcomes and the writers' exit codes."""
    client = MlflowClient(uri)
    plan = make_plan(client, f"race-{secrets.token_hex(3)}")
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / "plan.json", json.dumps(plan))
    env = subprocess_env(MLFLOW_TRACKING_URI=uri)
    writers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.registry_writer", str(folder), str(p)],
            env=env,
            stdout=(folder / f"writer-{p}.log").open("w"),
            stderr=subprocess.STDOUT,
        )
        for p in range(PROCESSES)
    ]
    try:
        wait_for_files([folder / f"ready-{p}" for p in range(PROCESSES)], writers, timeout=300)
        outcomes = []
        for number in range(ROUNDS):
            write_atomically(folder / f"go-{number}", str(time.time() + LEAD_SECONDS))
            results = [folder / f"result-{number}-{w}.json" for w in range(WRITERS)]
            wait_for_files(results, writers, timeout=300)
            outcomes.append([json.loads(p.read_text()) for p in results])
        codes = [w.wait(timeout=60) for w in writers]
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    return plan, outcomes, codes


def check_round(client: MlflowClient, planned: dict, outcomes: list[dict]) -> list[str]:
    """What is wrong with one round's registry state (empty: nothing)."""
    problems = []
    model = planned["model"]
    rmse_of = {w["run_id"]: w["rmse"] for w in planned["writers"].values()}
    versions = client.search_model_versions(f"name = '{model}'")
    by_run: dict[str, list] = {}
    for version in versions:
        by_run.setdefault(version.run_id, []).append(version)
    for run_id, rmse in rmse_of.items():
        found = by_run.get(run_id, [])
        if len(found) != 1:
            problems.append(f"{model}: run {run_id} has {len(found)} versions, not 1")
        elif float(found[0].tags.get("test_rmse", "nan")) != pytest.approx(rmse):
            problems.append(f"{model}: v{found[0].version} lacks its test_rmse tag")
    best_run = min(rmse_of, key=lambda r: rmse_of[r])
    aliases = client.get_registered_model(model).aliases if versions else {}
    best = by_run.get(best_run, [])
    if CHAMPION not in aliases or not best or str(aliases[CHAMPION]) != str(best[0].version):
        problems.append(f"{model}: champion is {aliases.get(CHAMPION)}, not the best run's")
    if str(aliases.get(CHALLENGER)) not in {str(v.version) for v in versions}:
        problems.append(f"{model}: challenger is {aliases.get(CHALLENGER)}")
    return problems


def test_many_registers_at_once_all_finish_with_one_best_champion(registry_uri, tmp_path):
    plan, outcomes, codes = race(registry_uri, tmp_path / "race")
    errors = [o for round_ in outcomes for o in round_ if o.get("error")]
    failed_writers = sum(code != 0 for code in codes)
    client = MlflowClient(registry_uri)
    problems = [
        problem
        for planned, round_ in zip(plan["rounds"], outcomes, strict=True)
        for problem in check_round(client, planned, round_)
    ]
    summary = (
        f"{WRITERS} writers x {ROUNDS} rounds: {len(errors)} of {WRITERS * ROUNDS} writes failed "
        f"({failed_writers} of {PROCESSES} processes); {len(problems)} problems"
    )
    kinds = Counter(error_kind(o["error"]) for o in errors) + Counter(
        p.split(": ", 1)[1].split(" ", 2)[-1] if "has" in p else p.split(": ", 1)[1]
        for p in problems
    )
    print(summary, dict(kinds))
    (tmp_path / "race" / "problems.txt").write_text("\n".join(problems))
    assert not errors and not failed_writers, f"{summary}: {dict(kinds)}"
    assert not problems, f"{summary}: {problems[:5]}"


def error_kind(traceback_text: str) -> str:
    """The line of a traceback that names the exception that ended it, shortened."""
    lines = [line for line in traceback_text.splitlines() if EXCEPTION_LINE.match(line)]
    return (lines[-1] if lines else traceback_text.strip().splitlines()[-1])[:150]
