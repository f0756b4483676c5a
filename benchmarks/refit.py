"""Benchmark: train_best's refit on each engine, on big months: local (XGBoost in the step's own
process) against spark (xgboost.spark's SparkXGBRegressor on a Spark master, local[2] here).

Run with `python benchmarks/refit.py --data data` from the project root. Everything runs for real
on this machine, in a temporary directory; nothing is mocked.

For each training-month size (--rows, 1 million and 3.3 million by default), yellow-layout months
built as benchmarks/bench.py builds them (real green trips, repeated; validation and test months
of --val-rows trips), then ingest, featurize and a short hpo (--max-evals trials: what is measured
is the refit of the trial it picks), then train_best with each engine on that same hpo run. For
each: wall seconds, the refit's own seconds and trees, validation and test RMSE, and peak resident
memory sampled from /proc every 0.1 s: of the step's Python process (with engine=spark, the
driver), of its whole process tree (with Spark, also the JVM and the Python workers XGBoost trains
in) and of its largest process. The driver's figure is the one that must not grow with the month.

Prints a table and writes it all as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import BIG_MONTHS, build_big_months
from mlflow.tracking import MlflowClient
from predict import measured

ROOT = Path(__file__).resolve().parents[1]
TRAIN_MONTH, VAL_MONTH, TEST_MONTH = BIG_MONTHS[2:]


def step(module: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """`python -m steps.<module>` to completion, sampling its memory; its run and figures."""
    figures = measured([sys.executable, "-m", f"steps.{module}", *args], ROOT, env)
    stdout = figures.pop("stdout")
    line = next(x for x in stdout.splitlines() if x.startswith(f"{module}: runs:/"))
    uri = line.split()[1]
    run = MlflowClient(env["MLFLOW_TRACKING_URI"]).get_run(uri.removeprefix("runs:/"))
    return {"uri": uri, "run": run, **figures}


def refits(
    data: Path, rows: int, work: Path, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    folder = work / f"months-{rows}"
    build_big_months(data, folder, rows, args.val_rows)
    months = ["--taxi", "yellow", "--train-month", TRAIN_MONTH, "--val-month", VAL_MONTH]
    months += ["--test-month", TEST_MONTH, "--source", str(folder)]
    ingest = step("ingest", months, env)
    featurize = step("featurize", ["--ingest-run", ingest["uri"]], env)
    hpo = step("hpo", ["--features-run", featurize["uri"], "--max-evals", str(args.max_evals)], env)
    engines = {}
    for engine in args.engines:
        print(f"{rows:,} rows: train_best, engine {engine} ...", file=sys.stderr, flush=True)
        extra = ["--engine", engine, "--spark-master", args.spark_master]
        extra += ["--num-workers", str(args.num_workers)]
        trained = step("train_best", ["--hpo-run", hpo["uri"], *extra], env)
        metrics = trained.pop("run").data.metrics
        trained.pop("uri")
        engines[engine] = {
            **trained,
            "training_seconds": round(metrics["training_seconds"], 1),
            "n_trees": int(metrics["n_trees"]),
            "val_rmse": round(metrics["val_rmse"], 4),
            "test_rmse": round(metrics["test_rmse"], 4),
        }
        print(json.dumps({engine: engines[engine]}), file=sys.stderr, flush=True)
    for path in folder.iterdir():
        path.unlink()
    return {
        "train_rows": int(featurize["run"].data.metrics["train_rows_kept"]),
        "val_rows": int(featurize["run"].data.metrics["val_rows_kept"]),
        "engines": engines,
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"machine: {result['machine']}", f"spark master: {result['spark_master']}", ""]
    lines.append(
        f"{'train rows':>11} {'engine':<7}{'wall s':>8}{'refit s':>9}{'trees':>7}"
        f"{'val RMSE':>10}{'test RMSE':>11}{'step process':>14}{'tree':>11}{'largest':>10}"
    )
    for size in result["sizes"]:
        for engine, row in size["engines"].items():
            lines.append(
                f"{size['train_rows']:>11,} {engine:<7}{row['wall_seconds']:>8.1f}"
                f"{row['training_seconds']:>9.1f}{row['n_trees']:>7}{row['val_rmse']:>10.4f}"
                f"{row['test_rmse']:>11.4f}{row['peak_rss_process_mib']:>10} MiB"
                f"{row['peak_rss_tree_mib']:>7} MiB{row['peak_rss_largest_mib']:>6} MiB"
            )
    lines += ["", "peak resident memory: of the step's Python process (with spark, the driver),"]
    lines += ["of its whole process tree, and of its largest process"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT / "data", help="folder of real green TLC months"
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 3_300_000])
    parser.add_argument("--val-rows", type=int, default=1_000_000)
    parser.add_argument("--max-evals", type=int, default=3, help="trials of the short hpo")
    parser.add_argument("--engines", nargs="+", default=["local", "spark"])
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "refit.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-refit-") as tmp:
        work = Path(tmp)
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        env["MLFLOW_EXPERIMENT_NAME"] = "bench-refit"
        sizes = [refits(args.data.resolve(), rows, work, env, args) for rows in args.rows]
    result = {
        "machine": f"{platform.node()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "spark_master": args.spark_master,
        "sizes": sizes,
    }
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
