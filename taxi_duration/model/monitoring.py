"""A model's quality month by month (pure: arrays and frames in, numbers and tables out).

TLC months always carry the truth, so `predict` is also the monitor: per month the rows, the
rows whose actual duration lies in the model's training filter (`rows_scored`, the rows the
model was trained to predict), and the RMSE, MAE and bias (mean of predicted minus actual
minutes) on those. RMSE alone can hide drift: when trips get shorter it falls even though the
model has started to under-predict every trip, which the bias shows. MLflow charts a metric
against its step; the month is the step, encoded YYYYMM (2021-04 -> 202104), which reads as the
month in the UI and sorts in time order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from taxi_duration.core.contracts import COURSE_FEATURES
from taxi_duration.core.params import Month
from taxi_duration.model.drift import BINNED, STATUS_CODES, UNKNOWN, MonthDrift

MODEL = "model"  # the role of model_uri
COMPARE_TO = "compare_to"  # the role of compare_to


@dataclass(frozen=True)
class ModelUsed:
    """A registered version predict scored with, resolved once at the start."""

    role: str  # MODEL or COMPARE_TO
    name: str
    version: str
    requested: str  # the URI as the user gave it (an alias moves; the version does not)
    column: str  # its column in the predictions files
    features: str = COURSE_FEATURES  # what it was trained with: time models read the pickup

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def metric_prefix(self) -> str:
        """'' for the model, 'compare_' for the one it is compared to (compare_rmse...)."""
        return "" if self.role == MODEL else "compare_"


def in_training_filter(
    duration: np.ndarray, min_duration: float, max_duration: float
) -> np.ndarray:
    """Rows whose actual minutes lie in [min_duration, max_duration], as featurize kept them for
    training (a missing duration is outside)."""
    with np.errstate(invalid="ignore"):
        return (duration >= min_duration) & (duration <= max_duration)


@dataclass(frozen=True)
class ErrorSums:
    """What RMSE, MAE and bias need, summed over some rows: sums of batches add up to the
    month's."""

    rows: int
    squared: float
    absolute: float
    signed: float

    @classmethod
    def of(
        cls, actual: np.ndarray, predicted: np.ndarray, min_duration: float, max_duration: float
    ) -> ErrorSums:
        """The sums over the rows inside the training filter."""
        keep = in_training_filter(np.asarray(actual, dtype="float64"), min_duration, max_duration)
        error = np.asarray(predicted, dtype="float64")[keep] - np.asarray(actual)[keep]
        return cls(
            int(keep.sum()),
            float(np.dot(error, error)),
            float(np.abs(error).sum()),
            float(error.sum()),
        )

    def __add__(self, other: ErrorSums) -> ErrorSums:
        return ErrorSums(
            self.rows + other.rows,
            self.squared + other.squared,
            self.absolute + other.absolute,
            self.signed + other.signed,
        )

    @property
    def rmse(self) -> float | None:
        return float(np.sqrt(self.squared / self.rows)) if self.rows else None

    @property
    def mae(self) -> float | None:
        return self.absolute / self.rows if self.rows else None

    @property
    def bias(self) -> float | None:
        """Mean of predicted minus actual minutes: below 0, the model under-predicts."""
        return self.signed / self.rows if self.rows else None


NO_ERRORS = ErrorSums(0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class MonthResult:
    """One scored month: its rows and, per prediction column, the errors on rows_scored; and
    for the model (not compare_to) its drift against the model's reference profile (None:
    the model has none) and the month's status (ok, drift, degraded)."""

    month: Month
    rows: int
    errors: dict[str, ErrorSums]
    drift: MonthDrift | None = None
    status: str = UNKNOWN


def month_step(month: Month) -> int:
    """The MLflow step a month's metrics are logged at: YYYYMM."""
    return month.year * 100 + month.month


def month_metrics(result: MonthResult, models: Sequence[ModelUsed]) -> dict[str, float]:
    """The metrics logged for one month: rows, rows_scored, then rmse, mae and bias per model
    (compare_rmse, compare_mae, compare_bias for compare_to). A month with no row in the filter
    (a file without dropoff times) has no error metrics, rather than made-up ones. Then the
    model's drift: psi_<input> for each input and the predictions, unknown_zone_share,
    missing_distance_share, and status_code (0 ok, 1 drift, 2 degraded, -1 unknown)."""
    metrics: dict[str, float] = {"rows": result.rows, "status_code": STATUS_CODES[result.status]}
    if result.drift is not None:
        metrics |= {f"psi_{name}": value for name, value in result.drift.psi.items()}
        metrics["unknown_zone_share"] = result.drift.unknown_zone_share
        metrics["missing_distance_share"] = result.drift.missing_distance_share
    for model in models:
        sums = result.errors[model.column]
        metrics["rows_scored"] = sums.rows  # the same rows for every model
        for name in ERROR_METRICS:
            value = getattr(sums, name)
            if value is not None:
                metrics[f"{model.metric_prefix}{name}"] = value
    return metrics


ERROR_METRICS = ("rmse", "mae", "bias")
TABLE_COLUMNS = ("month", "role", "model", "model_uri", "rows", "rows_scored", *ERROR_METRICS)


def metrics_table(results: Sequence[MonthResult], models: Sequence[ModelUsed]) -> pd.DataFrame:
    """One row per month and model, months in calendar order: the json/csv table and the chart's
    data."""
    one_name = len({model.name for model in models}) == 1
    labels = [f"v{model.version}" if one_name else model.label for model in models]
    if len(set(labels)) < len(labels):  # the same version twice: tell the two lines apart
        labels = [f"{label} ({model.role})" for label, model in zip(labels, models, strict=True)]
    rows = [
        {
            "month": str(result.month),
            "role": model.role,
            "model": label,
            "model_uri": model.uri,
            "rows": result.rows,
            "rows_scored": result.errors[model.column].rows,
            **{name: getattr(result.errors[model.column], name) for name in ERROR_METRICS},
        }
        for result in sorted(results, key=lambda r: r.month)
        for model, label in zip(models, labels, strict=True)
    ]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


DRIFT_COLUMNS = (
    "month",
    "status",
    *(f"psi_{name}" for name in BINNED),
    "unknown_zone_share",
    "missing_distance_share",
    "reasons",
)


def drift_table(results: Sequence[MonthResult]) -> pd.DataFrame:
    """One row per month: the model's status, the PSI of each input and of the predictions
    (missing where not measured), the shares of unknown zones and missing distances, and what
    made the status."""
    rows = []
    for result in sorted(results, key=lambda r: r.month):
        drift = result.drift
        rows.append(
            {
                "month": str(result.month),
                "status": result.status,
                **{f"psi_{name}": (drift.psi.get(name) if drift else None) for name in BINNED},
                "unknown_zone_share": drift.unknown_zone_share if drift else None,
                "missing_distance_share": drift.missing_distance_share if drift else None,
                "reasons": "; ".join(drift.reasons) if drift else "drift unavailable",
            }
        )
    return pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))


def wide(table: pd.DataFrame, drift: pd.DataFrame | None = None) -> pd.DataFrame:
    """Month, rows, rows_scored, then an RMSE and a bias column per model, and (with `drift`)
    the model's status and its largest PSI: the table a person reads."""
    counts = table.drop_duplicates("month").set_index("month")[["rows", "rows_scored"]]
    order = list(dict.fromkeys(table["model"]))
    columns: list[pd.DataFrame | pd.Series] = []
    for name in ("rmse", "bias"):
        pivot = table.pivot(index="month", columns="model", values=name)[order]
        columns.append(pivot.set_axis([f"{name} {label}" for label in order], axis=1))
    if drift is not None:
        found = drift.set_index("month")
        psis = found[[c for c in found.columns if c.startswith("psi_")]]
        columns.append(found["status"])
        columns.append(psis.astype("float64").max(axis=1, skipna=True).rename("max PSI"))
    return counts.join(columns).reset_index()


def markdown(table: pd.DataFrame, drift: pd.DataFrame | None = None) -> str:
    """`wide` as a markdown table (the run's description in the UI, the docs)."""
    wide_table = wide(table, drift)
    header = "| " + " | ".join(wide_table.columns) + " |"
    rule = "|" + "|".join("---" if c == "month" else "---:" for c in wide_table.columns) + "|"
    lines = [header, rule]
    for row in wide_table.itertuples(index=False):
        cells = ["–" if pd.isna(v) else f"{v:.3f}" if isinstance(v, float) else f"{v}" for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
