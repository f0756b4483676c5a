"""ingest: fetch the TLC months and log them as the training, validation and testing splits.

Parameters: taxi (green|yellow), train_month (YYYY-MM, or a window of months: a range
2023-01..2023-03 or a list 2023-01,2023-03, stacked into the training split), val_month and
test_month (YYYY-MM, after the training month(s)), source (TLC's URL base or a local folder),
cache_dir (download cache, default ~/.cache/nyc-taxi-duration).
Artifacts: raw/{train,val,test}.parquet (canonical columns), profile.json,
plots/distributions.png (trip duration and distance per split).
Metrics: {split}_rows, {split}_rows_outside_month. Inputs: every month file as an MLflow dataset
(source and digest, context training/validation/testing).
The run's description (its page in the MLflow UI) tabulates the splits.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import click
import pandas as pd
import pyarrow.parquet as pq

from taxi_duration.core.contracts import (
    DATASET_CONTEXT,
    DEFAULT_CACHE_DIR,
    DEFAULT_MONTHS,
    DISTANCE,
    DISTRIBUTIONS_PLOT,
    INGEST,
    INPUT_DIGEST_TAG,
    PROFILE_FILE,
    RAW_DIR,
    SPLITS,
    TLC_URL,
    raw_paths,
    raw_split_path,
    tlc_file_name,
)
from taxi_duration.core.params import check_taxi, parse_months
from taxi_duration.data.splits import (
    SplitProfile,
    describe_ingest,
    fetch_months,
    profile_split,
    read_split,
    trip_minutes,
)
from taxi_duration.data.tlc import COLUMN_KINDS, identities_digest, parquet_digest, read_identity
from taxi_duration.model.figures import plot_distributions
from taxi_duration.pipeline.cli import exits_cleanly
from taxi_duration.tracking import runs


@click.command(help=__doc__)
@click.option("--taxi", default="green", show_default=True)
@click.option(
    "--train-month",
    default=DEFAULT_MONTHS["train"],
    show_default=True,
    help="One month, or a window: 2023-01..2023-03 or 2023-01,2023-02.",
)
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
        files = fetch_months(taxi, months, source, cache)
        # What was read, as its source identified it when it was fetched (main compares what
        # the source says now with this before it reuses the run).
        fingerprint = identities_digest([read_identity(source, f.path) for f in files])
        profile: dict[str, SplitProfile] = {}
        distributions: dict[str, tuple[pd.Series, pd.Series]] = {}
        load_seconds = 0.0
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / RAW_DIR).mkdir()
            # One split at a time: at most one split's trips are in memory.
            for split in SPLITS:
                split_files = [f for f in files if f.split == split]
                started = time.perf_counter()
                trips = read_split(split_files)
                load_seconds += time.perf_counter() - started
                for file in split_files:
                    runs.log_dataset_reference(
                        file.location,
                        name=tlc_file_name(taxi, str(file.month)),
                        digest=parquet_digest(file.path),
                        columns=COLUMN_KINDS,
                        context=DATASET_CONTEXT[split],
                    )
                pq.write_table(trips, root / raw_split_path(split))
                profile[split] = profile_split(trips, [f.month for f in split_files])
                label = f"{split} {profile[split].month}"
                distributions[label] = (trip_minutes(trips), trips[DISTANCE].to_pandas())
                del trips
            runs.log_outputs(root, raw_paths())
        runs.log_json({s: asdict(p) for s, p in profile.items()}, PROFILE_FILE)
        runs.log_figure(plot_distributions(distributions), DISTRIBUTIONS_PLOT)
        runs.set_description(describe_ingest(taxi, source, profile))
        metrics: dict[str, float] = {}
        for split, p in profile.items():
            metrics |= {
                f"{split}_rows": p.rows,
                f"{split}_rows_outside_month": p.rows_outside_month,
            }
        rows = sum(p.rows for p in profile.values())
        metrics |= {"load_seconds": load_seconds, "rows_per_second": rows / load_seconds}
        runs.log_metrics(metrics)
        runs.set_tags(
            {
                "taxi": taxi,
                **{f"{split}_month": p.month for split, p in profile.items()},
                INPUT_DIGEST_TAG: fingerprint,
            }
        )
        counts = ", ".join(f"{s}={p.rows} rows" for s, p in profile.items())
        print(f"ingest: runs:/{run.info.run_id} {counts}")


if __name__ == "__main__":
    main()
