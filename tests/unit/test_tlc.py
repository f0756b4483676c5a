import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_duration.core.contracts import DISTANCE, DO, DROPOFF, PICKUP, PU, TRIP_COLUMNS
from taxi_duration.core.errors import PipelineError
from taxi_duration.data.tlc import (
    check_parquet,
    fetch_month,
    month_location,
    parquet_digest,
    read_trips,
    read_trips_table,
    source_fingerprint,
)


@pytest.mark.parametrize(
    "name",
    [
        "green_tripdata_2021-01.parquet",  # schema generation A: int64 zones, double payment_type
        "green_tripdata_2023-02.parquet",  # generation B: int32 zones, int64 payment_type
        "yellow_tripdata_2023-03.parquet",  # tpep_ timestamps
    ],
)
def test_read_trips_maps_every_generation_and_colour_onto_one_frame(data_dir, name):
    frame = read_trips(data_dir / name)
    assert tuple(frame.columns) == TRIP_COLUMNS
    assert str(frame[PICKUP].dtype).startswith("datetime64")
    assert frame[PU].dtype == "int64" and frame[DO].dtype == "int64"
    assert frame[DISTANCE].dtype == "float64"
    assert len(frame) > 900
    assert (frame[DROPOFF] >= frame[PICKUP]).mean() > 0.95


def test_read_trips_matches_column_names_case_insensitively(tmp_path, data_dir):
    table = pq.read_table(data_dir / "green_tripdata_2021-01.parquet")
    renamed = table.rename_columns([n.lower() for n in table.column_names])
    pq.write_table(renamed, tmp_path / "lower.parquet")
    assert len(read_trips(tmp_path / "lower.parquet")) == table.num_rows


def test_read_trips_names_missing_columns_and_what_the_file_has(tmp_path, data_dir):
    table = pq.read_table(data_dir / "green_tripdata_2021-01.parquet").drop_columns(
        ["trip_distance", "DOLocationID"]
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    with pytest.raises(PipelineError, match=r"lacks column\(s\) DOLocationID, trip_distance"):
        read_trips(tmp_path / "bad.parquet")


def test_read_trips_fills_optional_columns_the_file_lacks(tmp_path, data_dir):
    table = pq.read_table(data_dir / "green_tripdata_2021-01.parquet")
    pq.write_table(table.drop_columns(["lpep_dropoff_datetime"]), tmp_path / "no_dropoff.parquet")
    with pytest.raises(PipelineError, match=r"lacks column\(s\) lpep_dropoff_datetime"):
        read_trips(tmp_path / "no_dropoff.parquet")
    frame = read_trips(tmp_path / "no_dropoff.parquet", optional=(PICKUP, DROPOFF))
    assert tuple(frame.columns) == TRIP_COLUMNS and len(frame) == table.num_rows
    assert frame[DROPOFF].isna().all() and str(frame[DROPOFF].dtype).startswith("datetime64")
    assert frame[PICKUP].notna().all()


def test_read_trips_refuses_string_zone_ids(tmp_path):
    table = pa.table(
        {
            "lpep_pickup_datetime": pa.array([pd.Timestamp("2021-01-01")]),
            "lpep_dropoff_datetime": pa.array([pd.Timestamp("2021-01-01 00:10")]),
            "PULocationID": ["Astoria"],
            "DOLocationID": ["Harlem"],
            "trip_distance": [1.0],
        }
    )
    pq.write_table(table, tmp_path / "strings.parquet")
    with pytest.raises(PipelineError, match="unexpected types"):
        read_trips(tmp_path / "strings.parquet")


def test_check_parquet_refuses_html_and_truncated_files(tmp_path, data_dir):
    html = tmp_path / "page.parquet"
    html.write_text("<html><body>Access Denied</body></html>")
    with pytest.raises(PipelineError, match="not a valid parquet file"):
        check_parquet(html, hint="x")
    whole = (data_dir / "green_tripdata_2021-01.parquet").read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PipelineError, match="not a valid parquet file"):
        check_parquet(cut, hint="x")


def test_month_location_for_url_and_folder():
    assert (
        month_location("https://example.org/trip-data/", "green", "2021-01")
        == "https://example.org/trip-data/green_tripdata_2021-01.parquet"
    )
    assert month_location("/data", "yellow", "2021-01") == "/data/yellow_tripdata_2021-01.parquet"


def test_fetch_month_reads_a_local_folder_in_place(tmp_path, data_dir):
    path = fetch_month(str(data_dir), "green", "2021-02", tmp_path / "cache")
    assert path == data_dir / "green_tripdata_2021-02.parquet"
    assert not (tmp_path / "cache").exists()


def test_fetch_month_names_the_missing_file_in_a_folder(tmp_path, data_dir):
    with pytest.raises(PipelineError, match="green_tripdata_2030-01.parquet is not in"):
        fetch_month(str(data_dir), "green", "2030-01", tmp_path)


def test_fetch_month_refuses_a_source_that_is_neither_url_nor_folder(tmp_path):
    with pytest.raises(PipelineError, match="neither an http"):
        fetch_month(str(tmp_path / "nowhere"), "green", "2021-01", tmp_path)


def test_fetch_month_refuses_a_corrupt_file_in_a_folder(tmp_path, data_dir):
    shutil.copy(data_dir / "green_tripdata_2021-01.parquet", tmp_path)
    (tmp_path / "green_tripdata_2021-02.parquet").write_text("not parquet")
    with pytest.raises(PipelineError, match="not a valid parquet file"):
        fetch_month(str(tmp_path), "green", "2021-02", tmp_path / "cache")


def _with_unreadable_column(source: Path, dest: Path, column: str) -> None:
    """Copy a parquet file with the data pages of one column overwritten by garbage: reading that
    column fails, reading any other works."""
    data = bytearray(source.read_bytes())
    meta = pq.ParquetFile(source).metadata
    index = meta.schema.to_arrow_schema().names.index(column)
    for group in range(meta.num_row_groups):
        chunk = meta.row_group(group).column(index)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start : start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    dest.write_bytes(bytes(data))


def test_read_trips_reads_only_the_columns_it_needs(tmp_path, data_dir):
    """Column projection: a yellow month's extra columns are never read, so they cost nothing
    (here one of them is unreadable, and the month still reads)."""
    path = tmp_path / "yellow_tripdata_2023-03.parquet"
    _with_unreadable_column(data_dir / path.name, path, "congestion_surcharge")
    with pytest.raises((OSError, pa.ArrowInvalid)):
        pq.read_table(path)  # the whole file cannot be read...
    table = read_trips_table(path)  # ...but the five columns the pipeline uses can
    assert tuple(table.column_names) == TRIP_COLUMNS
    assert table.num_rows == pq.ParquetFile(path).metadata.num_rows


def test_parquet_digest_names_the_content_not_the_path(tmp_path, data_dir):
    name = "yellow_tripdata_2023-03.parquet"
    shutil.copy(data_dir / name, tmp_path / name)
    assert parquet_digest(tmp_path / name) == parquet_digest(data_dir / name)
    table = pq.read_table(data_dir / name)
    distance = table.column("trip_distance").to_pylist()
    distance[0] = 999.0  # one trip changed
    index = table.column_names.index("trip_distance")
    pq.write_table(table.set_column(index, "trip_distance", pa.array(distance)), tmp_path / name)
    assert parquet_digest(tmp_path / name) != parquet_digest(data_dir / name)


def test_source_fingerprint_has_an_entry_per_month(tmp_path, data_dir):
    for month in ("2023-02", "2023-03"):
        shutil.copy(data_dir / f"yellow_tripdata_{month}.parquet", tmp_path)
    both = source_fingerprint(str(tmp_path), "yellow", ["2023-02", "2023-03"])
    assert both != source_fingerprint(str(tmp_path), "yellow", ["2023-02"])
    os.utime(tmp_path / "yellow_tripdata_2023-03.parquet", ns=(1, 1))
    assert source_fingerprint(str(tmp_path), "yellow", ["2023-02", "2023-03"]) != both
    assert source_fingerprint(str(tmp_path), "yellow", ["2023-02", "2023-04"]) is None
