"""The monthly loop's cores (pure): the window retrain trains on, its decision, what it says, the
newest month a folder holds, and what a backtest sums up."""

from __future__ import annotations

import shutil
from datetime import date

import pytest

from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import Month
from taxi_duration.data.tlc import availability, latest_month
from taxi_duration.pipeline.loop import (
    Monitored,
    Outcome,
    Replay,
    backtest_description,
    check_policies,
    check_policy,
    check_window,
    decide,
    retrain_description,
    window_ending,
)
from tests.conftest import DATA_DIR


def test_the_window_ends_at_the_month_and_tests_on_it():
    window = window_ending(Month(2021, 5), 1)
    assert window.params() == {
        "train_month": "2021-03",
        "val_month": "2021-04",
        "test_month": "2021-05",
    }
    wide = window_ending(Month(2022, 2), 3)
    assert wide.params() == {
        "train_month": "2021-10..2021-12",
        "val_month": "2022-01",
        "test_month": "2022-02",
    }
    assert [str(m) for m in wide.months] == ["2021-10", "2021-11", "2021-12", "2022-01", "2022-02"]


@pytest.mark.parametrize(
    ("policy", "status", "retrains"),
    [
        ("always", "ok", True),
        ("never", "degraded", False),
        ("on_drift", "ok", False),
        ("on_drift", "drift", True),
        ("on_drift", "degraded", True),
        ("on_drift", "unknown", False),
    ],
)
def test_the_policy_decides_from_the_months_status(policy, status, retrains):
    seen = Monitored("3", 6.1, status, "pickup_zone PSI 0.31 >= 0.25")
    decided, why = decide(policy, seen)
    assert decided is retrains
    assert policy in why and (status in why or policy != "on_drift")


def test_without_a_champion_every_policy_trains_one():
    assert decide("never", None) == (True, "there is no champion yet: train one")


def test_bad_loop_parameters_are_refused_in_one_line():
    with pytest.raises(PipelineError, match="policy must be always .* on_drift .* never"):
        check_policy("weekly")
    assert check_policies("always, on_drift,always") == ["always", "on_drift"]
    with pytest.raises(PipelineError, match="policies is empty"):
        check_policies(" , ")
    with pytest.raises(PipelineError, match="window must be at least 1"):
        check_window(0)


def test_the_retrain_description_says_what_happened_in_words():
    outcome = Outcome(
        "2021-05",
        "on_drift",
        Monitored("3", 7.27, "degraded", "RMSE 7.272 is 14% above its test RMSE 6.404"),
        True,
        "policy on_drift, and the month is degraded",
        challenger="4",
        challenger_rmse=6.93,
        champion_rmse_compared=7.27,
        verdict="test RMSE 6.9289 beats champion v3's 7.2719",
        champion_after="4",
    )
    text = retrain_description(outcome, "nyc-taxi-duration", window_ending(Month(2021, 5), 1))
    assert "Champion **v3** on **2021-05**: RMSE **7.270**, status **degraded**" in text
    assert "Decision: **retrain**: policy on_drift, and the month is degraded." in text
    assert "Trained on 2021-03, validated on 2021-04, tested on 2021-05" in text
    assert "challenger **v4**, test RMSE **6.930** against the champion's 7.270" in text
    assert text.rstrip().endswith("Champion now: **v4**.")
    assert outcome.tags()["decision"] == "retrain" and outcome.metrics()["retrained"] == 1


def test_a_backtest_sums_up_the_months_after_the_first():
    first = Outcome("2021-03", "always", None, True, "", "1", 6.4, champion_after="1")
    replay = Replay(["always", "on_drift"])
    replay.add("2021-03", 6.4, {"always": first, "on_drift": first})
    kept = Outcome("2021-04", "on_drift", Monitored("1", 6.8, "ok", ""), False, "")
    moved = Outcome("2021-04", "always", Monitored("1", 6.8, "ok", ""), True, "", "2", 6.5)
    replay.add("2021-04", 6.8, {"always": moved, "on_drift": kept})
    later = Outcome("2021-05", "always", Monitored("2", 6.9, "ok", ""), True, "", "3", 6.9)
    drifted = Outcome(
        "2021-05", "on_drift", Monitored("1", 7.3, "degraded", ""), True, "", "2", 6.9
    )
    replay.add("2021-05", 7.3, {"always": later, "on_drift": drifted})
    summary = replay.summary()
    assert summary["always"] == pytest.approx(
        {
            "mean_rmse": 6.85,
            "frozen_mean_rmse": 7.05,
            "saving": 0.2,
            "saving_share": (0 + 0.4 / 7.3) / 2,
            "retrains": 2,
            "months": 2,
        }
    )
    assert summary["on_drift"]["saving"] == pytest.approx(0.0)
    assert summary["on_drift"]["retrains"] == 1
    text = backtest_description(
        replay,
        [Month(2021, 3), Month(2021, 4), Month(2021, 5)],
        1,
        {"always": "a", "on_drift": "o"},
    )
    assert "| 2021-04 | 6.800 | 6.800 (ok) | 6.500 | 6.800 (ok) | – |" in text
    assert "| 2021-05 | 7.300 | 6.900 (ok) | 6.900 | 7.300 (degraded) | 6.900 |" in text
    assert (
        "- **always**: mean RMSE 6.850 against 7.050 for the frozen model (+0.200 minutes" in text
    )


def test_the_latest_month_of_a_folder_is_its_newest_file(tmp_path):
    assert latest_month(str(DATA_DIR), "green", date(2030, 1, 1)) == "2023-02"
    assert latest_month(str(DATA_DIR), "yellow", date(2030, 1, 1)) == "2024-03"
    with pytest.raises(PipelineError, match="there is no green_tripdata_YYYY-MM.parquet in"):
        latest_month(str(tmp_path), "green", date(2030, 1, 1))


def test_a_month_missing_from_a_folder_says_so_and_the_fix(tmp_path):
    shutil.copy(DATA_DIR / "green_tripdata_2021-01.parquet", tmp_path)
    assert availability(str(tmp_path), "green", "2021-01") is None
    assert availability(str(tmp_path), "green", "2021-02") == (
        f"green_tripdata_2021-02.parquet is not in {tmp_path}; put the month there or use the "
        "TLC URL as source"
    )
