"""Every MLflow call the pipeline makes, in one place, through public MLflow APIs only.

Steps import these helpers instead of calling `mlflow` directly, so run lookup, artifact
paths, nested trial runs and registry handling read the same everywhere and can be changed
once (a remote server, retries, paging).
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import os
import socket
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Metric, Param, Run, RunTag
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import ExecutionException, MlflowException
from mlflow.tracking import MlflowClient

from steps.contracts import (
    CODE_TAG,
    DATA_TAGS,
    DISTANCE,
    DO,
    HOST_TAG,
    MODEL_TAG,
    MODEL_TAG_VALUE,
    PARENT_RUN_TAG,
    PID_TAG,
    PROJECT_DIR,
    PU,
    STEP_TAG,
)
from steps.errors import PipelineError
from steps.preflight import check_tracking_server
from steps.reuse import code_fingerprint
from steps.tlc import process_alive

_PAGE = 1000


def client() -> MlflowClient:
    """A client for the current tracking URI, made once per URI (HPO calls it per trial)."""
    return _client_for(tracking_uri())


@functools.lru_cache(maxsize=4)
def _client_for(uri: str) -> MlflowClient:
    return MlflowClient(uri)


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI if set, else the embedded store sqlite:///mlflow.db (made absolute)."""
    return str(mlflow.get_tracking_uri())


# --- the step's own run ---------------------------------------------------------------------


@contextmanager
def step_run(step: str) -> Iterator[Run]:
    """The step's run: the one `mlflow run` created (MLFLOW_RUN_ID) or a new one when run alone.

    An exception inside the block ends the run FAILED; the CLI shell then exits non-zero.
    """
    # Artifact progress bars would print one line per download into the step's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    check_tracking_server(tracking_uri())
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {
                STEP_TAG: step,
                CODE_TAG: code_fingerprint(PROJECT_DIR, step),
                HOST_TAG: socket.gethostname(),
                PID_TAG: os.getpid(),
            }
        )
        yield run


def active_run() -> Run:
    """The step's run, fetched fresh (with its experiment id, tags and params)."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run; call this inside step_run()")
    return client().get_run(run.info.run_id)


def log_params(params: Mapping[str, Any]) -> None:
    """Log parameters the run does not have yet.

    `mlflow run` already logged the entry point's parameters as the user typed them; logging
    them again with another spelling (1 vs 1.0) would be refused, so only new keys are sent.
    """
    existing = active_run().data.params
    new = {k: str(v) for k, v in params.items() if k not in existing}
    if new:
        mlflow.log_params(new)


def log_metrics(metrics: Mapping[str, float]) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()})


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_json(obj: Any, artifact_file: str) -> None:
    mlflow.log_dict(obj, artifact_file)


def log_artifact(local_path: Path, artifact_dir: str | None = None) -> None:
    mlflow.log_artifact(str(local_path), artifact_dir)


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    """Log a DataFrame as a CSV artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path, index=False)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), None if parent == "." else parent)


def log_figure(figure: Any, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)


def log_dataset(frame: pd.DataFrame, source: str, name: str, context: str) -> None:
    """Record a split as an MLflow dataset input of the active run (UI: Datasets used)."""
    from mlflow.data.pandas_dataset import from_pandas  # one step needs it; seconds to import

    with warnings.catch_warnings():
        # MLflow warns that a path source is ambiguous and that integer columns cannot hold
        # missing values; neither applies to a dataset record.
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(frame, source=source, name=name)
        mlflow.log_input(dataset, context=context)


# --- launching steps (main) ------------------------------------------------------------------


def launch_step(project_dir: Path, entry_point: str, parameters: Mapping[str, Any]) -> Run:
    """Run one entry point as a child of the active run, in this environment, and wait for it.

    Synchronous on purpose: MLflow then runs the step's command itself, where the asynchronous
    mode starts an extra `mlflow run` process per step (about 3 s each). A step that fails has
    already printed its one-line error; this adds which step and run, and ends whatever the
    step left RUNNING (trials of a killed hpo, say) as FAILED.
    """
    import mlflow.projects  # only main launches steps

    parent = active_run()
    try:
        submitted = mlflow.projects.run(
            str(project_dir),
            entry_point=entry_point,
            parameters={k: str(v) for k, v in parameters.items()},
            experiment_id=parent.info.experiment_id,
            run_name=entry_point,
            env_manager="local",
            synchronous=True,
        )
    except ExecutionException:
        failed = newest_child(parent, entry_point)
        run_ref = f"runs:/{failed.info.run_id}" if failed else "no run"
        if failed is not None:
            end_running_descendants(failed, "FAILED")
        raise PipelineError(
            f"step {entry_point} failed ({run_ref}); fix the problem it reported above and "
            "run main again"
        ) from None
    return client().get_run(submitted.run_id)


def newest_child(parent: Run, entry_point: str) -> Run | None:
    """The most recent child run of `parent` launched for `entry_point`."""
    runs = client().search_runs(
        [parent.info.experiment_id],
        f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}' "
        f"and tags.`mlflow.project.entryPoint` = '{entry_point}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def end_running_descendants(run: Run, status: str) -> None:
    """End `run` and every run below it that is still RUNNING (a killed step's trials)."""
    for child in child_runs(run, status="RUNNING"):
        end_running_descendants(child, status)
    end_if_running(run.info.run_id, status)


def end_if_running(run_id: str, status: str) -> None:
    """End a run whose process died before it could end the run itself."""
    if client().get_run(run_id).info.status == "RUNNING":
        client().set_terminated(run_id, status)


def finished_step_runs(experiment_id: str, step: str, fingerprint: str) -> Iterator[Run]:
    """FINISHED runs of `step` built by code with `fingerprint`, newest first, page by page.

    The filter runs in the tracking store, so a busy experiment returns only the few candidates.
    """
    query = (
        f"tags.`{STEP_TAG}` = '{step}' and tags.`{CODE_TAG}` = '{fingerprint}' "
        "and attributes.status = 'FINISHED'"
    )
    yield from search_all(experiment_id, query, order_by=["attributes.start_time DESC"])


def search_all(experiment_id: str, query: str, order_by: list[str] | None = None) -> Iterator[Run]:
    """Every run of the experiment matching `query`, fetched page by page as it is consumed."""
    token = None
    while True:
        page = client().search_runs(
            [experiment_id], query, order_by=order_by, max_results=_PAGE, page_token=token
        )
        yield from page
        token = page.token
        if not token:
            return


def end_stale_runs(experiment_id: str, keep: str) -> list[str]:
    """End RUNNING pipeline runs on this host whose process is gone (a killed step, a closed
    laptop) as KILLED, with everything below them; returns their ids.

    Runs whose process still lives (another main running now) and runs from other hosts are
    left alone: from here nobody can tell whether those are alive.
    """
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'"
    stale = []
    for run in list(search_all(experiment_id, query)):  # listed first: ending runs changes pages
        pid = int(run.data.tags.get(PID_TAG, "0"))
        if run.info.run_id != keep and pid and not _pipeline_process_alive(pid):
            end_running_descendants(run, "KILLED")
            stale.append(run.info.run_id)
    return stale


def _pipeline_process_alive(pid: int) -> bool:
    if not process_alive(pid):
        return False
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # a reused pid belongs to some other program
        return b"steps." in cmdline.read_bytes()
    return True


# --- upstream runs --------------------------------------------------------------------------


def run_id_from_uri(uri: str) -> str:
    """Accept `runs:/<id>`, `runs:/<id>/...` or a bare run id."""
    text = uri.strip()
    if text.startswith("runs:/"):
        text = text[len("runs:/") :].split("/", 1)[0]
    if not text or "/" in text or ":" in text:
        raise PipelineError(f"expected a run URI like runs:/<run_id>, got {uri!r}")
    return text


def upstream_run(uri: str, expected_step: str) -> Run:
    """The run a step takes as input; it must be a FINISHED run of `expected_step`."""
    run_id = run_id_from_uri(uri)
    try:
        run = client().get_run(run_id)
    except MlflowException as exc:
        raise PipelineError(
            f"run {run_id} not found in {mlflow.get_tracking_uri()}; pass the run URI that the "
            f"'{expected_step}' step printed (runs:/<run_id>)"
        ) from exc
    step = run.data.tags.get(STEP_TAG)
    if step != expected_step:
        raise PipelineError(
            f"runs:/{run_id} is a {step or 'non-pipeline'} run, not a '{expected_step}' run; "
            f"pass the URI of a '{expected_step}' run"
        )
    if run.info.status != "FINISHED":
        raise PipelineError(
            f"'{expected_step}' run {run_id} is {run.info.status}, not FINISHED; "
            "rerun that step first"
        )
    return run


def data_tags(run: Run) -> dict[str, str]:
    """The taxi and month tags of an upstream run, to carry forward onto this one."""
    return {k: run.data.tags[k] for k in DATA_TAGS if k in run.data.tags}


def download(run_id: str, artifact_path: str, dst: Path | None = None) -> Path:
    """Download one artifact (file or folder) of a run; returns the local path."""
    dst = dst or Path(tempfile.mkdtemp(prefix="nyc-taxi-"))
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
    )
    return Path(local)


def load_json(run_id: str, artifact_file: str) -> Any:
    return json.loads(download(run_id, artifact_file).read_text())


# --- HPO trials: nested runs under the hpo run ------------------------------------------------


def start_trial(parent: Run, name: str, params: Mapping[str, Any]) -> str:
    """Create one trial's nested run (tagged model=xgboost) with its parameters; returns its id.

    Two calls, so a trial costs little beyond its fit even against a remote server.
    """
    run = client().create_run(
        parent.info.experiment_id,
        run_name=name,
        tags={
            PARENT_RUN_TAG: parent.info.run_id,
            MODEL_TAG: MODEL_TAG_VALUE,
            STEP_TAG: "hpo_trial",
        },
    )
    client().log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
    return run.info.run_id


def finish_trial(run_id: str, metrics: Mapping[str, float], tags: Mapping[str, Any]) -> None:
    """Log a trial's results in one call and end its run FINISHED."""
    now = mlflow.utils.time.get_current_time_millis()
    client().log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )
    client().set_terminated(run_id, "FINISHED")


def name_trial(run_id: str, name: str, number: int) -> None:
    """Set a trial run's display name and number after the fact."""
    client().log_batch(run_id, tags=[RunTag("mlflow.runName", name), RunTag("trial", str(number))])


def pin_tracking_uri() -> None:
    """Export the resolved tracking URI, so processes started from here (Spark executors) log to
    the same store even when it was the default, relative sqlite:///mlflow.db."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()


def fail_run(run_id: str) -> None:
    """End a run FAILED (a trial whose training raised)."""
    client().set_terminated(run_id, "FAILED")


def child_runs(parent: Run, status: str = "FINISHED") -> list[Run]:
    """All child runs of `parent` with `status`, paging through any number of them."""
    query = f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}' and attributes.status = '{status}'"
    return list(search_all(parent.info.experiment_id, query))


# --- models and the registry --------------------------------------------------------------


def autolog_xgboost() -> None:
    """Per-iteration metrics, parameters and feature importances of the next xgb.train call.

    The model itself is logged once, as the pyfunc that embeds the preprocessor.
    """
    import mlflow.xgboost  # only train_best trains with autolog

    mlflow.xgboost.autolog(log_models=False, log_datasets=False, silent=True)


def model_requirements() -> list[str]:
    """Pinned requirements of the logged model, named instead of inferred (inference loads the
    model in a subprocess and costs seconds per run)."""
    names = ("mlflow", "xgboost", "pandas", "numpy", "scipy", "scikit-learn", "pyarrow")
    return [f"{name}=={importlib.metadata.version(name)}" for name in names]


def model_signature() -> Any:
    """Raw trip records in (the three columns required, any numeric type), minutes out.

    The inputs are typed `any` on purpose: MLflow refuses int64 for a double column and floats
    (or a missing value, NaN) for a long one, while raw records bring all of these. The model
    itself checks the columns are numeric (features.model_input), with a message that names
    the column, and treats a missing or unknown zone as missing.
    """
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import AnyType

    return ModelSignature(
        inputs=Schema([ColSpec(AnyType(), name) for name in (PU, DO, DISTANCE)]),
        outputs=Schema([ColSpec("double")]),
    )


def log_pyfunc_model(**kwargs: Any) -> str:
    """Log a pyfunc model to the active run; returns its `models:/m-...` URI."""
    import mlflow.pyfunc

    # MLflow warns that a pickled python_model needs caution; its class ships as code
    # (code_paths), and the pickle holds only the two artifact names.
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        info = mlflow.pyfunc.log_model(**kwargs)
    finally:
        pyfunc_logger.setLevel(level)
    return str(info.model_uri)


def load_pyfunc(model_uri: str) -> Any:
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(model_uri)


def aliased_version(name: str, alias: str) -> ModelVersion | None:
    """The version `alias` points at, or None if the model or the alias does not exist.

    The model is looked up by search first: with basic auth, a non-admin user asking for an alias
    of a model that does not exist gets 403, not 404.
    """
    found = client().search_registered_models(f"name = '{name}'", max_results=1)
    if not found or alias not in found[0].aliases:
        return None
    return client().get_model_version(name, str(found[0].aliases[alias]))


def get_or_create_version(
    name: str, model_uri: str, run_id: str, tags: Mapping[str, Any], description: str
) -> tuple[str, bool]:
    """The version of `name` registered from `run_id`, registering it (and the model) if there
    is none yet; returns its number and whether it was created now.

    Registering the same run twice would only duplicate the version. Tags and description go
    in the creating call, so a version never exists without them.
    """
    c = client()
    existing = list(c.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"))
    if existing:
        return str(existing[0].version), False
    try:
        c.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = c.create_model_version(
        name,
        model_uri,
        run_id=run_id,
        tags={k: str(v) for k, v in tags.items()},
        description=description,
        # A tracking server accepts a models:/m-<id> source only together with that model_id.
        model_id=model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None,
    )
    return str(version.version), True  # an int in some MLflow versions, a str in others


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, version)


def delete_version(name: str, version: str) -> None:
    client().delete_model_version(name, version)
