"""Many registers writing to one registry at the same instant, on purpose, round after round.

MLflow's SQL registry writes an alias, a tag or a new version by looking it up and then
inserting it, so two writers that miss the same row both insert and the second one fails
(UniqueViolation on PostgreSQL, UNIQUE constraint on SQLite). Here WRITERS writers (PROCESSES
processes of THREADS threads), each doing what `register` does to the registry (publish, in
taxi_duration/pipeline/champion.py), are released by a barrier at one instant, ROUNDS times,
each round into a new model (the first alias writes of a model are the ones that race). Two
writers of a round register the same train run, as two `register`s of one run would; every
other round the versions exist already, so the writers' first writes are alias writes, all at
once. Against a PostgreSQL-backed `mlflow server` (two workers) and against SQLite.

After every round: no writer failed, every run has exactly one version carrying its tags, the
best run's version is `champion`, `challenger` names one of the round's versions, and the
champion's history holds exactly one entry per move the writers made, each move replacing the
one before it (a chain), ending at the champion.

The same barrier then releases WRITERS `promote`s of different versions at once
(champion.move_champion), into a model with no champion yet or with one: none fails, and the history
holds one entry per promote, in a chain, ending at the champion.

Last, the lock those moves take (registry.champion_lock), left behind by a register that was
killed holding it: the next writer breaks it once its lease is over, and only then.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import (
    CHALLENGER,
    CHAMPION,
    CHAMPION_SINCE_TAG,
    CHAMPION_UNTIL_TAG,
    TEST_ROWS_DIGEST_TAG,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.tracking import history, registry
from tests.conftest import subprocess_env
from tests.integration.servers import PROXIED, S3, MlflowServer, Postgres

PROCESSES = 4
THREADS = 4  # writers per process
WRITERS = PROCESSES * THREADS
ROUNDS = 5  # the code before the fix failed every run of 5 rounds, on both stores
PROMOTE_ROUNDS = 4
# Writers 2k and 2k+1 register the same run, so a round has WRITERS // 2 runs.
WRITERS_PER_RUN = 2
DATA_TAGS = {
    "taxi": "green",
    "train_month": "2021-01",
    "val_month": "2021-02",
    "test_month": "2021-03",
}
# The rows every writer's RMSE was measured on: the same, so the gate compares the recorded RMSEs.
ROWS_DIGEST = "same-test-rows"
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


@dataclass(frozen=True)
class Raced:
    """A registry after the race: the plan, each round's outcomes, the writers' exit codes."""

    client: MlflowClient
    rounds: list[dict]
    outcomes: list[list[dict]]
    codes: list[int]
    folder: Path

    def part(self, action: str) -> list[tuple[dict, list[dict]]]:
        """The rounds of one action (register or promote), each with its outcomes."""
        pairs = zip(self.rounds, self.outcomes, strict=True)
        return [(planned, outcomes) for planned, outcomes in pairs if planned["action"] == action]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def raced(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Raced:
    """The register rounds, then the promote rounds, run once per store by the same writers."""
    folder = tmp_path_factory.mktemp(f"race-{request.param}")
    if request.param == "sqlite":
        uri = f"sqlite:///{folder / 'mlflow.db'}"
    else:
        uri = str(request.getfixturevalue("server").uri)
    client = MlflowClient(uri)
    prefix = f"race-{secrets.token_hex(3)}"
    rounds = register_rounds(client, prefix) + promote_rounds(client, prefix)
    outcomes, codes = race(uri, folder / "race", plan_of(rounds))
    return Raced(client, rounds, outcomes, codes, folder)


def register_rounds(client: MlflowClient, prefix: str) -> list[dict]:
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
                tags = {**DATA_TAGS, "test_rmse": f"{rmse:.6f}", TEST_ROWS_DIGEST_TAG: ROWS_DIGEST}
                client.create_model_version(model, f"runs:/{run_id}/model", run_id, tags=tags)
        rounds.append(
            {
                "action": "register",
                "model": model,
                "data_tags": DATA_TAGS,
                "rows_digest": ROWS_DIGEST,
                "writers": {
                    str(w): {
                        "run_id": run_ids[w // WRITERS_PER_RUN],
                        "rmse": rmses[w // WRITERS_PER_RUN],
                    }
                    for w in range(WRITERS)
                },
            }
        )
    return rounds


def promote_rounds(client: MlflowClient, prefix: str) -> list[dict]:
    """PROMOTE_ROUNDS rounds, each a new model with WRITERS + 1 versions; writer w promotes
    version w + 2. Even rounds start with no champion, odd ones with v1 as champion."""
    experiment = client.create_experiment(f"{prefix}-promotes")
    rounds = []
    for number in range(PROMOTE_ROUNDS):
        model = f"{prefix}-promote-{number}"
        client.create_registered_model(model)
        for _ in range(WRITERS + 1):
            run_id = client.create_run(experiment).info.run_id
            client.create_model_version(model, f"runs:/{run_id}/model", run_id, tags=DATA_TAGS)
        if number % 2:
            client.set_registered_model_alias(model, CHAMPION, "1")
        writers = {str(w): {"version": str(w + 2), "reason": f"writer {w}"} for w in range(WRITERS)}
        rounds.append(
            {
                "action": "promote",
                "model": model,
                "initial_champion": bool(number % 2),
                "writers": writers,
            }
        )
    return rounds


def plan_of(rounds: list[dict]) -> dict:
    """The rounds, and which writers each process runs (a run's two writers in two processes)."""
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


def race(uri: str, folder: Path, plan: dict) -> tuple[list[list[dict]], list[int]]:
    """Run every round of `plan`; returns each round's outcomes and the writers' exit codes."""
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
        for number in range(len(plan["rounds"])):
            write_atomically(folder / f"go-{number}", str(time.time() + LEAD_SECONDS))
            results = [folder / f"result-{number}-{w}.json" for w in range(WRITERS)]
            wait_for_files(results, writers, timeout=300)
            outcomes.append([json.loads(p.read_text()) for p in results])
        codes = [w.wait(timeout=60) for w in writers]
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    return outcomes, codes


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
    return problems + check_history(client, model, sum(bool(o.get("moved")) for o in outcomes))


def check_history(
    client: MlflowClient, model: str, moves_made: int, first_previous: str = "none"
) -> list[str]:
    """The champion's history holds one entry per move made, in a chain (moves made under the
    lock one after the other: each replaced the version the one before it moved to) that ends
    at the champion; the champion carries `champion_since` and no `champion_until`, every
    other version that was champion carries `champion_until`."""
    found = client.search_registered_models(f"name = '{model}'")
    if not found:
        return [f"{model}: no such model"]
    recorded = history.moves(found[0].tags)
    problems = []
    if len(recorded) != moves_made:
        problems.append(f"{model}: history has {len(recorded)} entries for {moves_made} moves")
    chain = [(m.previous, m.version) for m in recorded]
    if [m.previous for m in recorded] != [first_previous, *(m.version for m in recorded[:-1])]:
        problems.append(f"{model}: history is not a chain: {chain}")
    champion = str(found[0].aliases.get(CHAMPION))
    if recorded and recorded[-1].version != champion:
        problems.append(f"{model}: history ends at v{recorded[-1].version}, not v{champion}")
    former = {m.version for m in recorded} - {champion}
    for version in client.search_model_versions(f"name = '{model}'"):
        number, tags = str(version.version), version.tags
        if number == champion and (CHAMPION_SINCE_TAG not in tags or CHAMPION_UNTIL_TAG in tags):
            problems.append(f"{model}: champion v{number} has tags {sorted(tags)}")
        if number in former and CHAMPION_UNTIL_TAG not in tags:
            problems.append(f"{model}: former champion v{number} lacks {CHAMPION_UNTIL_TAG}")
    return problems


def check_promotes(client: MlflowClient, planned: dict, outcomes: list[dict]) -> list[str]:
    """Every promote of the round left exactly one history entry, with its reason; the history
    is a chain from the champion the round began with (v1 in odd rounds, none in even ones)."""
    model = planned["model"]
    recorded = history.moves(client.get_registered_model(model).tags)
    reasons = Counter(m.reason for m in recorded)
    problems = [
        f"{model}: {reasons[w['reason']]} history entries for {w['reason']}"
        for w in planned["writers"].values()
        if reasons[w["reason"]] != 1
    ]
    first = "1" if planned["initial_champion"] else "none"
    return problems + check_history(client, model, len(outcomes), first)


def test_many_registers_at_once_all_finish_with_one_best_champion(raced):
    part = raced.part("register")
    problems = [
        p for planned, outcomes in part for p in check_round(raced.client, planned, outcomes)
    ]
    assert_clean([outcomes for _, outcomes in part], raced.codes, problems, raced.folder)


def test_many_promotes_at_once_all_finish_and_lose_no_history_entry(raced):
    part = raced.part("promote")
    problems = [
        p for planned, outcomes in part for p in check_promotes(raced.client, planned, outcomes)
    ]
    assert_clean([outcomes for _, outcomes in part], raced.codes, problems, raced.folder)


def assert_clean(
    outcomes: list[list[dict]], codes: list[int], problems: list[str], folder: Path
) -> None:
    """No write failed, no problem found; says how many did (and how many writer processes
    failed over the whole race, both parts)."""
    errors = [o for round_ in outcomes for o in round_ if o.get("error")]
    failed_writers = sum(code != 0 for code in codes)
    summary = (
        f"{WRITERS} writers x {len(outcomes)} rounds: {len(errors)} of "
        f"{WRITERS * len(outcomes)} writes failed ({failed_writers} of {PROCESSES} processes "
        f"failed in the race); {len(problems)} problems"
    )
    kinds = Counter(error_kind(o["error"]) for o in errors) + Counter(
        p.split(": ", 1)[1].split(" ", 2)[-1] if "has" in p else p.split(": ", 1)[1]
        for p in problems
    )
    print(summary, dict(kinds))
    with (folder / "problems.txt").open("a") as out:
        out.write("\n".join(problems) + "\n")
    assert not errors, f"{summary}: {dict(kinds)}"
    assert not problems, f"{summary}: {problems[:5]}"


def error_kind(traceback_text: str) -> str:
    """The line of a traceback that names the exception that ended it, shortened."""
    lines = [line for line in traceback_text.splitlines() if EXCEPTION_LINE.match(line)]
    return (lines[-1] if lines else traceback_text.strip().splitlines()[-1])[:150]


def test_a_lock_left_by_a_dead_process_is_broken_after_its_lease(tmp_path, monkeypatch):
    # A register killed while it held the lock leaves the lock model behind. The next writer
    # waits out the lease (shortened here), deletes it, takes the lock and moves on.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(registry, "LOCK_LEASE_SECONDS", 1.0)
    monkeypatch.setattr(registry, "LOCK_CHECK_SECONDS", 0.2)
    monkeypatch.setattr(registry, "LOCK_WAIT_SECONDS", 20.0)  # fail in seconds, not minutes
    client = MlflowClient(uri)
    lock = f"taxi{registry.LOCK_SUFFIX}"
    client.create_registered_model(lock, tags={"holder": "a register that was killed"})
    started = time.monotonic()
    with registry.champion_lock("taxi", "the next register"):
        waited = time.monotonic() - started
        assert client.get_registered_model(lock).tags["holder"] == "the next register"
    assert registry.LOCK_LEASE_SECONDS < waited < registry.LOCK_WAIT_SECONDS
    assert registry.find_model(lock) is None  # released


def test_a_slow_holder_whose_lock_was_broken_neither_moves_nor_releases_the_next_lock(
    tmp_path, monkeypatch
):
    """Holder A outlives its lease; B breaks A's lock and takes its own. A must not move the
    champion any more (its lock is gone), and its release must leave B's lock alone: the lock
    carries its holder's token, and only that token deletes it."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setattr(registry, "LOCK_LEASE_SECONDS", 1.0)
    monkeypatch.setattr(registry, "LOCK_CHECK_SECONDS", 0.2)
    monkeypatch.setattr(registry, "LOCK_WAIT_SECONDS", 20.0)
    client = MlflowClient(uri)
    lock = f"taxi{registry.LOCK_SUFFIX}"
    b_holds, a_released, b_saw = threading.Event(), threading.Event(), {}

    def holder_b() -> None:
        with registry.champion_lock("taxi", "register B") as held:
            b_holds.set()
            a_released.wait(30)
            found = client.get_registered_model(lock)
            b_saw["owner"] = found.tags.get(registry.LOCK_OWNER_TAG) == held.token
            held.check()  # still B's

    with registry.champion_lock("taxi", "register A") as held_by_a:
        found = client.get_registered_model(lock)
        assert found.tags["pipeline.internal"] == "true"  # users see it for what it is
        assert found.description.startswith("**Internal to the pipeline: not a model.**")
        b = threading.Thread(target=holder_b)
        b.start()
        assert b_holds.wait(30), "B never took the lock after A's lease"
        with pytest.raises(PipelineError, match="lost the lock .* another writer broke it"):
            held_by_a.check()
    a_released.set()  # A's release ran above: B's lock must still be there
    b.join(30)
    assert b_saw == {"owner": True}
    assert registry.find_model(lock) is None  # B released its own
