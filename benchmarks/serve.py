"""Benchmark: the REST server `make serve` starts (mlflow models serve --env-manager local).

Run with `python benchmarks/serve.py` from the project root, where `mlflow.db` holds the
champion (or pass --tracking-uri). It starts the server on 127.0.0.1 on a free port, with the
venv first on PATH as `make serve` does, and stops it at the end; nothing leaves this machine.

Two request sizes, real trips from --data (dataframe_split JSON, the columns the model's
metadata names, a pickup time as an ISO string): 1 record and 10,000 records,
each sent by --clients concurrent clients (one HTTP session each) until --requests requests
(or --max-seconds) per size. Prints requests/s, rows/s, p50 and p99 latency, and errors (any
answer other than HTTP 200 with as many predictions as rows: must be 0). JSON in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import requests
from mlflow.models import Model

from taxi_duration.core.contracts import DEFAULT_MODEL_URI, MODEL_INPUT_COLUMNS, PICKUP

GREEN_PICKUP = "lpep_pickup_datetime"

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """`mlflow models serve` in its own process group; stopped (the whole group) on exit."""

    def __init__(self, model_uri: str, tracking_uri: str, workers: int, log: Path) -> None:
        self.url = f"http://{HOST}:{free_port()}"
        env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        command = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri]
        command += ["--env-manager", "local", "-h", HOST, "-p", self.url.rsplit(":", 1)[1]]
        command += ["-w", str(workers)]
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/ping", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        sys.exit(f"the server did not answer /ping within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def payloads(data: Path, sizes: list[int], columns: list[str]) -> dict[int, str]:
    """dataframe_split bodies of real trips, one per size (rows repeat if the data is short),
    with the columns the model reads: a pickup time as green rows name it, as an ISO string."""
    files = sorted(data.glob("green_tripdata_*.parquet"))
    if not files:
        sys.exit(f"no green_tripdata_*.parquet in {data}; pass --data <folder of TLC months>")
    wanted = [GREEN_PICKUP if c == PICKUP else c for c in columns]
    trips = pd.read_parquet(files[-1], columns=wanted)
    bodies = {}
    for size in sizes:
        rows = trips.iloc[np.arange(size) % len(trips)].reset_index(drop=True)
        split = json.loads(rows.to_json(orient="split", index=False, date_format="iso"))
        bodies[size] = json.dumps({"dataframe_split": split})
    return bodies


def input_columns(model_uri: str, tracking_uri: str) -> list[str]:
    """The columns the model's metadata says it reads (models logged before there were feature
    sets read the zones and the distance)."""
    mlflow.set_tracking_uri(tracking_uri)
    found = Model.load(model_uri).metadata or {}
    return list(found.get("input_columns", MODEL_INPUT_COLUMNS))


def load(url: str, body: str, rows: int, clients: int, total: int, max_seconds: float) -> dict:
    """`clients` threads send `body` until `total` requests have been sent or time is up."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    lock = threading.Lock()
    deadline = time.monotonic() + max_seconds

    def client() -> None:
        nonlocal sent
        session = requests.Session()
        headers = {"Content-Type": "application/json"}
        while True:
            with lock:
                if sent >= total or time.monotonic() > deadline:
                    return
                sent += 1
            started = time.perf_counter()
            try:
                response = session.post(
                    f"{url}/invocations", data=body, headers=headers, timeout=120
                )
                ok = response.status_code == 200 and len(response.json()["predictions"]) == rows
                problem = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
            except (requests.RequestException, ValueError, KeyError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if problem:
                    errors.append(problem)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    done = len(latencies)
    return {
        "rows_per_request": rows,
        "clients": clients,
        "requests": done,
        "seconds": round(seconds, 2),
        "requests_per_second": round(done / seconds, 1),
        "rows_per_second": round(done * rows / seconds),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"machine: {result['machine']}", f"server: {result['server']}"]
    lines += [f"columns: {', '.join(result['columns'])}", ""]
    lines.append(
        f"{'rows/request':>12}{'clients':>8}{'requests':>9}{'req/s':>8}{'rows/s':>10}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'errors':>7}"
    )
    for row in result["runs"]:
        lines.append(
            f"{row['rows_per_request']:>12,}{row['clients']:>8}{row['requests']:>9}"
            f"{row['requests_per_second']:>8.1f}{row['rows_per_second']:>10,}"
            f"{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}{row['errors']:>7}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=f"sqlite:///{ROOT / 'mlflow.db'}")
    parser.add_argument("--model-uri", default=DEFAULT_MODEL_URI)
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="TLC files (make data)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the server")
    parser.add_argument("--small-requests", type=int, default=1000, help="1-record requests")
    parser.add_argument("--big-requests", type=int, default=40, help="10,000-record requests")
    parser.add_argument("--max-seconds", type=float, default=120, help="per request size")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "serve.json")
    args = parser.parse_args()

    columns = input_columns(args.model_uri, args.tracking_uri)
    bodies = payloads(args.data, [1, 10_000], columns)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        server = Server(args.model_uri, args.tracking_uri, args.workers, Path(tmp) / "serve.log")
        try:
            server.wait_ready()
            for size in (1, 10_000):  # warm up: the first requests load lazily
                load(server.url, bodies[size], size, 1, 3, args.max_seconds)
            runs = [
                load(server.url, bodies[1], 1, args.clients, args.small_requests, args.max_seconds),
                load(
                    server.url,
                    bodies[10_000],
                    10_000,
                    args.clients,
                    args.big_requests,
                    args.max_seconds,
                ),
            ]
        finally:
            server.stop()
    result = {
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "server": f"mlflow models serve -m {args.model_uri} --env-manager local -w {args.workers}",
        "columns": columns,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))
    if any(r["errors"] for r in runs):
        sys.exit(f"errors: {[r['first_error'] for r in runs if r['errors']]}")


if __name__ == "__main__":
    main()
