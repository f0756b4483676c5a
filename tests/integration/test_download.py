"""The TLC download against a real HTTP server on 127.0.0.1 serving real sample files."""

import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from taxi_duration.core.errors import PipelineError
from taxi_duration.data.tlc import fetch_month, read_trips
from tests.conftest import error_lines, run_step
from tests.integration.tlc_server import TLCServer

NAME = "green_tripdata_2021-01.parquet"


@pytest.fixture
def server(data_dir):
    with TLCServer(data_dir) as tlc:
        yield tlc


def cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


def test_download_once_into_the_cache_then_reuse_it(server, tmp_path, data_dir):
    cache = tmp_path / "cache"
    first = fetch_month(server.url, "green", "2021-01", cache)
    second = fetch_month(server.url, "green", "2021-01", cache)
    assert first == second == cache / NAME
    assert first.read_bytes() == (data_dir / NAME).read_bytes()
    assert server.hits[NAME] == 1
    assert cache_files(cache) == [NAME]
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
    assert cache_files(tmp_path) == [NAME]


def test_a_corrupt_cache_entry_is_fetched_again(server, tmp_path):
    (tmp_path / NAME).write_bytes(b"PAR1 garbage")
    path = fetch_month(server.url, "green", "2021-01", tmp_path)
    assert server.hits[NAME] == 1
    assert len(read_trips(path)) == 3000


def test_ingest_cli_downloads_through_the_cache_and_refuses_an_unpublished_month(
    server, tmp_path, data_dir
):
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cache = tmp_path / "cache"
    ok = run_step("ingest", "--source", server.url, "--cache-dir", str(cache), cwd=tmp_path, **env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert cache_files(cache) == [f"green_tripdata_2021-0{m}.parquet" for m in (1, 2, 3)]

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
    assert cache_files(cache) == [f"green_tripdata_2021-0{m}.parquet" for m in (1, 2, 3)]
    statuses = sorted(
        r.info.status for r in MlflowClient(env["MLFLOW_TRACKING_URI"]).search_runs(["0"])
    )
    assert statuses == ["FAILED", "FINISHED"]


def test_a_part_file_left_by_a_killed_download_is_removed(server, tmp_path):
    orphan = tmp_path / f".{NAME}.999999.part"
    orphan.write_bytes(b"half a download")
    live = tmp_path / f".green_tripdata_2021-02.parquet.{os.getpid()}.part"
    live.write_bytes(b"a download in progress")
    fetch_month(server.url, "green", "2021-01", tmp_path)
    assert not orphan.exists()
    assert live.exists()  # its process (this one) still runs
