"""train_best's refit on Spark (engine=spark): the chosen trial trained by xgboost.spark's
SparkXGBRegressor on a Spark DataFrame that Spark reads from the splits' parquet files, so the
rows never pass through pandas on the driver; the fitted model's booster is the same kind of
xgboost.Booster the local refit gives, and the registered pyfunc does not know which trained it.

The zones stay categorical (feature_types "c"), with the codes the preprocessor gives them
(zone ID - 1; unknown: missing), so the booster reads the pyfunc's matrices as the local one
does; early stopping watches the validation split (validation_indicator_col), or a seeded
sample of about `stopping_rows` of its rows (Spark's rand(seed), so the count is near, not exact).

Each trainer must see a partition as one Arrow batch: xgboost.spark (3.2) splits every batch into
its training and validation rows, and with the features as a list of columns it fails with
`KeyError: 'values'` on a batch that holds only one kind. Spark cuts batches at 10,000 rows and at
64 MiB by default, which makes that certain on any real month (the round-robin repartition keeps
the rows of each input file together): at 64 MiB, a refit on 6.6 million rows with two workers
failed. So the refit lifts both limits while it fits (`ARROW_BATCH_LIMITS`), leaving Spark's own
ceiling of 2 GiB a batch, about 40 million rows a trainer; past that, a clear error asks for more
`num_workers`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from taxi_duration.core.contracts import DO, PU, TARGET, ZONE_IDS
from taxi_duration.core.errors import PipelineError
from taxi_duration.model.boosting import FIXED_PARAMS, FitResult

VALIDATION = "is_validation"  # the column that tells the validation rows from the training ones
ARROW_BATCH_ROWS = "spark.sql.execution.arrow.maxRecordsPerBatch"  # 0: no limit
ARROW_BATCH_BYTES = "spark.sql.execution.arrow.maxBytesPerBatch"  # at most 2 GiB - 1
# What the fit sets them to: one Arrow batch a partition, up to Spark's ceiling.
ARROW_BATCH_LIMITS = {ARROW_BATCH_ROWS: "0", ARROW_BATCH_BYTES: str((1 << 31) - 2)}


def refit_on_spark(
    spark: Any,
    params: dict[str, Any],
    train: Path,
    val: Path,
    columns: Sequence[str],
    num_boost_round: int,
    early_stopping_rounds: int,
    seed: int,
    num_workers: int,
    stopping_rows: int = 0,
) -> FitResult:
    """Train with early stopping on the validation split (0) or a sample of about
    `stopping_rows` of its rows, on Spark; the booster cut at its best iteration, with the RMSE
    XGBoost measured on the rows early stopping watched."""
    from pyspark.sql import functions as F
    from xgboost.spark import SparkXGBRegressor

    stopping = spark.read.parquet(str(val))
    total = stopping.count()
    if 0 < stopping_rows < total:
        stopping = stopping.where(F.rand(seed) < stopping_rows / total).cache()
        total = stopping.count()
    rows = (
        spark.read.parquet(str(train))
        .withColumn(VALIDATION, F.lit(False))
        .unionByName(stopping.withColumn(VALIDATION, F.lit(True)))
    )
    for zone in (PU, DO):  # the preprocessor's category codes: zone ID - 1, unknown missing
        valid = F.col(zone).between(ZONE_IDS[0], ZONE_IDS[-1])
        rows = rows.withColumn(zone, F.when(valid, F.col(zone) - ZONE_IDS[0]).cast("double"))
    estimator = SparkXGBRegressor(
        features_col=list(columns),
        label_col=TARGET,
        validation_indicator_col=VALIDATION,
        feature_types=["c" if c in (PU, DO) else "q" for c in columns],
        num_workers=num_workers,
        force_repartition=True,  # the union's partitions never match the workers
        n_estimators=num_boost_round,
        early_stopping_rounds=early_stopping_rounds,
        random_state=seed,
        verbose=False,
        **{k: v for k, v in FIXED_PARAMS.items() if k != "objective"},
        **params,
    )
    before = {key: spark.conf.get(key) for key in ARROW_BATCH_LIMITS}
    for key, value in ARROW_BATCH_LIMITS.items():
        spark.conf.set(key, value)
    try:
        started = time.perf_counter()
        fitted = estimator.fit(rows)
        seconds = time.perf_counter() - started
    except Exception as error:
        if "KeyError: 'values'" not in str(error):
            raise
        raise PipelineError(
            f"a Spark trainer's share of the rows was over 2 GiB and reached it in several "
            f"batches, which xgboost.spark cannot train on; raise num_workers (now {num_workers})"
        ) from None
    finally:
        for key, value in before.items():
            spark.conf.set(key, value)
    booster = fitted.get_booster()
    attributes = booster.attributes()
    n_trees = int(attributes.get("best_iteration", booster.num_boosted_rounds() - 1)) + 1
    val_rmse = float(attributes.get("best_score", "nan"))
    return FitResult(booster[:n_trees], val_rmse, n_trees, seconds, total)
