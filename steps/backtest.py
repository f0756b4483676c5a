"""backtest: is monthly retraining worth it? Replay the retrain cycle over past months.

Parameters: months (a range of at least two months, 2021-03..2021-05), window (training months,
default 1), policies (the retrain policies to compare, default always,on_drift), model_name (the
prefix of the backtest's own registered models, default nyc-taxi-duration-backtest: a backtest
never moves the production champion), drift_psi, tolerance, and every parameter of main but its
months and force (taxi, source, cache_dir, features, encoding, min_duration, max_duration,
max_evals, seed, num_boost_round, early_stopping_rounds, backend, parallelism, spark_master,
hpo_sample_rows, rmse_tolerance, engine, num_workers, early_stopping_rows, min_improvement,
min_confidence), passed through.
The first month's model is trained as retrain trains it (the window that ends at that month), in
a registered model of each policy's own (`<model_name>-<policy>-<first 8 characters of this
run's id>`), and is then frozen; each later month, each policy runs the retrain cycle (nested
retrain runs: a nested predict of the champion in production, and a nested main when the policy
retrains). A nested predict scores the frozen model on the later months.
Artifacts: backtest/backtest.{json,csv} (per month: the frozen model's RMSE, and per policy the
RMSE of the champion in production as of the month's start, whether it retrained, the
challenger's RMSE), backtest/backtest.png. Metrics with the month as step (YYYYMM): frozen_rmse,
<policy>_rmse, <policy>_retrained, <policy>_challenger_rmse; and over the later months
<policy>_mean_rmse, <policy>_saving (minutes a month against the frozen model), <policy>_retrains.
Its description answers the question in words.
"""

from __future__ import annotations

from typing import Any

import click

from taxi_duration.core.contracts import (
    BACKTEST,
    BACKTEST_CSV,
    BACKTEST_JSON,
    BACKTEST_MODEL_NAME,
    BACKTEST_PLOT,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import (
    check_model_name,
    check_thresholds,
    format_month_spec,
    parse_month_spec,
)
from taxi_duration.model.drift import DRIFT_PSI, TOLERANCE
from taxi_duration.model.figures import plot_backtest
from taxi_duration.model.monitoring import month_step
from taxi_duration.pipeline import cycle
from taxi_duration.pipeline.cli import exits_cleanly, training_options
from taxi_duration.pipeline.loop import (
    ALWAYS,
    Replay,
    backtest_description,
    check_policies,
    check_window,
)
from taxi_duration.pipeline.orchestration import is_generated_name
from taxi_duration.tracking import runs


@click.command(help=__doc__)
@click.option("--months", required=True, help="A range of months: 2021-03..2021-05.")
@click.option("--window", type=int, default=1, show_default=True, help="Training months.")
@click.option("--policies", default="always,on_drift", show_default=True)
@click.option("--model-name", default=BACKTEST_MODEL_NAME, show_default=True)
@click.option("--drift-psi", type=float, default=DRIFT_PSI, show_default=True)
@click.option("--tolerance", type=float, default=TOLERANCE, show_default=True)
@training_options
@exits_cleanly(BACKTEST)
def main(
    months: str,
    window: int,
    policies: str,
    model_name: str,
    drift_psi: float,
    tolerance: float,
    **training: Any,
) -> None:
    replayed = parse_month_spec(months)
    if len(replayed) < 2:
        raise PipelineError(
            f"months {months!r} holds one month; a backtest needs two or more, e.g. "
            f"{replayed[0]}..{replayed[0].plus(2)}"
        )
    compared = check_policies(policies)
    check_window(window)
    check_thresholds(drift_psi, tolerance)
    check_model_name(model_name)
    with runs.step_run(BACKTEST) as run:
        thresholds = {"drift_psi": drift_psi, "tolerance": tolerance, "window": window}
        runs.log_params({"months": months, "policies": policies, **thresholds})
        runs.log_params({"model_name": model_name, **training})
        if is_generated_name(run.info.run_name or ""):
            runs.set_run_name(f"{BACKTEST} {training['taxi']} {format_month_spec(replayed)}")
        models = {p: f"{model_name}-{p}-{run.info.run_id[:8]}" for p in compared}
        cycle_params = {**training, **thresholds}

        first, later = replayed[0], replayed[1:]
        started = {
            policy: cycle.retrain(first, {**cycle_params, "policy": ALWAYS, "model_name": name})
            for policy, name in models.items()
        }
        frozen_version = started[compared[0]].champion_after
        if frozen_version is None:
            raise PipelineError(f"the first month {first} registered no champion; see its run")
        replay = Replay(compared)
        replay.add(str(first), started[compared[0]].challenger_rmse, started)
        frozen_uri = f"models:/{models[compared[0]]}/{frozen_version}"
        frozen = cycle.score(frozen_uri, later, training)
        for month in later:
            outcomes = {
                policy: cycle.retrain(month, {**cycle_params, "policy": policy, "model_name": name})
                for policy, name in models.items()
            }
            replay.add(str(month), frozen.get(month_step(month)), outcomes)

        table = replay.table()
        records = table.astype(object).where(table.notna(), None).to_dict(orient="records")
        runs.log_json(records, BACKTEST_JSON)
        runs.log_table(table, BACKTEST_CSV)
        runs.log_figure(plot_backtest(table, compared), BACKTEST_PLOT)
        for month, row in zip(replayed, records, strict=True):
            numbers = {str(k): float(v) for k, v in row.items() if isinstance(v, (int, float))}
            runs.log_metrics(numbers, step=month_step(month))
        summary = replay.summary()
        runs.log_metrics(
            {
                f"{policy}_{name}": value
                for policy, found in summary.items()
                for name, value in found.items()
                if name in ("mean_rmse", "saving", "retrains")
            }
        )
        runs.set_tags({f"model.{policy}": name for policy, name in models.items()})
        runs.set_description(backtest_description(replay, replayed, window, models))
        print(f"backtest: runs:/{run.info.run_id} {format_month_spec(replayed)}")
        for policy, found in summary.items():
            print(
                f"  {policy:<9} mean RMSE {found['mean_rmse']:.3f} (frozen "
                f"{found['frozen_mean_rmse']:.3f}, {found['saving']:+.3f} a month) with "
                f"{found['retrains']} retrain(s); model {models[policy]}"
            )


if __name__ == "__main__":
    main()
