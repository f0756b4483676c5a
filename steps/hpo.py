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

import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import click
import numpy as np
import pandas as pd
from hyperopt import STATUS_OK, Trials, fmin, hp, tpe
from hyperopt.pyll import scope
from tqdm import tqdm

from steps import boosting, runs, trials
from steps.cli import exits_cleanly
from steps.config import check_backend, check_positive, check_sample_rows
from steps.contracts import (
    BEST_PARAMS_FILE,
    BEST_TRIAL_TAG,
    DEFAULT_HPO_SAMPLE_ROWS,
    HPO,
    OUTPUT_DIGEST_TAG,
    PROJECT_DIR,
    SEARCH_PLOT,
    TRIALS_FILE,
    matrix_split_path,
)
from steps.errors import PipelineError
from steps.features import FeatureMatrix, load_matrix
from steps.figures import plot_search
from steps.reuse import digest_values

PACKAGE_DIR = "steps"

# Measured with 50 trials on green 2021-01/02/03 (docs/pipeline.md). Depth above 12 costs
# seconds a trial for worse models. Learning rates below 0.08 bought 0.4% of RMSE for twice the
# trees and run time. With the pickup time the best trials want heavy regularisation: with
# min_child_weight up to e^3 and reg_lambda up to e^-1 they piled at those edges, so both (and
# reg_alpha) reach e^5 / e^2 now (test RMSE 5.410 -> 5.376).
SEARCH_SPACE = {
    "max_depth": scope.int(hp.quniform("max_depth", 3, 12, 1)),
    "learning_rate": hp.loguniform("learning_rate", math.log(0.08), math.log(0.5)),
    "min_child_weight": hp.loguniform("min_child_weight", -1, 5),
    "reg_alpha": hp.loguniform("reg_alpha", -5, 2),
    "reg_lambda": hp.loguniform("reg_lambda", -6, 2),
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


class Objective:
    """One trial: fit XGBoost with the sampled hyperparameters and record it through the logger.

    Picklable, so SparkTrials can ship it to executors; each process builds its own DMatrix
    pair once, on its first trial.
    """

    def __init__(
        self, train: FeatureMatrix, val: FeatureMatrix, budget: Budget, logger: TrialLogger
    ) -> None:
        self.train, self.val, self.budget, self.logger = train, val, budget, logger
        self.calls = 0
        self._dmatrices: tuple[Any, Any] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_dmatrices": None}

    def __call__(self, sampled: dict[str, Any]) -> dict[str, Any]:
        if self._dmatrices is None:
            self._dmatrices = boosting.dmatrices(self.train, self.val)
        dtrain, dval = self._dmatrices
        number, self.calls = self.calls, self.calls + 1
        params = {name: kind(sampled[name]) for name, kind in boosting.TUNED_PARAMS.items()}
        run_id = self.logger.start(number, params)
        try:
            fit = boosting.fit(
                params,
                dtrain,
                dval,
                self.budget.num_boost_round,
                self.budget.early_stopping_rounds,
                self.budget.seed,
            )
        except BaseException:
            self.logger.fail(run_id)
            raise
        result = TrialResult(number, params, fit.val_rmse, fit.n_trees, fit.seconds, run_id)
        self.logger.finish(run_id, result)
        return {"loss": fit.val_rmse, "status": STATUS_OK, "trial": asdict(result)}


class ProgressLogger:
    """A TrialLogger that also reports each finished trial: one line on `stream` (number, RMSE,
    best so far, seconds), or a progress bar when `stream` is a terminal."""

    def __init__(self, inner: TrialLogger, total: int, stream: TextIO = sys.stderr) -> None:
        self.inner, self.total, self.stream = inner, total, stream
        self.done = 0
        self.best = math.inf
        self.bar = (
            tqdm(total=total, desc="hpo", unit="trial", file=stream, leave=False)
            if (stream.isatty())
            else None
        )

    def start(self, number: int, params: dict[str, Any]) -> str | None:
        return self.inner.start(number, params)

    def finish(self, run_id: str | None, result: TrialResult) -> None:
        self.inner.finish(run_id, result)
        self.done += 1
        self.best = min(self.best, result.rmse)
        if self.bar is not None:
            self.bar.set_postfix(rmse=f"{result.rmse:.4f}", best=f"{self.best:.4f}")
            self.bar.update(1)
            return
        print(
            f"hpo: trial {self.done}/{self.total} rmse {result.rmse:.4f} "
            f"best {self.best:.4f} ({result.training_seconds:.1f} s)",
            file=self.stream,
            flush=True,
        )

    def fail(self, run_id: str | None) -> None:
        self.inner.fail(run_id)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def tune(
    train: FeatureMatrix,
    val: FeatureMatrix,
    budget: Budget,
    logger: TrialLogger,
    search: Trials | None = None,
) -> list[TrialResult]:
    """Run the TPE search (in process, or on Spark with SparkTrials as `search`); every
    successful trial, numbered by hyperopt's trial id."""
    search = search if search is not None else Trials()
    fmin(
        Objective(train, val, budget, logger),
        SEARCH_SPACE,
        algo=tpe.suggest,
        max_evals=budget.max_evals,
        trials=search,
        rstate=np.random.default_rng(budget.seed),
        show_progressbar=False,
    )
    done = sorted(
        (t for t in search.trials if t["result"].get("status") == STATUS_OK),
        key=lambda t: t["tid"],
    )
    return [TrialResult(**{**t["result"]["trial"], "number": t["tid"]}) for t in done]


def sample_rows(matrix: FeatureMatrix, rows: int, rng: np.random.Generator) -> FeatureMatrix:
    """A random sample of `rows` rows of `matrix`, kept in their original order; the whole
    matrix when `rows` is 0 or not smaller than it."""
    if rows == 0 or rows >= matrix.rows:
        return matrix
    picked = np.sort(rng.choice(matrix.rows, size=rows, replace=False))
    X = (
        matrix.X.iloc[picked].reset_index(drop=True)
        if isinstance(matrix.X, pd.DataFrame)
        else matrix.X[picked]
    )
    return FeatureMatrix(X, matrix.y[picked])


def search_sample(
    train: FeatureMatrix, val: FeatureMatrix, rows: int, seed: int
) -> tuple[FeatureMatrix, FeatureMatrix]:
    """The training and validation rows the search runs on: a sample of at most `rows` rows of
    each (0 = every row). The same seed always draws the same rows."""
    train_rng, val_rng = np.random.default_rng(seed).spawn(2)
    return sample_rows(train, rows, train_rng), sample_rows(val, rows, val_rng)


def spark_trials(master: str, parallelism: int) -> Trials:
    """SparkTrials on `master` (local[*], a cluster URL, Databricks, EMR, Dataproc...).

    The executors need this project's code and the driver's Python: the steps package is
    shipped to them as a zip, and PYSPARK_PYTHON defaults to this interpreter.
    """
    try:
        from hyperopt import SparkTrials
        from pyspark.sql import SparkSession
    except ImportError:
        raise PipelineError(  # the environment running this step, venv activated or not
            "backend=spark needs pyspark, an extra `make install` leaves out; install it with "
            f"{sys.executable} -m pip install -e '{PROJECT_DIR}[spark]'"
        ) from None
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    spark = SparkSession.builder.master(master).appName("nyc-taxi-duration-hpo").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    package = shutil.make_archive(
        str(Path(tempfile.mkdtemp()) / "steps"), "zip", PROJECT_DIR, PACKAGE_DIR
    )
    spark.sparkContext.addPyFile(package)
    return SparkTrials(parallelism=parallelism, spark_session=spark)


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


def results_digest(
    input_digest: str, budget: Budget, sample_rows: int, results: list[TrialResult]
) -> str:
    """What train_best reads from this run, as a digest: the features it came from (train_best
    refits on all their rows), the budget, the sample the search ran on and every trial's
    outcome (not run ids or timings, which differ on every run)."""
    outcomes = [(r.number, r.params, r.rmse, r.n_trees) for r in results]
    return digest_values(input_digest, asdict(budget), sample_rows, outcomes)


def describe(
    results: list[TrialResult], budget: Budget, backend: str, tuning_seconds: float
) -> str:
    """The run's description (markdown, shown on its page in the MLflow UI)."""
    best = min(results, key=lambda r: r.rmse)
    worst = max(r.rmse for r in results)
    params = "\n".join(f"| {name} | {_param(value)} |" for name, value in best.params.items())
    return f"""\
Searched **{len(results)}** XGBoost configurations with hyperopt's TPE (seed {budget.seed}, \
backend {backend}, {tuning_seconds:.0f} s), each trained with early stopping on the validation \
month. Validation RMSE went from {worst:.3f} (worst trial) to **{best.rmse:.3f} minutes**, \
reached by trial {best.number} with {best.n_trees} trees:

| hyperparameter | best value |
|---|---|
{params}

Each trial is a child run of this one: expand this run in the runs table, tick its trials and \
press *Compare* for the parallel coordinates plot. The search over time: `{SEARCH_PLOT}`; \
every trial: `{TRIALS_FILE}`.
"""


def _param(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


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
        return trials.start_trial(self.parent, f"trial-{number:03d}", {**params, **self.fixed})

    def finish(self, run_id: str | None, result: TrialResult) -> None:
        assert run_id is not None
        metrics = {
            "rmse": result.rmse,
            "training_seconds": result.training_seconds,
            "n_trees": result.n_trees,
        }
        trials.finish_trial(run_id, metrics, {"trial": result.number})

    def fail(self, run_id: str | None) -> None:
        if run_id is not None:
            trials.fail_trial(run_id)

    def renumber(self, results: list[TrialResult]) -> None:
        """Name trials by hyperopt's trial id: Spark executors cannot share a counter."""
        for result in results:
            if result.run_id is not None:
                trials.name_trial(result.run_id, f"trial-{result.number:03d}", result.number)


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
        if not results:
            raise PipelineError("every trial failed; see the FAILED trial runs under this run")
        best = min(results, key=lambda r: r.rmse)
        runs.log_table(trials_table(results), TRIALS_FILE)
        runs.log_figure(plot_search({r.number: r.rmse for r in results}), SEARCH_PLOT)
        runs.set_description(describe(results, budget, backend, tuning_seconds))
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
