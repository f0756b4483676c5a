"""Serving the champion: `make serve` (mlflow models serve --env-manager local) started from a
shell where the venv is not activated, on 127.0.0.1, from the trained store (read only: serving
writes nothing). It must answer both JSON formats and CSV with the numbers the in-process model
gives, and a bad request with HTTP 400 and the model's own message, no traceback."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException

from taxi_duration.core.contracts import DEFAULT_MODEL_URI, DISTANCE, DO, MODEL_INPUT_COLUMNS, PU
from tests.conftest import BIN_DIR, DATA_DIR, PROJECT_DIR
from tests.integration.servers import Process, free_port, wait_until

GREEN_PICKUP = "lpep_pickup_datetime"  # the champion reads the time as a green TLC row has it
VENV = Path(sys.executable).parent.parent  # not resolved: python may link outside the venv


@pytest.fixture(scope="module")
def server(trained_store, tmp_path_factory):
    """`make serve` on a free port, PATH without the venv, the trained store as tracking URI."""
    port = free_port()
    path = os.pathsep.join(
        p for p in os.environ.get("PATH", "").split(os.pathsep) if Path(p) != BIN_DIR
    )
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": trained_store.uri}
    env.pop("VIRTUAL_ENV", None)
    argv = [
        "make", "-s", "-C", str(PROJECT_DIR), "serve", f"VENV={VENV}",
        "-o", str(VENV / "bin" / ".installed"),  # the venv exists: do not reinstall it
        f"SERVE_PORT={port}",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    process = Process("make serve", argv, env, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: requests.get(f"{url}/ping", timeout=2).ok, "make serve", process, 240)
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def records() -> pd.DataFrame:
    """Real trips: the model's columns (the pickup time as green rows name it), an extra column
    it ignores, and a missing zone."""
    trips = pd.read_parquet(DATA_DIR / "green_tripdata_2021-03.parquet").head(20)
    columns = [GREEN_PICKUP, *MODEL_INPUT_COLUMNS, "passenger_count"]
    frame = trips[columns].dropna().reset_index(drop=True)
    return frame.astype({PU: "float64"}).assign(**{PU: lambda f: f[PU].mask(f.index == 0)})


@pytest.fixture(scope="module")
def expected(trained_store, records) -> np.ndarray:
    mlflow.set_tracking_uri(trained_store.uri)
    return mlflow.pyfunc.load_model(DEFAULT_MODEL_URI).predict(records).astype("float64")


def invoke(url: str, body: str, content_type: str = "application/json") -> requests.Response:
    return requests.post(
        f"{url}/invocations", data=body, headers={"Content-Type": content_type}, timeout=60
    )


def test_the_server_answers_ping(server):
    assert requests.get(f"{server}/ping", timeout=5).status_code == 200


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "csv"])
def test_served_predictions_are_the_in_process_ones(server, records, expected, form):
    if form == "csv":
        response = invoke(server, records.to_csv(index=False), "text/csv")
    else:  # the times as the ISO 8601 strings a JSON request carries
        orient = form.removeprefix("dataframe_")
        payload = json.loads(records.to_json(orient=orient, index=False, date_format="iso"))
        response = invoke(server, json.dumps({form: payload}))
    assert response.status_code == 200, response.text
    served = np.array(response.json()["predictions"], dtype="float64")
    np.testing.assert_array_equal(served, expected)


def test_the_pickup_time_changes_the_answer(server):
    """The same trip at 8 am on a Tuesday and at 3 am on a Sunday: a time-aware champion knows
    the difference, whichever name and form the time comes in."""
    trip = {PU: 74, DO: 138, DISTANCE: 9.5}
    rush, night = "2021-03-02T08:00:00", "2021-03-07 03:00:00"
    records = [
        {GREEN_PICKUP: rush, **trip},
        {GREEN_PICKUP: night, **trip},
        {GREEN_PICKUP: "2021-03-02T13:00:00Z", **trip},  # 08:00 in New York
    ]
    response = invoke(server, json.dumps({"dataframe_records": records}))
    assert response.status_code == 200, response.text
    at_rush, at_night, with_offset = response.json()["predictions"]
    assert at_rush != at_night
    assert with_offset == at_rush
    yellow = invoke(
        server, json.dumps({"dataframe_records": [{"tpep_pickup_datetime": rush, **trip}]})
    )
    assert yellow.json()["predictions"] == [at_rush]


BAD_REQUESTS = {
    "string zone": (
        {
            "dataframe_records": [
                {GREEN_PICKUP: "2021-03-02T08:00", PU: "Astoria", DO: 75, DISTANCE: 0.8}
            ]
        },
        "column PULocationID must be numeric, got 'Astoria'",
    ),
    "missing column": (
        {
            "dataframe_split": {
                "columns": [GREEN_PICKUP, PU, DO],
                "data": [["2021-03-02T08:00", 74, 75]],
            }
        },
        "input records lack column(s) trip_distance; the model needs pickup_datetime, "
        "PULocationID, DOLocationID, trip_distance for each trip",
    ),
    "no pickup time": (
        {"dataframe_records": [{PU: 74, DO: 75, DISTANCE: 0.8}]},
        "input records lack a pickup time; this model needs one of lpep_pickup_datetime, "
        "tpep_pickup_datetime, pickup_datetime for each trip (a datetime or an ISO 8601 string "
        "such as 2021-03-01T08:15:00)",
    ),
    "unreadable pickup time": (
        {"dataframe_records": [{GREEN_PICKUP: "last Tuesday", PU: 74, DO: 75, DISTANCE: 0.8}]},
        "column lpep_pickup_datetime of record 0 is not a pickup time ('last Tuesday'); give a "
        "datetime or an ISO 8601 string such as 2021-03-01T08:15:00",
    ),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_a_bad_request_gets_400_with_the_model_message_and_no_traceback(server, case):
    payload, message = BAD_REQUESTS[case]
    response = invoke(server, json.dumps(payload))
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"] == "INVALID_PARAMETER_VALUE"
    assert body["message"].endswith(f"Error: {message}")
    assert "Traceback" not in response.text and "stack_trace" not in body


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_in_process_users_get_the_same_message(trained_store, case):
    payload, message = BAD_REQUESTS[case]
    form, data = next(iter(payload.items()))
    frame = pd.DataFrame(data) if form == "dataframe_records" else pd.DataFrame(**data)
    mlflow.set_tracking_uri(trained_store.uri)
    model = mlflow.pyfunc.load_model(DEFAULT_MODEL_URI)
    with pytest.raises(MlflowException) as raised:
        model.predict(frame)
    assert raised.value.message == message
