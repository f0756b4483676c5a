"""hpo: hyperopt TPE over XGBoost, minimising validation RMSE; every trial a nested run.

Input: features_run (runs:/<id> of a featurize run). Parameters: max_evals, seed,
num_boost_round, early_stopping_rounds.
Each trial: a child run tagged model=xgboost with its hyperparameters, `rmse`,
`training_seconds` and `n_trees`. This run: best_rmse, best_<param> params, trials.csv,
best_params.json, tag best_trial_run_id.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import click
import numpy as np
import pandas as pd
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from hyperopt.pyll import scope

from steps import boosting, tracking
from steps.config import check_positive
from steps.contracts import (
    BEST_PARAMS_FILE,
    BEST_TRIAL_TAG,
    FEATURIZE,
    HPO,
    TRIALS_FILE,
    matrix_split_path,
)
from steps.errors import exits_cleanly
from steps.features import FeatureMatrix, load_matrix

# Depth above 12 costs seconds a trial for worse models on three features; learning rates
# below 0.05 need more than 1000 rounds.
SEARCH_SPACE = {
    "max_depth": scope.int(hp.quniform("max_depth", 3, 12, 1)),
    "learning_rate": hp.loguniform("learning_rate", math.log(0.05), math.log(0.5)),
    "min_child_weight": hp.loguniform("min_child_weight", -1, 3),
    "reg_alpha": hp.loguniform("reg_alpha", -5, -1),
    "reg_lambda": hp.loguniform("reg_lambda", -6, -1),
}


@dataclass(frozen=True)
class Budget:
    """How much to search and how long each fit may run."""

    max_evals: int
    seed: int
    num_boost_round: int
    early_stopping_rounds: int


@dataclass(frozen=True)
class TrialResult:
    """One trial's hyperparameters and outcome."""

    number: int
    params: dict[str, Any]
    rmse: float
    n_trees: int
    training_seconds: float
    run_id: str | None = None


class TrialLogger(Protocol):
    """Records each trial; the MLflow one makes it a nested run, tests can use a list."""

    def start(self, number: int, params: dict[str, Any]) -> str | None: ...

    def finish(self, run_id: str | None, result: TrialResult) -> None: ...

    def fail(self, run_id: str | None) -> None: ...


def tune(
    train: FeatureMatrix, val: FeatureMatrix, budget: Budget, logger: TrialLogger
) -> list[TrialResult]:
    """Run the TPE search; returns every trial in the order it ran."""
    dtrain, dval = boosting.dmatrices(train, val)
    results: list[TrialResult] = []

    def objective(sampled: dict[str, Any]) -> dict[str, Any]:
        params = {name: kind(sampled[name]) for name, kind in boosting.TUNED_PARAMS.items()}
        run_id = logger.start(len(results), params)
        try:
            fit = boosting.fit(
                params,
                dtrain,
                dval,
                budget.num_boost_round,
                budget.early_stopping_rounds,
                budget.seed,
            )
        except BaseException:
            logger.fail(run_id)
            raise
        result = TrialResult(len(results), params, fit.val_rmse, fit.n_trees, fit.seconds, run_id)
        logger.finish(run_id, result)
        results.append(result)
        return {"loss": fit.val_rmse, "status": STATUS_OK}

    fmin(
        objective,
        SEARCH_SPACE,
        algo=tpe.suggest,
        max_evals=budget.max_evals,
        trials=Trials(),
        rstate=np.random.default_rng(budget.seed),
        show_progressbar=False,
    )
    return results


def trials_table(results: list[TrialResult]) -> pd.DataFrame:
    """All trials as one table, best first."""
    rows = [
        {
            "trial": r.number,
            "run_id": r.run_id,
            "rmse": r.rmse,
            "n_trees": r.n_trees,
            "training_seconds": r.training_seconds,
            **r.params,
        }
        for r in results
    ]
    return pd.DataFrame(rows).sort_values("rmse", kind="stable").reset_index(drop=True)


class MlflowTrialLogger:
    """Logs each trial as a child run of the active hpo run, tagged model=xgboost."""

    def __init__(self, budget: Budget) -> None:
        self.parent = tracking.active_run()
        self.fixed = {
            "num_boost_round": budget.num_boost_round,
            "early_stopping_rounds": budget.early_stopping_rounds,
            "seed": budget.seed,
        }

    def start(self, number: int, params: dict[str, Any]) -> str:
        return tracking.start_trial(self.parent, f"trial-{number:03d}", {**params, **self.fixed})

    def finish(self, run_id: str | None, result: TrialResult) -> None:
        assert run_id is not None
        metrics = {
            "rmse": result.rmse,
            "training_seconds": result.training_seconds,
            "n_trees": result.n_trees,
        }
        tracking.finish_trial(run_id, metrics, {"trial": result.number})

    def fail(self, run_id: str | None) -> None:
        if run_id is not None:
            tracking.fail_run(run_id)


@click.command(help=__doc__)
@click.option("--features-run", required=True, help="runs:/<id> of a featurize run.")
@click.option("--max-evals", type=int, default=50, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--num-boost-round", type=int, default=1000, show_default=True)
@click.option("--early-stopping-rounds", type=int, default=50, show_default=True)
@exits_cleanly(HPO)
def main(
    features_run: str, max_evals: int, seed: int, num_boost_round: int, early_stopping_rounds: int
) -> None:
    budget = Budget(
        check_positive(max_evals, "max_evals"),
        seed,
        check_positive(num_boost_round, "num_boost_round"),
        check_positive(early_stopping_rounds, "early_stopping_rounds"),
    )
    with tracking.step_run(HPO) as run:
        tracking.log_params({"features_run": features_run, **asdict(budget)})
        upstream = tracking.upstream_run(features_run, FEATURIZE)
        encoding = upstream.data.tags["encoding"]
        train, val = (
            load_matrix(tracking.download(upstream.info.run_id, matrix_split_path(s, encoding)))
            for s in ("train", "val")
        )
        started = time.perf_counter()
        results = tune(train, val, budget, MlflowTrialLogger(budget))
        tuning_seconds = time.perf_counter() - started
        best = min(results, key=lambda r: r.rmse)
        table = trials_table(results)
        tracking.log_table(table, TRIALS_FILE)
        best_record = {**best.params, "rmse": best.rmse, "n_trees": best.n_trees}
        tracking.log_json(best_record, BEST_PARAMS_FILE)
        tracking.log_params({f"best_{k}": v for k, v in best.params.items()})
        tracking.log_metrics(
            {
                "best_rmse": best.rmse,
                "n_trials": len(results),
                "tuning_seconds": tuning_seconds,
                "seconds_per_trial": tuning_seconds / len(results),
            }
        )
        tracking.set_tags(
            {**tracking.data_tags(upstream), "encoding": encoding, BEST_TRIAL_TAG: best.run_id}
        )
        print(
            f"hpo: runs:/{run.info.run_id} {len(results)} trials in {tuning_seconds:.1f}s, "
            f"best validation RMSE {best.rmse:.4f} ({best.params})"
        )


if __name__ == "__main__":
    main()
