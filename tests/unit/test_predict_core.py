"""predict's pure core: model URIs, resolving a version, the predictions frame, the month by
month errors, the table and the chart (no MLflow; files only under tmp_path)."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from taxi_duration.core.contracts import (
    COMPARE_PREDICTION,
    DISTANCE,
    DO,
    DROPOFF,
    PICKUP,
    PREDICTION,
    PU,
    TARGET,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import (
    ModelRef,
    Month,
    check_engine,
    check_output,
    parse_model_uri,
)
from taxi_duration.data import outputs
from taxi_duration.model.figures import plot_metrics_by_month
from taxi_duration.model.monitoring import (
    COMPARE_TO,
    MODEL,
    ErrorSums,
    ModelUsed,
    MonthResult,
    in_training_filter,
    markdown,
    metrics_table,
    month_metrics,
    month_step,
)
from taxi_duration.pipeline.scoring import (
    Monitor,
    prediction_columns,
    prediction_frame,
    read_back,
    resolve_version,
)

CHAMPION = ModelUsed(
    MODEL, "nyc-taxi-duration", "3", "models:/nyc-taxi-duration@champion", PREDICTION
)
OLDER = ModelUsed(
    COMPARE_TO, "nyc-taxi-duration", "2", "models:/nyc-taxi-duration/2", COMPARE_PREDICTION
)


def trips(minutes: list[float | None]) -> pd.DataFrame:
    pickup = pd.Series(pd.Timestamp("2021-04-05 08:00"), index=range(len(minutes)))
    return pd.DataFrame(
        {
            PICKUP: pickup,
            DROPOFF: pickup + pd.to_timedelta(minutes, unit="min"),
            PU: [74] * len(minutes),
            DO: [75] * len(minutes),
            DISTANCE: [1.5] * len(minutes),
        }
    )


# --- model URIs --------------------------------------------------------------------------------


def test_parse_model_uri_takes_an_alias_or_a_version():
    assert parse_model_uri("models:/nyc-taxi-duration@champion") == ModelRef(
        "nyc-taxi-duration", alias="champion"
    )
    assert parse_model_uri(" models:/nyc-taxi-duration/12 ") == ModelRef(
        "nyc-taxi-duration", version="12"
    )
    assert str(parse_model_uri("models:/m.x_1@challenger")) == "models:/m.x_1@challenger"


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("runs:/abc/model", "must name a registered model version"),
        ("models:/m-0123abcd", "must name a registered model version"),
        ("nyc-taxi-duration", "must name a registered model version"),
        ("models:/nyc-taxi-duration/latest", "a version is a number"),
        ("models:/nyc-taxi-duration/Production", "models:/nyc-taxi-duration@Production"),
        ("models:/bad name@champion", "not a registered-model name"),
    ],
)
def test_parse_model_uri_refuses_what_names_no_registered_version(uri, fragment):
    with pytest.raises(PipelineError, match=fragment):
        parse_model_uri(uri)


def test_check_engine_and_output():
    assert check_engine("spark") == "spark"
    with pytest.raises(PipelineError, match="engine must be one of pandas, spark"):
        check_engine("dask")
    assert check_output("") == ""
    assert check_output("s3://bucket/pred") == "s3://bucket/pred"
    assert check_output("out/predictions") == "out/predictions"
    with pytest.raises(PipelineError, match="has no bucket"):
        check_output("s3://")
    with pytest.raises(PipelineError, match="neither a local folder nor an s3:// prefix"):
        check_output("gs://bucket/x")


# --- resolving a version -----------------------------------------------------------------------


def never(*_):
    raise AssertionError("the registry was asked for nothing it needed")


def test_resolve_version_follows_the_alias_once():
    ref = parse_model_uri("models:/m@champion")
    assert resolve_version(ref, {"champion": "3", "challenger": "4"}, never, never, "p") == "3"


def test_resolve_version_checks_a_number_exists():
    ref = parse_model_uri("models:/m/2")
    assert resolve_version(ref, {}, lambda v: v == "2", never, "p") == "2"


def test_resolve_version_refuses_an_unknown_model_alias_or_version():
    with pytest.raises(PipelineError, match="model_uri models:/m@champion: there is no registered"):
        resolve_version(parse_model_uri("models:/m@champion"), None, never, never, "model_uri")
    with pytest.raises(PipelineError, match=r"no alias 'best' \(its aliases: @champion \(v3\)\)"):
        resolve_version(parse_model_uri("models:/m@best"), {"champion": "3"}, never, never, "p")
    with pytest.raises(PipelineError, match=r"no version 9 \(its versions: 1, 2, 3\)"):
        resolve_version(
            parse_model_uri("models:/m/9"), {}, lambda v: False, lambda: ["1", "2", "3"], "p"
        )


# --- the predictions frame ---------------------------------------------------------------------


def test_prediction_frame_has_the_trip_columns_the_actual_and_each_prediction():
    frame = trips([10.0, 61.0])
    before = frame.copy()
    out = prediction_frame(
        frame, {PREDICTION: np.array([9.5, 30.0], dtype="float32"), COMPARE_PREDICTION: [1, 2]}
    )
    assert list(out.columns) == prediction_columns([CHAMPION, OLDER])
    assert out[TARGET].tolist() == [10.0, 61.0]
    assert out[PREDICTION].dtype == "float64" and out[COMPARE_PREDICTION].tolist() == [1.0, 2.0]
    pd.testing.assert_frame_equal(frame, before)


def test_prediction_frame_without_times_has_no_actual_minutes():
    frame = trips([10.0, 20.0]).assign(**{DROPOFF: pd.NaT})
    out = prediction_frame(frame, {PREDICTION: np.array([1.0, 2.0])})
    assert out[TARGET].isna().all()


# --- month by month errors ---------------------------------------------------------------------


def test_training_filter_is_inclusive_and_leaves_out_missing_durations():
    keep = in_training_filter(np.array([0.5, 1.0, 30.0, 60.0, 61.0, np.nan]), 1, 60)
    assert keep.tolist() == [False, True, True, True, False, False]


def test_error_sums_count_only_rows_in_the_filter_and_add_up():
    actual = np.array([10.0, 20.0, 90.0, np.nan])
    first = ErrorSums.of(actual, np.array([12.0, 17.0, 0.0, 5.0]), 1, 60)
    assert first == ErrorSums(rows=2, squared=13.0, absolute=5.0, signed=-1.0)
    both = first + ErrorSums.of(np.array([5.0]), np.array([5.0]), 1, 60)
    assert both.rows == 3
    assert both.rmse == pytest.approx(np.sqrt(13 / 3)) and both.mae == pytest.approx(5 / 3)
    assert both.bias == pytest.approx(-1 / 3)
    assert ErrorSums(0, 0.0, 0.0, 0.0).rmse is None
    assert ErrorSums(0, 0.0, 0.0, 0.0).bias is None


def test_month_step_reads_as_the_month():
    assert month_step(Month(2021, 4)) == 202104
    assert month_step(Month(2024, 12)) < month_step(Month(2025, 1))


def result(month: Month, rows: int, model: ErrorSums, compare: ErrorSums) -> MonthResult:
    return MonthResult(month, rows, {PREDICTION: model, COMPARE_PREDICTION: compare})


def test_month_metrics_name_the_compared_model_with_a_prefix():
    month = result(Month(2021, 4), 10, ErrorSums(4, 16.0, 8.0, -8.0), ErrorSums(4, 64.0, 16.0, 4.0))
    assert month_metrics(month, [CHAMPION, OLDER]) == {
        "rows": 10,
        "rows_scored": 4,
        "rmse": 2.0,
        "mae": 2.0,
        "bias": -2.0,
        "compare_rmse": 4.0,
        "compare_mae": 4.0,
        "compare_bias": 1.0,
        "status_code": -1,  # no status measured for this result
    }


def test_month_metrics_without_truth_log_no_made_up_error():
    month = MonthResult(Month(2021, 4), 10, {PREDICTION: ErrorSums(0, 0.0, 0.0, 0.0)})
    assert month_metrics(month, [CHAMPION]) == {"rows": 10, "rows_scored": 0, "status_code": -1}


def test_metrics_table_is_in_calendar_order_one_row_per_model():
    later = result(Month(2023, 2), 8, ErrorSums(2, 8.0, 4.0, -4.0), ErrorSums(2, 2.0, 2.0, 2.0))
    earlier = result(
        Month(2021, 4), 10, ErrorSums(4, 16.0, 8.0, 0.0), ErrorSums(4, 64.0, 16.0, 4.0)
    )
    table = metrics_table([later, earlier], [CHAMPION, OLDER])
    assert table["month"].tolist() == ["2021-04", "2021-04", "2023-02", "2023-02"]
    assert table["model"].tolist() == ["v3", "v2", "v3", "v2"]
    assert table["model_uri"].tolist()[:2] == [
        "models:/nyc-taxi-duration/3",
        "models:/nyc-taxi-duration/2",
    ]
    assert table["rmse"].tolist() == [2.0, 4.0, 2.0, 1.0]
    assert table["bias"].tolist() == [0.0, 1.0, -2.0, 1.0]
    text = markdown(table)
    assert "| month | rows | rows_scored | rmse v3 | rmse v2 | bias v3 | bias v2 |" in text
    assert "| 2021-04 | 10 | 4 | 2.000 | 4.000 | 0.000 | 1.000 |" in text


def test_metrics_table_tells_the_same_version_twice_apart():
    same = ModelUsed(COMPARE_TO, "nyc-taxi-duration", "3", "models:/x/3", COMPARE_PREDICTION)
    sums = ErrorSums(4, 16.0, 8.0, 0.0)
    table = metrics_table([result(Month(2021, 4), 10, sums, sums)], [CHAMPION, same])
    assert table["model"].tolist() == ["v3 (model)", "v3 (compare_to)"]


def test_error_chart_draws_a_panel_per_metric_and_a_line_per_model():
    months = [Month(2021, 4), Month(2021, 5), Month(2023, 2)]
    sums = (ErrorSums(4, 16.0, 8.0, -4.0), ErrorSums(4, 64.0, 8.0, 4.0))
    results = [result(m, 10, *sums) for m in months]
    table = metrics_table(results, [CHAMPION, OLDER])
    fig = plot_metrics_by_month(table, ["rmse", "bias"], "Error by month")
    rmse, bias = fig.axes
    assert [line.get_label() for line in rmse.get_lines()] == ["v3", "v2"]
    assert list(rmse.get_lines()[0].get_ydata()) == [2.0, 2.0, 2.0]
    assert list(bias.get_lines()[1].get_ydata()) == [1.0, 1.0, 1.0]
    assert [t.get_text() for t in bias.get_xticklabels()] == ["2021-04", "2021-05", "2023-02"]


# --- predictions files ---------------------------------------------------------------------------


def test_a_predictions_file_reads_back_with_its_errors(tmp_path):
    frame = prediction_frame(trips([10.0, 20.0, 90.0]), {PREDICTION: np.array([12.0, 17.0, 5.0])})
    frame = frame.assign(**{PU: [1.0, np.nan, 3.0]})  # a missing zone: int64 with a null
    path = tmp_path / "p.parquet"
    outputs.write_frame(frame, path)
    schema = pq.read_schema(path)
    assert str(schema.field(PU).type) == "int64" and schema.metadata is None
    rows, sums, counts = read_back(path, [PREDICTION], Monitor((1, 60), None, None))
    assert rows == 3 and sums[PREDICTION] == ErrorSums(2, 13.0, 5.0, -1.0)
    assert counts is None  # a model without a reference profile: no drift counted


def test_merged_parts_keep_their_order_and_the_shared_schema(tmp_path):
    columns = prediction_columns([CHAMPION])
    parts = []
    for i in range(3):
        frame = prediction_frame(trips([10.0 + i, 20.0 + i]), {PREDICTION: np.array([1.0, 2.0])})
        parts.append(tmp_path / f"part-{i:05d}.parquet")
        frame.to_parquet(parts[-1], index=False)  # pandas metadata, as a foreign writer would
    outputs.merge_parts(parts, tmp_path / "all.parquet", columns)
    merged = pq.read_table(tmp_path / "all.parquet")
    assert merged.schema == outputs.prediction_schema(columns)
    assert merged.column(TARGET).to_pylist() == [10.0, 20.0, 11.0, 21.0, 12.0, 22.0]


def test_local_output_is_published_only_at_the_end(tmp_path):
    folder = tmp_path / "out"
    outputs.check_writable(str(folder))
    with outputs.staging(str(folder)) as staged:
        (staged / "green_2021-04.parquet").write_bytes(b"x")
        assert [p.name for p in folder.iterdir()] == [staged.name]  # hidden, nothing published
        where = outputs.publish(staged, ["green_2021-04.parquet"], str(folder))
    assert where == [str(folder.resolve() / "green_2021-04.parquet")]
    assert [p.name for p in folder.iterdir()] == ["green_2021-04.parquet"]


def test_a_failure_before_publishing_leaves_the_output_folder_as_it_was(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "green_2021-03.parquet").write_bytes(b"earlier run")
    with pytest.raises(RuntimeError), outputs.staging(str(folder)) as staged:
        (staged / "green_2021-04.parquet").write_bytes(b"half")
        raise RuntimeError("scoring failed")
    assert [p.name for p in folder.iterdir()] == ["green_2021-03.parquet"]


def test_staging_of_a_dead_process_is_removed(tmp_path):
    dead = tmp_path / f"{outputs._STAGING_PREFIX}999999999-x"
    alive = tmp_path / f"{outputs._STAGING_PREFIX}{os.getpid()}-y"
    dead.mkdir()
    alive.mkdir()
    assert outputs.remove_orphan_staging(tmp_path) == [dead]
    assert alive.is_dir()


def test_describe_says_where_a_file_goes(tmp_path):
    assert outputs.describe("s3://b/some/prefix/", "x.parquet") == "s3://b/some/prefix/x.parquet"
    assert outputs.describe("s3://b", "x.parquet") == "s3://b/x.parquet"
    assert outputs.describe(str(tmp_path), "x.parquet") == str(tmp_path / "x.parquet")
