import os
import shutil

import pytest

from taxi_duration.core.contracts import FEATURIZE, HPO, INGEST, REGISTER, TRAIN_BEST
from taxi_duration.core.errors import PipelineError
from taxi_duration.data.tlc import source_fingerprint
from taxi_duration.pipeline.orchestration import input_digest, plan
from tests.conftest import DATA_DIR

DEFAULTS = {
    "taxi": "green",
    "train_month": "2021-01",
    "val_month": "2021-02",
    "test_month": "2021-03",
    "source": "tests/data",
    "cache_dir": "~/.cache/nyc-taxi-duration",
    "features": "time",
    "encoding": "categorical",
    "min_duration": 1.0,
    "max_duration": 60.0,
    "max_evals": 50,
    "seed": 42,
    "num_boost_round": 1000,
    "early_stopping_rounds": 50,
    "backend": "local",
    "parallelism": 2,
    "spark_master": "local[*]",
    "hpo_sample_rows": 100_000,
    "rmse_tolerance": 0.0,
    "engine": "local",
    "num_workers": 2,
    "early_stopping_rows": 500_000,
    "model_name": "nyc-taxi-duration",
    "min_improvement": 0.0,
    "min_confidence": 0.99,
}


def test_plan_splits_parameters_into_the_five_steps_in_order():
    calls = plan(DEFAULTS)
    assert [c.entry_point for c in calls] == [INGEST, FEATURIZE, HPO, TRAIN_BEST, REGISTER]
    assert [c.upstream_param for c in calls] == [
        None,
        "ingest_run",
        "features_run",
        "hpo_run",
        "train_run",
    ]
    assert calls[2].params == {
        "max_evals": 50,
        "seed": 42,
        "num_boost_round": 1000,
        "early_stopping_rounds": 50,
        "backend": "local",
        "parallelism": 2,
        "spark_master": "local[*]",
        "hpo_sample_rows": 100_000,
    }
    every = set().union(*(c.params for c in calls))
    assert every == set(DEFAULTS)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train_month": "2021-13"}, "01..12"),
        ({"train_month": "2021-04"}, "train < val < test"),
        ({"max_evals": 0}, "max_evals must be at least 1"),
        ({"max_evals": -5}, "max_evals must be at least 1"),
        ({"encoding": "bogus"}, "encoding must be one of"),
        ({"features": "weather"}, "features must be time .* or course"),
        ({"taxi": "fhv"}, "taxi must be one of"),
        ({"backend": "dask"}, "backend must be one of"),
        ({"parallelism": 0}, "parallelism must be at least 1"),
        ({"model_name": "a/b"}, "model_name"),
        ({"min_duration": 60.0, "max_duration": 1.0}, "min_duration"),
        ({"train_month": "2021-01..2021-02"}, "train < val < test"),
        ({"train_month": "2021-01..2020-11"}, "ends before it starts"),
        ({"val_month": "2021-02..2021-03"}, "val_month must look like YYYY-MM"),
        ({"hpo_sample_rows": -1}, "hpo_sample_rows must be 0"),
        ({"early_stopping_rows": -1}, "early_stopping_rows must be 0"),
        ({"min_improvement": -0.1}, "min_improvement must be >= 0"),
        ({"min_improvement": float("nan")}, "min_improvement must be >= 0"),
    ],
)
def test_plan_refuses_bad_parameters_before_any_step(override, message):
    with pytest.raises(PipelineError, match=message):
        plan(DEFAULTS | override)


def test_plan_passes_the_refit_options_to_train_best():
    train_best = plan(DEFAULTS | {"early_stopping_rows": 0, "engine": "spark"})[3]
    assert train_best.params == {
        "rmse_tolerance": 0.0,
        "engine": "spark",
        "spark_master": "local[*]",
        "num_workers": 2,
        "early_stopping_rows": 0,
    }


def test_plan_passes_min_improvement_to_register():
    register = plan(DEFAULTS | {"min_improvement": 0.25, "min_confidence": 0.5})[-1]
    assert register.params == {
        "model_name": "nyc-taxi-duration",
        "min_improvement": 0.25,
        "min_confidence": 0.5,
    }


def test_plan_accepts_a_training_window_before_the_validation_month():
    calls = plan(DEFAULTS | {"train_month": "2020-10..2020-12, 2021-01"})
    assert calls[0].params["train_month"] == "2020-10..2020-12, 2021-01"
    assert calls[2].params["hpo_sample_rows"] == 100_000


def test_ingest_input_digest_has_one_entry_per_month_of_the_window(tmp_path):
    """Reuse of ingest follows every file of a window: touching one month changes the digest."""
    for month in ("2023-02", "2023-03", "2023-04", "2024-01", "2024-03"):
        name = f"yellow_tripdata_{month}.parquet"
        shutil.copy(DATA_DIR / name, tmp_path / name)
    months = {"train_month": "2023-02..2023-04", "val_month": "2024-01", "test_month": "2024-03"}
    params = DEFAULTS | months | {"taxi": "yellow", "source": str(tmp_path)}
    ingest = plan(params)[0]
    before = input_digest(ingest, None)
    assert before == source_fingerprint(
        str(tmp_path), "yellow", ["2023-02", "2023-03", "2023-04", "2024-01", "2024-03"]
    )
    os.utime(tmp_path / "yellow_tripdata_2023-03.parquet", ns=(1, 1))  # the middle month
    assert input_digest(ingest, None) not in (None, before)
