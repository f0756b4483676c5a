"""Cut the small real TLC samples under tests/data from the full months in ../shared/data.

Run from the project root: python tests/data/make_samples.py ../shared/data
Each sample is a seeded random subset of a real month, written with the month's own Arrow
schema, so both schema generations survive. The yellow sample is derived from a green month
(no yellow file is available offline): tpep_ timestamps and yellow's column layout.
"""

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS = 3000
GREEN_MONTHS = ["2021-01", "2021-02", "2021-03", "2023-02", "2021-04", "2021-05"]
YELLOW_MONTHS = ["2023-02", "2023-03", "2023-04", "2024-01", "2024-03"]
HERE = Path(__file__).resolve().parent


def sample(table: pa.Table, rows: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(table.num_rows, size=min(rows, table.num_rows), replace=False))
    return table.take(pa.array(idx))


def main(shared: Path) -> None:
    for i, month in enumerate(GREEN_MONTHS):
        table = pq.read_table(shared / f"green_tripdata_{month}.parquet")
        pq.write_table(sample(table, ROWS, seed=i), HERE / f"green_tripdata_{month}.parquet")
    for i, month in enumerate(YELLOW_MONTHS):
        green = pq.read_table(shared / f"green_tripdata_{month}.parquet")
        yellow = sample(green, ROWS // 3, seed=100 + i).drop_columns(["ehail_fee", "trip_type"])
        yellow = yellow.rename_columns([n.replace("lpep_", "tpep_") for n in yellow.column_names])
        yellow = yellow.append_column("airport_fee", pa.nulls(yellow.num_rows, pa.float64()))
        pq.write_table(yellow, HERE / f"yellow_tripdata_{month}.parquet")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
