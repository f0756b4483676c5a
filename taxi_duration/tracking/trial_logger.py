"""How hpo's search records its trials in MLflow: a TrialLogger (model/search.py) that makes each
trial a nested run of the hpo run through tracking/trials.py."""

from __future__ import annotations

from typing import Any

from taxi_duration.model.search import Budget, TrialResult
from taxi_duration.tracking import runs
from taxi_duration.tracking.trials import fail_trial, finish_trial, name_trial, start_trial


class MlflowTrialLogger:
    """Logs each trial as a child run of the active hpo run, tagged model=xgboost."""

    def __init__(self, budget: Budget) -> None:
        self.parent = runs.active_run()
        self.fixed = {
            "num_boost_round": budget.num_boost_round,
            "early_stopping_rounds": budget.early_stopping_rounds,
            "seed": budget.seed,
        }

    def start(self, number: int, params: dict[str, Any]) -> str:
        return start_trial(self.parent, f"trial-{number:03d}", {**params, **self.fixed})

    def finish(self, run_id: str | None, result: TrialResult) -> None:
        assert run_id is not None
        metrics = {
            "rmse": result.rmse,
            "training_seconds": result.training_seconds,
            "n_trees": result.n_trees,
        }
        finish_trial(run_id, metrics, {"trial": result.number})

    def fail(self, run_id: str | None, error: str) -> None:
        if run_id is not None:
            fail_trial(run_id, error)

    def renumber(self, results: list[TrialResult]) -> None:
        """Name trials by hyperopt's trial id: Spark executors cannot share a counter."""
        for result in results:
            if result.run_id is not None:
                name_trial(result.run_id, f"trial-{result.number:03d}", result.number)
