"""train_best: refit the chosen HPO trial on every row, with autologging; log the servable model.

Input: hpo_run (runs:/<id> of an hpo run). Parameter: rmse_tolerance (minutes; 0 = the best
trial, > 0 = the cheapest trial, fewest trees x depth, whose RMSE is within that of the best).
hpo may have searched on a sample of the rows (hpo_sample_rows); the refit trains on all rows of
the training month(s) with early stopping on the whole validation month.
Artifacts: the pyfunc model `model` (raw records in, minutes out; signature and input example),
preprocessor/preprocessor.pkl, plots/*.png, autolog's per-iteration metrics and importances.
Metrics: val_rmse, test_rmse, training_seconds, n_trees, train_rows and val_rows (the rows the
refit used). Tag model_uri (models:/m-...).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pandas as pd

from steps import boosting, model, runs
from steps.cli import exits_cleanly
from steps.config import check_tolerance
from steps.contracts import (
    BOOSTER_FILE,
    FEATURIZE,
    MODEL_INPUT_COLUMNS,
    MODEL_NAME_IN_RUN,
    MODEL_URI_TAG,
    OUTPUT_DIGEST_TAG,
    PREPROCESSOR_DIR,
    PREPROCESSOR_PATH,
    TARGET,
    TEST_PREDICTIONS_PLOT,
    TRAIN_BEST,
    matrix_split_path,
    trips_split_path,
)
from steps.errors import PipelineError
from steps.features import load_matrix
from steps.figures import plot_predictions
from steps.reuse import digest_files, digest_values

STEPS_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Candidate:
    """A finished HPO trial as train_best sees it."""

    run_id: str
    params: dict[str, Any]
    rmse: float
    n_trees: int

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
        )
        for run in runs.child_runs(hpo_run)
        if "rmse" in run.data.metrics
    ]


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
        test_rmse = boosting.rmse(matrices["test"].y, test_pred)

        with tempfile.TemporaryDirectory() as tmp:
            booster_path = Path(tmp) / BOOSTER_FILE
            fit.booster.save_model(booster_path)
            booster_digest = digest_files(Path(tmp), [booster_path.name])
            example = test_trips[list(MODEL_INPUT_COLUMNS)].head(5)
            model_uri = model.log_model(
                name=MODEL_NAME_IN_RUN,
                python_model=model.TripDurationModel(),
                artifacts={
                    model.BOOSTER_ARTIFACT: str(booster_path),
                    model.PREPROCESSOR_ARTIFACT: str(preprocessor_path),
                },
                code_paths=[str(STEPS_DIR)],
                input_example=example,
            )
        runs.log_artifact(preprocessor_path, PREPROCESSOR_DIR)
        runs.log_figure(
            plot_predictions(test_trips[TARGET].to_numpy(), test_pred, "test"),
            TEST_PREDICTIONS_PLOT,
        )
        runs.log_metrics(
            {
                "val_rmse": fit.val_rmse,
                "test_rmse": test_rmse,
                "training_seconds": fit.seconds,
                "n_trees": fit.n_trees,
                "selected_trial_rmse": chosen.rmse,
                **rows,
            }
        )
        runs.set_tags(
            {
                **runs.data_tags(hpo),
                "encoding": encoding,
                "selected_trial_run_id": chosen.run_id,
                MODEL_URI_TAG: model_uri,
                # register reads the model and featurize's test trips (covered by hpo's digest)
                OUTPUT_DIGEST_TAG: digest_values(runs.output_digest(hpo), booster_digest),
            }
        )
        print(
            f"train_best: runs:/{run.info.run_id} trial {chosen.run_id} -> val RMSE "
            f"{fit.val_rmse:.4f}, test RMSE {test_rmse:.4f}, model {model_uri}"
        )


if __name__ == "__main__":
    main()
