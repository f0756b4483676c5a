"""TLC trip-record files: fetch a month (download once into a cache, or a local folder) and read
it into the canonical trip frame, whatever schema generation or taxi colour it comes in."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import time
import urllib.error
import urllib.request
from datetime import date
from email.message import Message
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from taxi_duration.core.contracts import (
    DISTANCE,
    DO,
    DROPOFF,
    DROPOFF_ALIASES,
    PICKUP,
    PICKUP_ALIASES,
    PU,
    TLC_URL,
    tlc_file_name,
)
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.processes import process_alive

TLC_DOCS = "https://www.nyc.gov/site/tlc/about/tlc-trip-record-data.page"
_ATTEMPTS = 3
_CHUNK = 1 << 20
_HEADERS = {"User-Agent": "nyc-taxi-duration"}
# A parquet file ends with the footer length (4 bytes, little-endian) and the magic PAR1.
_FOOTER_TAIL = 8

# Canonical column -> names TLC has used for it (matched case-insensitively).
# Green files say lpep_, yellow files tpep_, FHV files neither.
COLUMN_ALIASES: dict[str, tuple[str, ...]] = {
    PICKUP: PICKUP_ALIASES,
    DROPOFF: DROPOFF_ALIASES,
    PU: ("PULocationID",),
    DO: ("DOLocationID",),
    DISTANCE: ("trip_distance",),
}
CANONICAL_TYPES: dict[str, pa.DataType] = {
    PICKUP: pa.timestamp("us"),
    DROPOFF: pa.timestamp("us"),
    PU: pa.int64(),
    DO: pa.int64(),
    DISTANCE: pa.float64(),
}
# The same columns in MLflow's data-type names: the schema of a month logged as a dataset.
COLUMN_KINDS: dict[str, str] = {
    PICKUP: "datetime",
    DROPOFF: "datetime",
    PU: "long",
    DO: "long",
    DISTANCE: "double",
}


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def month_location(source: str, taxi: str, month: str) -> str:
    """Where a month lives in `source`: a URL under the base, or a path in the folder."""
    name = tlc_file_name(taxi, month)
    return f"{source.rstrip('/')}/{name}" if is_url(source) else str(Path(source) / name)


def source_fingerprint(source: str, taxi: str, months: list[str]) -> str | None:
    """Identity of the source files for the months as the source says now, or None when it
    cannot be told.

    One entry per month (see file_identity): when TLC republishes a month, or a file in the
    folder is replaced, the fingerprint changes and ingest's earlier run is not reused.
    """
    identities = [file_identity(source, taxi, month) for month in months]
    if any(identity is None for identity in identities):
        return None
    return identities_digest([i for i in identities if i is not None])


def identities_digest(identities: list[str]) -> str:
    """One digest for the identities of several files, in order."""
    return hashlib.sha256("\n".join(identities).encode()).hexdigest()[:16]


def file_identity(source: str, taxi: str, month: str) -> str | None:
    """What identifies one month's file without reading it, or None when it cannot be told.

    A folder: the file's path, size and modification time. A URL: what a HEAD request says
    about it (ETag, Last-Modified, Content-Length).
    """
    location = month_location(source, taxi, month)
    return head_identity(location) if is_url(source) else local_identity(Path(location))


def head_identity(url: str) -> str | None:
    """The identity a HEAD request of `url` gives, or None when the server cannot be asked or
    says nothing that identifies the file."""
    request = urllib.request.Request(url, method="HEAD", headers=_HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return remote_identity(url, response.headers)
    except (OSError, http.client.HTTPException):
        return None


def availability(source: str, taxi: str, month: str) -> str | None:
    """Why a month cannot be had from `source` (one line with the fix), or None when it can:
    a file in the folder, or a URL that answers a HEAD request."""
    name = tlc_file_name(taxi, month)
    location = month_location(source, taxi, month)
    if not is_url(source):
        if Path(location).expanduser().is_file():
            return None
        return f"{name} is not in {source}; put the month there or use the TLC URL as source"
    request = urllib.request.Request(location, method="HEAD", headers=_HEADERS)
    try:
        with urllib.request.urlopen(request, timeout=15):
            return None
    except urllib.error.HTTPError as exc:
        if exc.code in (403, 404):
            return (
                f"{name} is not published at {location} (HTTP {exc.code}); TLC publishes each "
                f"month about two months later (see {TLC_DOCS}): pick an earlier month"
            )
        return f"{location} answered HTTP {exc.code}; retry later"
    except (OSError, http.client.HTTPException) as exc:
        return f"cannot reach {location} ({type(exc).__name__}); check the network or the source"


def latest_month(source: str, taxi: str, today: date, look_back: int = 24) -> str:
    """The newest month `source` has for `taxi`: the newest month file in a folder, or the
    newest month TLC's URL answers for, looking back from `today`'s month."""
    if not is_url(source):
        pattern = re.compile(rf"^{re.escape(taxi)}_tripdata_(\d{{4}}-\d{{2}})\.parquet$")
        folder = Path(source).expanduser()
        found = sorted(
            match.group(1)
            for path in (folder.iterdir() if folder.is_dir() else [])
            if (match := pattern.match(path.name))
        )
        if not found:
            raise PipelineError(
                f"there is no {taxi}_tripdata_YYYY-MM.parquet in {source}; put months there or "
                "name the month"
            )
        return found[-1]
    index = today.year * 12 + today.month - 1
    for back in range(look_back):
        month = f"{(index - back) // 12:04d}-{(index - back) % 12 + 1:02d}"
        if availability(source, taxi, month) is None:
            return month
    raise PipelineError(
        f"{source} has no {taxi} month in the {look_back} months up to {today:%Y-%m}; check "
        "the source and the network, or name the month"
    )


def remote_identity(url: str, headers: Message) -> str | None:
    """A URL's file as its server describes it (ETag, Last-Modified, Content-Length)."""
    identity = [headers.get(h, "") for h in ("ETag", "Last-Modified", "Content-Length")]
    return f"{url}|{'|'.join(identity)}" if any(identity) else None


def local_identity(path: Path) -> str | None:
    """A local file's path, size and modification time (None if there is no such file)."""
    path = path.expanduser().resolve()
    if not path.is_file():
        return None
    stat = path.stat()
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def read_identity(source: str, path: Path) -> str:
    """The identity of the file a step actually read: for a download, the one its server gave
    when it was downloaded (recorded beside the copy); for a local file, its own."""
    found = recorded_identity(path) if is_url(source) else local_identity(path)
    return found or f"{path}|unknown"


def recorded_identity(path: Path) -> str | None:
    """The identity a downloaded copy was downloaded with (its `.source.json` beside it; None:
    not recorded, or the server gave none)."""
    try:
        found = json.loads(identity_file(path).read_text())["identity"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if found is None else str(found)


def identity_file(path: Path) -> Path:
    return path.with_name(f"{path.name}.source.json")


def cache_folder(cache_dir: Path, source: str) -> Path:
    """Where the downloads from `source` are kept: one folder per source (its host and path),
    so months of two sources never stand in for each other."""
    parsed = urlparse(source)
    return cache_dir / re.sub(r"[^A-Za-z0-9._-]+", "_", f"{parsed.netloc}{parsed.path}").strip("_")


def parquet_digest(path: Path) -> str:
    """A digest of a parquet file's content read from its footer alone (a few kilobytes): the
    schema, row counts and every column chunk's size and statistics, plus the file size.

    It names a month as a dataset without a second pass over millions of rows; a file with
    other data has other chunk sizes or statistics.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(-_FOOTER_TAIL, os.SEEK_END)
        tail = handle.read(_FOOTER_TAIL)
        footer_length = int.from_bytes(tail[:4], "little")
        handle.seek(-(_FOOTER_TAIL + footer_length), os.SEEK_END)
        footer = handle.read(footer_length)
    return hashlib.sha256(f"{size}|".encode() + footer).hexdigest()[:16]


def fetch_month(source: str, taxi: str, month: str, cache_dir: Path) -> Path:
    """Local path of one month's parquet file: the file in a source folder, or a download kept
    in `cache_dir` (a folder per source), downloaded again when the source's file changed."""
    name = tlc_file_name(taxi, month)
    if not is_url(source):
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise PipelineError(
                f"source {source!r} is neither an http(s) URL base nor an existing folder; "
                f"pass TLC's URL ({TLC_URL}) or a folder holding {name}"
            )
        path = folder / name
        if not path.is_file():
            raise PipelineError(
                f"{name} is not in {folder}; put the month there or use the TLC URL as source"
            )
        check_parquet(path, hint=f"replace {path} with the file TLC publishes")
        return path
    return fetch_into(month_location(source, taxi, month), cache_folder(cache_dir, source) / name)


def fetch_into(url: str, dest: Path) -> Path:
    """`url` downloaded to `dest`, unless `dest` holds it already: a complete parquet file
    downloaded when the server gave the identity it gives now (ETag, Last-Modified, length). A
    copy whose source changed since (TLC republished the month), that has no recorded identity,
    or that is corrupt is downloaded again. When the server cannot be asked, the copy is used as
    it is, and says so on stderr."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_orphan_parts(dest.parent)
    if dest.is_file() and identity_file(dest).is_file() and _is_parquet(dest):
        kept, now = recorded_identity(dest), head_identity(url)
        if now == kept:
            return dest
        if now is None:
            print(
                f"tlc: could not ask {url} whether it changed; using the copy downloaded then",
                file=sys.stderr,
                flush=True,
            )
            return dest
    dest.unlink(missing_ok=True)
    identity_file(dest).unlink(missing_ok=True)
    download(url, dest)
    return dest


def _is_parquet(path: Path) -> bool:
    try:
        check_parquet(path, hint="")
    except PipelineError:
        return False
    return True


def remove_orphan_parts(cache_dir: Path) -> list[Path]:
    """Delete temp files of downloads whose process died (SIGKILL skips `finally`)."""
    removed = []
    for part in cache_dir.glob(".*.part"):
        pid = part.name.rsplit(".", 2)[-2]
        if not (pid.isdigit() and process_alive(int(pid))):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


def download(url: str, dest: Path) -> None:
    """Download `url` to `dest` atomically: a temp file in the same folder, verified, then renamed,
    and the identity the server gave it recorded beside it (`<name>.source.json`).

    403/404 (TLC's answer for a month it has not published) fail at once; network errors and
    5xx answers are retried with backoff. Whatever happens, no partial file is left behind.
    """
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                identity = _stream(url, tmp)
                break
            except urllib.error.HTTPError as exc:
                if exc.code in (403, 404):
                    raise PipelineError(
                        f"{dest.name} is not published at {url} (HTTP {exc.code}); check the taxi "
                        f"colour and month (TLC publishes each month about two months later, "
                        f"see {TLC_DOCS})"
                    ) from None
                if exc.code < 500 or attempt == _ATTEMPTS:
                    raise PipelineError(
                        f"downloading {url} failed with HTTP {exc.code} after {attempt} "
                        "attempt(s); retry later or download the file into a local folder "
                        "and pass it as source"
                    ) from None
            except (OSError, http.client.HTTPException) as exc:
                if attempt == _ATTEMPTS:
                    raise PipelineError(
                        f"downloading {url} failed after {attempt} attempts ({exc}); check the "
                        "network or download the file into a local folder and pass it as source"
                    ) from None
            time.sleep(2 ** (attempt - 1))
        check_parquet(
            tmp,
            hint=f"check that source {url.rsplit('/', 1)[0]} serves TLC's parquet files",
            shown_name=url,
        )
        os.replace(tmp, dest)
        # The identity goes beside the copy once the copy is whole: a copy without one (a
        # download killed between the two renames) is downloaded again.
        note = dest.with_name(f".{identity_file(dest).name}.{os.getpid()}.part")
        note.write_text(json.dumps({"url": url, "identity": identity}))
        os.replace(note, identity_file(dest))
    finally:
        tmp.unlink(missing_ok=True)


def _stream(url: str, tmp: Path) -> str | None:
    """Download `url` into `tmp`; returns the identity the server gave the file."""
    request = urllib.request.Request(url, headers=_HEADERS)
    with urllib.request.urlopen(request, timeout=60) as response, open(tmp, "wb") as out:
        identity = remote_identity(url, response.headers)
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            desc=Path(url).name,
            disable=not sys.stderr.isatty(),
            leave=False,
        ) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
    if total is not None and tmp.stat().st_size != total:
        raise http.client.IncompleteRead(b"", total - tmp.stat().st_size)
    return identity


def check_parquet(path: Path, hint: str, shown_name: str | None = None) -> None:
    """Fail unless `path` is a complete parquet file (magic bytes and a readable footer)."""
    try:
        pq.ParquetFile(path).metadata  # noqa: B018  (reads and parses the footer)
    except (pa.ArrowInvalid, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fix = f"; {hint}" if hint else ""
        raise PipelineError(
            f"{shown_name or path} is not a valid parquet file ({reason}){fix}"
        ) from None


def trip_columns(path: Path, optional: tuple[str, ...] = ()) -> dict[str, pa.Field]:
    """The file's field for each canonical column it has (matched case-insensitively through
    COLUMN_ALIASES), read from the footer only; fails naming any missing column that is not in
    `optional`."""
    schema = pq.ParquetFile(path).schema_arrow
    by_lower = {name.lower(): name for name in schema.names}
    chosen: dict[str, pa.Field] = {}
    missing = []
    for canonical, aliases in COLUMN_ALIASES.items():
        found = next((by_lower[a.lower()] for a in aliases if a.lower() in by_lower), None)
        if found is not None:
            chosen[canonical] = schema.field(found)
        elif canonical not in optional:
            missing.append(aliases[0] if len(aliases) == 1 else "/".join(aliases[:2]))
    if missing:
        raise PipelineError(
            f"{path.name} lacks column(s) {', '.join(missing)} (it has {', '.join(schema.names)}); "
            "use a TLC green or yellow trip-record file"
        )
    return chosen


def null_count(path: Path, column: str) -> int:
    """How many values of `column` are missing, from the footer's statistics when every row
    group has them (a few kilobytes read), else by reading that one column."""
    metadata = pq.ParquetFile(path).metadata
    index = metadata.schema.names.index(column)
    counts = []
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(index).statistics
        if stats is None or not stats.has_null_count:
            return int(pq.read_table(path, columns=[column]).column(0).null_count)
        counts.append(stats.null_count)
    return int(sum(counts))


def read_trips(path: Path, optional: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a TLC month into the canonical trip frame (pickup, dropoff, zones, distance)."""
    return read_trips_table(path, optional).to_pandas(self_destruct=True)


def read_trips_table(path: Path, optional: tuple[str, ...] = ()) -> pa.Table:
    """Read a TLC month into the canonical trip table (pickup, dropoff, zones, distance).

    Only those five columns are read from the file (a yellow month carries some twenty), and
    both schema generations (int64 or int32 zone IDs, ns or us timestamps) and both timestamp
    prefixes (green lpep_, yellow tpep_) map onto one set of names and types. Columns named in
    `optional` may be absent from the file: they come back empty (all missing).
    """
    chosen = trip_columns(path, optional)
    table = pq.read_table(path, columns=[field.name for field in chosen.values()])
    table = table.rename_columns(list(chosen))
    try:
        table = table.cast(pa.schema([(c, CANONICAL_TYPES[c]) for c in chosen]), safe=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PipelineError(
            f"{path.name} has columns of unexpected types ({exc}); use a TLC trip-record file"
        ) from None
    for column in COLUMN_ALIASES:
        if column not in chosen:
            table = table.append_column(column, pa.nulls(table.num_rows, CANONICAL_TYPES[column]))
    return table.select(list(COLUMN_ALIASES))
