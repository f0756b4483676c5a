"""Step reuse and resume with real `mlflow run`: never redo finished work, never reuse stale work.

Reuse is keyed on content: a step is reused when its code, its own parameters and the content
it reads (the upstream run's output digest) match a finished run, so a step that reruns and
writes the same bytes does not invalidate what comes after it.

All runs share one store, a copy of the session's trained store (conftest.trained_store: one
`main` run from the project itself); each test builds on the runs the tests before it left
there, in the order written (that is how a user meets reuse: by running main again). The
trained store's `main` is the first run here and the uninterrupted reference of the kill test.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from taxi_duration.core.contracts import (
    CHAMPION_AFTER_TAG,
    EXPERIMENT_NAME,
    INPUT_DIGEST_TAG,
    MODEL_NAME,
    OUTPUT_DIGEST_TAG,
    PARENT_RUN_TAG,
    STEP_TAG,
    STEPS,
)
from taxi_duration.tracking import history
from tests.conftest import (
    DATA_DIR,
    FAST_HPO,
    TrainedStore,
    copy_project,
    mlflow_run,
    mlflow_run_command,
    subprocess_env,
)

PARAMS = {"source": str(DATA_DIR), **FAST_HPO}


class Session:
    """A project copy (safe to edit) and a store in one directory, shared by this module."""

    def __init__(self, store: TrainedStore) -> None:
        self.root = store.root
        self.project = copy_project(store.root / "project")
        self.uri = store.uri
        self.client = store.client

    def main(self, experiment: str = EXPERIMENT_NAME, **overrides: str):
        """Run main to completion; return (main run, its child runs)."""
        result = mlflow_run(
            "-e",
            "main",
            "--experiment-name",
            experiment,
            cwd=self.root,
            params={**PARAMS, **overrides},
            project=self.project,
            MLFLOW_TRACKING_URI=self.uri,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        return self.latest_main(experiment)

    def latest_main(self, experiment: str = EXPERIMENT_NAME):
        exp = self.client.get_experiment_by_name(experiment)
        main = self.client.search_runs(
            [exp.experiment_id],
            f"tags.`{STEP_TAG}` = 'main'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )[0]
        children = self.client.search_runs(
            [exp.experiment_id], f"tags.`{PARENT_RUN_TAG}` = '{main.info.run_id}'"
        )
        return main, children

    def running(self):
        return [
            r
            for exp in self.client.search_experiments()
            for r in self.client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
        ]


def launched(children) -> list[str]:
    return sorted(c.data.tags[STEP_TAG] for c in children)


@pytest.fixture(scope="module")
def session(trained_store, tmp_path_factory):
    return Session(trained_store.copy_to(tmp_path_factory.mktemp("reuse")))


@pytest.fixture(scope="module")
def first(session):
    """The trained store's `main`, run from the project itself with the same parameters: a
    project copy with the same content reuses it (reuse is keyed on content, not paths)."""
    return session.latest_main()


def test_identical_rerun_reuses_every_step_and_launches_none(session, first):
    first_main, first_children = first
    assert launched(first_children) == sorted(STEPS)
    second_main, second_children = session.main()
    assert second_children == []  # no step process, no child run
    tags = second_main.data.tags
    assert tags["reused"] == ",".join(STEPS)
    for step in STEPS:
        assert tags[f"step.{step}.reused"] == "true"
        assert tags[f"step.{step}.run_id"] == first_main.data.tags[f"step.{step}.run_id"]
    assert second_main.data.metrics["test_rmse"] == first_main.data.metrics["test_rmse"]
    assert len(session.client.search_model_versions(f"name = '{MODEL_NAME}'")) == 1


def step_run(session: Session, main, step: str):
    return session.client.get_run(main.data.tags[f"step.{step}.run_id"])


def test_changing_max_evals_reruns_hpo_and_what_reads_a_changed_output(session, first):
    first_main, _ = first
    main, children = session.main(max_evals="4")
    assert {"hpo", "train_best"} <= set(launched(children))
    for step in ("ingest", "featurize"):
        assert main.data.tags[f"step.{step}.run_id"] == first_main.data.tags[f"step.{step}.run_id"]
    # register reruns exactly when the retrained model differs from the one registered before
    before = step_run(session, first_main, "train_best").data.tags[OUTPUT_DIGEST_TAG]
    after = step_run(session, main, "train_best").data.tags[OUTPUT_DIGEST_TAG]
    assert ("register" in launched(children)) == (before != after)


def test_touching_a_step_source_reruns_it_and_reuses_what_reads_its_unchanged_output(session):
    before, _ = session.main()  # the default parameters again, after the max_evals change
    source = session.project / "steps" / "featurize.py"
    source.write_text(source.read_text() + "\n# touched\n")
    main, children = session.main()
    assert launched(children) == ["featurize"]
    assert main.data.tags["reused"] == "ingest,hpo,train_best,register"
    rerun = step_run(session, main, "featurize")
    assert (
        rerun.data.tags[OUTPUT_DIGEST_TAG]
        == (step_run(session, before, "featurize").data.tags[OUTPUT_DIGEST_TAG])
    )
    hpo = step_run(session, main, "hpo")
    assert hpo.info.run_id == step_run(session, before, "hpo").info.run_id


def test_editing_the_download_code_reruns_ingest_and_reuses_everything_after_it(session, first):
    before, _ = first  # ingest has not run again since
    tlc = session.project / "taxi_duration" / "data" / "tlc.py"
    text = tlc.read_text()
    assert "put the month there" in text
    tlc.write_text(text.replace("put the month there", "copy the month there"))
    main, children = session.main()
    assert launched(children) == ["ingest"]
    assert main.data.tags["reused"] == "featurize,hpo,train_best,register"
    ingest, old_ingest = children[0], step_run(session, before, "ingest")
    assert ingest.info.run_id != old_ingest.info.run_id
    assert ingest.data.tags[OUTPUT_DIGEST_TAG] == old_ingest.data.tags[OUTPUT_DIGEST_TAG]
    # Lineage stays exact: the reused featurize run names the ingest run it really read, whose
    # splits are byte for byte the ones the new ingest run wrote.
    featurize = step_run(session, main, "featurize")
    assert featurize.data.params["ingest_run"] == f"runs:/{old_ingest.info.run_id}"
    assert featurize.data.tags[INPUT_DIGEST_TAG] == ingest.data.tags[OUTPUT_DIGEST_TAG]
    assert main.data.metrics["test_rmse"] == before.data.metrics["test_rmse"]


def test_force_reruns_the_named_steps_and_what_reads_a_changed_output(session, first):
    before, _ = first  # train_best has not run again with the default parameters since
    main, children = session.main(force="train_best")
    assert launched(children) == ["train_best"]  # the same model again: register is reused
    assert (
        step_run(session, main, "train_best").data.tags[OUTPUT_DIGEST_TAG]
        == (step_run(session, before, "train_best").data.tags[OUTPUT_DIGEST_TAG])
    )
    assert main.data.tags["reused"] == "ingest,featurize,hpo,register"
    main, children = session.main(force="true")
    assert launched(children) == sorted(STEPS)
    assert main.data.tags["reused"] == "none"


def test_a_new_champion_since_makes_register_run_again(session, first):
    session.main()  # everything reused: the registry has not changed
    _, children = session.latest_main()
    assert children == []
    versions = session.client.search_model_versions(f"name = '{MODEL_NAME}'")
    champion = session.client.get_model_version_by_alias(MODEL_NAME, "champion")
    other = next(v for v in versions if v.version != champion.version)
    session.client.set_registered_model_alias(MODEL_NAME, "champion", other.version)
    _, children = session.main()
    assert launched(children) == ["register"]


def promote(session: Session, version: str, reason: str) -> None:
    done = mlflow_run(
        "-e",
        "promote",
        "--experiment-name",
        EXPERIMENT_NAME,
        cwd=session.root,
        params={"version": version, "reason": reason},
        project=session.project,
        MLFLOW_TRACKING_URI=session.uri,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_a_rollback_holds_when_main_runs_again(session, first):
    """A person rolls `champion` back with promote; the next main (cron's, next month) reruns
    register, which must leave the person's choice, and say why, instead of moving `champion`
    back to the version the person took it away from."""
    main, _ = session.main()
    registered = main.data.tags["step.register.run_id"]
    version = session.client.get_run(registered).data.tags["model_version"]
    champion = session.client.get_model_version_by_alias(MODEL_NAME, "champion").version
    if str(champion) != version:
        promote(session, version, "the version main registered, champion again")
    promote(session, "previous", f"v{version} overestimates airport trips")
    kept = str(session.client.get_model_version_by_alias(MODEL_NAME, "champion").version)
    assert kept != version

    main, children = session.main()
    assert launched(children) == ["register"]  # the champion moved since: register reruns
    assert str(session.client.get_model_version_by_alias(MODEL_NAME, "champion").version) == kept
    register = children[0]
    assert register.data.tags[CHAMPION_AFTER_TAG] == kept
    note = register.data.tags["mlflow.note.content"]
    assert f"v{version} was taken off champion by" in note and "with promote" in note
    last = history.moves(session.client.get_registered_model(MODEL_NAME).tags)[-1]
    assert (last.version, last.previous, last.step) == (kept, kept, "register")

    _, children = session.main()  # nothing moved since the refusal: all reused
    assert children == []


def test_a_killed_step_leaves_nothing_running_and_the_rerun_resumes_from_it(session, first):
    reference, _ = first  # the same parameters, never interrupted (in another experiment)
    command = mlflow_run_command(
        "-e", "main", "--experiment-name", "killed", params=PARAMS, project=session.project
    )
    main = subprocess.Popen(
        command,
        cwd=session.root,
        env=subprocess_env(MLFLOW_TRACKING_URI=session.uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    hpo_pid = wait_for_trials_then_find("steps.hpo", session, "killed", main.pid)
    subprocess.run(["kill", f"-{signal.SIGKILL.value}", str(hpo_pid)], check=True)
    _, stderr = main.communicate(timeout=300)
    assert main.returncode != 0
    assert "main: error: step hpo failed" in stderr
    assert session.running() == []  # the hpo run and its trials were ended, not left RUNNING

    resumed, children = session.main("killed")
    assert launched(children) == ["hpo", "register", "train_best"]
    assert resumed.data.tags["reused"] == "ingest,featurize"
    for metric in ("best_val_rmse", "test_rmse"):
        assert resumed.data.metrics[metric] == pytest.approx(reference.data.metrics[metric])


def wait_for_trials_then_find(
    module: str, session: Session, experiment: str, session_id: int
) -> int:
    """Wait until the step has logged a trial; return the pid of the step process in this
    pipeline's session (never another pipeline's on the same machine)."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        exp = session.client.get_experiment_by_name(experiment)
        if exp and session.client.search_runs([exp.experiment_id], "tags.`model` = 'xgboost'"):
            found = subprocess.run(
                ["pgrep", "-s", str(session_id), "-f", f"^python[0-9.]* -m {module} "],
                capture_output=True,
                text=True,
            ).stdout.split()
            if found:
                return int(found[0])
        time.sleep(0.2)
    raise AssertionError(f"{module} never logged a trial")
