"""main: run the whole pipeline, each step as a child run, each fed the previous step's run URI.

Parameters: every parameter of ingest, featurize, hpo, train_best and register, passed through.
All are validated before the first step starts. Ends with a summary (best validation RMSE,
test RMSE, registered version and aliases, how to open the UI); logs summary.json and
the step run ids as tags (step.<name>.run_id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from steps import tracking
from steps.config import (
    check_duration_bounds,
    check_encoding,
    check_model_name,
    check_positive,
    check_taxi,
    check_tolerance,
    parse_months,
)
from steps.contracts import (
    DEFAULT_MONTHS,
    FEATURIZE,
    HPO,
    INGEST,
    MAIN,
    MODEL_NAME,
    REGISTER,
    SUMMARY_FILE,
    TLC_URL,
    TRAIN_BEST,
)
from steps.errors import exits_cleanly

PROJECT_DIR = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class StepCall:
    """One entry point, its own parameters, and the parameter that receives the upstream run."""

    entry_point: str
    params: dict[str, Any]
    upstream_param: str | None


def plan(params: dict[str, Any]) -> list[StepCall]:
    """Validate every parameter, then split them into the five step calls, in order."""
    check_taxi(params["taxi"])
    parse_months(params["train_month"], params["val_month"], params["test_month"])
    check_encoding(params["encoding"])
    check_duration_bounds(params["min_duration"], params["max_duration"])
    for name in ("max_evals", "num_boost_round", "early_stopping_rounds"):
        check_positive(params[name], name)
    check_tolerance(params["rmse_tolerance"])
    check_model_name(params["model_name"])

    def pick(*names: str) -> dict[str, Any]:
        return {name: params[name] for name in names}

    data = pick("taxi", "train_month", "val_month", "test_month", "source", "cache_dir")
    budget = pick("max_evals", "seed", "num_boost_round", "early_stopping_rounds")
    return [
        StepCall(INGEST, data, None),
        StepCall(FEATURIZE, pick("encoding", "min_duration", "max_duration"), "ingest_run"),
        StepCall(HPO, budget, "features_run"),
        StepCall(TRAIN_BEST, pick("rmse_tolerance"), "hpo_run"),
        StepCall(REGISTER, pick("model_name"), "train_run"),
    ]


def summarize(runs: dict[str, Any]) -> dict[str, Any]:
    """The figures a user wants after a run, from the step runs' metrics and tags."""
    hpo, trained, registered = runs[HPO], runs[TRAIN_BEST], runs[REGISTER]
    return {
        "best_val_rmse": hpo.data.metrics["best_rmse"],
        "n_trials": int(hpo.data.metrics["n_trials"]),
        "val_rmse": trained.data.metrics["val_rmse"],
        "test_rmse": trained.data.metrics["test_rmse"],
        "model_name": registered.data.tags["model_name"],
        "model_version": registered.data.tags["model_version"],
        "promoted": bool(registered.data.metrics["promoted"]),
        "step_runs": {step: run.info.run_id for step, run in runs.items()},
    }


def render(summary: dict[str, Any], main_run_id: str, tracking_uri: str) -> str:
    """The closing lines printed to the terminal."""
    name, version = summary["model_name"], summary["model_version"]
    alias = "champion" if summary["promoted"] else "challenger (champion stays)"
    ui = (
        f"mlflow ui --backend-store-uri {tracking_uri}"
        if tracking_uri.startswith("sqlite:")
        else f"open {tracking_uri}"
    )
    return "\n".join(
        [
            f"pipeline finished: main run {main_run_id}",
            f"  best validation RMSE  {summary['best_val_rmse']:.4f} "
            f"({summary['n_trials']} trials)",
            f"  test RMSE             {summary['test_rmse']:.4f}",
            f"  registered            {name} version {version}, alias {alias}",
            f"  load it with          mlflow.pyfunc.load_model('models:/{name}@champion')",
            f"  browse the runs with  {ui}",
        ]
    )


@click.command(help=__doc__)
@click.option("--taxi", default="green", show_default=True)
@click.option("--train-month", default=DEFAULT_MONTHS["train"], show_default=True)
@click.option("--val-month", default=DEFAULT_MONTHS["val"], show_default=True)
@click.option("--test-month", default=DEFAULT_MONTHS["test"], show_default=True)
@click.option("--source", default=TLC_URL, show_default=True)
@click.option("--cache-dir", default="")
@click.option("--encoding", default="categorical", show_default=True)
@click.option("--min-duration", type=float, default=1.0, show_default=True)
@click.option("--max-duration", type=float, default=60.0, show_default=True)
@click.option("--max-evals", type=int, default=50, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--num-boost-round", type=int, default=1000, show_default=True)
@click.option("--early-stopping-rounds", type=int, default=50, show_default=True)
@click.option("--rmse-tolerance", type=float, default=0.0, show_default=True)
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@exits_cleanly(MAIN)
def main(**params: Any) -> None:
    calls = plan(params)
    with tracking.step_run(MAIN) as run:
        tracking.log_params(params)
        runs: dict[str, Any] = {}
        upstream: str | None = None
        for call in calls:
            step_params = dict(call.params)
            if call.upstream_param is not None:
                step_params[call.upstream_param] = upstream
            child = tracking.launch_step(PROJECT_DIR, call.entry_point, step_params)
            runs[call.entry_point] = child
            upstream = f"runs:/{child.info.run_id}"
        summary = summarize(runs)
        tracking.log_json(summary, SUMMARY_FILE)
        figures = ("best_val_rmse", "val_rmse", "test_rmse", "model_version")
        tracking.log_metrics({k: float(summary[k]) for k in figures})
        tracking.set_tags({f"step.{s}.run_id": rid for s, rid in summary["step_runs"].items()})
        print(render(summary, run.info.run_id, tracking.tracking_uri()))


if __name__ == "__main__":
    main()
