"""The months a training run reads (pure apart from reading the files): fetched and checked before
any is read, read and stacked into the train / validation / test splits, each profiled."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from taxi_duration.core.contracts import (
    DISTANCE,
    DISTRIBUTIONS_PLOT,
    DO,
    DROPOFF,
    PICKUP,
    PROFILE_FILE,
    PU,
    RAW_DIR,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import Month, format_month_spec
from taxi_duration.data.tlc import fetch_month, month_location, read_trips_table

# Above this share of pickups outside the named month, the file is the wrong month.
MAX_OUTSIDE_SHARE = 0.5


@dataclass(frozen=True)
class MonthFile:
    """One TLC month file: which split it feeds, where it lives, its local copy."""

    split: str
    month: Month
    location: str
    path: Path


@dataclass(frozen=True)
class SplitProfile:
    """Summary statistics of one split: the profile artifact and a quick sanity check."""

    month: str
    rows: int
    rows_outside_month: int
    nulls: dict[str, int]
    pickup_min: str
    pickup_max: str
    zones_seen: int
    duration_minutes_quantiles: dict[str, float | None]
    trip_distance_quantiles: dict[str, float | None]


def profile_split(trips: pa.Table, months: list[Month]) -> SplitProfile:
    """Profile one split (one month, or a window of them); pickups outside its months (TLC has
    them) are counted, not dropped. Computed on the Arrow table, without a pandas copy."""
    pickup = trips[PICKUP]
    micros = pc.subtract(trips[DROPOFF], pickup).cast(pa.int64())
    span = pc.min_max(pickup)
    zones = pa.chunked_array(
        [*trips[PU].chunks, *trips[DO].chunks], type=trips.schema.field(PU).type
    )
    return SplitProfile(
        month=format_month_spec(months),
        rows=trips.num_rows,
        rows_outside_month=_count(pickups_outside(trips, months)),
        nulls={c: trips[c].null_count for c in trips.column_names},
        pickup_min=str(span["min"].as_py()),
        pickup_max=str(span["max"].as_py()),
        zones_seen=int(pc.count_distinct(zones).as_py()),
        duration_minutes_quantiles=_quantiles(pc.divide(micros.cast(pa.float64()), 60e6)),
        trip_distance_quantiles=_quantiles(trips[DISTANCE]),
    )


def pickups_outside(trips: pa.Table, months: list[Month]) -> pa.ChunkedArray:
    """True for rows whose pickup is in none of `months` (or has no timestamp)."""
    pickup = trips[PICKUP]
    inside = None
    for month in months:
        start, end = (pa.scalar(t, type=pickup.type) for t in (month.start, month.end))
        this = pc.and_(pc.greater_equal(pickup, start), pc.less(pickup, end))
        inside = this if inside is None else pc.or_(inside, this)
    return pc.invert(pc.fill_null(inside, False))


def _count(flags: pa.ChunkedArray) -> int:
    return int(pc.sum(flags).as_py() or 0)


def check_month(trips: pa.Table, month: Month, name: str) -> None:
    """Refuse a file that is empty or mostly holds another month (a mislabelled download).

    A few stray pickups are normal in TLC files (2009 dates, the next month's first hours):
    they are kept, as the course keeps them, and counted in {split}_rows_outside_month.
    """
    if trips.num_rows == 0:
        raise PipelineError(f"{name} has no rows; pick another month")
    share = _count(pickups_outside(trips, [month])) / trips.num_rows
    if share > MAX_OUTSIDE_SHARE:
        raise PipelineError(
            f"{share:.0%} of the pickups in {name} are not in {month}; the file does not hold "
            "that month: replace it with the one TLC publishes"
        )


def _quantiles(values: pa.ChunkedArray) -> dict[str, float | None]:
    qs = (0.01, 0.5, 0.99)
    found = pc.quantile(values, q=list(qs)).to_pylist() if values.null_count < len(values) else []
    return {
        f"p{round(q * 100)}": None if v is None else round(float(v), 3)
        for q, v in zip(qs, found or [None] * len(qs), strict=True)
    }


def trip_minutes(trips: pa.Table) -> pd.Series:
    """Each trip's duration in minutes, as recorded (negative and day-long ones included)."""
    micros = pc.subtract(trips[DROPOFF], trips[PICKUP]).cast(pa.int64())
    return pc.divide(micros.cast(pa.float64()), 60e6).to_pandas()


def fetch_months(
    taxi: str, months: tuple[list[Month], Month, Month], source: str, cache_dir: Path
) -> list[MonthFile]:
    """Every month file the splits need, fetched (or found) and checked to be parquet, before
    any is read: a missing test month fails in seconds, not after the training window."""
    train, val, test = months
    wanted = [("train", m) for m in train] + [("val", val), ("test", test)]
    return [
        MonthFile(
            split,
            month,
            month_location(source, taxi, str(month)),
            fetch_month(source, taxi, str(month), cache_dir),
        )
        for split, month in wanted
    ]


def read_split(files: list[MonthFile]) -> pa.Table:
    """One split's trips: its month files read (five columns each) and stacked, each checked to
    hold its month. Arrow stacks the months without copying them."""
    tables = []
    for file in files:
        trips = read_trips_table(file.path)
        check_month(trips, file.month, file.path.name)
        tables.append(trips)
    return pa.concat_tables(tables)


def describe_ingest(taxi: str, source: str, profile: dict[str, SplitProfile]) -> str:
    """The run's description (markdown, shown on its page in the MLflow UI)."""
    rows = "\n".join(
        f"| {split} | {p.month} | {p.rows:,} | {p.rows_outside_month:,} | "
        f"{_number(p.duration_minutes_quantiles['p50'])} | "
        f"{_number(p.trip_distance_quantiles['p50'])} | {p.zones_seen} |"
        for split, p in profile.items()
    )
    return f"""\
**{taxi}** taxi trips from `{source}`, kept as published (featurize filters them).

| split | month(s) | trips | pickups outside the month(s) | median minutes | median miles | zones |
|---|---|---|---|---|---|---|
{rows}

Distributions: `{DISTRIBUTIONS_PLOT}`; statistics: `{PROFILE_FILE}`; the trips: `{RAW_DIR}/`.
"""


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"
