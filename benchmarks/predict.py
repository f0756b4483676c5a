"""Benchmark: batch scoring with `predict`, the pandas engine against the Spark engine.

Run with `python benchmarks/predict.py --data data` from the project root. Everything
runs for real on this machine, in a temporary directory; nothing is mocked.

1. The model: `--tracking-uri` and `--model-uri` name an existing one, or the benchmark trains
   one in its own store (`mlflow run -e main` on the real 2021-01..03 green months, `--max-evals`
   trials, the default 1000 boosting rounds with early stopping, so the tree count is realistic).
2. The input: every real green month in `--data` stacked `--repeats` times into one month file
   (`green_tripdata_2030-01.parquet`: the month label is made up, the rows are real), optionally
   cut to `--limit` rows to check the benchmark itself quickly.
3. `predict` of that month, one process per engine and size: process wall seconds, the run's
   own `rows_per_second` (read, score, write and measure; Spark's start included), and the peak
   resident memory of the whole process tree (the Python driver, Spark's JVM and its Python
   workers, sampled from /proc every 0.1 s; shared pages count once per process) and of its
   largest process; then whether the engines' predictions files hold identical predictions.

Prints a table and writes it all as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import (
    DISTANCE,
    DO,
    DROPOFF,
    PICKUP,
    PREDICTION,
    PU,
    predictions_file,
)
from taxi_duration.data.tlc import read_trips

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MONTH = "2030-01"
PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> tuple[int, int]:
    """(sum, largest) resident bytes of `root` and every process below it, read from /proc."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            statm = (entry / "statm").read_text().split()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        rss[int(entry.name)] = int(statm[1]) * PAGE
    total, largest, todo = 0, 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        largest = max(largest, rss.get(pid, 0))
        todo.extend(children.get(pid, []))
    return total, largest


def process_rss(pid: int) -> int:
    """Resident bytes of one process (0 once it is gone)."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def measured(command: list[str], cwd: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run a command to completion, sampling the memory of its process and of its process tree;
    fail loudly, with the error lines of its stderr (or its tail when it has none: a JVM's stack
    trace would bury the one line that says what went wrong)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = {"process": 0, "tree": 0, "largest": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            total, largest = tree_rss(process.pid)
            own = process_rss(process.pid)
            peak["process"], peak["tree"] = max(peak["process"], own), max(peak["tree"], total)
            peak["largest"] = max(peak["largest"], largest)
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - started
    if process.returncode != 0:
        errors = [x for x in stderr.splitlines() if ": error: " in x or "Error:" in x][:5]
        detail = "\n".join(errors) if errors else stderr[-3000:]
        sys.exit(f"benchmark command failed: {' '.join(command)}\n{detail}")
    return {
        "wall_seconds": round(wall, 1),
        "peak_rss_process_mib": round(peak["process"] / 2**20),
        "peak_rss_tree_mib": round(peak["tree"] / 2**20),
        "peak_rss_largest_mib": round(peak["largest"] / 2**20),
        "stdout": stdout,
    }


def train(data: Path, work: Path, env: dict[str, str], max_evals: int) -> str:
    """Train and register a champion in the benchmark's own store; returns its model URI."""
    command = [str(BIN / "mlflow"), "run", str(ROOT), "-e", "main", "--env-manager", "local"]
    command += ["-P", f"source={data}", "-P", f"max_evals={max_evals}"]
    measured(command, work, env)
    return "models:/nyc-taxi-duration@champion"


def stacked_month(data: Path, folder: Path, repeats: int, limit: int | None) -> int:
    """Every real green month in `data`, `repeats` times, as one month file; returns its rows."""
    frames = [read_trips(p) for p in sorted(data.glob("green_tripdata_*.parquet"))]
    if not frames:
        sys.exit(f"no green_tripdata_*.parquet in {data}; pass --data <folder of TLC months>")
    stacked = pd.concat(frames * repeats, ignore_index=True)
    if limit:
        stacked = stacked.head(limit)
    folder.mkdir(parents=True, exist_ok=True)
    names = {
        PICKUP: "lpep_pickup_datetime",
        DROPOFF: "lpep_dropoff_datetime",
        PU: PU,
        DO: DO,
        DISTANCE: DISTANCE,
    }
    stacked.rename(columns=names).to_parquet(folder / f"green_tripdata_{MONTH}.parquet")
    return len(stacked)


def score(
    engine: str, folder: Path, model_uri: str, work: Path, env: dict[str, str], master: str
) -> dict[str, Any]:
    command = [sys.executable, "-m", "steps.predict", "--months", MONTH, "--source", str(folder)]
    command += ["--model-uri", model_uri, "--engine", engine, "--spark-master", master]
    command += ["--output", str(work / f"out-{engine}")]
    result = measured(command, work, env)
    line = next(x for x in result.pop("stdout").splitlines() if x.startswith("predict: runs:/"))
    run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(line.split()[1].split("/")[-1])
    return {
        **result,
        "rows_per_second": round(run.data.metrics["rows_per_second"]),
        "scoring_seconds": round(run.data.metrics["scoring_seconds"], 1),
        "rmse": round(run.data.metrics["rmse"], 4),
    }


def same(work: Path, args: argparse.Namespace) -> bool | None:
    """Whether every engine wrote the very same predictions (None: only one engine ran)."""
    if len(args.engines) < 2:
        return None
    name = predictions_file("green", MONTH)
    columns = [pq.read_table(work / f"out-{e}" / name, columns=[PREDICTION]) for e in args.engines]
    return all(column.equals(columns[0]) for column in columns[1:])


def table(result: dict[str, Any]) -> str:
    lines = [f"machine: {result['machine']}", f"model: {result['model_uri']}", ""]
    head = f"{'rows':>12} {'engine':<7}{'rows/s':>10}{'scoring s':>11}{'wall s':>8}"
    lines.append(head + f"{'peak RSS tree':>15}{'largest':>9}")
    for size in result["sizes"]:
        for engine, row in size["engines"].items():
            lines.append(
                f"{size['rows']:>12,} {engine:<7}{row['rows_per_second']:>10,}"
                f"{row['scoring_seconds']:>11.1f}{row['wall_seconds']:>8.1f}"
                f"{row['peak_rss_tree_mib']:>11} MiB{row['peak_rss_largest_mib']:>5} MiB"
            )
        if size["same"] is not None:
            lines.append(f"{'':>13}same predictions from every engine: {size['same']}")
    lines += ["", result["note"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "data",
        help="folder of TLC files (make data fills data/)",
    )
    parser.add_argument("--repeats", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--limit", type=int, default=None, help="cut the input to N rows")
    parser.add_argument("--engines", nargs="+", default=["pandas", "spark"])
    parser.add_argument("--spark-master", default="local[*]")
    parser.add_argument("--tracking-uri", default=None, help="an existing store with the model")
    parser.add_argument("--model-uri", default="models:/nyc-taxi-duration@champion")
    parser.add_argument("--max-evals", type=int, default=10, help="trials when training here")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "predict.json"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        work = Path(tmp)
        env = dict(os.environ)
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = str(ROOT)
        # A new experiment each time: its artifacts (the monitoring files) go to this temp dir.
        env["MLFLOW_EXPERIMENT_NAME"] = f"bench-predict-{int(time.time())}"
        if args.tracking_uri:
            env["MLFLOW_TRACKING_URI"] = args.tracking_uri
            model_uri = args.model_uri
        else:
            env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
            print(f"training a model ({args.max_evals} trials)...", file=sys.stderr)
            model_uri = train(args.data.resolve(), work, env, args.max_evals)
        sizes = []
        for repeats in args.repeats:
            folder = work / f"x{repeats}"
            rows = stacked_month(args.data, folder, repeats, args.limit)
            engines = {}
            for engine in args.engines:
                print(f"{rows:,} rows, engine {engine}...", file=sys.stderr)
                engines[engine] = score(engine, folder, model_uri, work, env, args.spark_master)
            sizes.append(
                {"repeats": repeats, "rows": rows, "engines": engines, "same": same(work, args)}
            )
            for path in folder.iterdir():
                path.unlink()
    months = len(list(args.data.glob("green_tripdata_*.parquet")))
    result = {
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "model_uri": model_uri,
        "spark_master": args.spark_master,
        "note": f"input: the {months} real green months in {args.data.name} stacked xN "
        f"into one month file{f', cut to {args.limit:,} rows' if args.limit else ''}",
        "sizes": sizes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
