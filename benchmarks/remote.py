"""The default pipeline against a tracking server as on a VM, beside the embedded SQLite store.

Starts PostgreSQL, S3 (moto) and `mlflow server` with docker/compose.yaml's command (proxied
artifacts) on 127.0.0.1, the same helpers the remote tests use, then times
`mlflow run . -e main` on the real months against it and against sqlite:///mlflow.db.
Run: python benchmarks/remote.py --data data [--max-evals 50]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from mlflow.tracking import MlflowClient

from tests.conftest import mlflow_run_command, subprocess_env
from tests.integration.servers import PROXIED, S3, MlflowServer, Postgres

ROOT = Path(__file__).resolve().parents[1]


def timed_main(env: dict[str, str], cwd: Path, data: Path, max_evals: int) -> float:
    command = mlflow_run_command(
        "-e", "main", params={"source": str(data), "max_evals": str(max_evals)}
    )
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(result.stderr[-3000:])
    return time.perf_counter() - started


def figures(uri: str) -> dict[str, float]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("nyc-taxi-experiment")
    main = client.search_runs([exp.experiment_id], "tags.`pipeline.step` = 'main'")[0]
    return {k: round(main.data.metrics[k], 4) for k in ("best_val_rmse", "test_rmse")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "data",
        help="folder of TLC files (make data fills data/)",
    )
    parser.add_argument("--max-evals", type=int, default=50)
    args = parser.parse_args()
    data = args.data.resolve()
    for name in list(os.environ):
        if name.startswith(("AWS_", "MLFLOW_TRACKING_", "MLFLOW_S3_")):
            del os.environ[name]
    result = {}
    with tempfile.TemporaryDirectory(prefix="remote-bench-") as tmp, ExitStack() as cleanup:
        work = Path(tmp)
        sqlite_dir = work / "sqlite"
        sqlite_dir.mkdir()
        wall = timed_main(subprocess_env(), sqlite_dir, data, args.max_evals)
        result["sqlite"] = {
            "wall_seconds": round(wall, 1),
            **figures(f"sqlite:///{sqlite_dir}/mlflow.db"),
        }

        postgres = Postgres()
        cleanup.callback(postgres.stop)
        postgres.start()
        s3 = S3(work)
        cleanup.callback(s3.stop)
        server = MlflowServer(PROXIED, postgres, s3, work / "server", name="bench")
        cleanup.callback(server.stop)
        server.wait_ready()
        remote_dir = work / "remote"
        remote_dir.mkdir()
        wall = timed_main(subprocess_env(**server.client_env()), remote_dir, data, args.max_evals)
        result["proxied_postgres_s3"] = {"wall_seconds": round(wall, 1), **figures(server.uri)}
    for name, row in result.items():
        print(
            f"{name:<22} wall {row['wall_seconds']:>7.1f} s  best val RMSE "
            f"{row['best_val_rmse']:.4f}  test RMSE {row['test_rmse']:.4f}"
        )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
