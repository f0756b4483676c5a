"""Target, filtering, the two feature sets and the two encodings (pure: pandas/numpy in,
pandas/numpy out).

Shared by featurize (fit and write matrices), hpo and train_best (read matrices) and the
registered model (transform raw records at prediction time), so training and serving use one
code path.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol, TypeAlias

import numpy as np
import pandas as pd
import scipy.sparse as sp

from taxi_duration.core.contracts import (
    COURSE_FEATURES,
    DISTANCE,
    DO,
    DROPOFF,
    MATRICES_DIR,
    MODEL_INPUT_COLUMNS,
    PICKUP,
    PICKUP_ALIASES,
    PICKUP_HOUR,
    PICKUP_WEEKDAY,
    PU,
    TARGET,
    TIME_FEATURES,
    TRIPS_DIR,
    ZONE_IDS,
    model_input_columns,
)
from taxi_duration.core.errors import PipelineError

MAX_DISTANCE = 100.0  # miles; longer TLC trip records are meter errors
# Raw records may give the pickup time with an offset (2021-03-01T08:15:00-05:00); the model
# learnt from TLC's wall-clock times in New York, so such a time is read in New York.
TLC_TIME_ZONE = "America/New_York"
ZONE_DTYPE = pd.CategoricalDtype(categories=list(ZONE_IDS))
Matrix: TypeAlias = "pd.DataFrame | sp.csr_matrix"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


@dataclass(frozen=True)
class FilterStats:
    """How many rows one split kept, and how many kept rows have a feature the model will see as
    missing (a zone outside 1..265, a distance that is null, negative or absurd)."""

    rows_in: int
    rows_kept: int
    dropped_duration: int
    unknown_zone: int
    invalid_distance: int

    @property
    def rows_dropped(self) -> int:
        return self.rows_in - self.rows_kept


def duration_minutes(trips: pd.DataFrame) -> pd.Series:
    """The target: dropoff minus pickup, in minutes."""
    return (trips[DROPOFF] - trips[PICKUP]).dt.total_seconds() / 60.0


def with_duration(trips: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of `trips` with the target: dropoff minus pickup, in minutes."""
    return trips.assign(**{TARGET: duration_minutes(trips)})


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The metric every step reports: root mean squared error of the durations, in minutes."""
    return math.sqrt(float(np.mean((np.asarray(y_true) - np.asarray(y_pred)) ** 2)))


def filter_trips(
    trips: pd.DataFrame, min_duration: float, max_duration: float
) -> tuple[pd.DataFrame, FilterStats]:
    """Keep trips whose duration lies in [min_duration, max_duration] (the course's rule).

    Features are not filtered: an unknown zone or an invalid distance becomes a missing value
    in the preprocessors, exactly as at prediction time, and is counted here.
    Returns the pickup time (for error breakdowns by hour), the model input columns and the
    target, and the counts. Only the kept rows of those columns are copied (a yellow-taxi month
    holds millions of rows).
    """
    minutes = duration_minutes(trips)
    keep = minutes.between(min_duration, max_duration)
    kept = trips.loc[keep, [PICKUP, *MODEL_INPUT_COLUMNS]].assign(**{TARGET: minutes[keep]})
    kept = kept.reset_index(drop=True)
    unknown_zone = zone_codes(kept[PU]).isna() | zone_codes(kept[DO]).isna()
    stats = FilterStats(
        rows_in=len(trips),
        rows_kept=int(keep.sum()),
        dropped_duration=int((~keep).sum()),
        unknown_zone=int(unknown_zone.sum()),
        invalid_distance=int(clean_distance(kept[DISTANCE]).isna().sum()),
    )
    return kept, stats


def keep_trips(
    raw: pd.DataFrame, split: str, min_duration: float, max_duration: float
) -> tuple[pd.DataFrame, FilterStats]:
    """Filter one split by duration; a split left with no rows is refused."""
    kept, stats = filter_trips(raw, min_duration, max_duration)
    if stats.rows_kept == 0:
        raise PipelineError(
            f"the {split} split has 0 of {stats.rows_in} rows left with duration in "
            f"[{min_duration}, {max_duration}] minutes; widen min_duration/max_duration "
            "or pick another month"
        )
    return kept, stats


def encode(trips: pd.DataFrame, preprocessor: Preprocessor) -> FeatureMatrix:
    """The split's feature matrix and target, with an already fitted preprocessor."""
    return FeatureMatrix(preprocessor.transform(trips), trips[TARGET].to_numpy())


def clean_distance(distance: pd.Series) -> pd.Series:
    """Trip distance in miles as float; null, negative or above MAX_DISTANCE becomes missing.

    TLC meters record some trips at tens of thousands of miles; a split on such values would
    be noise, so the model treats them like an unknown distance.
    """
    miles = pd.to_numeric(distance, errors="coerce").astype("float64")
    return miles.where(miles.between(0, MAX_DISTANCE))


def zone_codes(ids: pd.Series) -> pd.Categorical:
    """Location IDs as a categorical over the fixed zone set 1..265; anything else is missing.

    Fixing the categories (not inferring them from the data) keeps the codes identical in
    training and at prediction time, whatever zones a month happens to contain.
    """
    values = pd.to_numeric(ids, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    valid = np.isfinite(values) & (values >= ZONE_IDS[0]) & (values <= ZONE_IDS[-1])
    valid &= values == np.floor(np.where(np.isfinite(values), values, 0))
    codes = np.where(valid, np.nan_to_num(values).astype(np.int64) - ZONE_IDS[0], -1)
    return pd.Categorical.from_codes(codes, dtype=ZONE_DTYPE)


def time_of_day(pickup: pd.Series) -> pd.DataFrame:
    """What features=time knows of a pickup time: the hour with its minutes (08:30 -> 8.5) and
    the day of the week (Monday = 0), as floats (a missing time stays missing)."""
    times = pd.to_datetime(pickup)
    return pd.DataFrame(
        {
            PICKUP_HOUR: (times.dt.hour + times.dt.minute / 60).astype("float64"),
            PICKUP_WEEKDAY: times.dt.day_of_week.astype("float64"),
        },
        index=pickup.index,
    )


class Preprocessor(Protocol):
    """Turns raw trip records (model input columns) into an XGBoost-ready matrix."""

    encoding: str
    features: str

    def fit(self, trips: pd.DataFrame) -> Preprocessor: ...

    def transform(self, trips: pd.DataFrame) -> Matrix: ...


class CategoricalPreprocessor:
    """Location IDs as XGBoost native categoricals plus the distance (3 dense columns), and with
    features=time the pickup hour and weekday (5)."""

    encoding = "categorical"
    # A preprocessor pickled before the pickup-time features has no `features` of its own and
    # reads this one: it stays the zones-and-distance model it was trained as.
    features = COURSE_FEATURES

    def __init__(self, features: str = COURSE_FEATURES) -> None:
        self.features = features

    def fit(self, trips: pd.DataFrame) -> CategoricalPreprocessor:
        return self  # the zone set is fixed; nothing to learn

    def transform(self, trips: pd.DataFrame) -> pd.DataFrame:
        frame = pd.DataFrame(
            {
                PU: zone_codes(trips[PU]),
                DO: zone_codes(trips[DO]),
                DISTANCE: clean_distance(trips[DISTANCE]),
            },
            index=trips.index,
        )
        if self.features == TIME_FEATURES:
            frame = frame.join(time_of_day(trips[PICKUP]))
        return frame.reset_index(drop=True)


class OneHotPreprocessor:
    """The course's encoding: a 'PU_DO' pair string one-hot encoded by a DictVectorizer, plus
    the distance (and with features=time the pickup hour and weekday) as numbers."""

    encoding = "onehot"
    features = COURSE_FEATURES  # see CategoricalPreprocessor.features

    def __init__(self, features: str = COURSE_FEATURES) -> None:
        # Imported here: scikit-learn takes seconds to import and only this encoding needs it.
        from sklearn.feature_extraction import DictVectorizer

        self.features = features
        self.vectorizer = DictVectorizer()

    def _records(self, trips: pd.DataFrame) -> list[dict[Hashable, object]]:
        pu = pd.to_numeric(trips[PU], errors="coerce").astype("Int64").astype(str)
        do = pd.to_numeric(trips[DO], errors="coerce").astype("Int64").astype(str)
        frame = pd.DataFrame(
            {
                "PU_DO": pu + "_" + do,
                DISTANCE: clean_distance(trips[DISTANCE]),
            }
        )
        if self.features == TIME_FEATURES:
            frame = frame.join(time_of_day(trips[PICKUP]))
        return frame.to_dict(orient="records")

    def fit(self, trips: pd.DataFrame) -> OneHotPreprocessor:
        self.vectorizer.fit(self._records(trips))
        return self

    def transform(self, trips: pd.DataFrame) -> sp.csr_matrix:
        return sp.csr_matrix(self.vectorizer.transform(self._records(trips)))


def make_preprocessor(encoding: str, features: str) -> Preprocessor:
    """A fresh, unfitted preprocessor for `encoding` and `features`."""
    if encoding == "categorical":
        return CategoricalPreprocessor(features)
    if encoding == "onehot":
        return OneHotPreprocessor(features)
    raise PipelineError(f"encoding must be categorical or onehot, got {encoding!r}")


def matrix_columns(preprocessor: Preprocessor) -> list[str]:
    """For each column of the preprocessor's matrix, the input it encodes: PULocationID,
    DOLocationID, trip_distance, the pickup hour and weekday, or for the one-hot encoding's
    pair columns PU_DO."""
    if isinstance(preprocessor, OneHotPreprocessor):
        names = preprocessor.vectorizer.get_feature_names_out()
        return [str(name).split("=", 1)[0] for name in names]
    columns = list(MODEL_INPUT_COLUMNS)
    if preprocessor.features == TIME_FEATURES:
        columns += [PICKUP_HOUR, PICKUP_WEEKDAY]
    return columns


def model_input(records: pd.DataFrame, features: str = COURSE_FEATURES) -> pd.DataFrame:
    """Validate raw records for a model trained with `features`: the zones and the distance must
    exist and be numeric, and for features=time each record needs its pickup time.

    Extra columns (a full TLC row) are ignored. Unknown or missing location IDs and missing
    distances are allowed: XGBoost treats them as missing values. A column that is present
    but not numeric is refused, since guessing would silently predict garbage. Returns the
    columns model_input_columns(features) names, the pickup time under PICKUP.
    """
    missing = [c for c in MODEL_INPUT_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(
            f"input records lack column(s) {', '.join(missing)}; the model needs "
            f"{', '.join(model_input_columns(features))} for each trip"
        )
    out: dict[str, pd.Series] = {}
    if features == TIME_FEATURES:
        out[PICKUP] = pickup_times(records)
    for column in MODEL_INPUT_COLUMNS:
        values = pd.to_numeric(records[column], errors="coerce")
        bad = values.isna() & records[column].notna()
        if bad.any():
            example = records[column][bad].iloc[0]
            raise ValueError(f"column {column} must be numeric, got {example!r}")
        out[column] = values.astype("float64")
    return pd.DataFrame(out, index=records.index)


def pickup_column(columns: Iterable[Hashable]) -> str | None:
    """The column a record gives its pickup time in: the first of PICKUP_ALIASES present."""
    present = set(columns)
    return next((name for name in PICKUP_ALIASES if name in present), None)


def pickup_times(records: pd.DataFrame) -> pd.Series:
    """Each record's pickup time as a wall-clock time in New York (datetime64).

    Accepts datetimes (naive: as TLC records them; with a time zone: converted to New York) and
    ISO 8601 strings, as JSON and CSV requests carry them. A record without a usable time is
    refused in one line naming the column, since a guessed hour would predict garbage.
    """
    name = pickup_column(records.columns)
    if name is None:
        raise ValueError(
            f"input records lack a pickup time; this model needs one of "
            f"{', '.join(PICKUP_ALIASES)} for each trip (a datetime or an ISO 8601 string such "
            "as 2021-03-01T08:15:00)"
        )
    values = records[name]
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        example = next(iter(values.dropna().tolist()), None)
        raise ValueError(
            f"column {name} must hold datetimes or ISO 8601 strings such as "
            f"2021-03-01T08:15:00, got the number {example!r}"
        )
    times = _as_datetimes(values)
    bad = times.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise ValueError(
            f"column {name} of record {row} is not a pickup time ({values.iloc[row]!r}); give "
            "a datetime or an ISO 8601 string such as 2021-03-01T08:15:00"
        )
    return times


def _as_datetimes(values: pd.Series) -> pd.Series:
    """Datetimes or ISO 8601 strings as naive New York wall-clock times (NaT where unreadable)."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert(TLC_TIME_ZONE).dt.tz_localize(None)
    if pd.api.types.is_datetime64_dtype(values):
        return values
    try:
        times = pd.to_datetime(values, errors="coerce", format="ISO8601")
    except ValueError:  # offsets that differ, or some times with one and some without
        return pd.to_datetime(values.map(_wall_clock_time), errors="coerce")
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert(TLC_TIME_ZONE).dt.tz_localize(None)
    return times


def _wall_clock_time(value: object) -> pd.Timestamp | None:
    """One datetime or ISO 8601 string as a naive New York time (None where unreadable)."""
    if not isinstance(value, (str, datetime)):
        return None
    time = pd.to_datetime(value, errors="coerce", format="ISO8601")
    if pd.isna(time):
        return None
    return time.tz_convert(TLC_TIME_ZONE).tz_localize(None) if time.tzinfo else time


# --- feature matrices on disk -------------------------------------------------------------


@dataclass(frozen=True)
class FeatureMatrix:
    """One split's features and target."""

    X: Matrix
    y: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def columns(self) -> int:
        return int(self.X.shape[1])


def sample_rows(matrix: FeatureMatrix, rows: int, rng: np.random.Generator) -> FeatureMatrix:
    """A random sample of `rows` rows of `matrix`, kept in their original order; the whole
    matrix when `rows` is 0 or not smaller than it."""
    if rows == 0 or rows >= matrix.rows:
        return matrix
    picked = np.sort(rng.choice(matrix.rows, size=rows, replace=False))
    X = (
        matrix.X.iloc[picked].reset_index(drop=True)
        if isinstance(matrix.X, pd.DataFrame)
        else matrix.X[picked]
    )
    return FeatureMatrix(X, matrix.y[picked])


def save_matrix(matrix: FeatureMatrix, path: Path) -> None:
    """Write a matrix in the format its file name says, byte for byte the same for the same
    matrix (its digest is featurize's reuse key: see taxi_duration/core/reuse.py)."""
    if isinstance(matrix.X, pd.DataFrame):
        matrix.X.assign(**{TARGET: matrix.y}).to_parquet(path, index=False)
        return
    csr = sp.csr_matrix(matrix.X)
    arrays = {
        "data": csr.data,
        "indices": csr.indices,
        "indptr": csr.indptr,
        "shape": np.array(csr.shape),
        "y": matrix.y,
    }
    # np.savez stamps each member with the current time; a fixed one keeps the bytes stable.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def load_matrix(path: Path) -> FeatureMatrix:
    """Read a matrix written by save_matrix."""
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
        # Parquet keeps the zone values but not the fixed category set; re-apply it.
        X = frame.drop(columns=TARGET).assign(
            **{PU: zone_codes(frame[PU]), DO: zone_codes(frame[DO])}
        )
        return FeatureMatrix(X, frame[TARGET].to_numpy())
    with np.load(path) as npz:
        X = sp.csr_matrix((npz["data"], npz["indices"], npz["indptr"]), shape=tuple(npz["shape"]))
        return FeatureMatrix(X, npz["y"])


def matrix_file_columns(path: Path) -> list[str]:
    """The feature columns of a dense matrix file (its columns but the target), from the
    parquet footer alone."""
    import pyarrow.parquet as pq

    return [name for name in pq.read_schema(path).names if name != TARGET]


def save_preprocessor(preprocessor: Preprocessor, path: Path) -> None:
    """Pickle a fitted preprocessor (its class is importable from taxi_duration.model.features;
    preprocessors pickled before the library moved name steps.features, see steps/__init__.py)."""
    path.write_bytes(pickle.dumps(preprocessor, protocol=pickle.HIGHEST_PROTOCOL))


def load_preprocessor(path: Path) -> Preprocessor:
    """Read a preprocessor written by save_preprocessor."""
    preprocessor: Preprocessor = pickle.loads(path.read_bytes())
    return preprocessor


ENCODING_WORDS = {
    "categorical": "pickup and dropoff zones as XGBoost native categoricals, plus the distance",
    "onehot": "the pickup-dropoff zone pair one-hot encoded (the course's DictVectorizer), "
    "plus the distance",
}


TIME_WORDS = ", the pickup hour (with its minutes) and the day of the week"


def describe_features(
    features: str,
    encoding: str,
    n_features: int,
    stats: dict[str, FilterStats],
    min_duration: float,
    max_duration: float,
) -> str:
    """The run's description (markdown, shown on its page in the MLflow UI)."""
    rows = "\n".join(
        f"| {split} | {st.rows_in:,} | {st.rows_kept:,} | {st.dropped_duration:,} | "
        f"{st.unknown_zone:,} | {st.invalid_distance:,} |"
        for split, st in stats.items()
    )
    return f"""\
Kept the trips lasting **{min_duration:g} to {max_duration:g} minutes**; features \
**{features}**, encoding **{encoding}**: {ENCODING_WORDS.get(encoding, encoding)}\
{TIME_WORDS if features == TIME_FEATURES else ""} ({n_features:,} features, fitted on the \
training split only).

| split | trips in | kept | dropped (duration) | kept, unknown zone | kept, invalid distance |
|---|---|---|---|---|---|
{rows}

Unknown zones and invalid distances stay in: the model sees them as missing, as it will when \
serving. Matrices: `{MATRICES_DIR}/`; kept trips: `{TRIPS_DIR}/`.
"""
