"""The hyperparameter search hpo runs (pure apart from hyperopt's own Spark backend): the space,
one trial's objective, TPE over it, and the rows it searches on.

A trial is recorded through a TrialLogger (the hpo step gives one that makes each trial a nested
MLflow run: tracking/trials.py), so the search itself never talks to MLflow.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
import pandas as pd
from hyperopt import STATUS_FAIL, STATUS_OK, Trials, fmin, hp, tpe
from hyperopt.exceptions import AllTrialsFailed
from hyperopt.pyll import scope
from tqdm import tqdm

from taxi_duration.core.contracts import LIBRARY, PROJECT_DIR, SEARCH_PLOT, TRIALS_FILE
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.reuse import digest_values
from taxi_duration.model import boosting
from taxi_duration.model.features import FeatureMatrix, sample_rows

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

    def fail(self, run_id: str | None, error: str) -> None: ...


class Objective:
    """One trial: fit XGBoost with the sampled hyperparameters and record it through the logger.

    A trial whose fit raises (XGBoost refusing a configuration, say) is recorded as failed and
    reported to hyperopt as such; the search goes on. Picklable, so SparkTrials can ship it to
    executors; each process builds its own DMatrix pair once, on its first trial.
    """

    def __init__(
        self,
        train: FeatureMatrix,
        val: FeatureMatrix,
        budget: Budget,
        logger: TrialLogger,
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
        except Exception as exc:  # this configuration failed: the search goes on without it
            error = " ".join(f"{type(exc).__name__}: {exc}".split())[:500]
            self.logger.fail(run_id, error)
            return {"status": STATUS_FAIL, "error": error}
        except BaseException:  # interrupted: the trial is over, and so is the search
            self.logger.fail(run_id, "interrupted")
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
        self.best = min(self.best, result.rmse)
        self._report(
            f"rmse {result.rmse:.4f} best {self.best:.4f} ({result.training_seconds:.1f} s)",
            rmse=f"{result.rmse:.4f}",
        )

    def fail(self, run_id: str | None, error: str) -> None:
        self.inner.fail(run_id, error)
        self._report(f"failed: {error}", rmse="failed")

    def _report(self, line: str, rmse: str) -> None:
        """One more trial done: a line on `stream`, or a step of the progress bar."""
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(rmse=rmse, best=f"{self.best:.4f}")
            self.bar.update(1)
            return
        print(f"hpo: trial {self.done}/{self.total} {line}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def tune(
    train: FeatureMatrix,
    val: FeatureMatrix,
    budget: Budget,
    logger: TrialLogger,
    search: Trials | None = None,
    space: dict[str, Any] | None = None,
) -> list[TrialResult]:
    """Run the TPE search over `space` (default SEARCH_SPACE), in process or on Spark with
    SparkTrials as `search`; every successful trial, numbered by hyperopt's trial id (failed
    ones are left out: none at all means every configuration failed)."""
    search = search if search is not None else Trials()
    # hyperopt's last word when no trial succeeded: then none is returned
    with contextlib.suppress(AllTrialsFailed):
        fmin(
            Objective(train, val, budget, logger),
            space if space is not None else SEARCH_SPACE,
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


def require_trials(results: list[TrialResult]) -> list[TrialResult]:
    """The search's trials, refusing a search where every one failed (each failed trial's run
    says why, in its tag `error`)."""
    if not results:
        raise PipelineError(
            "every trial failed; see the FAILED trial runs under this run (tag error) for why"
        )
    return results


def search_sample(
    train: FeatureMatrix, val: FeatureMatrix, rows: int, seed: int
) -> tuple[FeatureMatrix, FeatureMatrix]:
    """The training and validation rows the search runs on: a sample of at most `rows` rows of
    each (0 = every row). The same seed always draws the same rows."""
    train_rng, val_rng = np.random.default_rng(seed).spawn(2)
    return sample_rows(train, rows, train_rng), sample_rows(val, rows, val_rng)


def spark_trials(master: str, parallelism: int) -> Trials:
    """SparkTrials on `master` (local[*], a cluster URL, Databricks, EMR, Dataproc...).

    The executors need this project's code and the driver's Python: the library (where the
    objective a trial runs lives) is shipped to them as a zip, and PYSPARK_PYTHON defaults to
    this interpreter.
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
        str(Path(tempfile.mkdtemp()) / LIBRARY), "zip", PROJECT_DIR, LIBRARY
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


def describe_search(
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
