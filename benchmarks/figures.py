"""Benchmark: what each picture the steps log costs, built and rendered to PNG as
mlflow.log_figure does (Figure.savefig), at the committed samples' size and at a real TLC
month's size and above.

Run with `.venv/bin/python benchmarks/figures.py` (options: --rows, --trials, --repeat). The
trips are the committed green 2021 samples (tests/data, 3,000 real rows a month) repeated to each
size; the predictions are the actual minutes plus seeded noise; the search is `--trials` seeded
RMSE values. Prints one line per picture and size: median wall and CPU seconds over --repeat
runs (on a shared machine the CPU time is the steadier figure).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from taxi_duration.core.contracts import DISTANCE, DO, PU
from taxi_duration.data.splits import trip_minutes
from taxi_duration.data.tlc import read_trips
from taxi_duration.model.features import filter_trips
from taxi_duration.model.figures import (
    error_tables,
    plot_distributions,
    plot_errors,
    plot_feature_importance,
    plot_predictions,
    plot_search,
)

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
MONTHS = ("2021-01", "2021-02", "2021-03")


def seconds(build: Callable[[], Figure], repeat: int) -> str:
    """Median wall and CPU time of building the figure and rendering it to PNG bytes."""
    wall, cpu = [], []
    for _ in range(repeat):
        started, started_cpu = time.perf_counter(), time.process_time()
        build().savefig(io.BytesIO(), format="png")
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
    return f"{statistics.median(wall):>10.3f}{statistics.median(cpu):>10.3f}"


def scaled(trips: pd.DataFrame, rows: int) -> pd.DataFrame:
    """The sample repeated (and cut) to `rows` rows."""
    copies = -(-rows // len(trips))
    return pd.concat([trips] * copies, ignore_index=True).head(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[3_000, 70_000, 3_000_000])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    samples = {m: read_trips(DATA / f"green_tripdata_{m}.parquet") for m in MONTHS}
    rng = np.random.default_rng(0)
    search = dict(enumerate(6 + rng.gamma(1.0, 0.3, args.trials)))
    shares = pd.Series({DISTANCE: 0.8, PU: 0.12, DO: 0.08})
    print(f"{'picture':<28}{'rows':>12}{'wall s':>10}{'cpu s':>10}")
    print(
        f"{'hpo search':<28}{args.trials:>12,}{seconds(lambda: plot_search(search), args.repeat)}"
    )
    print(
        f"{'train_best importance':<28}{len(shares):>12}"
        f"{seconds(lambda: plot_feature_importance(shares), args.repeat)}"
    )
    for rows in args.rows:
        splits = {
            f"{s} {m}": scaled(t, rows)
            for s, (m, t) in zip(("train", "val", "test"), samples.items(), strict=True)
        }
        distributions = {k: (trip_minutes(t), t[DISTANCE]) for k, t in splits.items()}
        test, _ = filter_trips(splits[f"test {MONTHS[2]}"], 1, 60)
        y = test["duration"].to_numpy()
        pred = y + rng.normal(0, 5, len(y))
        timings = {
            "ingest distributions (x3)": seconds(
                lambda d=distributions: plot_distributions(d), args.repeat
            ),
            "train_best predictions": seconds(
                lambda y=y, p=pred: plot_predictions(y, p, "test"), args.repeat
            ),
            "train_best errors": seconds(
                lambda t=test, y=y, p=pred: plot_errors(error_tables(t, y, p), "test"),
                args.repeat,
            ),
        }
        for name, value in timings.items():
            print(f"{name:<28}{rows:>12,}{value}")


if __name__ == "__main__":
    main()
