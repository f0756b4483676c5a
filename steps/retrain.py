"""retrain: when a new month arrives, monitor the champion on it and retrain on the latest window if
the policy says so.

Parameters: month (YYYY-MM, or `latest`: the newest month the source has, TLC's URL or a folder),
policy (always | on_drift, the default: when the month is `drift` or `degraded` | never: monitor
only), window (training months, default 1), drift_psi and tolerance (what makes a month `drift` or
`degraded`, as for predict), model_name, and every parameter of main but its months and force
(taxi, source, cache_dir, features, encoding, min_duration, max_duration, max_evals, seed,
num_boost_round, early_stopping_rounds, backend, parallelism, spark_master, hpo_sample_rows,
rmse_tolerance, engine, num_workers, early_stopping_rows, min_improvement, min_confidence),
passed through.
Every month of the window is checked to be in the source before any work; then a nested predict
scores the champion on the month, and when it retrains a nested main trains on months
month - window - 1 .. month - 2, validates on month - 1 and tests on month, so register compares
the challenger and the champion on the newest month, which neither was tuned on.
Tags: month, policy, decision (retrain | keep), status, champion_before, champion_after,
challenger. Metrics: retrained, champion_rmse, challenger_rmse. Its description says in words what
happened. Run again for the same month, it registers nothing new: the nested main reuses its runs.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from typing import Any

import click

from taxi_duration.core.contracts import CHAMPION, LATEST, MODEL_NAME, POLICIES, RETRAIN
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import check_thresholds, parse_month
from taxi_duration.data.tlc import availability, latest_month
from taxi_duration.model.drift import DRIFT_PSI, TOLERANCE
from taxi_duration.pipeline import cycle
from taxi_duration.pipeline.cli import exits_cleanly, training_options
from taxi_duration.pipeline.loop import (
    Outcome,
    check_policy,
    check_window,
    decide,
    retrain_description,
    window_ending,
)
from taxi_duration.pipeline.orchestration import is_generated_name, plan
from taxi_duration.tracking import registry, runs


@click.command(help=__doc__)
@click.option("--month", required=True, help=f"YYYY-MM, or {LATEST}.")
@click.option("--policy", default="on_drift", show_default=True, help=" | ".join(POLICIES))
@click.option("--window", type=int, default=1, show_default=True, help="Training months.")
@click.option("--drift-psi", type=float, default=DRIFT_PSI, show_default=True)
@click.option("--tolerance", type=float, default=TOLERANCE, show_default=True)
@click.option("--model-name", default=MODEL_NAME, show_default=True)
@training_options
@exits_cleanly(RETRAIN)
def main(
    month: str,
    policy: str,
    window: int,
    drift_psi: float,
    tolerance: float,
    model_name: str,
    **training: Any,
) -> None:
    check_policy(policy)
    check_window(window)
    check_thresholds(drift_psi, tolerance)
    wanted = None if month.strip() == LATEST else parse_month(month)
    with runs.step_run(RETRAIN) as run:
        thresholds = {"drift_psi": drift_psi, "tolerance": tolerance}
        runs.log_params({"month": month, "policy": policy, "window": window, **thresholds})
        runs.log_params({"model_name": model_name, **training})
        taxi, source = training["taxi"], training["source"]
        target = wanted or parse_month(latest_month(source, taxi, date.today()))
        months = window_ending(target, window)
        main_params = {**training, **months.params(), "model_name": model_name, "force": "false"}
        plan(main_params)  # what the nested main would refuse, refused now
        for needed in months.months:  # every month of the window there, before any work
            problem = availability(source, taxi, str(needed))
            if problem is not None:
                raise PipelineError(problem)
        if is_generated_name(run.info.run_name or ""):
            runs.set_run_name(f"{RETRAIN} {taxi} {target} ({policy})")

        monitored = cycle.monitor(model_name, target, {**training, **thresholds})
        retrain, why = decide(policy, monitored)
        outcome = Outcome(str(target), policy, monitored, retrain, why)
        if retrain:
            challenger, rmse, compared, verdict, reused = cycle.train(months, main_params)
            outcome = replace(
                outcome,
                challenger=challenger,
                challenger_rmse=rmse,
                champion_rmse_compared=compared,
                verdict=verdict,
                reused=reused,
            )
        outcome = replace(outcome, champion_after=registry.alias_target(model_name, CHAMPION))
        runs.log_metrics(outcome.metrics())
        runs.set_tags(outcome.tags())
        runs.set_description(retrain_description(outcome, model_name, months))
        seen = outcome.monitored
        before = "no champion" if seen is None else f"champion v{seen.version} {seen.status}"
        after = f"v{outcome.champion_after}" if outcome.champion_after else "none"
        done = "kept" if not retrain else "reused" if outcome.reused else "retrained"
        print(
            f"retrain: runs:/{run.info.run_id} {taxi} {target}: {before}; {done} ({why}); "
            f"champion now {after}"
        )


if __name__ == "__main__":
    main()
