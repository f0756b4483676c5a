"""What `main` does around the steps: validate every parameter and split them into the five
step calls, find a finished run that can stand in for a step (same code, typed parameters and
input content; for register an unchanged registry), sum the step runs up, and say it: the run's
name, the closing lines printed to the terminal, the run's description."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from taxi_duration.core.contracts import (
    CHAMPION,
    CHAMPION_AFTER_TAG,
    CHAMPION_MOVE_TAG,
    FEATURIZE,
    HPO,
    INGEST,
    INPUT_DIGEST_TAG,
    PROJECT_DIR,
    REGISTER,
    TRAIN_BEST,
    UI_URL,
    UPSTREAM,
    runs_table_url,
)
from taxi_duration.core.params import (
    check_backend,
    check_confidence,
    check_duration_bounds,
    check_encoding,
    check_features,
    check_min_improvement,
    check_model_name,
    check_positive,
    check_refit_engine,
    check_sample_rows,
    check_taxi,
    check_tolerance,
    parse_months,
)
from taxi_duration.core.reuse import code_fingerprint, mlproject_types, params_equal
from taxi_duration.data.tlc import source_fingerprint
from taxi_duration.tracking import registry, runs
from taxi_duration.tracking.runs import Run


@dataclass(frozen=True)
class StepCall:
    """One entry point, its own parameters, and the parameter that receives the upstream run."""

    entry_point: str
    params: dict[str, Any]
    upstream_param: str | None

    def parameters(self, upstream: str | None) -> dict[str, Any]:
        """The step's parameters, with the upstream run URI filled in."""
        if self.upstream_param is None:
            return dict(self.params)
        return {**self.params, self.upstream_param: upstream}


def plan(params: dict[str, Any]) -> list[StepCall]:
    """Validate every parameter, then split them into the five step calls, in order."""
    check_taxi(params["taxi"])
    parse_months(params["train_month"], params["val_month"], params["test_month"])
    check_features(params["features"])
    check_encoding(params["encoding"])
    check_duration_bounds(params["min_duration"], params["max_duration"])
    for name in ("max_evals", "num_boost_round", "early_stopping_rounds"):
        check_positive(params[name], name)
    check_backend(params["backend"])
    check_positive(params["parallelism"], "parallelism")
    check_sample_rows(params["hpo_sample_rows"])
    check_tolerance(params["rmse_tolerance"])
    check_refit_engine(params["engine"])
    check_positive(params["num_workers"], "num_workers")
    check_sample_rows(params["early_stopping_rows"], "early_stopping_rows")
    check_model_name(params["model_name"])
    check_min_improvement(params["min_improvement"])
    check_confidence(params["min_confidence"])

    def pick(*names: str) -> dict[str, Any]:
        return {name: params[name] for name in names}

    data = pick("taxi", "train_month", "val_month", "test_month", "source", "cache_dir")
    budget = pick(
        "max_evals",
        "seed",
        "num_boost_round",
        "early_stopping_rounds",
        "backend",
        "parallelism",
        "spark_master",
        "hpo_sample_rows",
    )
    steps = {
        INGEST: data,
        FEATURIZE: pick("features", "encoding", "min_duration", "max_duration"),
        HPO: budget,
        TRAIN_BEST: pick(
            "rmse_tolerance", "engine", "spark_master", "num_workers", "early_stopping_rows"
        ),
        REGISTER: pick("model_name", "min_improvement", "min_confidence"),
    }
    return [
        StepCall(step, own, UPSTREAM[step][0] if step in UPSTREAM else None)
        for step, own in steps.items()
    ]


def input_digest(call: StepCall, upstream: Run | None) -> str | None:
    """The content a step would read: for ingest the source files' identity, for the others
    what the upstream run wrote. None when it cannot be told (then nothing is reused)."""
    if upstream is None:
        p = call.params
        train, val, test = parse_months(p["train_month"], p["val_month"], p["test_month"])
        return source_fingerprint(p["source"], p["taxi"], [str(m) for m in (*train, val, test)])
    digest = runs.output_digest(upstream)
    return None if digest == "unknown" else digest


def reuse_conditions(call: StepCall, upstream: Run | None) -> dict[str, str] | None:
    """Tags a finished run must carry, beyond code and own parameters, to be reused; None: never.

    Every step: the same input content (not the same upstream run: an upstream step that reran
    and wrote the same bytes changes nothing downstream). register also: the registry is as it
    left it: the champion is the one it left, and no move of the champion was recorded since (an
    older run that left the same champion, before other moves, decided against another one).
    """
    digest = input_digest(call, upstream)
    if digest is None:
        return None
    conditions = {INPUT_DIGEST_TAG: digest}
    if call.entry_point == REGISTER:
        champion, last_move = registry.champion_state(call.params["model_name"])
        conditions[CHAMPION_AFTER_TAG] = champion
        conditions[CHAMPION_MOVE_TAG] = last_move
    return conditions


def find_reusable(experiment_id: str, call: StepCall, upstream: Run | None) -> Run | None:
    """The newest FINISHED run of the step with this code, these typed parameters and this input
    content (and for register an unchanged registry)."""
    conditions = reuse_conditions(call, upstream)
    if conditions is None:
        return None
    types = mlproject_types(PROJECT_DIR, call.entry_point)
    fingerprint = code_fingerprint(PROJECT_DIR, call.entry_point)
    for run in runs.finished_step_runs(experiment_id, call.entry_point, fingerprint):
        tags = run.data.tags
        if params_equal(run.data.params, call.params, types) and all(
            tags.get(k) == v for k, v in conditions.items()
        ):
            return run
    return None


def summarize(step_runs: dict[str, Run], reused: list[str]) -> dict[str, Any]:
    """The figures a user wants after a run, from the step runs' metrics and tags."""
    hpo, trained, registered = step_runs[HPO], step_runs[TRAIN_BEST], step_runs[REGISTER]
    return {
        "best_val_rmse": hpo.data.metrics["best_rmse"],
        "n_trials": int(hpo.data.metrics["n_trials"]),
        "val_rmse": trained.data.metrics["val_rmse"],
        # Rows the search ran on and the refit used (a big month is searched on a sample).
        "search_train_rows": int(float(hpo.data.params.get("search_train_rows", 0))),
        "train_rows": int(trained.data.metrics.get("train_rows", 0)),
        "test_rmse": trained.data.metrics["test_rmse"],
        "model_name": registered.data.tags["model_name"],
        "model_version": registered.data.tags["model_version"],
        "promoted": bool(registered.data.metrics["promoted"]),
        "step_runs": {step: run.info.run_id for step, run in step_runs.items()},
        "reused_steps": reused,
    }


def is_generated_name(name: str) -> bool:
    """True for the random names MLflow gives unnamed runs (`skittish-gnat-540`); a name the
    user chose with `mlflow run --run-name` is kept."""
    return re.fullmatch(r"[a-z]+-[a-z]+-\d+", name) is not None


def run_name(params: dict[str, Any]) -> str:
    """What a main run did, as the runs table lists it: taxi, train/val/test months, features,
    encoding and search budget, e.g. `green 2021-01/2021-02/2021-03 time categorical 50 trials`."""
    months = "/".join(str(params[k]) for k in ("train_month", "val_month", "test_month"))
    shape = f"{params['features']} {params['encoding']}"
    return f"{params['taxi']} {months} {shape} {params['max_evals']} trials"


def ui_hint(tracking_uri: str, experiment_id: str) -> list[tuple[str, str]]:
    """How to see the experiment's runs table: open a server's page, or start `mlflow ui` on the
    store first (`make ui` for the project's own store)."""
    if urlparse(tracking_uri).scheme in ("http", "https"):
        return [("browse the runs at", runs_table_url(tracking_uri, experiment_id))]
    mlflow_bin = Path(sys.executable).parent / "mlflow"  # works with the venv not activated
    executable = mlflow_bin if mlflow_bin.exists() else "mlflow"
    start = f"{executable} ui --backend-store-uri {tracking_uri}"
    if tracking_uri == f"sqlite:///{PROJECT_DIR / 'mlflow.db'}":
        start = "make ui"
    return [("browse the runs with", start), ("then open", runs_table_url(UI_URL, experiment_id))]


def render(summary: dict[str, Any], main_run_id: str, tracking_uri: str, experiment_id: str) -> str:
    """The closing lines printed to the terminal."""
    name, version = summary["model_name"], summary["model_version"]
    alias = "champion" if summary["promoted"] else "challenger (champion stays)"
    reused = ", ".join(summary["reused_steps"]) or "none"
    search = f"{summary['n_trials']} trials"
    refit = []
    if 0 < summary["search_train_rows"] < summary["train_rows"]:
        search += f" on {summary['search_train_rows']:,} of {summary['train_rows']:,} rows"
        refit = [f"  refit on every row    validation RMSE {summary['val_rmse']:.4f}"]
    return "\n".join(
        [
            f"pipeline finished: main run {main_run_id}",
            f"  best validation RMSE  {summary['best_val_rmse']:.4f} ({search})",
            *refit,
            f"  test RMSE             {summary['test_rmse']:.4f}",
            f"  registered            {name} version {version}, alias {alias}",
            f"  reused finished runs  {reused}",
            f"  load it with          mlflow.pyfunc.load_model('models:/{name}@champion')",
            *(f"  {label:<21} {value}" for label, value in ui_hint(tracking_uri, experiment_id)),
        ]
    )


def main_description(summary: dict[str, Any], params: dict[str, Any], experiment_id: str) -> str:
    """The main run's description (markdown, shown on its page in the MLflow UI)."""
    name, version = summary["model_name"], summary["model_version"]
    outcome = (
        f"now the **{CHAMPION}**"
        if summary["promoted"]
        else f"a challenger: the {CHAMPION} stays (the register run says why)"
    )
    steps = ", ".join(
        f"[{step}](#/experiments/{experiment_id}/runs/{rid})"
        + (" (reused)" if step in summary["reused_steps"] else "")
        for step, rid in summary["step_runs"].items()
    )
    return f"""\
The whole pipeline on **{params["taxi"]}** taxi trips: trained on {params["train_month"]}, \
tuned on {params["val_month"]}, tested on {params["test_month"]}; \
features **{params["features"]}**, {params["encoding"]} encoding, \
{summary["n_trials"]} hyperopt trials.

- best validation RMSE: **{summary["best_val_rmse"]:.3f} minutes**
- test RMSE: **{summary["test_rmse"]:.3f} minutes**
- registered: `{name}` version {version}, {outcome}

Steps, each a child run of this one: {steps}.

Load the champion with `mlflow.pyfunc.load_model("models:/{name}@{CHAMPION}")`.
"""
