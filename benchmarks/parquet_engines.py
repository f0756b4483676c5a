"""Benchmark: pandas' two parquet engines, pyarrow and fastparquet, on what the pipeline does
with parquet, to decide which one it should use (the figures: docs/benchmarks.md).

Run with `python benchmarks/parquet_engines.py --data data` from the project root (`--data`: a
folder of TLC green months, as `make data` fills). fastparquet is not a dependency of the
project: `pip install fastparquet` to compare; without it only pyarrow is measured. Two sizes:
the real month `--month` (default green 2021-01) and a month of `--scale-rows` rows (default
3,000,000) made by stacking every green month in the folder, repeated and cut to size, written
with pyarrow's defaults (row groups of 2**20 rows).

The operations, each in a fresh process per engine:

- read month: a month's five columns; `pipeline` is ingest's own reader (read_trips: pyarrow.parquet
  and a cast), the engines are `pd.read_parquet(columns=...)`;
- write / read matrix: featurize's feature matrix (zones as categoricals over 1..265, the rest
  floats, the target) with `to_parquet` and `read_parquet`, as save_matrix and load_matrix;
- write / read trips: featurize's kept trips (pickup time, zones, distance, minutes), the same way;
- write / read predictions: predict's file; `pyarrow` is what predict does (outputs.write_frame, an
  explicit schema, and read_back's batches of 2**20 rows), `fastparquet` is `to_parquet` with
  row groups of that size and fastparquet's own batches (ParquetFile.iter_row_groups);
- fastparquet also reads the files pyarrow wrote: what reading with it alone would meet (every
  file already in a tracking store was written by pyarrow).

Reported: wall seconds (best of --repeat), peak memory (the process's peak resident memory above
what it held once its inputs were loaded: /proc's peak is reset just before the first run, so
arrow's buffers and what its allocator keeps count), file size, whether two writes give the same
bytes (featurize's reuse key is the matrix's digest), and whether what is read back equals what
was written (values, dtypes, categories, datetimes and nulls; for the month also once cast back
to the written dtypes, for the matrix also after load_matrix re-applies the zone set, for
predictions also whether the file's schema is predict's shared one). Prints a table and, with
--out, writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from taxi_duration.core.contracts import (
    DISTANCE,
    DO,
    PREDICTION,
    PU,
    TARGET,
    TIME_FEATURES,
    tlc_file_name,
)
from taxi_duration.data.outputs import prediction_schema, write_frame
from taxi_duration.data.parquet import record_batches
from taxi_duration.data.tlc import read_trips, trip_columns
from taxi_duration.model.features import (
    CategoricalPreprocessor,
    encode,
    filter_trips,
    zone_codes,
)

ENGINES = ("pyarrow", "fastparquet")
KINDS = ("matrix", "trips", "predictions")
GROUP_ROWS = 1 << 20  # the row groups predict writes (taxi_duration/data/outputs.py)
MIB = 1 << 20
# pandas 3.1 deprecates engine="fastparquet" with a Pandas4Warning on every call.
warnings.filterwarnings("ignore", message="The 'fastparquet' engine is deprecated")


# --- measuring one operation in this process --------------------------------------------------


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


def measure(operation: Callable[[], Any], repeat: int) -> tuple[float, float, Any]:
    """(best wall seconds, peak MiB above the resident memory before the first run, the first
    run's result)."""
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident size (VmHWM)
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    result = operation()
    best = time.perf_counter() - started
    peak = (_status_kib("VmHWM") - before) / 1024
    for _ in range(repeat - 1):
        started = time.perf_counter()
        operation()
        best = min(best, time.perf_counter() - started)
    return best, peak, result


def _dtype(dtype: Any) -> str:
    if isinstance(dtype, pd.CategoricalDtype):
        return f"category of {len(dtype.categories)}"
    return str(dtype)


def differences(got: pd.DataFrame, expected: pd.DataFrame) -> str:
    """'' when the frames are equal to the bit (columns, dtypes, categories, values and nulls),
    else what differs, column by column."""
    if list(got.columns) != list(expected.columns) or len(got) != len(expected):
        return f"columns {list(got.columns)}, {len(got)} rows"
    notes = []
    for column in expected.columns:
        a, b = got[column].reset_index(drop=True), expected[column].reset_index(drop=True)
        if a.dtype != b.dtype:
            notes.append(f"{column} {_dtype(a.dtype)} (written: {_dtype(b.dtype)})")
            continue
        wrong = int((~((a == b) | (a.isna() & b.isna()))).sum())
        if wrong:
            notes.append(f"{column}: {wrong:,} of {len(a):,} values wrong")
    return ", ".join(notes)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def warm_up(engine: str, work: Path) -> None:
    """Write and read two rows with `engine`, so that the modules pandas imports on first use
    are loaded before the memory is measured."""
    path = work / f"warm-up.{os.getpid()}.parquet"
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    if engine == "fastparquet":
        import fastparquet

        frame.to_parquet(path, engine=engine)
        pd.read_parquet(path, engine=engine)
        list(fastparquet.ParquetFile(str(path)).iter_row_groups())
    else:
        pq.write_table(pa.Table.from_pandas(frame), path)
        pd.read_parquet(path, engine="pyarrow")
        [b.to_pandas() for b in pq.ParquetFile(path).iter_batches()]
    path.unlink()


def run_case(
    work: Path, operation: str, kind: str, engine: str, writer: str, repeat: int
) -> dict[str, Any]:
    """One measured operation (a read: of the file `writer` wrote); its figures as a dict (run
    in a fresh process)."""
    warm_up(engine, work)
    if operation == "read" and kind == "month":
        month = work / "month.parquet"
        expected = pd.read_pickle(work / "month.pkl")
        if engine == "pipeline":
            seconds, peak, got = measure(lambda: read_trips(month), repeat)
        else:
            names = [field.name for field in trip_columns(month).values()]
            seconds, peak, got = measure(
                lambda: pd.read_parquet(month, columns=names, engine=engine), repeat
            )
            got = got.set_axis(list(expected.columns), axis=1)
        figures = {"seconds": seconds, "peak_mib": peak, "differs": differences(got, expected)}
        if figures["differs"]:  # the same values in other dtypes?
            figures["differs_cast"] = differences(got.astype(expected.dtypes), expected)
        return figures

    path = work / f"{kind}.{writer}.parquet"
    if operation == "write":
        frame = pd.read_pickle(work / f"{kind}.pkl")
        digests: list[str] = []

        def write() -> None:
            if kind == "predictions" and engine == "pyarrow":
                write_frame(frame, path)
            elif kind == "predictions":
                frame.to_parquet(path, index=False, engine=engine, row_group_offsets=GROUP_ROWS)
            else:
                frame.to_parquet(path, index=False, engine=engine)
            digests.append(digest(path))

        seconds, peak, _ = measure(write, repeat)
        figures = {"seconds": seconds, "peak_mib": peak, "file_mib": path.stat().st_size / MIB}
        figures["same_bytes"] = len(set(digests)) == 1
        if kind == "predictions":
            schema = pq.read_schema(path).remove_metadata()
            shared = prediction_schema(list(frame.columns))
            figures["shared_schema"] = schema.equals(shared)
            figures["schema"] = ", ".join(f"{f.name}: {f.type}" for f in schema)
        return figures

    if kind == "predictions":
        if engine == "pyarrow":

            def batches() -> Iterator[pd.DataFrame]:
                for batch in record_batches(path):  # as read_back reads
                    yield batch.to_pandas()
        else:
            import fastparquet

            def batches() -> Iterator[pd.DataFrame]:
                yield from fastparquet.ParquetFile(str(path)).iter_row_groups()

        # Each batch is dropped once converted, as read_back does; the check keeps them all.
        seconds, peak, _ = measure(lambda: sum(len(b) for b in batches()), repeat)
        got = pd.concat(list(batches()), ignore_index=True)
    else:
        seconds, peak, got = measure(lambda: pd.read_parquet(path, engine=engine), repeat)
    expected = pd.read_pickle(work / f"{kind}.pkl")
    figures = {"seconds": seconds, "peak_mib": peak, "differs": differences(got, expected)}
    if kind == "matrix":  # what load_matrix hands on: the zone set re-applied
        loaded = got.assign(**{PU: zone_codes(got[PU]), DO: zone_codes(got[DO])})
        figures["differs_loaded"] = differences(loaded, expected)
    return figures


# --- preparing the inputs ---------------------------------------------------------------------


def stacked_month(data: Path, rows: int, path: Path) -> int:
    """Write every green month in `data` stacked, repeated and cut to `rows` rows, into `path`
    (all columns, types unified as later TLC months widen them); returns the distinct rows."""
    tables = [pq.read_table(p) for p in sorted(data.glob("green_tripdata_*.parquet"))]
    if not tables:
        raise SystemExit(f"no green_tripdata_*.parquet in {data}")
    stacked = pa.concat_tables(tables, promote_options="permissive")
    copies = -(-rows // stacked.num_rows)
    pq.write_table(pa.concat_tables([stacked] * copies).slice(0, rows), path)
    return stacked.num_rows


def prepare(month: Path, work: Path) -> dict[str, int]:
    """The inputs of one size in `work`: the month file, and pickles of the canonical month,
    featurize's matrix and kept trips, and predict's predictions frame."""
    from taxi_duration.pipeline.scoring import prediction_frame

    if month != work / "month.parquet":
        (work / "month.parquet").symlink_to(month.resolve())
    trips = read_trips(month)
    kept, _ = filter_trips(trips, 1, 60)  # featurize's default duration filter, in minutes
    matrix = encode(kept, CategoricalPreprocessor(TIME_FEATURES))
    # Predictions as XGBoost gives them (float32), seeded: the file's bytes depend on them.
    rng = np.random.default_rng(0)
    predicted = (8 + 2.5 * trips[DISTANCE].fillna(0).clip(0, 100)) * rng.lognormal(
        0, 0.3, len(trips)
    )
    frames = {
        "month": trips,
        "matrix": matrix.X.assign(**{TARGET: matrix.y}),
        "trips": kept,
        "predictions": prediction_frame(trips, {PREDICTION: predicted.astype("float32")}),
    }
    for name, frame in frames.items():
        frame.to_pickle(work / f"{name}.pkl", protocol=pickle.HIGHEST_PROTOCOL)
    return {name: len(frame) for name, frame in frames.items()}


def check_fastparquet() -> tuple[bool, str]:
    """Whether fastparquet imports and round-trips a small frame with this pandas and numpy,
    and what pandas says when asked for it."""
    try:
        import fastparquet
    except Exception as exc:
        return False, f"import fastparquet fails: {type(exc).__name__}: {exc}"
    versions = f"fastparquet {fastparquet.__version__}, pandas {pd.__version__}"
    versions += f", numpy {np.__version__}"
    frame = pd.DataFrame({"x": [1.5, np.nan], "t": pd.to_datetime(["2021-01-01", None])})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = Path(tmp) / "check.parquet"
        try:
            frame.to_parquet(path, engine="fastparquet")
            back = pd.read_parquet(path, engine="fastparquet")
        except Exception as exc:
            return False, f"{versions}: fails: {type(exc).__name__}: {exc}"
    said = {f"{w.category.__name__}: {w.message}" for w in caught}
    works = "works" if back.astype(frame.dtypes).equals(frame) else "reads back other values"
    return True, f"{versions}: {works}; pandas warns: {'; '.join(sorted(said)) or 'nothing'}"


# --- the table ----------------------------------------------------------------------------------


def cases(fastparquet_works: bool) -> list[tuple[str, str, str, str]]:
    """(operation, kind, engine, writer) in the order they run: each read after the write of
    its file; fastparquet also reads pyarrow's files (what reading with it alone would do)."""
    engines = ENGINES if fastparquet_works else ENGINES[:1]
    out = [("read", "month", engine, "") for engine in ("pipeline", *engines)]
    for kind in KINDS:
        for engine in engines:
            out += [("write", kind, engine, engine), ("read", kind, engine, engine)]
        if fastparquet_works:
            out.append(("read", kind, "fastparquet", "pyarrow"))
    return out


def verdict(figures: dict[str, Any]) -> str:
    """The exact-round-trip column: yes, or no with the first difference."""
    notes = []
    if "same_bytes" in figures:
        notes.append("same bytes twice" if figures["same_bytes"] else "bytes differ run to run")
    if "shared_schema" in figures:
        notes.append(
            "predict's schema" if figures["shared_schema"] else f"schema {figures['schema']}"
        )
    if "differs" in figures:
        notes.append(f"no: {figures['differs']}" if figures["differs"] else "yes")
    if "differs_cast" in figures:
        cast = figures["differs_cast"]
        notes.append(f"values cast back: {'no: ' + cast if cast else 'equal'}")
    if "differs_loaded" in figures:
        loaded = figures["differs_loaded"]
        notes.append(f"after load_matrix: {'no: ' + loaded if loaded else 'yes'}")
    return "; ".join(notes)


def table(results: dict[str, dict[str, dict[str, Any]]], labels: list[str]) -> str:
    header = "| operation | engine | " + " | ".join(
        f"{label} s | {label} peak MiB" for label in labels
    )
    header += f" | file MiB ({' / '.join(labels)}) | exact round-trip |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for key in results[labels[0]]:
        operation, engine = key.rsplit(" / ", 1)
        row = [operation, engine]
        for label in labels:
            figures = results[label][key]
            row += [f"{figures['seconds']:.3f}", f"{figures['peak_mib']:.0f}"]
        sizes = [results[label][key].get("file_mib") for label in labels]
        row.append(" / ".join(f"{s:.2f}" for s in sizes) if sizes[0] is not None else "")
        verdicts = {label: verdict(results[label][key]) for label in labels}
        if len(set(verdicts.values())) == 1:
            row.append(verdicts[labels[0]])
        else:
            row.append(" / ".join(f"{label}: {text}" for label, text in verdicts.items()))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of TLC green months")
    parser.add_argument("--month", default="2021-01", help="the real month (green)")
    parser.add_argument("--scale-rows", type=int, default=3_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    parser.add_argument("--case", nargs=5, help=argparse.SUPPRESS)  # work op kind engine writer
    args = parser.parse_args()
    if args.case:
        work, *case = args.case
        print(json.dumps(run_case(Path(work), *case, repeat=args.repeat)))
        return

    works, said = check_fastparquet()
    print(said)
    real = args.data / tlc_file_name("green", args.month)
    scaled_label = f"{args.scale_rows / 1e6:g}M rows"
    labels = [f"green {args.month}", scaled_label]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="parquet-engines-") as tmp:
        for label in labels:
            work = Path(tmp) / label.replace(" ", "_")
            work.mkdir()
            month = real
            if label == scaled_label:
                month = work / "month.parquet"
                distinct = stacked_month(args.data, args.scale_rows, month)
                print(f"{scaled_label}: green months in {args.data} ({distinct:,} rows) repeated")
            rows = prepare(month, work)
            print(f"{label}: " + ", ".join(f"{name} {n:,} rows" for name, n in rows.items()))
            results[label] = {}
            for operation, kind, engine, writer in cases(works):
                command = [sys.executable, __file__, "--repeat", str(args.repeat), "--data", ""]
                command += ["--case", str(work), operation, kind, engine, writer or "-"]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise SystemExit(f"{operation} {kind} with {engine} failed:\n{done.stderr}")
                shown = engine if writer in ("", engine) else f"{engine}, {writer}'s file"
                results[label][f"{operation} {kind} / {shown}"] = json.loads(done.stdout)
    print()
    print(table(results, labels))
    if args.out:
        args.out.write_text(json.dumps({"fastparquet": said, "results": results}, indent=2))


if __name__ == "__main__":
    main()
