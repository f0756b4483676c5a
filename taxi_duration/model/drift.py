"""Drift: how far a month's trips and predictions have moved from what the model was trained on
(pure: frames and arrays in, numbers out).

A month can drift before its error shows, and at serving time there are no actual durations at
all. So `train_best` writes a small reference profile once, with the model (the training trips'
distance deciles, zone, hour and weekday mix, and the model's predictions on its own test month),
and `predict` counts each month into the same bins: monitoring a month never re-reads the
training data. Each input is compared with the population stability index (PSI), the common
measure for this: below 0.1 no shift worth a look, 0.1 to 0.25 a moderate one, above 0.25 a
significant one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from taxi_duration.core.contracts import DISTANCE, DO, PICKUP, PU, TIME_FEATURES, ZONE_IDS
from taxi_duration.model.features import clean_distance, time_of_day, zone_codes

DECILES = tuple(q / 10 for q in range(1, 10))
# A share of 0 would make the PSI infinite: both sides are floored at this (common practice).
SHARE_FLOOR = 1e-4
ZONES = len(ZONE_IDS) + 1  # bin 0: unknown or missing zone; bin z: zone z
# What status a month gets (predict's parameters drift_psi and tolerance default to these).
DRIFT_PSI = 0.25  # a significant shift: the month is "drift"
WATCH_PSI = 0.10  # a moderate one: shown, not acted on
TOLERANCE = 0.10  # RMSE more than 10% above the model's own test RMSE: "degraded"
OK, DRIFT, DEGRADED, UNKNOWN = "ok", "drift", "degraded", "unknown"
STATUS_CODES = {OK: 0, DRIFT: 1, DEGRADED: 2, UNKNOWN: -1}
# The inputs compared, in the order tables show them; hour and weekday for time models only.
INPUTS = ("distance", "pickup_zone", "dropoff_zone", "pickup_hour", "pickup_weekday")
BINNED = (*INPUTS, "prediction")
# The trip columns counted into a profile's bins (what a reader of trips needs to load).
COUNTED_COLUMNS = (PICKUP, PU, DO, DISTANCE)
# The training distances' deciles come from a seeded sample of at most this many trips: exact for
# any month up to a million trips, and bounded memory for a window of many.
DISTANCE_SAMPLE_ROWS = 1_000_000


@dataclass
class Counts:
    """Trips counted into a profile's bins; counts of batches add up to the month's."""

    distance: np.ndarray  # decile bins of the reference, then missing or invalid distance
    pickup_zone: np.ndarray
    dropoff_zone: np.ndarray
    pickup_hour: np.ndarray
    pickup_weekday: np.ndarray
    prediction: np.ndarray  # decile bins of the reference's predictions
    rows: int = 0

    @classmethod
    def empty(cls, distance_edges: int, prediction_edges: int) -> Counts:
        return cls(
            np.zeros(distance_edges + 2),
            np.zeros(ZONES),
            np.zeros(ZONES),
            np.zeros(24),
            np.zeros(7),
            np.zeros(prediction_edges + 1),
        )

    def __add__(self, other: Counts) -> Counts:
        summed = {name: getattr(self, name) + getattr(other, name) for name in BINNED}
        return Counts(**summed, rows=self.rows + other.rows)


def count(
    trips: pd.DataFrame,
    predictions: np.ndarray | None,
    distance_edges: list[float],
    prediction_edges: list[float],
) -> Counts:
    """Count trips (PICKUP, PU, DO, DISTANCE) and their predicted minutes into the bins."""
    miles = clean_distance(trips[DISTANCE]).to_numpy()
    known = ~np.isnan(miles)
    bins = np.searchsorted(distance_edges, np.nan_to_num(miles))
    distance = np.bincount(
        np.where(known, bins, len(distance_edges) + 1), minlength=len(distance_edges) + 2
    )
    zones = {
        column: np.bincount(zone_codes(trips[column]).codes + 1, minlength=ZONES)
        for column in (PU, DO)
    }
    times = time_of_day(trips[PICKUP]).dropna()
    hour = np.bincount(times.iloc[:, 0].to_numpy().astype(int), minlength=24)
    weekday = np.bincount(times.iloc[:, 1].to_numpy().astype(int), minlength=7)
    predicted = prediction_counts(
        np.empty(0) if predictions is None else predictions, prediction_edges
    )
    return Counts(
        distance.astype("float64"),
        zones[PU].astype("float64"),
        zones[DO].astype("float64"),
        hour.astype("float64"),
        weekday.astype("float64"),
        predicted,
        rows=len(trips),
    )


@dataclass(frozen=True)
class Profile:
    """What the model was trained on, as shares of trips per bin, and its own test figures: the
    reference every later month is compared with (written once, with the model)."""

    features: str
    distance_edges: list[float]
    prediction_edges: list[float]
    shares: dict[str, list[float]] = field(default_factory=dict)
    test_rmse: float = math.nan
    training_rows: int = 0
    test_rows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Profile:
        return cls(**{name: record[name] for name in cls.__dataclass_fields__ if name in record})

    def empty_counts(self) -> Counts:
        return Counts.empty(len(self.distance_edges), len(self.prediction_edges))

    def count(self, trips: pd.DataFrame, predictions: np.ndarray | None) -> Counts:
        return count(trips, predictions, self.distance_edges, self.prediction_edges)

    @property
    def compared(self) -> tuple[str, ...]:
        """The inputs this model's drift is measured on (the time of day only if it reads it)."""
        inputs = INPUTS if self.features == TIME_FEATURES else INPUTS[:3]
        return (*inputs, "prediction")


def shares(counts: np.ndarray) -> list[float]:
    total = float(np.sum(counts))
    return [float(c) / total for c in counts] if total else [0.0] * len(counts)


def reference_profile(
    training: Callable[[], Iterable[pd.DataFrame]],
    test_predictions: np.ndarray,
    features: str,
    test_rmse: float,
    *,
    sample_rows: int = DISTANCE_SAMPLE_ROWS,
    seed: int = 0,
) -> Profile:
    """The profile of the training trips and of the model's predictions on its test month.

    `training` gives the training trips (COUNTED_COLUMNS) as batches, each time it is called:
    the profile reads them twice, once for the distance deciles (from a seeded sample of at most
    `sample_rows` distances) and once to count every trip into the bins, so no more than a batch
    and the sample are in memory however many months the model was trained on."""
    distance_edges = _edges(distance_sample(training(), sample_rows, seed))
    prediction_edges = _edges(np.asarray(test_predictions, dtype="float64"))
    trained = Counts.empty(len(distance_edges), len(prediction_edges))
    for batch in training():
        trained += count(batch, None, distance_edges, prediction_edges)
    found = {name: shares(getattr(trained, name)) for name in INPUTS}
    found["prediction"] = shares(prediction_counts(test_predictions, prediction_edges))
    return Profile(
        features,
        distance_edges,
        prediction_edges,
        found,
        test_rmse,
        training_rows=trained.rows,
        test_rows=len(test_predictions),
    )


def distance_sample(batches: Iterable[pd.DataFrame], rows: int, seed: int) -> np.ndarray:
    """A uniform random sample of at most `rows` of the trips' usable distances, the same for a
    seed however the trips are cut into batches: each trip draws a random key, in order, and the
    `rows` trips with the smallest keys are kept (all of them when there are no more)."""
    rng = np.random.default_rng(seed)
    keys, kept = np.empty(0), np.empty(0)
    for batch in batches:
        drawn = rng.random(len(batch))
        miles = clean_distance(batch[DISTANCE]).to_numpy(dtype="float64")
        known = ~np.isnan(miles)
        keys = np.concatenate([keys, drawn[known]])
        kept = np.concatenate([kept, miles[known]])
        if len(keys) > rows:
            smallest = np.argpartition(keys, rows)[:rows]
            keys, kept = keys[smallest], kept[smallest]
    return kept


def prediction_counts(predictions: np.ndarray, prediction_edges: list[float]) -> np.ndarray:
    """Predicted minutes counted into the decile bins of the reference's predictions."""
    values = np.asarray(predictions, dtype="float64")
    if not len(values):
        return np.zeros(len(prediction_edges) + 1)
    found = np.bincount(
        np.searchsorted(prediction_edges, values), minlength=len(prediction_edges) + 1
    )
    return found.astype("float64")


def _edges(values: np.ndarray) -> list[float]:
    """The inner decile edges (9 values, equal ones merged) of values."""
    if not len(values):
        return []
    return sorted({float(v) for v in np.quantile(values, DECILES)})


def psi(reference: list[float], current: np.ndarray) -> float:
    """The population stability index of the current counts against the reference shares:
    sum over bins of (current - reference) * ln(current / reference), shares floored at
    SHARE_FLOOR."""
    ref = np.maximum(np.asarray(reference, dtype="float64"), SHARE_FLOOR)
    cur = np.maximum(np.asarray(shares(current), dtype="float64"), SHARE_FLOOR)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


@dataclass(frozen=True)
class MonthDrift:
    """One month against the profile: the PSI of each input and of the predictions, the shares
    of trips with an unknown zone or no usable distance (then and now), and the status."""

    psi: dict[str, float]
    unknown_zone_share: float
    missing_distance_share: float
    status: str
    reasons: list[str]


def measure(
    profile: Profile,
    counts: Counts,
    rmse: float | None,
    drift_psi: float = DRIFT_PSI,
    tolerance: float = TOLERANCE,
) -> MonthDrift:
    """How the month drifted from the profile, and its status: `degraded` when its RMSE exceeds
    the model's own test RMSE by more than `tolerance` (a share: 0.1 is 10%), `drift` when an
    input or the predictions moved by a PSI of `drift_psi` or more, else `ok`."""
    measured = {
        name: psi(profile.shares[name], getattr(counts, name))
        for name in profile.compared
        if name in profile.shares and float(np.sum(getattr(counts, name))) > 0
    }
    unknown = (counts.pickup_zone[0] + counts.dropoff_zone[0]) / max(2 * counts.rows, 1)
    missing = counts.distance[-1] / max(counts.rows, 1)
    degraded = (
        rmse is not None and profile.test_rmse > 0 and rmse > profile.test_rmse * (1 + tolerance)
    )
    drifted = {name: value for name, value in measured.items() if value >= drift_psi}
    reasons = []
    if degraded:
        assert rmse is not None
        reasons.append(
            f"RMSE {rmse:.3f} is {rmse / profile.test_rmse - 1:.0%} above its test RMSE "
            f"{profile.test_rmse:.3f} (tolerance {tolerance:.0%})"
        )
    reasons += [f"{name} PSI {value:.2f} >= {drift_psi:g}" for name, value in drifted.items()]
    status = DEGRADED if degraded else DRIFT if drifted else OK
    return MonthDrift(measured, float(unknown), float(missing), status, reasons)


def status_without_profile(rmse: float | None, test_rmse: float | None, tolerance: float) -> str:
    """A model registered without a profile: its error can still say `degraded` or `ok`; with
    no actual durations either, the status is unknown."""
    if rmse is None or not test_rmse:
        return UNKNOWN
    return DEGRADED if rmse > test_rmse * (1 + tolerance) else OK
