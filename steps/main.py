"""main: run the whole pipeline, each step as a child run, each fed the previous step's run URI.

Parameters: every parameter of ingest, featurize, hpo, train_best and register, passed through,
and `force`. All are validated before the first step starts. A step whose code, typed
parameters and input content (for ingest the source files, for the others what the upstream
run wrote; for register also the registry) match a FINISHED run in the experiment is not run
again: that run is reused (taxi_duration/core/reuse.py), unless `force` names the step. Ends
with a summary (best validation RMSE, test RMSE, registered version and aliases, what was
reused, the link to the runs in the MLflow UI); logs summary.json and tags step.<name>.run_id,
step.<name>.reused and reused. The run is named after what it did (taxi, months, features,
encoding, trials) unless
`mlflow run --run-name` named it, and describes its outcome on its page in the UI; its
experiment is tagged as a model-training experiment.
"""

from __future__ import annotations

from typing import Any

import click

from taxi_duration.core.contracts import (
    DEFAULT_MONTHS,
    MAIN,
    MODEL_NAME,
    PROJECT_DIR,
    SUMMARY_FILE,
)
from taxi_duration.core.processes import pipeline_process_alive
from taxi_duration.core.reuse import parse_force
from taxi_duration.pipeline.cli import exits_cleanly, training_options
from taxi_duration.pipeline.orchestration import (
    find_reusable,
    is_generated_name,
    main_description,
    plan,
    render,
    run_name,
    summarize,
)
from taxi_duration.tracking import runs
from taxi_duration.tracking.runs import Run
from taxi_duration.tracking.server import redact


@click.command(help=__doc__)
@click.option(
    "--train-month",
    default=DEFAULT_MONTHS["train"],
    show_default=True,
    help="One month, or a window: 2023-01..2023-03 or 2023-01,2023-02.",
)
@click.option("--val-month", default=DEFAULT_MONTHS["val"], show_default=True)
@click.option("--test-month", default=DEFAULT_MONTHS["test"], show_default=True)
@training_options
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@click.option(
    "--force",
    default="false",
    show_default=True,
    help="Rerun steps even when a finished run matches: true, or a list like hpo,train_best.",
)
@exits_cleanly(MAIN)
def main(force: str, **params: Any) -> None:
    calls = plan(params)
    forced = parse_force(force)
    with runs.step_run(MAIN) as run:
        if is_generated_name(run.info.run_name or ""):
            runs.set_run_name(run_name(params))
        runs.log_params({**params, "force": force})
        experiment_id = run.info.experiment_id
        runs.mark_model_training(experiment_id)
        stale = runs.end_stale_runs(experiment_id, run.info.run_id, pipeline_process_alive)
        for run_id in stale:
            print(f"main: ended stale run {run_id} (its process is gone) as KILLED")
        step_runs: dict[str, Run] = {}
        reused: list[str] = []
        upstream: Run | None = None
        for call in calls:
            found = None
            if call.entry_point not in forced:
                found = find_reusable(experiment_id, call, upstream)
            if found is not None:
                reused.append(call.entry_point)
                print(f"main: {call.entry_point}: reusing finished run runs:/{found.info.run_id}")
            step_params = call.parameters(f"runs:/{upstream.info.run_id}" if upstream else None)
            child = found or runs.launch_step(PROJECT_DIR, call.entry_point, step_params)
            step_runs[call.entry_point] = child
            upstream = child
        summary = summarize(step_runs, reused)
        runs.log_json(summary, SUMMARY_FILE)
        figures = ("best_val_rmse", "val_rmse", "test_rmse", "model_version")
        runs.log_metrics({k: float(summary[k]) for k in figures})
        runs.set_tags(
            {f"step.{s}.run_id": rid for s, rid in summary["step_runs"].items()}
            | {f"step.{s}.reused": str(s in reused).lower() for s in step_runs}
            | {"reused": ",".join(reused) or "none"}
        )
        runs.set_description(main_description(summary, params, experiment_id))
        print(render(summary, run.info.run_id, redact(runs.tracking_uri()), experiment_id))


if __name__ == "__main__":
    main()
