"""ingest: fetch three TLC months and log them as the training, validation and testing splits.

Parameters: taxi (green|yellow), train_month, val_month, test_month (YYYY-MM), source (TLC's
URL base or a local folder), cache_dir (download cache, default ~/.cache/nyc-taxi-duration).
Artifacts: raw/{train,val,test}.parquet (canonical columns), profile.json,
plots/distributions.png (trip duration and distance per split).
Metrics: {split}_rows, {split}_rows_outside_month. Inputs: the three splits as MLflow datasets.
The run's description (its page in the MLflow UI) tabulates the splits.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import pandas as pd

from steps import runs
from steps.cli import exits_cleanly
from steps.config import Month, check_taxi, parse_months
from steps.contracts import (
    DATASET_CONTEXT,
    DEFAULT_CACHE_DIR,
    DEFAULT_MONTHS,
    DISTANCE,
    DISTRIBUTIONS_PLOT,
    DO,
    DROPOFF,
    INGEST,
    INPUT_DIGEST_TAG,
    PICKUP,
    PROFILE_FILE,
    PU,
    RAW_DIR,
    SPLITS,
    TLC_URL,
    raw_paths,
    raw_split_path,
    tlc_file_name,
)
from steps.errors import PipelineError
from steps.figures import plot_distributions
from steps.tlc import (
    fetch_month,
    month_location,
    read_trips,
    source_fingerprint,
)

# Above this share of pickups outside the named month, the file is the wrong month.
MAX_OUTSIDE_SHARE = 0.5


@dataclass(frozen=True)
class SplitData:
    """One split: its month, where it came from and the canonical trips."""

    split: str
    month: Month
    location: str
    trips: pd.DataFrame


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


def profile_split(trips: pd.DataFrame, month: Month) -> SplitProfile:
    """Profile one split; pickups outside the month (TLC has them) are counted, not dropped."""
    pickup = trips[PICKUP]
    minutes = trip_minutes(trips)
    outside = pickups_outside(trips, month)
    return SplitProfile(
        month=str(month),
        rows=len(trips),
        rows_outside_month=int(outside.sum()),
        nulls={c: int(trips[c].isna().sum()) for c in trips.columns},
        pickup_min=str(pickup.min()),
        pickup_max=str(pickup.max()),
        zones_seen=int(pd.concat([trips[PU], trips[DO]]).nunique()),
        duration_minutes_quantiles=_quantiles(minutes),
        trip_distance_quantiles=_quantiles(trips[DISTANCE]),
    )


def pickups_outside(trips: pd.DataFrame, month: Month) -> pd.Series:
    """Rows whose pickup is not in `month` (or has no timestamp)."""
    return ~trips[PICKUP].between(month.start, month.end, inclusive="left")


def check_month(trips: pd.DataFrame, month: Month, name: str) -> None:
    """Refuse a file that is empty or mostly holds another month (a mislabelled download).

    A few stray pickups are normal in TLC files (2009 dates, the next month's first hours):
    they are kept, as the course keeps them, and counted in {split}_rows_outside_month.
    """
    if trips.empty:
        raise PipelineError(f"{name} has no rows; pick another month")
    share = float(pickups_outside(trips, month).mean())
    if share > MAX_OUTSIDE_SHARE:
        raise PipelineError(
            f"{share:.0%} of the pickups in {name} are not in {month}; the file does not hold "
            "that month: replace it with the one TLC publishes"
        )


def _quantiles(values: pd.Series) -> dict[str, float | None]:
    qs = (0.01, 0.5, 0.99)
    found = values.quantile(list(qs)).to_numpy()
    return {
        f"p{round(q * 100)}": None if pd.isna(v) else round(float(v), 3)
        for q, v in zip(qs, found, strict=True)
    }


def trip_minutes(trips: pd.DataFrame) -> pd.Series:
    """Each trip's duration in minutes, as recorded (negative and day-long ones included)."""
    return (trips[DROPOFF] - trips[PICKUP]).dt.total_seconds() / 60


def describe(taxi: str, source: str, profile: dict[str, SplitProfile]) -> str:
    """The run's description (markdown, shown on its page in the MLflow UI)."""
    rows = "\n".join(
        f"| {split} | {p.month} | {p.rows:,} | {p.rows_outside_month:,} | "
        f"{_number(p.duration_minutes_quantiles['p50'])} | "
        f"{_number(p.trip_distance_quantiles['p50'])} | {p.zones_seen} |"
        for split, p in profile.items()
    )
    return f"""\
**{taxi}** taxi trips from `{source}`, one month per split, kept as published \
(featurize filters them).

| split | month | trips | pickups outside the month | median minutes | median miles | zones |
|---|---|---|---|---|---|---|
{rows}

Distributions: `{DISTRIBUTIONS_PLOT}`; statistics: `{PROFILE_FILE}`; the trips: `{RAW_DIR}/`.
"""


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def load_splits(
    taxi: str, months: tuple[Month, Month, Month], source: str, cache_dir: Path
) -> list[SplitData]:
    """Fetch and read the three months; a month with no rows is refused."""
    splits = []
    for split, month in zip(SPLITS, months, strict=True):
        path = fetch_month(source, taxi, str(month), cache_dir)
        trips = read_trips(path)
        check_month(trips, month, tlc_file_name(taxi, str(month)))
        splits.append(SplitData(split, month, month_location(source, taxi, str(month)), trips))
    return splits


@click.command(help=__doc__)
@click.option("--taxi", default="green", show_default=True)
@click.option("--train-month", default=DEFAULT_MONTHS["train"], show_default=True)
@click.option("--val-month", default=DEFAULT_MONTHS["val"], show_default=True)
@click.option("--test-month", default=DEFAULT_MONTHS["test"], show_default=True)
@click.option("--source", default=TLC_URL, show_default=True, help="URL base or local folder.")
@click.option("--cache-dir", default=DEFAULT_CACHE_DIR, show_default=True, help="Download cache.")
@exits_cleanly(INGEST)
def main(
    taxi: str, train_month: str, val_month: str, test_month: str, source: str, cache_dir: str
) -> None:
    check_taxi(taxi)
    months = parse_months(train_month, val_month, test_month)
    cache = Path(cache_dir).expanduser()
    with runs.step_run(INGEST) as run:
        runs.log_params(
            {
                "taxi": taxi,
                "train_month": train_month,
                "val_month": val_month,
                "test_month": test_month,
                "source": source,
                "cache_dir": cache_dir,
            }
        )
        fingerprint = source_fingerprint(source, taxi, [str(m) for m in months])
        started = time.perf_counter()
        splits = load_splits(taxi, months, source, cache)
        load_seconds = time.perf_counter() - started
        profile: dict[str, SplitProfile] = {}
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / RAW_DIR).mkdir()
            for data in splits:
                runs.log_dataset(
                    data.trips,
                    source=data.location,
                    name=tlc_file_name(taxi, str(data.month)),
                    context=DATASET_CONTEXT[data.split],
                )
                data.trips.to_parquet(root / raw_split_path(data.split), index=False)
                profile[data.split] = profile_split(data.trips, data.month)
            runs.log_outputs(root, raw_paths())
        runs.log_json({s: asdict(p) for s, p in profile.items()}, PROFILE_FILE)
        distributions = {
            f"{d.split} {d.month}": (trip_minutes(d.trips), d.trips[DISTANCE]) for d in splits
        }
        runs.log_figure(plot_distributions(distributions), DISTRIBUTIONS_PLOT)
        runs.set_description(describe(taxi, source, profile))
        metrics: dict[str, float] = {}
        for split, p in profile.items():
            metrics |= {
                f"{split}_rows": p.rows,
                f"{split}_rows_outside_month": p.rows_outside_month,
            }
        rows = sum(len(d.trips) for d in splits)
        metrics |= {"load_seconds": load_seconds, "rows_per_second": rows / load_seconds}
        runs.log_metrics(metrics)
        runs.set_tags(
            {
                "taxi": taxi,
                **{f"{d.split}_month": str(d.month) for d in splits},
                INPUT_DIGEST_TAG: fingerprint or "unknown",
            }
        )
        counts = ", ".join(f"{s}={p.rows} rows" for s, p in profile.items())
        print(f"ingest: runs:/{run.info.run_id} {counts}")


if __name__ == "__main__":
    main()
