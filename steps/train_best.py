"""train_best: refit the chosen HPO trial on every row, with autologging; log the servable model.

Input: hpo_run (runs:/<id> of an hpo run). Parameter: rmse_tolerance (minutes; 0 = the best
trial, > 0 = the cheapest trial, fewest trees x depth, whose RMSE is within that of the best).
hpo may have searched on a sample of the rows (hpo_sample_rows); the refit trains on all rows of
the training month(s) with early stopping on the whole validation month.
Artifacts: the pyfunc model `model` (raw records in, minutes out; signature and input example),
preprocessor/preprocessor.pkl, autolog's per-iteration metrics and importances, and pictures
of the test month: plots/test_predictions.png (predicted vs actual), plots/test_errors.png
(error by distance band, pickup hour and day of the week), plots/feature_importance.png (each
input's share of the gain). The model's metadata names its feature set and input columns; its
input example holds five test trips as a request carries them.
Metrics: val_rmse, test_rmse, training_seconds, n_trees, train_rows and val_rows (the rows the
refit used: every row, whatever sample hpo searched on), and MLflow's standard regression
metrics of the test month (mlflow.models.evaluate: root_mean_squared_error,
mean_absolute_error, r2_score, mean_absolute_percentage_error, max_error, ...), which are also
linked to the logged model. Tags model_uri (models:/m-...), features, encoding.
The run's description (its page in the MLflow UI) sums them up.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd

from steps import boosting, model, runs
from steps.cli import exits_cleanly
from steps.config import check_tolerance
from steps.contracts import (
    BOOSTER_FILE,
    FEATURE_IMPORTANCE_PLOT,
    FEATURIZE,
    MODEL_NAME_IN_RUN,
    MODEL_URI_TAG,
    OUTPUT_DIGEST_TAG,
    PICKUP,
    PREPROCESSOR_DIR,
    PREPROCESSOR_PATH,
    TARGET,
    TEST_ERRORS_PLOT,
    TEST_PREDICTIONS_PLOT,
    TRAIN_BEST,
    matrix_split_path,
    model_input_columns,
    trips_split_path,
)
from steps.errors import PipelineError
from steps.features import load_matrix, load_preprocessor, matrix_columns, rmse
from steps.figures import (
    INPUT_LABELS,
    error_tables,
    plot_errors,
    plot_feature_importance,
    plot_predictions,
)
from steps.reuse import digest_files, digest_values

STEPS_DIR = Path(__file__).resolve().parent


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


def candidates_of(hpo_run: Any) -> list[Candidate]:
    return [
        Candidate(
            run.info.run_id,
            boosting.parse_params(run.data.params),
            float(run.data.metrics["rmse"]),
            int(run.data.metrics["n_trees"]),
            run.info.run_name or "",
        )
        for run in runs.child_runs(hpo_run)
        if "rmse" in run.data.metrics
    ]


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


def describe(
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


@click.command(help=__doc__)
@click.option("--hpo-run", required=True, help="runs:/<id> of an hpo run.")
@click.option("--rmse-tolerance", type=float, default=0.0, show_default=True)
@exits_cleanly(TRAIN_BEST)
def main(hpo_run: str, rmse_tolerance: float) -> None:
    check_tolerance(rmse_tolerance)
    with runs.step_run(TRAIN_BEST) as run:
        runs.log_params({"hpo_run": hpo_run, "rmse_tolerance": rmse_tolerance})
        hpo = runs.read_upstream(TRAIN_BEST, hpo_run)
        chosen = select_trial(candidates_of(hpo), rmse_tolerance)
        featurize = runs.lineage(hpo)[FEATURIZE]
        fid, encoding = featurize.info.run_id, featurize.data.tags["encoding"]
        matrices = {
            s: load_matrix(runs.download(fid, matrix_split_path(s, encoding)))
            for s in ("train", "val", "test")
        }
        test_trips = pd.read_parquet(runs.download(fid, trips_split_path("test")))
        preprocessor_path = runs.download(fid, PREPROCESSOR_PATH)
        preprocessor = load_preprocessor(preprocessor_path)

        budget = hpo.data.params
        rows = {"train_rows": matrices["train"].rows, "val_rows": matrices["val"].rows}
        dtrain, dval = boosting.dmatrices(matrices.pop("train"), matrices.pop("val"))
        runs.autolog_xgboost()
        fit = boosting.fit(
            chosen.params,
            dtrain,
            dval,
            int(budget["num_boost_round"]),
            int(budget["early_stopping_rounds"]),
            int(budget["seed"]),
        )
        test_pred = fit.booster.predict(boosting.dmatrix(matrices["test"]))
        test_rmse = rmse(matrices["test"].y, test_pred)

        with tempfile.TemporaryDirectory() as tmp:
            booster_path = Path(tmp) / BOOSTER_FILE
            fit.booster.save_model(booster_path)
            booster_digest = digest_files(Path(tmp), [booster_path.name])
            model_uri = model.log_model(
                preprocessor.features,
                name=MODEL_NAME_IN_RUN,
                python_model=model.TripDurationModel(),
                artifacts={
                    model.BOOSTER_ARTIFACT: str(booster_path),
                    model.PREPROCESSOR_ARTIFACT: str(preprocessor_path),
                },
                code_paths=[str(STEPS_DIR)],
                input_example=input_example(test_trips, preprocessor.features),
            )
        runs.log_artifact(preprocessor_path, PREPROCESSOR_DIR)
        y_test = test_trips[TARGET].to_numpy()
        runs.log_figure(plot_predictions(y_test, test_pred, "test"), TEST_PREDICTIONS_PLOT)
        errors = error_tables(test_trips, y_test, np.asarray(test_pred))
        runs.log_figure(plot_errors(errors, "test"), TEST_ERRORS_PLOT)
        shares = importance_by_input(
            fit.booster.get_score(importance_type="total_gain"),
            matrix_columns(preprocessor),
        )
        runs.log_figure(plot_feature_importance(shares), FEATURE_IMPORTANCE_PLOT)
        metrics = {
            "val_rmse": fit.val_rmse,
            "test_rmse": test_rmse,
            "training_seconds": fit.seconds,
            "n_trees": fit.n_trees,
            "selected_trial_rmse": chosen.rmse,
        }
        runs.log_metrics({**metrics, **rows})
        data = runs.data_tags(hpo)
        standard = model.evaluate_predictions(
            y_test,
            np.asarray(test_pred),
            model_uri.removeprefix("models:/"),
            f"{data.get('taxi', '?')} {data.get('test_month', '?')} test trips",
        )
        runs.set_tags(
            {
                **runs.data_tags(hpo),
                "encoding": encoding,
                "features": preprocessor.features,
                "selected_trial_run_id": chosen.run_id,
                MODEL_URI_TAG: model_uri,
                # register reads the model and featurize's test trips (covered by hpo's digest)
                OUTPUT_DIGEST_TAG: digest_values(runs.output_digest(hpo), booster_digest),
            }
        )
        test_month = runs.data_tags(hpo).get("test_month", "?")
        runs.set_description(
            describe(
                chosen,
                rmse_tolerance,
                {**standard, **metrics},
                test_month,
                errors,
                shares,
                model_uri,
                preprocessor.features,
            )
        )
        print(
            f"train_best: runs:/{run.info.run_id} trial {chosen.run_id} -> val RMSE "
            f"{fit.val_rmse:.4f}, test RMSE {test_rmse:.4f}, model {model_uri}"
        )


if __name__ == "__main__":
    main()
