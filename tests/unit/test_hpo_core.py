import io
import sys

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb
from hyperopt import hp
from hyperopt.pyll import scope

from taxi_duration.core.contracts import DISTANCE, DO, PU
from taxi_duration.core.errors import PipelineError
from taxi_duration.model import boosting
from taxi_duration.model.features import CategoricalPreprocessor, FeatureMatrix, OneHotPreprocessor
from taxi_duration.model.search import (
    SEARCH_SPACE,
    Budget,
    ProgressLogger,
    TrialResult,
    require_trials,
    results_digest,
    search_sample,
    spark_trials,
    trials_table,
    tune,
)


class ListLogger:
    """Records trial calls in memory (the MLflow logger makes nested runs instead)."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[TrialResult] = []
        self.failed: list[str | None] = []
        self.errors: list[str] = []

    def start(self, number, params):
        self.started.append(number)
        return f"run-{number}"

    def finish(self, run_id, result):
        self.finished.append(result)

    def fail(self, run_id, error):
        self.failed.append(run_id)
        self.errors.append(error)


def synthetic(n: int, seed: int) -> FeatureMatrix:
    """Trips whose duration is 3 min/mile plus a zone effect: learnable, so RMSE must drop."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {PU: rng.integers(1, 30, n), DO: rng.integers(1, 30, n), DISTANCE: rng.gamma(2, 1.5, n)}
    )
    y = 3 * frame[DISTANCE].to_numpy() + (frame[PU].to_numpy() % 5) + rng.normal(0, 0.5, n)
    return FeatureMatrix(CategoricalPreprocessor().transform(frame), y)


BUDGET = Budget(max_evals=4, seed=7, num_boost_round=40, early_stopping_rounds=5)


def test_tune_runs_max_evals_trials_and_logs_each():
    logger = ListLogger()
    results = tune(synthetic(600, 0), synthetic(300, 1), BUDGET, logger)
    assert len(results) == 4
    assert logger.started == [0, 1, 2, 3]
    assert [r.run_id for r in results] == ["run-0", "run-1", "run-2", "run-3"]
    assert all(3 <= r.params["max_depth"] <= 12 for r in results)
    assert all(isinstance(r.params["max_depth"], int) for r in results)
    assert all(1 <= r.n_trees <= 40 for r in results)
    baseline = float(np.std(synthetic(300, 1).y))
    assert min(r.rmse for r in results) < baseline / 2


def test_tune_works_on_the_sparse_onehot_encoding():
    frame_train, frame_val = synthetic(400, 0), synthetic(200, 1)
    raw = pd.DataFrame(
        {PU: np.arange(400) % 20 + 1, DO: np.arange(400) % 7 + 1, DISTANCE: np.linspace(0, 9, 400)}
    )
    encoder = OneHotPreprocessor().fit(raw)
    train = FeatureMatrix(encoder.transform(raw), frame_train.y)
    val = FeatureMatrix(encoder.transform(raw.iloc[:200]), frame_val.y)
    results = tune(train, val, Budget(2, 7, 20, 5), ListLogger())
    assert len(results) == 2 and all(r.rmse > 0 for r in results)


def test_tune_is_reproducible_with_the_same_seed():
    a = tune(synthetic(400, 0), synthetic(200, 1), BUDGET, ListLogger())
    b = tune(synthetic(400, 0), synthetic(200, 1), BUDGET, ListLogger())
    assert [r.params for r in a] == [r.params for r in b]
    assert [round(r.rmse, 6) for r in a] == [round(r.rmse, 6) for r in b]


def test_trials_table_lists_every_trial_best_first():
    results = [
        TrialResult(0, {"max_depth": 4}, 6.5, 10, 0.1, "a"),
        TrialResult(1, {"max_depth": 6}, 6.1, 30, 0.2, "b"),
    ]
    table = trials_table(results)
    assert table["run_id"].tolist() == ["b", "a"]
    assert {"trial", "rmse", "n_trees", "training_seconds", "max_depth"} <= set(table.columns)


def test_progress_prints_one_line_per_trial_with_the_best_so_far():
    stream = io.StringIO()
    inner = ListLogger()
    progress = ProgressLogger(inner, total=3, stream=stream)
    for number, rmse in enumerate([6.5, 6.1, 6.3]):
        run_id = progress.start(number, {})
        progress.finish(run_id, TrialResult(number, {}, rmse, 10, 1.25, run_id))
    assert stream.getvalue().splitlines() == [
        "hpo: trial 1/3 rmse 6.5000 best 6.5000 (1.2 s)",
        "hpo: trial 2/3 rmse 6.1000 best 6.1000 (1.2 s)",
        "hpo: trial 3/3 rmse 6.3000 best 6.1000 (1.2 s)",
    ]
    assert len(inner.finished) == 3  # the wrapped logger still records every trial


def test_spark_backend_without_pyspark_says_how_to_install_the_extra(monkeypatch):
    for module in ("pyspark", "pyspark.sql"):
        monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    with pytest.raises(PipelineError, match=r"-m pip install -e '.*\[spark\]'"):
        spark_trials("local[1]", 1)


def numbered(n: int, seed: int) -> FeatureMatrix:
    """Synthetic rows whose target is their row number, to tell which rows a sample took."""
    return FeatureMatrix(synthetic(n, seed).X, np.arange(n, dtype=float))


def test_search_sample_is_the_same_for_the_same_seed_and_differs_for_another():
    train, val = numbered(5000, 0), numbered(4000, 1)
    a_train, a_val = search_sample(train, val, 1000, seed=42)
    b_train, b_val = search_sample(train, val, 1000, seed=42)
    other, _ = search_sample(train, val, 1000, seed=43)
    assert (a_train.rows, a_val.rows) == (1000, 1000)
    np.testing.assert_array_equal(a_train.y, b_train.y)
    np.testing.assert_array_equal(a_val.y, b_val.y)
    assert not np.array_equal(a_train.y, other.y)
    # whole rows, kept in their order; training and validation rows drawn independently
    picked = a_train.y.astype(int)
    assert np.all(np.diff(picked) > 0)
    pd.testing.assert_frame_equal(a_train.X, train.X.iloc[picked].reset_index(drop=True))
    assert not np.array_equal(a_train.y[:1000], a_val.y)


def test_search_sample_of_zero_or_more_rows_than_there_are_is_every_row():
    train, val = synthetic(500, 0), synthetic(300, 1)
    for rows in (0, 300, 500, 10_000):
        sampled_train, sampled_val = search_sample(train, val, rows, seed=7)
        assert sampled_train.rows == min(500, rows or 500)
        assert sampled_val.rows == 300
    assert search_sample(train, val, 0, seed=7)[0] is train


def test_search_sample_takes_rows_of_a_sparse_onehot_matrix():
    raw = pd.DataFrame(
        {PU: np.arange(400) % 20 + 1, DO: np.arange(400) % 7 + 1, DISTANCE: np.linspace(0, 9, 400)}
    )
    matrix = FeatureMatrix(OneHotPreprocessor().fit(raw).transform(raw), np.arange(400.0))
    sampled, _ = search_sample(matrix, matrix, 50, seed=1)
    assert sampled.X.shape == (50, matrix.columns)
    # each sampled row is the full row whose target it carries
    dense, picked = matrix.X.toarray(), sampled.y.astype(int)
    np.testing.assert_array_equal(sampled.X.toarray(), dense[picked])


def test_the_refit_stops_on_a_seeded_sample_of_the_validation_month():
    val = numbered(4000, 1)
    watched = boosting.stopping_rows(val, 1000, seed=42)
    assert watched.rows == 1000
    np.testing.assert_array_equal(watched.y, boosting.stopping_rows(val, 1000, seed=42).y)
    assert not np.array_equal(watched.y, boosting.stopping_rows(val, 1000, seed=43).y)
    # not the rows the search validated on with the same seed
    _, searched = search_sample(numbered(5000, 0), val, 1000, seed=42)
    assert not np.array_equal(watched.y, searched.y)
    for rows in (0, 4000, 10_000):  # 0, or no fewer rows than the month: all of it
        assert boosting.stopping_rows(val, rows, seed=42) is val


def test_a_fit_reports_the_rows_it_stopped_on_and_scores_any_split():
    train, val = synthetic(2000, 0), synthetic(3000, 1)
    watched = boosting.stopping_rows(val, 500, seed=7)
    dtrain, dval = boosting.dmatrices(train, watched)
    fit = boosting.fit({"max_depth": 3, "learning_rate": 0.3}, dtrain, dval, 60, 5, seed=7)
    assert fit.val_rows == 500
    assert fit.val_rmse == pytest.approx(boosting.score(fit.booster, watched), rel=1e-6)
    whole = boosting.score(fit.booster, val)
    assert whole == pytest.approx(
        float(np.sqrt(np.mean((fit.booster.predict(boosting.dmatrix(val)) - val.y) ** 2))),
        rel=1e-6,
    )
    assert whole != fit.val_rmse


def test_the_search_sample_is_part_of_what_train_best_reads():
    results = [TrialResult(0, {"max_depth": 4}, 6.5, 10, 0.1, "a")]
    assert results_digest("abc", BUDGET, 0, results) != results_digest("abc", BUDGET, 1000, results)


def test_early_stopping_on_the_plain_validation_matrix_picks_what_a_quantised_one_would():
    # The validation matrix is plain because XGBoost scores it faster: the choice must not change
    # which round early stopping keeps, nor the model's validation RMSE.
    train, val = synthetic(3000, seed=1), synthetic(1000, seed=2)
    dtrain, dval = boosting.dmatrices(train, val)
    assert not isinstance(dval, xgb.QuantileDMatrix)
    quantised = xgb.QuantileDMatrix(val.X, label=val.y, enable_categorical=True, ref=dtrain)
    params = {"max_depth": 4, "learning_rate": 0.3, "min_child_weight": 1.0}
    plain_fit = boosting.fit(params, dtrain, dval, 200, 5, seed=3)
    quantised_fit = boosting.fit(params, dtrain, quantised, 200, 5, seed=3)
    assert plain_fit.n_trees == quantised_fit.n_trees < 200
    assert plain_fit.val_rmse == pytest.approx(quantised_fit.val_rmse, rel=1e-9)


# A space where some configurations are ones XGBoost refuses (a negative max_depth): a real
# failure of a trial's fit, as a bad configuration or a fit that runs out of memory gives.
SOMETIMES_INVALID = {
    **SEARCH_SPACE,
    "max_depth": scope.int(hp.choice("max_depth", [4, -1])),
}


def test_a_failing_trial_is_recorded_and_the_search_goes_on():
    logger = ListLogger()
    budget = Budget(max_evals=8, seed=3, num_boost_round=20, early_stopping_rounds=5)
    results = tune(synthetic(400, 0), synthetic(200, 1), budget, logger, space=SOMETIMES_INVALID)
    assert 0 < len(results) < 8 and len(logger.failed) == 8 - len(results)
    assert all(r.params["max_depth"] == 4 for r in results)
    assert all("max_depth should be greater equal to 0" in e for e in logger.errors)
    assert logger.started == list(range(8))


def test_every_trial_failing_leaves_no_result_and_says_so():
    never = {**SEARCH_SPACE, "max_depth": scope.int(hp.choice("max_depth", [-1]))}
    logger = ListLogger()
    assert tune(synthetic(300, 0), synthetic(100, 1), BUDGET, logger, space=never) == []
    assert len(logger.failed) == BUDGET.max_evals
    with pytest.raises(PipelineError, match="every trial failed"):
        require_trials([])


def test_progress_says_which_trial_failed():
    stream = io.StringIO()
    progress = ProgressLogger(ListLogger(), total=2, stream=stream)
    progress.fail(progress.start(0, {}), "XGBoostError: value -1 for Parameter max_depth")
    assert stream.getvalue() == (
        "hpo: trial 1/2 failed: XGBoostError: value -1 for Parameter max_depth\n"
    )
