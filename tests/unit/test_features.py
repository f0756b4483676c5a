import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.feature_extraction import DictVectorizer

from taxi_duration.core.contracts import (
    DISTANCE,
    DO,
    DROPOFF,
    PICKUP,
    PICKUP_HOUR,
    PICKUP_WEEKDAY,
    PU,
    TARGET,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.model.features import (
    CategoricalPreprocessor,
    FeatureMatrix,
    OneHotPreprocessor,
    filter_trips,
    load_matrix,
    make_preprocessor,
    matrix_columns,
    model_input,
    save_matrix,
    time_of_day,
    with_duration,
    zone_codes,
)


def trips(minutes, pu=None, do=None, distance=None) -> pd.DataFrame:
    n = len(minutes)
    pickup = pd.Series(pd.Timestamp("2021-01-05 08:00"), index=range(n))
    return pd.DataFrame(
        {
            PICKUP: pickup,
            DROPOFF: pickup + pd.to_timedelta(minutes, unit="min"),
            PU: pu if pu is not None else [74] * n,
            DO: do if do is not None else [75] * n,
            DISTANCE: distance if distance is not None else [1.5] * n,
        }
    )


def test_with_duration_is_minutes_and_leaves_input_untouched():
    frame = trips([0.5, 12.25])
    before = frame.copy()
    out = with_duration(frame)
    assert out[TARGET].tolist() == [0.5, 12.25]
    pd.testing.assert_frame_equal(frame, before)


def test_filter_trips_keeps_inclusive_range_and_counts_drops():
    frame = trips([0.5, 1.0, 30.0, 60.0, 61.0, -3.0])
    kept, stats = filter_trips(frame, 1, 60)
    assert kept[TARGET].tolist() == [1.0, 30.0, 60.0]
    assert list(kept.columns) == [PICKUP, PU, DO, DISTANCE, TARGET]
    assert (stats.rows_in, stats.rows_kept, stats.dropped_duration) == (6, 3, 3)
    assert stats.rows_dropped == 3


def test_filter_trips_keeps_rows_with_bad_features_and_counts_them():
    frame = trips(
        [10, 10, 10, 10, 10],
        pu=[1.0, np.nan, 3.0, 999, 4],
        distance=[1.0, 2.0, -3.0, 1.0, 50_000.0],
    )
    kept, stats = filter_trips(frame, 1, 60)
    assert len(kept) == 5
    assert stats.unknown_zone == 2  # null and 999
    assert stats.invalid_distance == 2  # negative and 50,000 miles


def test_invalid_distances_become_missing_for_the_model():
    frame = pd.DataFrame({PU: [1, 2, 3, 4], DO: [1, 2, 3, 4], DISTANCE: [2.5, -1, 250.0, None]})
    for encoding in ("categorical", "onehot"):
        matrix = make_preprocessor(encoding, "course").fit(frame).transform(frame)
        distance = (
            matrix[DISTANCE].to_numpy() if encoding == "categorical" else matrix.toarray()[:, -1]
        )
        assert distance[0] == 2.5
        assert np.isnan(distance[1:]).all()


def test_zone_codes_fix_the_category_set_and_mark_unknown_zones_missing():
    codes = zone_codes(pd.Series([1, 265, 0, 266, 132.0, np.nan, 7.5]))
    assert list(codes.categories) == list(range(1, 266))
    assert codes[0] == 1 and codes[1] == 265 and codes[4] == 132
    assert pd.isna(codes[2]) and pd.isna(codes[3]) and pd.isna(codes[5]) and pd.isna(codes[6])


def test_categorical_preprocessor_gives_same_codes_whatever_zones_a_month_has():
    a = CategoricalPreprocessor().transform(pd.DataFrame({PU: [10], DO: [20], DISTANCE: [1.0]}))
    b = CategoricalPreprocessor().transform(
        pd.DataFrame({PU: [200, 10], DO: [5, 20], DISTANCE: [2.0, 1.0]})
    )
    assert a[PU].cat.codes[0] == b[PU].cat.codes[1]
    assert list(a.dtypes.astype(str)) == ["category", "category", "float64"]


def test_onehot_matches_the_course_dictvectorizer():
    train = pd.DataFrame({PU: [74, 74, 41], DO: [75, 42, 74], DISTANCE: [1.0, 2.5, 0.7]})
    ours = OneHotPreprocessor().fit(train)
    course = DictVectorizer().fit(
        [{"PU_DO": f"{p}_{d}", DISTANCE: t} for p, d, t in train.itertuples(index=False)]
    )
    assert list(ours.vectorizer.feature_names_) == list(course.feature_names_)
    np.testing.assert_array_equal(
        ours.transform(train).toarray(),
        course.transform(
            [{"PU_DO": f"{p}_{d}", DISTANCE: t} for p, d, t in train.itertuples(index=False)]
        ).toarray(),
    )


def test_onehot_ignores_pairs_unseen_in_training():
    enc = OneHotPreprocessor().fit(pd.DataFrame({PU: [1], DO: [2], DISTANCE: [1.0]}))
    row = enc.transform(pd.DataFrame({PU: [9], DO: [9], DISTANCE: [3.0]})).toarray()
    assert row.sum() == 3.0  # only trip_distance is set


def test_make_preprocessor_refuses_unknown_encoding():
    made = make_preprocessor("categorical", "time")
    assert (made.encoding, made.features) == ("categorical", "time")
    with pytest.raises(PipelineError):
        make_preprocessor("hashing", "time")


def test_model_input_keeps_the_three_columns_and_ignores_extra_ones():
    records = pd.DataFrame({PU: [74], DO: [75], DISTANCE: [2], "fare_amount": [9.5]})
    out = model_input(records)
    assert list(out.columns) == [PU, DO, DISTANCE]
    assert out.dtypes.tolist() == [np.float64] * 3


def test_model_input_names_missing_columns():
    with pytest.raises(ValueError, match="lack column.*DOLocationID"):
        model_input(pd.DataFrame({PU: [1], DISTANCE: [1.0]}))


def test_model_input_refuses_non_numeric_values():
    with pytest.raises(ValueError, match="trip_distance must be numeric"):
        model_input(pd.DataFrame({PU: [1], DO: [2], DISTANCE: ["far"]}))


@pytest.mark.parametrize("encoding", ["categorical", "onehot"])
def test_matrices_round_trip_through_disk(tmp_path, encoding):
    frame = pd.DataFrame(
        {
            PICKUP: pd.to_datetime(["2021-03-01 08:15", "2021-03-06 23:50", "2021-03-07 00:05"]),
            PU: [74, 41, 74],
            DO: [75, 74, 42],
            DISTANCE: [1.0, 2.0, 3.0],
        }
    )
    enc = make_preprocessor(encoding, "time").fit(frame)
    matrix = FeatureMatrix(enc.transform(frame), np.array([5.0, 9.0, 14.0]))
    path = tmp_path / ("m.parquet" if encoding == "categorical" else "m.npz")
    save_matrix(matrix, path)
    loaded = load_matrix(path)
    np.testing.assert_array_equal(loaded.y, matrix.y)
    assert loaded.X.shape == matrix.X.shape
    if encoding == "categorical":
        pd.testing.assert_frame_equal(loaded.X, matrix.X)
    else:
        np.testing.assert_array_equal(loaded.X.toarray(), matrix.X.toarray())


# --- the pickup time (features=time) -----------------------------------------------------------

TIMED = pd.DataFrame(
    {
        PICKUP: pd.to_datetime(["2021-03-01 08:30", "2021-03-06 23:45", "2021-03-07 00:06"]),
        PU: [74, 41, 74],
        DO: [75, 74, 42],
        DISTANCE: [1.0, 2.0, 3.0],
    }
)


def test_time_features_are_the_hour_with_minutes_and_the_weekday():
    out = time_of_day(TIMED[PICKUP])
    assert out[PICKUP_HOUR].tolist() == [8.5, 23.75, 0.1]
    assert out[PICKUP_WEEKDAY].tolist() == [0.0, 5.0, 6.0]  # Monday, Saturday, Sunday


@pytest.mark.parametrize("encoding", ["categorical", "onehot"])
def test_a_time_preprocessor_adds_the_two_columns_a_course_one_leaves_out(encoding):
    course = make_preprocessor(encoding, "course").fit(TIMED)
    timed = make_preprocessor(encoding, "time").fit(TIMED)
    assert timed.transform(TIMED).shape[1] == course.transform(TIMED).shape[1] + 2
    assert matrix_columns(timed)[-2:] == [PICKUP_HOUR, PICKUP_WEEKDAY] or encoding == "onehot"
    assert set(matrix_columns(timed)) - set(matrix_columns(course)) == {PICKUP_HOUR, PICKUP_WEEKDAY}


def test_a_preprocessor_pickled_before_feature_sets_reads_zones_and_distance():
    """Models registered before the pickup-time features pickled preprocessors without a
    `features` attribute: unpickled, they stay course models."""
    old = CategoricalPreprocessor()
    del old.__dict__["features"]  # what an instance pickled by the earlier class holds
    restored = pickle.loads(pickle.dumps(old))
    assert restored.features == "course"
    assert list(restored.transform(TIMED).columns) == [PU, DO, DISTANCE]


@pytest.mark.parametrize(
    "column", ["lpep_pickup_datetime", "tpep_pickup_datetime", "pickup_datetime"]
)
def test_model_input_takes_the_pickup_time_under_each_tlc_name(column):
    records = TIMED.rename(columns={PICKUP: column})
    out = model_input(records, "time")
    assert list(out.columns) == [PICKUP, PU, DO, DISTANCE]
    pd.testing.assert_series_equal(out[PICKUP], TIMED[PICKUP], check_names=False)


def test_model_input_reads_iso_strings_as_json_and_csv_bring_them():
    records = TIMED.assign(
        **{PICKUP: ["2021-03-01T08:30:00", "2021-03-06 23:45:00", "2021-03-07T00:06"]}
    )
    out = model_input(records, "time")
    assert out[PICKUP].tolist() == TIMED[PICKUP].tolist()


def test_model_input_reads_a_time_with_an_offset_as_new_york_wall_clock_time():
    records = TIMED.head(1).assign(**{PICKUP: ["2021-03-01T13:30:00Z"]})  # 08:30 in New York
    assert model_input(records, "time")[PICKUP].iloc[0] == pd.Timestamp("2021-03-01 08:30")
    aware = TIMED.head(1).assign(**{PICKUP: TIMED[PICKUP].head(1).dt.tz_localize("UTC")})
    assert model_input(aware, "time")[PICKUP].iloc[0] == pd.Timestamp("2021-03-01 03:30")
    mixed = TIMED.head(2).assign(**{PICKUP: ["2021-03-01T13:30:00Z", "2021-03-01T08:30:00"]})
    assert model_input(mixed, "time")[PICKUP].tolist() == [pd.Timestamp("2021-03-01 08:30")] * 2


@pytest.mark.parametrize(
    ("pickup", "message"),
    [
        (None, "lack a pickup time; this model needs one of lpep_pickup_datetime"),
        (["2021-03-01T08:30", "yesterday", "2021-03-07T00:06"], "record 1 is not a pickup"),
        (["2021-03-01T08:30", None, "2021-03-07T00:06"], "column pickup_datetime of record 1"),
        ([1614587400000, 1614587400000, 1614587400000], "got the number 1614587400000"),
    ],
)
def test_model_input_refuses_a_record_without_a_usable_pickup_time(pickup, message):
    records = TIMED.drop(columns=PICKUP) if pickup is None else TIMED.assign(**{PICKUP: pickup})
    with pytest.raises(ValueError, match=message):
        model_input(records, "time")


def test_a_course_model_needs_no_pickup_time():
    out = model_input(TIMED.drop(columns=PICKUP), "course")
    assert list(out.columns) == [PU, DO, DISTANCE]
