"""The TLC download against a real HTTP server on 127.0.0.1 serving real sample files."""

import os
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import INPUT_DIGEST_TAG
from taxi_duration.core.errors import PipelineError
from taxi_duration.data.tlc import (
    cache_folder,
    fetch_month,
    file_identity,
    read_trips,
    recorded_identity,
    source_fingerprint,
)
from tests.conftest import DATA_DIR, error_lines, run_step
from tests.integration.tlc_server import TLCServer

NAME = "green_tripdata_2021-01.parquet"


@pytest.fixture
def server(data_dir):
    with TLCServer(data_dir) as tlc:
        yield tlc


def cache_files(cache: Path) -> list[str]:
    """The files in the cache, each path relative to it (a folder per source)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def months_in(cache: Path, server: TLCServer) -> list[str]:
    """The month files the cache holds for this server, each with its recorded identity."""
    folder = cache_folder(cache, server.url)
    names = sorted(p.name for p in folder.glob("*.parquet")) if folder.is_dir() else []
    assert cache_files(cache) == sorted(
        str((folder / n).relative_to(cache)) + suffix
        for n in names
        for suffix in ("", ".source.json")
    )
    return names


def test_download_once_into_the_cache_then_reuse_it(server, tmp_path, data_dir):
    cache = tmp_path / "cache"
    first = fetch_month(server.url, "green", "2021-01", cache)
    second = fetch_month(server.url, "green", "2021-01", cache)
    assert first == second == cache_folder(cache, server.url) / NAME
    assert first.read_bytes() == (data_dir / NAME).read_bytes()
    assert server.hits[NAME] == 1
    assert months_in(cache, server) == [NAME]
    assert len(read_trips(first)) == 3000


@pytest.mark.parametrize("code", ["404", "403"])
def test_unpublished_month_fails_at_once_naming_url_and_fix(server, tmp_path, code):
    server.faults["green_tripdata_2021-01.parquet"] = code
    with pytest.raises(PipelineError, match=f"not published at .*HTTP {code}.*check the taxi"):
        fetch_month(server.url, "green", "2021-01", tmp_path)
    assert server.hits[NAME] == 1  # no retries for an answer that will not change
    assert cache_files(tmp_path) == []


def test_truncated_file_is_refused_and_leaves_nothing_in_the_cache(server, tmp_path):
    server.faults[NAME] = "truncated"
    with pytest.raises(PipelineError, match="not a valid parquet file"):
        fetch_month(server.url, "green", "2021-01", tmp_path)
    assert cache_files(tmp_path) == []


def test_html_page_served_as_parquet_is_refused(server, tmp_path):
    server.faults[NAME] = "html"
    with pytest.raises(PipelineError, match="not a valid parquet file"):
        fetch_month(server.url, "green", "2021-01", tmp_path)
    assert cache_files(tmp_path) == []


def test_body_cut_short_is_retried_then_fails_cleanly(server, tmp_path):
    server.faults[NAME] = "cut"
    with pytest.raises(PipelineError, match="failed after 3 attempts"):
        fetch_month(server.url, "green", "2021-01", tmp_path)
    assert server.hits[NAME] == 3
    assert cache_files(tmp_path) == []


def test_a_cut_download_that_recovers_on_retry_succeeds(server, tmp_path):
    server.faults[NAME] = "cut-once"
    path = fetch_month(server.url, "green", "2021-01", tmp_path)
    assert server.hits[NAME] == 2
    assert len(read_trips(path)) == 3000
    assert months_in(tmp_path, server) == [NAME]


def test_a_corrupt_cache_entry_is_fetched_again(server, tmp_path):
    path = fetch_month(server.url, "green", "2021-01", tmp_path)
    path.write_bytes(b"PAR1 garbage")  # its recorded identity is still the server's
    again = fetch_month(server.url, "green", "2021-01", tmp_path)
    assert server.hits[NAME] == 2
    assert len(read_trips(again)) == 3000


def test_ingest_cli_downloads_through_the_cache_and_refuses_an_unpublished_month(
    server, tmp_path, data_dir
):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cache = tmp_path / "cache"
    ok = run_step("ingest", "--source", server.url, "--cache-dir", str(cache), cwd=tmp_path, **env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert months_in(cache, server) == [f"green_tripdata_2021-0{m}.parquet" for m in (1, 2, 3)]

    server.faults["green_tripdata_2021-04.parquet"] = "403"
    refused = run_step(
        "ingest",
        "--source",
        server.url,
        "--cache-dir",
        str(cache),
        "--test-month",
        "2021-04",
        cwd=tmp_path,
        **env,
    )
    assert refused.returncode == 2
    assert error_lines(refused.stderr) == [
        f"ingest: error: green_tripdata_2021-04.parquet is not published at "
        f"{server.url}/green_tripdata_2021-04.parquet (HTTP 403); check the taxi colour and "
        "month (TLC publishes each month about two months later, see "
        "https://www.nyc.gov/site/tlc/about/tlc-trip-record-data.page)"
    ]
    assert months_in(cache, server) == [f"green_tripdata_2021-0{m}.parquet" for m in (1, 2, 3)]
    statuses = sorted(
        r.info.status for r in MlflowClient(env["MLFLOW_TRACKING_URI"]).search_runs(["0"])
    )
    assert statuses == ["FAILED", "FINISHED"]


def test_a_part_file_left_by_a_killed_download_is_removed(server, tmp_path):
    folder = cache_folder(tmp_path, server.url)
    folder.mkdir(parents=True)
    orphan = folder / f".{NAME}.999999.part"
    orphan.write_bytes(b"half a download")
    live = folder / f".green_tripdata_2021-02.parquet.{os.getpid()}.part"
    live.write_bytes(b"a download in progress")
    fetch_month(server.url, "green", "2021-01", tmp_path)
    assert not orphan.exists()
    assert live.exists()  # its process (this one) still runs


# --- what a cached month was downloaded from, and when that changes -----------------------------


def republish(folder: Path, name: str, rows: int) -> None:
    """Replace a served month with other bytes (fewer rows), as TLC does when it republishes."""
    table = pq.read_table(folder / name)
    time.sleep(0.01)  # a new modification time, hence a new ETag
    pq.write_table(table.slice(0, rows), folder / name)


def test_a_month_tlc_republishes_is_downloaded_again(tmp_path, data_dir):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(data_dir / NAME, served / NAME)
    cache = tmp_path / "cache"
    with TLCServer(served) as tlc:
        first = fetch_month(tlc.url, "green", "2021-01", cache)
        assert len(read_trips(first)) == 3000
        republish(served, NAME, 2000)
        second = fetch_month(tlc.url, "green", "2021-01", cache)
        assert tlc.hits[NAME] == 2
        assert len(read_trips(second)) == 2000  # the new bytes, not the cached old ones
        assert recorded_identity(second) == file_identity(tlc.url, "green", "2021-01")


def test_the_same_file_name_from_two_sources_is_cached_twice(tmp_path, data_dir):
    other = tmp_path / "other"
    other.mkdir()
    pq.write_table(pq.read_table(data_dir / NAME).slice(0, 1000), other / NAME)
    cache = tmp_path / "cache"
    with TLCServer(data_dir) as tlc, TLCServer(other) as mirror:
        assert tlc.url.rsplit(":", 1)[0] == mirror.url.rsplit(":", 1)[0]  # only the port differs
        from_tlc = fetch_month(tlc.url, "green", "2021-01", cache)
        from_mirror = fetch_month(mirror.url, "green", "2021-01", cache)
    assert from_tlc != from_mirror
    assert (len(read_trips(from_tlc)), len(read_trips(from_mirror))) == (3000, 1000)


def test_a_cached_month_is_used_as_it_is_when_the_server_cannot_be_asked(tmp_path, capfd):
    cache = tmp_path / "cache"
    with TLCServer(DATA_DIR) as tlc:
        url = tlc.url
        fetch_month(url, "green", "2021-01", cache)
    again = fetch_month(url, "green", "2021-01", cache)  # the server is gone
    assert len(read_trips(again)) == 3000
    assert "could not ask" in capfd.readouterr().err


def test_ingest_records_the_identity_of_what_it_read(tmp_path, data_dir):
    """ingest's input digest is that of the bytes it read (their recorded identity), so a main
    run compares TLC's file now with what was read, not with what a HEAD once said."""
    served = tmp_path / "served"
    served.mkdir()
    for month in ("2021-01", "2021-02", "2021-03"):
        shutil.copy(data_dir / f"green_tripdata_{month}.parquet", served)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cache = tmp_path / "cache"
    months = [f"2021-0{m}" for m in (1, 2, 3)]
    with TLCServer(served) as tlc:
        ran = run_step(
            "ingest", "--source", tlc.url, "--cache-dir", str(cache), cwd=tmp_path, **env
        )
        assert ran.returncode == 0, ran.stderr[-2000:]
        recorded = MlflowClient(env["MLFLOW_TRACKING_URI"]).search_runs(["0"])[0]
        assert recorded.data.tags[INPUT_DIGEST_TAG] == source_fingerprint(tlc.url, "green", months)
        republish(served, "green_tripdata_2021-02.parquet", 2500)
        assert recorded.data.tags[INPUT_DIGEST_TAG] != source_fingerprint(tlc.url, "green", months)
