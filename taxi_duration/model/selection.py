"""Which trial train_best refits, and what it says of the refit model (pure): the best trial or
the cheapest one within a tolerance of it, each input's share of the gain, and the input example
the logged model carries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from taxi_duration.core.contracts import (
    FEATURE_IMPORTANCE_PLOT,
    PICKUP,
    TEST_ERRORS_PLOT,
    TEST_PREDICTIONS_PLOT,
    model_input_columns,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.model.figures import INPUT_LABELS


@dataclass(frozen=True)
class Candidate:
    """A finished HPO trial as train_best sees it."""

    run_id: str
    params: dict[str, Any]
    rmse: float
    n_trees: int
    name: str = ""  # the trial run's name (trial-007)

    @property
    def cost(self) -> int:
        """Prediction work: trees times depth (each tree is one root-to-leaf walk)."""
        return self.n_trees * int(self.params["max_depth"])


def select_trial(candidates: list[Candidate], rmse_tolerance: float) -> Candidate:
    """The best trial, or with a tolerance the cheapest one within it of the best RMSE."""
    if not candidates:
        raise PipelineError("the hpo run has no finished trials; rerun hpo")
    best = min(candidates, key=lambda c: c.rmse)
    eligible = [c for c in candidates if c.rmse <= best.rmse + rmse_tolerance]
    return min(eligible, key=lambda c: (c.cost, c.rmse))


def input_example(test_trips: pd.DataFrame, features: str) -> pd.DataFrame:
    """Five test trips as a request carries them: the columns the model reads, a pickup time
    as the ISO 8601 string a JSON or CSV request holds."""
    example = test_trips[list(model_input_columns(features))].head(5)
    if PICKUP in example.columns:
        example = example.assign(**{PICKUP: example[PICKUP].dt.strftime("%Y-%m-%dT%H:%M:%S")})
    return example.reset_index(drop=True)


def importance_by_input(scores: Mapping[str, Any], columns: list[str]) -> pd.Series:
    """Each model input's share of the booster's total gain, largest first.

    `scores` is Booster.get_score(importance_type="total_gain"): keyed by feature name for the
    dense encoding, by f<position> for the sparse one; `columns` names the input behind each
    matrix column (features.matrix_columns), so a one-hot pair's thousands of columns add up to
    one input. Inputs the trees never split on get 0.
    """
    names = set(columns)
    totals = pd.Series(0.0, index=list(dict.fromkeys(columns)))
    for key, gain in scores.items():
        column = key if key in names else columns[int(key.removeprefix("f"))]
        totals[column] += float(gain)
    total = float(totals.sum())
    return (totals / total if total > 0 else totals).sort_values(ascending=False)


def describe_refit(
    chosen: Candidate,
    rmse_tolerance: float,
    metrics: Mapping[str, float],
    test_month: str,
    errors: Mapping[str, pd.DataFrame],
    shares: pd.Series,
    model_uri: str,
    features: str,
) -> str:
    """The run's description (markdown, shown on its page in the MLflow UI)."""
    why = (
        "the best trial of the search"
        if rmse_tolerance == 0
        else f"the cheapest trial (trees x depth) within {rmse_tolerance:g} min of the best"
    )
    by_distance = errors["distance"]
    worst = by_distance.iloc[int(np.argmax(by_distance["rmse"].to_numpy()))]
    relies = ", ".join(f"{INPUT_LABELS.get(str(c), c)} {v:.0%}" for c, v in shares.items())
    return f"""\
Retrained {chosen.name or "the trial"} (run `{chosen.run_id}`), {why}, on the training month \
with early stopping on the validation month, then scored the test month ({test_month}).

- validation RMSE: {metrics["val_rmse"]:.3f} minutes
- test RMSE: **{metrics["test_rmse"]:.3f} minutes**
- trees: {int(metrics["n_trees"])} (max depth {chosen.params["max_depth"]})
{standard_metrics_line(metrics)}
Largest errors on the test month: trips of {worst.name} (RMSE {worst["rmse"]:.1f} min over \
{int(worst["trips"]):,} trips). Share of the gain: {relies}.

Pictures: `{TEST_PREDICTIONS_PLOT}`, `{TEST_ERRORS_PLOT}`, `{FEATURE_IMPORTANCE_PLOT}`. \
The model, `{model_uri}` (features **{features}**), takes raw trip records \
({", ".join(model_input_columns(features))}) and answers minutes: \
`mlflow.pyfunc.load_model("{model_uri}")`.
"""


def standard_metrics_line(metrics: Mapping[str, float]) -> str:
    """A list item with a few of MLflow's standard regression metrics, if they were logged."""
    shown = {
        "mean_absolute_error": "MAE {:.3f} min",
        "r2_score": "R² {:.3f}",
        "mean_absolute_percentage_error": "MAPE {:.1%}",
        "max_error": "max error {:.1f} min",
    }
    parts = [text.format(metrics[name]) for name, text in shown.items() if name in metrics]
    if not parts:
        return ""
    return f"- on the test month (`mlflow.models.evaluate`): {', '.join(parts)}\n"
