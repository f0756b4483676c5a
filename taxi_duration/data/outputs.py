"""predict's files: a month's predictions (one parquet schema, whichever engine wrote it), the
errors read back from them, and where they end up: the run's artifacts, a local folder or an
s3:// prefix.

Every file is first written into a private staging folder; only once every month has been
scored is it moved into place (a rename inside the output folder) or uploaded, so a failed run
leaves no partial predictions file at the destination.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from taxi_duration.core.contracts import DISTANCE, DO, PICKUP, PU, TARGET
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.processes import process_alive
from taxi_duration.data.parquet import record_batches

S3 = "s3://"
_BATCH_ROWS = 1 << 20
_STAGING_PREFIX = ".predict-staging-"
_TYPES: dict[str, pa.DataType] = {
    PICKUP: pa.timestamp("us"),
    PU: pa.int64(),
    DO: pa.int64(),
    DISTANCE: pa.float64(),
    TARGET: pa.float64(),
}


def prediction_schema(columns: Sequence[str]) -> pa.Schema:
    """The predictions file's schema: the trips' columns as ingest types them, minutes as
    doubles (predictions included)."""
    return pa.schema([(column, _TYPES.get(column, pa.float64())) for column in columns])


def write_frame(frame: pd.DataFrame, path: Path) -> None:
    """Write a predictions frame (pandas engine) with the shared schema and no pandas metadata,
    so it reads back exactly like the Spark engine's file."""
    table = pa.Table.from_pandas(
        frame, schema=prediction_schema(list(frame.columns)), preserve_index=False
    )
    pq.write_table(table.replace_schema_metadata(None), path)


def merge_parts(parts: Sequence[Path], path: Path, columns: Sequence[str]) -> None:
    """Concatenate Spark's part files, in order, into one parquet file with the shared schema,
    a batch at a time (memory stays bounded whatever the month's size)."""
    schema = prediction_schema(columns)
    with pq.ParquetWriter(path, schema) as writer:
        for part in parts:
            for batch in record_batches(part, rows=_BATCH_ROWS):
                writer.write_table(pa.Table.from_batches([batch]).select(columns).cast(schema))


# --- where the files go ----------------------------------------------------------------------


def is_s3(output: str) -> bool:
    return output.startswith(S3)


def split_s3(output: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> (bucket, 'some/prefix')."""
    bucket, _, prefix = output[len(S3) :].partition("/")
    return bucket, prefix.strip("/")


def describe(output: str, name: str) -> str:
    """Where a file called `name` ends up."""
    if is_s3(output):
        bucket, prefix = split_s3(output)
        return f"{S3}{bucket}/{prefix + '/' if prefix else ''}{name}"
    return str(Path(output).expanduser().resolve() / name)


def _s3_client() -> Any:
    # boto3 is the client MLflow itself uses for s3:// artifacts; the same environment variables
    # (AWS credentials, MLFLOW_S3_ENDPOINT_URL for a non-AWS S3) configure it.
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None)


def _s3_problem(exc: Exception, output: str) -> PipelineError:
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return PipelineError(
            f"no AWS credentials to write {output}; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (and MLFLOW_S3_ENDPOINT_URL for an S3 other than AWS)"
        )
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "?")
        return PipelineError(
            f"S3 refused {output} ({code}); check that the bucket exists and that these "
            "credentials may write to it"
        )
    return PipelineError(
        f"cannot reach S3 for {output} ({type(exc).__name__}); check MLFLOW_S3_ENDPOINT_URL and "
        "the network"
    )


def check_writable(output: str) -> None:
    """Fail before any scoring if the destination cannot take the files: a bucket that does not
    exist or refuses these credentials, a folder that cannot be created."""
    if not output:
        return
    if is_s3(output):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _ = split_s3(output)
        try:
            _s3_client().head_bucket(Bucket=bucket)
        except (BotoCoreError, ClientError) as exc:
            raise _s3_problem(exc, output) from None
        return
    folder = Path(output).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PipelineError(
            f"cannot create the output folder {folder} ({exc.strerror}); pick a folder you may "
            "write to"
        ) from None


@contextmanager
def staging(output: str) -> Iterator[Path]:
    """A private folder to write the predictions into, removed at the end whatever happens.

    For a local output it is a hidden folder inside it, so publishing is a rename on the same
    filesystem; staging folders left by a killed process are removed first.
    """
    if output and not is_s3(output):
        folder = Path(output).expanduser()
        remove_orphan_staging(folder)
        path = Path(tempfile.mkdtemp(prefix=f"{_STAGING_PREFIX}{os.getpid()}-", dir=folder))
    else:
        path = Path(tempfile.mkdtemp(prefix="nyc-taxi-predict-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_orphan_staging(folder: Path) -> list[Path]:
    """Delete staging folders of predict processes that died (SIGKILL skips `finally`)."""
    removed = []
    for path in folder.glob(f"{_STAGING_PREFIX}*"):
        pid = path.name[len(_STAGING_PREFIX) :].split("-", 1)[0]
        if not (pid.isdigit() and process_alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def publish(staged: Path, names: Sequence[str], output: str) -> list[str]:
    """Move (local folder) or upload (s3://) the staged files to `output`; returns where each
    went. An upload that fails half way deletes what it had uploaded."""
    if is_s3(output):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _ = split_s3(output)
        client = _s3_client()
        done: list[str] = []
        try:
            for name in names:
                key = describe(output, name)[len(S3) + len(bucket) + 1 :]
                client.upload_file(str(staged / name), bucket, key)
                done.append(key)
        except (BotoCoreError, ClientError) as exc:
            for key in done:
                client.delete_object(Bucket=bucket, Key=key)
            raise _s3_problem(exc, output) from None
        return [describe(output, name) for name in names]
    folder = Path(output).expanduser()
    for name in names:
        os.replace(staged / name, folder / name)
    return [describe(output, name) for name in names]
