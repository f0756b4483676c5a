"""Target, filtering and the two feature encodings (pure: pandas/numpy in, pandas/numpy out).

Shared by featurize (fit and write matrices), hpo and train_best (read matrices) and the
registered model (transform raw records at prediction time), so training and serving use one
code path.
"""

from __future__ import annotations

import math
import pickle
import zipfile
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias

import numpy as np
import pandas as pd
import scipy.sparse as sp

from steps.contracts import (
    DISTANCE,
    DO,
    DROPOFF,
    MODEL_INPUT_COLUMNS,
    PICKUP,
    PU,
    TARGET,
    ZONE_IDS,
)
from steps.errors import PipelineError

MAX_DISTANCE = 100.0  # miles; longer TLC trip records are meter errors
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


class Preprocessor(Protocol):
    """Turns raw trip records (model input columns) into an XGBoost-ready matrix."""

    encoding: str

    def fit(self, trips: pd.DataFrame) -> Preprocessor: ...

    def transform(self, trips: pd.DataFrame) -> Matrix: ...


class CategoricalPreprocessor:
    """Location IDs as XGBoost native categoricals plus the distance: 3 dense columns."""

    encoding = "categorical"

    def fit(self, trips: pd.DataFrame) -> CategoricalPreprocessor:
        return self  # the zone set is fixed; nothing to learn

    def transform(self, trips: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                PU: zone_codes(trips[PU]),
                DO: zone_codes(trips[DO]),
                DISTANCE: clean_distance(trips[DISTANCE]),
            }
        )


class OneHotPreprocessor:
    """The course's encoding: a 'PU_DO' pair string one-hot encoded by a DictVectorizer."""

    encoding = "onehot"

    def __init__(self) -> None:
        # Imported here: scikit-learn takes seconds to import and only this encoding needs it.
        from sklearn.feature_extraction import DictVectorizer

        self.vectorizer = DictVectorizer()

    @staticmethod
    def _records(trips: pd.DataFrame) -> list[dict[Hashable, object]]:
        pu = pd.to_numeric(trips[PU], errors="coerce").astype("Int64").astype(str)
        do = pd.to_numeric(trips[DO], errors="coerce").astype("Int64").astype(str)
        frame = pd.DataFrame(
            {
                "PU_DO": pu + "_" + do,
                DISTANCE: clean_distance(trips[DISTANCE]),
            }
        )
        return frame.to_dict(orient="records")

    def fit(self, trips: pd.DataFrame) -> OneHotPreprocessor:
        self.vectorizer.fit(self._records(trips))
        return self

    def transform(self, trips: pd.DataFrame) -> sp.csr_matrix:
        return sp.csr_matrix(self.vectorizer.transform(self._records(trips)))


def make_preprocessor(encoding: str) -> Preprocessor:
    """A fresh, unfitted preprocessor for `encoding`."""
    if encoding == "categorical":
        return CategoricalPreprocessor()
    if encoding == "onehot":
        return OneHotPreprocessor()
    raise PipelineError(f"encoding must be categorical or onehot, got {encoding!r}")


def matrix_columns(preprocessor: Preprocessor) -> list[str]:
    """For each column of the preprocessor's matrix, the input it encodes: PULocationID,
    DOLocationID, trip_distance, or for the one-hot encoding the PU_DO pair."""
    if isinstance(preprocessor, OneHotPreprocessor):
        names = preprocessor.vectorizer.get_feature_names_out()
        return [str(name).split("=", 1)[0] for name in names]
    return list(MODEL_INPUT_COLUMNS)


def model_input(records: pd.DataFrame) -> pd.DataFrame:
    """Validate raw records for the model: the three input columns must exist and be numeric.

    Extra columns (a full TLC row) are ignored. Unknown or missing location IDs and missing
    distances are allowed: XGBoost treats them as missing values. A column that is present
    but not numeric is refused, since guessing would silently predict garbage.
    """
    missing = [c for c in MODEL_INPUT_COLUMNS if c not in records.columns]
    if missing:
        raise ValueError(
            f"input records lack column(s) {', '.join(missing)}; the model needs "
            f"{', '.join(MODEL_INPUT_COLUMNS)} for each trip"
        )
    out = {}
    for column in MODEL_INPUT_COLUMNS:
        values = pd.to_numeric(records[column], errors="coerce")
        bad = values.isna() & records[column].notna()
        if bad.any():
            example = records[column][bad].iloc[0]
            raise ValueError(f"column {column} must be numeric, got {example!r}")
        out[column] = values.astype("float64")
    return pd.DataFrame(out, index=records.index)


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


def save_matrix(matrix: FeatureMatrix, path: Path) -> None:
    """Write a matrix in the format its file name says, byte for byte the same for the same
    matrix (its digest is featurize's reuse key: see steps/reuse.py)."""
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
        return FeatureMatrix(CategoricalPreprocessor().transform(frame), frame[TARGET].to_numpy())
    with np.load(path) as npz:
        X = sp.csr_matrix((npz["data"], npz["indices"], npz["indptr"]), shape=tuple(npz["shape"]))
        return FeatureMatrix(X, npz["y"])


def save_preprocessor(preprocessor: Preprocessor, path: Path) -> None:
    """Pickle a fitted preprocessor (its class is importable from steps.features)."""
    path.write_bytes(pickle.dumps(preprocessor, protocol=pickle.HIGHEST_PROTOCOL))


def load_preprocessor(path: Path) -> Preprocessor:
    """Read a preprocessor written by save_preprocessor."""
    preprocessor: Preprocessor = pickle.loads(path.read_bytes())
    return preprocessor
