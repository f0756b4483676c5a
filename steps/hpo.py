"""hpo: hyperopt TPE over XGBoost, minimising validation RMSE; every trial a nested run.

Input: features_run (runs:/<id> of a featurize run). Parameters: max_evals, seed,
num_boost_round, early_stopping_rounds, backend (local: trials in this process; spark:
hyperopt's SparkTrials), parallelism (Spark trials at once), spark_master, hpo_sample_rows
(the search trains and validates on a seeded sample of at most this many rows of each split,
drawn with `seed`; 0 = all rows; train_best then refits the chosen trial on all of them).
Each trial: a child run tagged model=xgboost with its hyperparameters, `rmse`,
`training_seconds` and `n_trees`; one line per trial on stderr (a progress bar on a terminal).
This run: best_rmse (on the search's validation rows), best_<param> params, search_train_rows,
search_val_rows and sample_seed params, trials.csv, best_params.json, tag best_trial_run_id,
plots/search.png (validation RMSE by trial and the best so far) and a description (its page in
the MLflow UI) with the winner and how to compare the trials.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict

import click

from taxi_duration.core.contracts import (
    BEST_PARAMS_FILE,
    BEST_TRIAL_TAG,
    DEFAULT_HPO_SAMPLE_ROWS,
    HPO,
    OUTPUT_DIGEST_TAG,
    SEARCH_PLOT,
    TRIALS_FILE,
    matrix_split_path,
)
from taxi_duration.core.params import check_backend, check_positive, check_sample_rows
from taxi_duration.model.features import load_matrix
from taxi_duration.model.figures import plot_search
from taxi_duration.model.search import (
    Budget,
    ProgressLogger,
    TrialLogger,
    describe_search,
    require_trials,
    results_digest,
    search_sample,
    spark_trials,
    trials_table,
    tune,
)
from taxi_duration.pipeline.cli import exits_cleanly
from taxi_duration.tracking import runs
from taxi_duration.tracking.trial_logger import MlflowTrialLogger


@click.command(help=__doc__)
@click.option("--features-run", required=True, help="runs:/<id> of a featurize run.")
@click.option("--max-evals", type=int, default=50, show_default=True)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--num-boost-round", type=int, default=1000, show_default=True)
@click.option("--early-stopping-rounds", type=int, default=50, show_default=True)
@click.option("--backend", default="local", show_default=True, help="local or spark.")
@click.option("--parallelism", type=int, default=2, show_default=True, help="Spark trials at once.")
@click.option("--spark-master", default="local[*]", show_default=True)
@click.option(
    "--hpo-sample-rows",
    type=int,
    default=DEFAULT_HPO_SAMPLE_ROWS,
    show_default=True,
    help="Search on a seeded sample of at most this many rows of each split; 0 = all rows.",
)
@exits_cleanly(HPO)
def main(
    features_run: str,
    max_evals: int,
    seed: int,
    num_boost_round: int,
    early_stopping_rounds: int,
    backend: str,
    parallelism: int,
    spark_master: str,
    hpo_sample_rows: int,
) -> None:
    budget = Budget(
        check_positive(max_evals, "max_evals"),
        seed,
        check_positive(num_boost_round, "num_boost_round"),
        check_positive(early_stopping_rounds, "early_stopping_rounds"),
    )
    check_backend(backend)
    check_positive(parallelism, "parallelism")
    check_sample_rows(hpo_sample_rows)
    with runs.step_run(HPO) as run:
        runs.log_params(
            {
                "features_run": features_run,
                **asdict(budget),
                "backend": backend,
                "parallelism": parallelism,
                "spark_master": spark_master,
                "hpo_sample_rows": hpo_sample_rows,
            }
        )
        upstream = runs.read_upstream(HPO, features_run)
        encoding = upstream.data.tags["encoding"]
        full_train, full_val = (
            load_matrix(runs.download(upstream.info.run_id, matrix_split_path(s, encoding)))
            for s in ("train", "val")
        )
        train, val = search_sample(full_train, full_val, hpo_sample_rows, seed)
        runs.log_params(
            {"search_train_rows": train.rows, "search_val_rows": val.rows, "sample_seed": seed}
        )
        if train.rows < full_train.rows or val.rows < full_val.rows:
            print(
                f"hpo: searching on {train.rows:,} of {full_train.rows:,} training rows and "
                f"{val.rows:,} of {full_val.rows:,} validation rows (seed {seed}); train_best "
                "refits the chosen trial on all of them",
                file=sys.stderr,
                flush=True,
            )
        del full_train, full_val  # the search holds only its sample
        mlflow_logger = MlflowTrialLogger(budget)
        search = None
        logger: TrialLogger = mlflow_logger
        if backend == "spark":
            runs.pin_tracking_uri()  # executors log trials to the same store
            search = spark_trials(spark_master, parallelism)
        else:
            logger = ProgressLogger(mlflow_logger, budget.max_evals)
        started = time.perf_counter()
        try:
            results = tune(train, val, budget, logger, search)
        finally:
            if isinstance(logger, ProgressLogger):
                logger.close()
        tuning_seconds = time.perf_counter() - started
        if backend == "spark":
            mlflow_logger.renumber(results)
        require_trials(results)
        best = min(results, key=lambda r: r.rmse)
        runs.log_table(trials_table(results), TRIALS_FILE)
        runs.log_figure(plot_search({r.number: r.rmse for r in results}), SEARCH_PLOT)
        runs.set_description(describe_search(results, budget, backend, tuning_seconds))
        best_record = {**best.params, "rmse": best.rmse, "n_trees": best.n_trees}
        runs.log_json(best_record, BEST_PARAMS_FILE)
        runs.log_params({f"best_{k}": v for k, v in best.params.items()})
        runs.log_metrics(
            {
                "best_rmse": best.rmse,
                "n_trials": len(results),
                "tuning_seconds": tuning_seconds,
                "seconds_per_trial": tuning_seconds / len(results),
            }
        )
        runs.set_tags(
            {
                **runs.data_tags(upstream),
                "encoding": encoding,
                BEST_TRIAL_TAG: best.run_id,
                OUTPUT_DIGEST_TAG: results_digest(
                    runs.output_digest(upstream), budget, hpo_sample_rows, results
                ),
            }
        )
        print(
            f"hpo: runs:/{run.info.run_id} {len(results)} trials in {tuning_seconds:.1f}s "
            f"({backend}), best validation RMSE {best.rmse:.4f} on {val.rows:,} rows "
            f"({best.params})"
        )


if __name__ == "__main__":
    main()
