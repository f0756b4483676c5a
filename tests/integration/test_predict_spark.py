"""predict engine=spark against engine=pandas: the same files (columns, types, rows in order,
predictions) and the same metrics, on every kind of TLC file the readers must handle."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from taxi_duration.core.contracts import MODEL_NAME
from tests.conftest import DATA_DIR
from tests.integration.test_predict import Predict

pytest.importorskip("pyspark")

# Month label -> the real sample behind it, and what is done to it. predict reads a file by its
# name (taxi + month), so one "green" folder can hold every variant the readers must handle.
VARIANTS = {
    "2021-01": ("green_tripdata_2021-01.parquet", "first schema generation: int64 zones"),
    "2021-02": ("green_tripdata_2021-02.parquet", "timestamps in nanoseconds"),
    "2021-03": ("green_tripdata_2021-03.parquet", "timestamps with a UTC time zone"),
    "2023-02": ("green_tripdata_2023-02.parquet", "second generation: int32 zones"),
    "2023-03": ("yellow_tripdata_2023-03.parquet", "yellow: tpep_ names"),
    "2023-04": ("yellow_tripdata_2023-04.parquet", "no dropoff time at all"),
}


def retyped(table: pa.Table, kind: pa.DataType) -> pa.Table:
    fields = [pa.field(f.name, kind) if pa.types.is_timestamp(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields))


def variants_folder(root: Path) -> Path:
    folder = root / "variants"
    folder.mkdir()
    for month, (sample, _) in VARIANTS.items():
        table = pq.read_table(DATA_DIR / sample)
        if month == "2021-02":
            table = retyped(table, pa.timestamp("ns"))
        elif month == "2021-03":
            table = retyped(table, pa.timestamp("us", tz="UTC"))
        elif month == "2023-04":
            table = table.drop_columns(["tpep_dropoff_datetime"])
        pq.write_table(table, folder / f"green_tripdata_{month}.parquet")
    assert str(pq.read_schema(folder / "green_tripdata_2021-02.parquet").field(1).type) == (
        "timestamp[ns]"
    )
    return folder


def test_spark_and_pandas_engines_write_the_same_predictions(store_copy, tmp_path):
    predict = Predict(store_copy)
    folder = variants_folder(tmp_path)
    months = ",".join(VARIANTS)
    common = [
        "--months",
        months,
        "--source",
        str(folder),
        "--compare-to",
        f"models:/{MODEL_NAME}/1",
    ]
    runs = {}
    for engine in ("pandas", "spark"):
        args = [*common, "--engine", engine, "--output", str(tmp_path / engine)]
        if engine == "spark":
            args += ["--spark-master", "local[2]"]
        runs[engine], _ = predict.ok(*args)

    for month, (_, what) in VARIANTS.items():
        name = f"green_{month}.parquet"
        by_pandas = pq.read_table(tmp_path / "pandas" / name)
        by_spark = pq.read_table(tmp_path / "spark" / name)
        assert by_spark.schema == by_pandas.schema, what
        assert by_spark.num_rows == by_pandas.num_rows > 900, what
        pd.testing.assert_frame_equal(by_spark.to_pandas(), by_pandas.to_pandas(), obj=what)

    spark_run = runs["spark"]
    assert spark_run.data.params["engine"] == "spark"
    for key in ("rmse", "mae", "bias", "rows", "rows_scored", "compare_rmse"):
        history = {
            engine: [
                (m.step, m.value) for m in predict.client.get_metric_history(run.info.run_id, key)
            ]
            for engine, run in runs.items()
        }
        assert [s for s, _ in history["spark"]] == [s for s, _ in history["pandas"]], key
        assert [v for _, v in history["spark"]] == pytest.approx(
            [v for _, v in history["pandas"]], rel=1e-12
        ), key
    # The month without dropoff times has rows but nothing to measure the error on.
    rows_scored = predict.client.get_metric_history(spark_run.info.run_id, "rows_scored")
    assert dict((m.step, m.value) for m in rows_scored)[202304] == 0
    assert 202304 not in {
        m.step for m in predict.client.get_metric_history(spark_run.info.run_id, "rmse")
    }
    names = sorted(i.dataset.name for i in spark_run.inputs.dataset_inputs)
    assert names == sorted(f"green_tripdata_{m}.parquet" for m in VARIANTS)
    shutil.rmtree(tmp_path / "variants")
