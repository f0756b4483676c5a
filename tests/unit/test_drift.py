"""Drift against the reference profile a model carries (pure: model/drift.py), on real trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from taxi_duration.core.contracts import DISTANCE, PICKUP, PU
from taxi_duration.data.tlc import read_trips
from taxi_duration.model.drift import (
    DEGRADED,
    DRIFT,
    OK,
    Profile,
    distance_sample,
    measure,
    psi,
    reference_profile,
    status_without_profile,
)
from taxi_duration.model.features import clean_distance, filter_trips
from tests.conftest import DATA_DIR


def month(name: str) -> pd.DataFrame:
    kept, _ = filter_trips(read_trips(DATA_DIR / f"green_tripdata_{name}.parquet"), 1, 60)
    return kept


def batches(trips: pd.DataFrame, rows: int):
    """What train_best hands reference_profile: a reader of the trips, a batch at a time."""
    return lambda: (trips.iloc[start : start + rows] for start in range(0, len(trips), rows))


PREDICTIONS = np.random.default_rng(0).gamma(3.0, 5.0, 3000)


@pytest.fixture(scope="module")
def profile() -> Profile:
    training = month("2021-01")
    return reference_profile(batches(training, len(training)), PREDICTIONS, "time", test_rmse=6.5)


def test_psi_is_zero_for_the_same_shares_and_grows_with_a_shift():
    assert psi([0.25] * 4, np.array([10, 10, 10, 10])) == pytest.approx(0.0)
    small = psi([0.25] * 4, np.array([11, 10, 10, 9]))
    large = psi([0.25] * 4, np.array([40, 0, 0, 0]))  # an empty bin: floored, not infinite
    assert 0 < small < 0.01 < 0.25 < large < np.inf


def test_the_profile_holds_deciles_and_shares_and_survives_json(profile):
    assert len(profile.distance_edges) == 9 and profile.distance_edges == sorted(
        profile.distance_edges
    )
    assert len(profile.shares["distance"]) == 11  # 10 decile bins and the missing distances
    assert sum(profile.shares["pickup_zone"]) == pytest.approx(1.0)
    assert len(profile.shares["pickup_hour"]) == 24 and len(profile.shares["pickup_weekday"]) == 7
    assert profile.shares["prediction"] == pytest.approx([0.1] * 10, abs=0.002)
    assert Profile.from_dict(profile.to_dict()) == profile


def test_the_training_month_itself_shows_no_drift(profile):
    training = month("2021-01")
    counts = profile.count(training, None)
    found = measure(profile, counts, rmse=6.5)
    assert found.status == OK and found.reasons == []
    assert max(found.psi.values()) < 1e-9


def test_counts_of_batches_add_up_to_the_month(profile):
    trips = month("2021-02")
    whole = profile.count(trips, None)
    halves = profile.count(trips.iloc[:1500], None) + profile.count(trips.iloc[1500:], None)
    assert whole.rows == halves.rows == len(trips)
    np.testing.assert_array_equal(whole.distance, halves.distance)
    np.testing.assert_array_equal(whole.pickup_zone, halves.pickup_zone)


def test_longer_trips_are_drift_and_a_worse_error_is_degraded(profile):
    trips = month("2021-02")
    longer = trips.assign(**{DISTANCE: trips[DISTANCE] * 3})
    drifted = measure(profile, profile.count(longer, None), rmse=6.6)
    assert drifted.status == DRIFT and drifted.psi["distance"] >= 0.25
    assert any(reason.startswith("distance PSI") for reason in drifted.reasons)
    worse = measure(profile, profile.count(trips, None), rmse=7.5, tolerance=0.1)
    assert worse.status == DEGRADED
    assert worse.reasons[0] == "RMSE 7.500 is 15% above its test RMSE 6.500 (tolerance 10%)"


def test_unknown_zones_and_missing_distances_are_counted(profile):
    trips = month("2021-02").head(100)
    odd = trips.assign(**{PU: [999] * 50 + list(trips[PU][50:]), DISTANCE: [-1.0] * 100})
    found = measure(profile, profile.count(odd, None), rmse=None)
    assert found.missing_distance_share == 1.0
    assert found.unknown_zone_share >= 50 / 200


def test_a_course_model_is_not_measured_on_the_time_of_day(profile):
    course = Profile.from_dict({**profile.to_dict(), "features": "course"})
    trips = month("2021-02")
    night = trips.assign(**{PICKUP: trips[PICKUP].dt.normalize()})  # every trip at midnight
    assert "pickup_hour" not in measure(course, course.count(night, None), None).psi
    assert measure(profile, profile.count(night, None), None).status == DRIFT


def test_a_model_without_a_profile_gets_a_status_from_its_error_alone():
    assert status_without_profile(7.5, 6.5, 0.1) == DEGRADED
    assert status_without_profile(6.6, 6.5, 0.1) == OK
    assert status_without_profile(None, 6.5, 0.1) == "unknown"


def test_a_profile_read_in_batches_is_the_profile_of_the_whole_month(profile):
    training = month("2021-01")
    for rows in (1000, 777, len(training) - 1):
        found = reference_profile(batches(training, rows), PREDICTIONS, "time", test_rmse=6.5)
        assert found == profile
    assert profile.training_rows == len(training)
    expected = np.quantile(
        clean_distance(training[DISTANCE]).dropna(), [q / 10 for q in range(1, 10)]
    )
    assert profile.distance_edges == pytest.approx(sorted(set(expected)))


def test_deciles_from_a_sample_are_close_and_every_trip_is_still_counted(profile):
    training = month("2021-01")
    sampled = reference_profile(
        batches(training, 500), PREDICTIONS, "time", test_rmse=6.5, sample_rows=len(training) // 3
    )
    assert sampled.training_rows == len(training)
    assert sampled.distance_edges != profile.distance_edges  # a sample, not the month
    assert sampled.distance_edges == pytest.approx(profile.distance_edges, rel=0.1)
    for name in ("pickup_zone", "dropoff_zone", "pickup_hour", "pickup_weekday", "prediction"):
        assert sampled.shares[name] == profile.shares[name]  # counted on every trip, exactly


def test_the_distance_sample_is_seeded_uniform_and_the_same_whatever_the_batches():
    trips = month("2021-01")
    known = clean_distance(trips[DISTANCE]).dropna().to_numpy()
    rows = len(trips) // 4
    drawn = distance_sample(batches(trips, len(trips))(), rows, seed=3)
    assert len(drawn) == rows and np.isin(drawn, known).all()
    for size in (100, 999, 2048):
        np.testing.assert_array_equal(
            np.sort(distance_sample(batches(trips, size)(), rows, 3)), np.sort(drawn)
        )
    assert not np.array_equal(
        np.sort(distance_sample(batches(trips, 100)(), rows, 4)), np.sort(drawn)
    )
    assert np.median(drawn) == pytest.approx(np.median(known), rel=0.1)
    everything = distance_sample(batches(trips, 100)(), len(trips) * 2, seed=3)
    np.testing.assert_array_equal(np.sort(everything), np.sort(known))
