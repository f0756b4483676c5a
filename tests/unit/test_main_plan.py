import pytest

from steps.contracts import FEATURIZE, HPO, INGEST, REGISTER, TRAIN_BEST
from steps.errors import PipelineError
from steps.main import plan

DEFAULTS = {
    "taxi": "green",
    "train_month": "2021-01",
    "val_month": "2021-02",
    "test_month": "2021-03",
    "source": "tests/data",
    "cache_dir": "~/.cache/nyc-taxi-duration",
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
    "rmse_tolerance": 0.0,
    "model_name": "nyc-taxi-duration",
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
        ({"taxi": "fhv"}, "taxi must be one of"),
        ({"backend": "dask"}, "backend must be one of"),
        ({"parallelism": 0}, "parallelism must be at least 1"),
        ({"model_name": "a/b"}, "model_name"),
        ({"min_duration": 60.0, "max_duration": 1.0}, "min_duration"),
    ],
)
def test_plan_refuses_bad_parameters_before_any_step(override, message):
    with pytest.raises(PipelineError, match=message):
        plan(DEFAULTS | override)
