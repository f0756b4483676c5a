"""The retrain cycle's nested runs: the `predict` that monitors the champion on the month, and the
`main` that trains on the latest window; and what each found, read back from its run."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from taxi_duration.core.contracts import (
    CHAMPION,
    DRIFT_BY_MONTH_JSON,
    MAIN,
    PREDICT,
    PROJECT_DIR,
    REGISTRATION_FILE,
    RETRAIN,
    STEPS,
    SUMMARY_FILE,
)
from taxi_duration.core.params import Month, format_month_spec
from taxi_duration.pipeline.loop import Monitored, Outcome, Window
from taxi_duration.tracking import registry, runs
from taxi_duration.tracking.runs import Run

# What the nested predict takes from retrain's parameters, and the nested main.
MONITOR_PARAMS = ("taxi", "source", "cache_dir", "drift_psi", "tolerance")


def monitor(model_name: str, month: Month, params: Mapping[str, Any]) -> Monitored | None:
    """The champion scored on `month` by a nested predict (None: there is no champion)."""
    champion = registry.alias_target(model_name, CHAMPION)
    if champion is None:
        return None
    run = runs.launch_step(
        PROJECT_DIR,
        PREDICT,
        {
            "model_uri": f"models:/{model_name}/{champion}",
            "months": str(month),
            **{name: params[name] for name in MONITOR_PARAMS},
        },
    )
    found = json.loads(runs.download(run.info.run_id, DRIFT_BY_MONTH_JSON).read_text())[0]
    rmse = run.data.metrics.get("rmse")
    return Monitored(champion, rmse, str(found["status"]), str(found["reasons"] or ""))


def train(window: Window, params: Mapping[str, Any]) -> tuple[str, float, float | None, str, bool]:
    """A nested main on the window; returns the version it registered, its test RMSE, the
    champion's RMSE register compared it with (None: there was none), register's verdict, and
    whether main reused every step (the window was trained before: nothing new)."""
    run = runs.launch_step(PROJECT_DIR, MAIN, {**params, **window.params()})
    summary = json.loads(runs.download(run.info.run_id, SUMMARY_FILE).read_text())
    register = summary["step_runs"]["register"]
    record = json.loads(runs.download(register, REGISTRATION_FILE).read_text())
    champion = record["comparison"]["champion"]
    compared = None if champion is None else champion.get("test_rmse")
    reused = set(summary["reused_steps"]) == set(STEPS)
    version, rmse = str(summary["model_version"]), float(summary["test_rmse"])
    return version, rmse, compared, record["reason"], reused


def outcome_of(run: Run) -> Outcome:
    """What a finished retrain run found (backtest reads its nested retrains so)."""
    tags, metrics = run.data.tags, run.data.metrics
    monitored = None
    if tags.get("champion_before", "none") != "none":
        monitored = Monitored(
            tags["champion_before"], metrics.get("champion_rmse"), tags["status"], ""
        )
    return Outcome(
        tags["month"],
        tags["policy"],
        monitored,
        tags["decision"] == "retrain",
        "",
        tags.get("challenger"),
        metrics.get("challenger_rmse"),
        champion_after=None if tags["champion_after"] == "none" else tags["champion_after"],
    )


def retrain(month: Month, params: Mapping[str, Any]) -> Outcome:
    """A nested retrain of `month` with these parameters (backtest runs the same cycle so)."""
    run = runs.launch_step(PROJECT_DIR, RETRAIN, {**params, "month": str(month)})
    return outcome_of(run)


def score(model_uri: str, months: Sequence[Month], params: Mapping[str, Any]) -> dict[int, float]:
    """A model's RMSE on each month (by its step, YYYYMM), from a nested predict."""
    scored = runs.launch_step(
        PROJECT_DIR,
        PREDICT,
        {
            "model_uri": model_uri,
            "months": format_month_spec(list(months)),
            **{name: params[name] for name in ("taxi", "source", "cache_dir")},
        },
    )
    history = runs.client().get_metric_history(scored.info.run_id, "rmse")
    return {int(metric.step): float(metric.value) for metric in history}
