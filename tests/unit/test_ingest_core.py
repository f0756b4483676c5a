"""ingest's pure core on Arrow tables: a split profiled over its month or window of months, and
files refused when they do not hold their month."""

import pandas as pd
import pyarrow as pa
import pytest

from taxi_duration.core.contracts import DISTANCE, DO, DROPOFF, PICKUP, PU
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import parse_month_spec
from taxi_duration.data.splits import check_month, pickups_outside, profile_split


def trips(pickups: list[str | None], minutes: float = 12.0) -> pa.Table:
    pickup = pd.to_datetime(pd.Series(pickups, dtype="object"), format="ISO8601")
    return pa.table(
        {
            PICKUP: pa.array(pickup, pa.timestamp("us")),
            DROPOFF: pa.array(pickup + pd.Timedelta(minutes=minutes), pa.timestamp("us")),
            PU: pa.array([74] * len(pickups), pa.int64()),
            DO: pa.array([75 + i % 2 for i in range(len(pickups))], pa.int64()),
            DISTANCE: pa.array([1.0 + i for i in range(len(pickups))], pa.float64()),
        }
    )


WINDOW = parse_month_spec("2023-01..2023-03")


def test_pickups_outside_a_window_are_those_in_none_of_its_months():
    table = trips(
        ["2023-01-05", "2023-02-28 23:59", "2023-03-31", "2023-04-01", "2009-01-01", None]
    )
    assert pickups_outside(table, WINDOW).to_pylist() == [False, False, False, True, True, True]
    listed = parse_month_spec("2023-01,2023-03")
    assert pickups_outside(table, listed).to_pylist() == [False, True, False, True, True, True]


def test_profile_of_a_window_names_it_and_counts_strays():
    table = trips(["2023-01-05", "2023-02-10", "2023-03-20", "2009-01-01"], minutes=12.0)
    profile = profile_split(table, WINDOW)
    assert profile.month == "2023-01..2023-03"
    assert (profile.rows, profile.rows_outside_month) == (4, 1)
    assert profile.zones_seen == 3  # 74, 75, 76
    assert profile.duration_minutes_quantiles == {"p1": 12.0, "p50": 12.0, "p99": 12.0}
    assert profile.trip_distance_quantiles["p50"] == 2.5
    assert profile.pickup_min == "2009-01-01 00:00:00"
    assert profile.nulls[PICKUP] == 0


def test_profile_of_a_split_whose_durations_are_all_missing_still_answers():
    table = trips([None, None])
    profile = profile_split(table, WINDOW[:1])
    assert profile.duration_minutes_quantiles == {"p1": None, "p50": None, "p99": None}
    assert profile.rows_outside_month == 2 and profile.nulls[PICKUP] == 2


def test_check_month_refuses_an_empty_file_and_one_mostly_of_another_month():
    check_month(trips(["2023-02-01", "2023-02-02", "2009-01-01"]), WINDOW[1], "f.parquet")
    with pytest.raises(PipelineError, match="has no rows"):
        check_month(trips([]), WINDOW[1], "f.parquet")
    with pytest.raises(PipelineError, match="67% of the pickups in f.parquet are not in 2023-02"):
        check_month(trips(["2023-02-01", "2023-03-02", "2023-03-03"]), WINDOW[1], "f.parquet")
