"""MLflow runs: a step's own run, what it logs, the upstream runs it reads, and the step runs
`main` launches, reuses or cleans up. Public MLflow APIs only.

The other MLflow edges are trials.py (HPO trials as nested runs), registry.py (the model
registry) and model.py (the pyfunc model); plugins.py holds the `mlflow run` plugins.
"""

from __future__ import annotations

import functools
import getpass
import os
import socket
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities import Run
from mlflow.exceptions import ExecutionException, MlflowException
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import (
    CODE_TAG,
    DATA_TAGS,
    EXPERIMENT_KIND_TAG,
    HOST_TAG,
    INPUT_DIGEST_TAG,
    MODEL_TRAINING_KIND,
    OUTPUT_DIGEST_TAG,
    PARENT_RUN_TAG,
    PEAK_RSS_METRIC,
    PID_TAG,
    PROJECT_DIR,
    STEP_TAG,
    UPSTREAM,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.processes import peak_rss_mib
from taxi_duration.core.reuse import code_fingerprint, digest_files
from taxi_duration.tracking.server import check_tracking_server

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


def pin_tracking_uri() -> None:
    """Export the resolved tracking URI, so processes started from here (Spark executors) log to
    the same store even when it was the default, relative sqlite:///mlflow.db."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()


# --- the step's own run ---------------------------------------------------------------------


# Where `download` puts upstream artifacts while a step runs (see step_run).
_scratch: Path | None = None


@contextmanager
def step_run(step: str) -> Iterator[Run]:
    """The step's run: the one `mlflow run` created (MLFLOW_RUN_ID) or a new one when run alone.

    An exception inside the block ends the run FAILED; the CLI shell then exits non-zero. The
    upstream artifacts the step downloads (`download`) live in a scratch folder removed when the
    block ends, however it ends: a month's splits never pile up in the temp folder.
    """
    global _scratch
    # Artifact progress bars would print one line per download into the step's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    check_tracking_server(tracking_uri())
    with tempfile.TemporaryDirectory(prefix="nyc-taxi-") as scratch, mlflow.start_run() as run:
        _scratch = Path(scratch)
        try:
            mlflow.set_tags(
                {
                    STEP_TAG: step,
                    CODE_TAG: code_fingerprint(PROJECT_DIR, step),
                    HOST_TAG: socket.gethostname(),
                    PID_TAG: os.getpid(),
                }
            )
            yield run
            # What the step needed at most: memory stays bounded as months grow (benchmarks/).
            mlflow.log_metric(PEAK_RSS_METRIC, peak_rss_mib())
        finally:
            _scratch = None


def active_run() -> Run:
    """The step's run, fetched fresh (with its experiment id, tags and params)."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("no active MLflow run; call this inside step_run()")
    return client().get_run(run.info.run_id)


def user() -> str:
    """Who runs this step: the tracking-server login (MLFLOW_TRACKING_USERNAME) if there is one,
    else the OS user (what MLflow records as a run's user)."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME") or getpass.getuser()


def log_params(params: Mapping[str, Any]) -> None:
    """Log parameters the run does not have yet.

    `mlflow run` already logged the entry point's parameters as the user typed them; logging
    them again with another spelling (1 vs 1.0) would be refused, so only new keys are sent.
    """
    existing = active_run().data.params
    new = {k: str(v) for k, v in params.items() if k not in existing}
    if new:
        mlflow.log_params(new)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def set_tags(tags: Mapping[str, Any]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def set_description(markdown: str) -> None:
    """The run's description, shown (as markdown) at the top of its page in the MLflow UI."""
    mlflow.set_tag("mlflow.note.content", markdown)


def set_run_name(name: str) -> None:
    """Rename the active run (the name the UI lists it by)."""
    mlflow.set_tag("mlflow.runName", name)


def mark_model_training(experiment_id: str) -> None:
    """Tag the experiment as a model-training one, as MLflow 3 expects, unless it says already.

    Only how the UI presents the experiment depends on it, so a store that refuses the write
    (a user who may log runs but not edit the experiment) is left as it is.
    """
    experiment = client().get_experiment(experiment_id)
    if experiment.tags.get(EXPERIMENT_KIND_TAG):
        return
    with suppress(MlflowException):
        client().set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)


def experiment_id_in(store_uri: str, name: str) -> str | None:
    """The id of experiment `name` in the tracking store at `store_uri`, None if it has none."""
    experiment = _client_for(store_uri).get_experiment_by_name(name)
    return None if experiment is None else str(experiment.experiment_id)


def log_json(obj: Any, artifact_file: str) -> None:
    mlflow.log_dict(obj, artifact_file)


def log_artifact(local_path: Path, artifact_dir: str | None = None) -> None:
    mlflow.log_artifact(str(local_path), artifact_dir)


def log_artifacts(local_dir: Path, artifact_dir: str | None = None) -> None:
    """Log every file under `local_dir` as the run's artifacts under `artifact_dir`."""
    mlflow.log_artifacts(str(local_dir), artifact_dir)


def log_outputs(root: Path, paths: list[str]) -> str:
    """Log everything under `root` as the run's artifacts (paths relative to `root`), and record
    the digest of `paths`, the files the next step reads; returns that digest."""
    digest = digest_files(root, paths)
    mlflow.log_artifacts(str(root))
    set_tags({OUTPUT_DIGEST_TAG: digest})
    return digest


def log_table(frame: pd.DataFrame, artifact_file: str) -> None:
    """Log a DataFrame as a CSV artifact."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        frame.to_csv(path, index=False)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), None if parent == "." else parent)


def log_figure(figure: Any, artifact_file: str) -> None:
    mlflow.log_figure(figure, artifact_file)


def log_dataset_reference(
    location: str, name: str, digest: str, columns: Mapping[str, str], context: str
) -> None:
    """Record a data file as an MLflow dataset input of the active run by reference: where it is
    (a URL or a path), its digest and its columns' types (name -> MLflow type: long, double,
    datetime...). Unlike log_dataset, nothing scans the rows: MLflow's own digest and schema
    inference of a DataFrame take seconds per 100,000 rows."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    with warnings.catch_warnings():
        # A local path "can be interpreted in multiple ways" (as from_pandas warns): it is a file.
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(location)
    schema = Schema([ColSpec(kind, column) for column, kind in columns.items()])
    # MetaDataset has no profile (mypy sees the base class's abstract one): it scans nothing.
    dataset = MetaDataset(source, name=name, digest=digest, schema=schema)  # type: ignore[abstract]
    mlflow.log_input(dataset, context=context)


def autolog_xgboost() -> None:
    """Per-iteration metrics, parameters and feature importances of the next xgb.train call.

    The model itself is logged once, as the pyfunc that embeds the preprocessor.
    """
    import mlflow.xgboost  # only train_best trains with autolog

    mlflow.xgboost.autolog(log_models=False, log_datasets=False, silent=True)


# --- upstream runs: lineage -----------------------------------------------------------------


def run_id_from_uri(uri: str) -> str:
    """Accept `runs:/<id>`, `runs:/<id>/...` or a bare run id."""
    text = uri.strip()
    if text.startswith("runs:/"):
        text = text[len("runs:/") :].split("/", 1)[0]
    if not text or "/" in text or ":" in text:
        raise PipelineError(f"expected a run URI like runs:/<run_id>, got {uri!r}")
    return text


def upstream_run(uri: str, expected_step: str) -> Run:
    """A run some step reads; it must be a FINISHED run of `expected_step`."""
    run_id = run_id_from_uri(uri)
    try:
        run = client().get_run(run_id)
    except MlflowException as exc:
        raise PipelineError(
            f"run {run_id} not found in {tracking_uri()}; pass the run URI that the "
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


def read_upstream(step: str, uri: str) -> Run:
    """The upstream run `step` takes as input (its UPSTREAM parameter), checked; records on the
    active run the digest of the content it is about to read (the reuse key)."""
    _, expected = UPSTREAM[step]
    run = upstream_run(uri, expected)
    set_tags({INPUT_DIGEST_TAG: output_digest(run)})
    return run


def output_digest(run: Run) -> str:
    """The digest of what `run` wrote for the next step ("unknown" for runs that never said)."""
    return str(run.data.tags.get(OUTPUT_DIGEST_TAG, "unknown"))


def lineage(run: Run) -> dict[str, Run]:
    """`run` and every run upstream of it, by step name (register -> train_best -> hpo ->
    featurize -> ingest), each checked to be a FINISHED run of the right step."""
    found = {run.data.tags[STEP_TAG]: run}
    step = run.data.tags[STEP_TAG]
    while step in UPSTREAM:
        param, upstream_step = UPSTREAM[step]
        run = upstream_run(run.data.params[param], upstream_step)
        found[upstream_step] = run
        step = upstream_step
    return found


def data_tags(run: Run) -> dict[str, str]:
    """The taxi and month tags of an upstream run, to carry forward onto this one."""
    return {k: run.data.tags[k] for k in DATA_TAGS if k in run.data.tags}


def download(run_id: str, artifact_path: str, dst: Path | None = None) -> Path:
    """Download one artifact (file or folder) of a run; returns the local path (by default in
    the step's scratch folder, removed when the step run ends)."""
    dst = dst or Path(tempfile.mkdtemp(prefix="nyc-taxi-", dir=_scratch))
    local = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=artifact_path, dst_path=str(dst)
    )
    return Path(local)


# --- launching, reusing and cleaning up step runs (main) --------------------------------------


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
    found = client().search_runs(
        [parent.info.experiment_id],
        f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}' "
        f"and tags.`mlflow.project.entryPoint` = '{entry_point}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return found[0] if found else None


def child_runs(parent: Run, status: str = "FINISHED") -> list[Run]:
    """All child runs of `parent` with `status`, paging through any number of them."""
    query = f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}' and attributes.status = '{status}'"
    return list(search_all(parent.info.experiment_id, query))


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


def end_stale_runs(experiment_id: str, keep: str, alive: Callable[[int], bool]) -> list[str]:
    """End RUNNING pipeline runs on this host whose process is gone (`alive(pid)` is false: a
    killed step, a closed laptop) as KILLED, with everything below them; returns their ids.

    Runs whose process still lives (another main running now) and runs from other hosts are
    left alone: from here nobody can tell whether those are alive.
    """
    query = f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{socket.gethostname()}'"
    stale = []
    for run in list(search_all(experiment_id, query)):  # listed first: ending runs changes pages
        pid = int(run.data.tags.get(PID_TAG, "0"))
        if run.info.run_id != keep and pid and not alive(pid):
            end_running_descendants(run, "KILLED")
            stale.append(run.info.run_id)
    return stale
