"""Benchmark: the course notebook's flow against this pipeline, and the pipeline at scale.

Run with `make bench` (or `python benchmarks/bench.py --data ../shared/data`). Everything runs
for real, in one process tree on this machine, in a temporary directory; nothing is mocked.

1. course flow: ../shared/reference/notebook_baseline.py with --course-trials trials;
2. hpo with each encoding: seconds per trial, best validation RMSE after the same number of
   trials, time to reach the course flow's best RMSE;
3. the default `main` (50 trials): wall time, each step's own time, orchestration overhead,
   best validation and test RMSE; then the same command again (everything reused);
4. scale: a yellow-month-sized training month (real green months stacked and repeated, so
   ~3 million real rows; the output says so) through ingest, featurize and a short hpo, each
   step a separate process measured for rows per second and peak RSS, at two sizes.

Prints a table and writes it all as JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from steps.contracts import DISTANCE, DO, DROPOFF, PICKUP, PU, STEP_TAG, STEPS
from steps.tlc import read_trips

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(command: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """Run a command to completion; return its wall seconds and stdout (fail loudly)."""
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"benchmark command failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return seconds, result.stdout


def duration(finished: Any) -> float:
    """A run's own seconds, start to end, as the tracking store recorded them."""
    return (finished.info.end_time - finished.info.start_time) / 1000


def mlflow_run(entry: str, params: dict[str, Any], cwd: Path, env: dict[str, str]) -> float:
    command = [str(BIN / "mlflow"), "run", str(ROOT), "-e", entry, "--env-manager", "local"]
    command += ["--experiment-name", "bench"]
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    seconds, _ = run(command, cwd, env)
    return seconds


def trial_curve(runs: list[Any], seconds_of: Any) -> pd.DataFrame:
    """Trials in the order they ran: rmse, seconds, cumulative seconds, best so far."""
    rows = sorted(runs, key=lambda r: r.info.start_time)
    frame = pd.DataFrame(
        {"rmse": [r.data.metrics["rmse"] for r in rows], "seconds": [seconds_of(r) for r in rows]}
    )
    frame["elapsed"] = frame["seconds"].cumsum()
    frame["best"] = frame["rmse"].cummin()
    return frame


def time_to_reach(curve: pd.DataFrame, target: float) -> float | None:
    reached = curve[curve["best"] <= target]
    return None if reached.empty else float(reached["elapsed"].iloc[0])


def summarize_curve(curve: pd.DataFrame, n: int, target: float) -> dict[str, Any]:
    first = curve.head(n)
    return {
        "trials": n,
        "seconds_per_trial": round(float(first["seconds"].mean()), 2),
        "best_val_rmse_after_n": round(float(first["rmse"].min()), 4),
        "seconds_to_course_best": time_to_reach(curve, target),
    }


def course_flow(data: Path, trials: int, work: Path, env: dict[str, str]) -> dict[str, Any]:
    script = ROOT.parent / "shared" / "reference" / "notebook_baseline.py"
    if not script.is_file():
        script = data.parent / "reference" / "notebook_baseline.py"
    uri = f"sqlite:///{work / 'baseline.db'}"
    command = [sys.executable, str(script), str(data / "green_tripdata_2021-01.parquet")]
    command += [str(data / "green_tripdata_2021-02.parquet"), "--evals", str(trials)]
    wall, out = run([*command, "--tracking-uri", uri], work, env)
    figures = dict(re.findall(r"(\w+)=([\d.]+)", out.splitlines()[-1]))
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("nyc-taxi-baseline")
    curve = trial_curve(client.search_runs([exp.experiment_id]), duration)
    best = float(curve["rmse"].min())  # the logged value; the printed one is rounded
    return {
        "wall_seconds": round(wall, 1),
        "featurize_seconds": float(figures["featurize_s"]),
        "tuning_seconds": float(figures["hpo_s"]),
        "best_val_rmse": best,
        **summarize_curve(curve, trials, best),
    }


def pipeline(
    data: Path, work: Path, env: dict[str, str], course: dict[str, Any], max_evals: int
) -> dict:
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    main_params = {"source": data, "max_evals": max_evals}
    wall = mlflow_run("main", main_params, work, env)
    exp = client.get_experiment_by_name("bench")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    main = next(r for r in runs if r.data.tags.get(STEP_TAG) == "main")
    steps = {r.data.tags[STEP_TAG]: r for r in runs if r.data.tags.get(STEP_TAG) in STEPS}
    step_seconds = {s: round(duration(steps[s]), 1) for s in STEPS}
    hpo = steps["hpo"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == hpo.info.run_id]
    curve = trial_curve(trials, lambda r: r.data.metrics["training_seconds"])
    target = course["best_val_rmse"]
    categorical = summarize_curve(curve, course["trials"], target)
    categorical["seconds_per_trial_with_logging"] = round(hpo.data.metrics["seconds_per_trial"], 2)

    rerun_wall = mlflow_run("main", main_params, work, env)
    rerun = client.search_runs(
        [exp.experiment_id], "tags.`pipeline.step` = 'main'", order_by=["start_time DESC"]
    )[0]

    onehot = {}
    if course.get("onehot_trials"):
        ingest = f"runs:/{steps['ingest'].info.run_id}"
        mlflow_run("featurize", {"ingest_run": ingest, "encoding": "onehot"}, work, env)
        featurize = client.search_runs(
            [exp.experiment_id],
            "tags.`pipeline.step` = 'featurize' and tags.encoding = 'onehot'",
        )[0]
        n = course["onehot_trials"]
        hpo_params = {"features_run": f"runs:/{featurize.info.run_id}", "max_evals": n}
        hpo_params["num_boost_round"] = course["onehot_rounds"]
        mlflow_run("hpo", hpo_params, work, env)
        hpo_onehot = client.search_runs(
            [exp.experiment_id], "tags.`pipeline.step` = 'hpo' and tags.encoding = 'onehot'"
        )[0]
        trials_onehot = client.search_runs(
            [exp.experiment_id], f"tags.`mlflow.parentRunId` = '{hpo_onehot.info.run_id}'"
        )
        curve_onehot = trial_curve(trials_onehot, lambda r: r.data.metrics["training_seconds"])
        onehot = summarize_curve(curve_onehot, n, target)
        onehot["featurize_seconds"] = round(featurize.data.metrics["featurize_seconds"], 2)
        onehot["n_features"] = int(featurize.data.metrics["n_features"])
        onehot["num_boost_round"] = course["onehot_rounds"]

    return {
        "main": {
            "wall_seconds": round(wall, 1),
            "step_seconds": step_seconds,
            "orchestration_overhead_seconds": round(wall - sum(step_seconds.values()), 1),
            "best_val_rmse": round(main.data.metrics["best_val_rmse"], 4),
            "test_rmse": round(main.data.metrics["test_rmse"], 4),
            "n_trials": int(hpo.data.metrics["n_trials"]),
            "tuning_seconds": round(hpo.data.metrics["tuning_seconds"], 1),
        },
        "main_rerun_all_reused": {
            "wall_seconds": round(rerun_wall, 1),
            "reused": rerun.data.tags.get("reused"),
        },
        "hpo_categorical": categorical,
        "hpo_onehot": onehot,
    }


def relabel(trips: pd.DataFrame, month: str) -> pd.DataFrame:
    """The trips moved into `month` (same day of month, time of day and duration), written
    under TLC's green column names, so ingest accepts the file as that month."""
    pickup, dropoff = trips[PICKUP], trips[DROPOFF]
    start = pd.Timestamp(f"{month}-01")
    day = pd.to_timedelta(pickup.dt.day.clip(upper=28) - 1, unit="D")
    moved = start + day + (pickup - pickup.dt.normalize())
    return pd.DataFrame(
        {
            "lpep_pickup_datetime": moved,
            "lpep_dropoff_datetime": moved + (dropoff - pickup),
            PU: trips[PU],
            DO: trips[DO],
            DISTANCE: trips[DISTANCE],
        }
    )


def scale_month(data: Path, folder: Path, repeats: int) -> int:
    """Stack every real green month in `data`, `repeats` times, into one training month, with
    the real 2021-02 and 2021-03 as validation and test months."""
    frames = [read_trips(p) for p in sorted(data.glob("green_tripdata_*.parquet"))]
    stacked = pd.concat(frames * repeats, ignore_index=True)
    folder.mkdir(parents=True, exist_ok=True)
    months = {"2030-01": stacked}
    for month, real in (("2030-02", "2021-02"), ("2030-03", "2021-03")):
        months[month] = read_trips(data / f"green_tripdata_{real}.parquet")
    for month, trips in months.items():
        path = folder / f"green_tripdata_{month}.parquet"
        relabel(trips, month).to_parquet(path, index=False)
    return len(stacked)


def measured_step(module: str, args: list[str], cwd: Path, env: dict[str, str]) -> dict:
    """Run `python -m steps.<module>` under GNU time; wall, peak RSS and the run URI it printed."""
    command = ["/usr/bin/time", "-f", "PEAK_RSS_KB=%M", sys.executable, "-m", f"steps.{module}"]
    started = time.perf_counter()
    result = subprocess.run([*command, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"scale step {module} failed:\n{result.stderr[-3000:]}")
    peak = int(re.search(r"PEAK_RSS_KB=(\d+)", result.stderr).group(1))
    uri = next(line.split()[1] for line in result.stdout.splitlines() if "runs:/" in line)
    return {"wall_seconds": round(wall, 1), "peak_rss_mib": round(peak / 1024), "uri": uri}


def scale(data: Path, work: Path, env: dict[str, str], repeats: int, evals: int) -> dict:
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    folder = work / f"scale-{repeats}"
    train_rows = scale_month(data, folder, repeats)
    months = ["--train-month", "2030-01", "--val-month", "2030-02", "--test-month", "2030-03"]
    ingest = measured_step("ingest", ["--source", str(folder), *months], work, env)
    featurize = measured_step("featurize", ["--ingest-run", ingest["uri"]], work, env)
    hpo = measured_step(
        "hpo",
        ["--features-run", featurize["uri"], "--max-evals", str(evals), "--num-boost-round", "200"],
        work,
        env,
    )
    metrics = {
        name: client.get_run(step["uri"].removeprefix("runs:/")).data.metrics
        for name, step in (("ingest", ingest), ("featurize", featurize), ("hpo", hpo))
    }
    rows_in = sum(metrics["ingest"][f"{s}_rows"] for s in ("train", "val", "test"))
    train_kept = metrics["featurize"]["train_rows_kept"]
    return {
        "train_rows": train_rows,
        "note": f"train month = every real green month in {data.name} stacked x{repeats}",
        "ingest": {
            **{k: v for k, v in ingest.items() if k != "uri"},
            "rows_per_second": round(metrics["ingest"]["rows_per_second"]),
        },
        "featurize": {
            **{k: v for k, v in featurize.items() if k != "uri"},
            "rows_per_second": round(metrics["featurize"]["rows_per_second"]),
            "core_seconds": round(metrics["featurize"]["featurize_seconds"], 2),
        },
        "hpo": {
            **{k: v for k, v in hpo.items() if k != "uri"},
            "trials": evals,
            "seconds_per_trial": round(metrics["hpo"]["seconds_per_trial"], 1),
            "train_rows_per_second": round(train_kept / metrics["hpo"]["seconds_per_trial"]),
            "best_val_rmse": round(metrics["hpo"]["best_rmse"], 4),
        },
        "rows_in": int(rows_in),
    }


def table(result: dict[str, Any]) -> str:
    lines = [f"machine: {result['machine']}", ""]
    if "course" in result:
        lines += pipeline_table(result)
    lines += scale_table(result)
    return "\n".join(lines)


def pipeline_table(result: dict[str, Any]) -> list[str]:
    c, cat, one = result["course"], result["hpo_categorical"], result["hpo_onehot"]
    m, r = result["main"], result["main_rerun_all_reused"]
    lines = [
        f"{'flow':<28}{'s/trial':>9}{'best val RMSE':>15}{'after':>7}{'s to course best':>18}",
    ]
    for name, row in (
        ("course (DictVectorizer)", c),
        ("hpo categorical", cat),
        ("hpo onehot", one),
    ):
        if not row:
            continue
        reach = row["seconds_to_course_best"]
        lines.append(
            f"{name:<28}{row['seconds_per_trial']:>9.2f}{row['best_val_rmse_after_n']:>15.4f}"
            f"{row['trials']:>7}{'-' if reach is None else f'{reach:.1f}':>18}"
        )
    lines += [
        "",
        f"course flow: {c['trials']} trials, featurize {c['featurize_seconds']:.1f} s, tuning "
        f"{c['tuning_seconds']:.1f} s, best validation RMSE {c['best_val_rmse']:.4f}",
        f"default main ({m['n_trials']} trials): wall {m['wall_seconds']:.1f} s, best validation "
        f"RMSE {m['best_val_rmse']:.4f}, test RMSE {m['test_rmse']:.4f}",
        "  step seconds: "
        + ", ".join(f"{k} {v:.1f}" for k, v in m["step_seconds"].items())
        + f"; orchestration overhead {m['orchestration_overhead_seconds']:.1f} s",
        f"rerun of the same main: wall {r['wall_seconds']:.1f} s, reused {r['reused']}",
        "",
    ]
    return lines


def scale_table(result: dict[str, Any]) -> list[str]:
    lines = []
    for size in result["scale"]:
        lines.append(
            f"scale: {size['train_rows']:,} training rows ({size['note']}); "
            f"{size['rows_in']:,} rows in all"
        )
        for step in ("ingest", "featurize", "hpo"):
            row = size[step]
            rate = row.get("rows_per_second") or row.get("train_rows_per_second")
            extra = (
                f", {row['trials']} trials at {row['seconds_per_trial']:.1f} s"
                if step == "hpo"
                else ""
            )
            lines.append(
                f"  {step:<10} {rate:>12,} rows/s  peak RSS {row['peak_rss_mib']:>5} MiB  "
                f"process wall {row['wall_seconds']:>6.1f} s{extra}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--course-trials", type=int, default=3)
    parser.add_argument("--onehot-trials", type=int, default=3)
    parser.add_argument(
        "--onehot-rounds", type=int, default=1000, help="num_boost_round of the onehot trials"
    )
    parser.add_argument("--max-evals", type=int, default=50, help="main's HPO budget")
    parser.add_argument("--scale-repeats", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--scale-evals", type=int, default=3)
    parser.add_argument(
        "--only-scale", action="store_true", help="skip the course flow and the pipeline runs"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    args = parser.parse_args()
    data = args.data.resolve()

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = Path(tmp)
        env = dict(os.environ)
        env["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'bench.db'}"
        env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
        result: dict[str, Any] = {
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}",
            "data": str(data),
        }
        if not args.only_scale:
            print("course flow ...", file=sys.stderr, flush=True)
            course = course_flow(data, args.course_trials, work, env)
            course["onehot_trials"] = args.onehot_trials
            course["onehot_rounds"] = args.onehot_rounds
            print(json.dumps({"course": course}), file=sys.stderr, flush=True)
            print("pipeline ...", file=sys.stderr, flush=True)
            result["course"] = {k: v for k, v in course.items() if not k.startswith("onehot_")}
            result |= pipeline(data, work, env, course, args.max_evals)
        print(json.dumps(result), file=sys.stderr, flush=True)
        result["scale"] = []
        for repeats in args.scale_repeats:
            print(f"scale x{repeats} ...", file=sys.stderr, flush=True)
            result["scale"].append(scale(data, work, env, repeats, args.scale_evals))
            print(json.dumps(result["scale"][-1]), file=sys.stderr, flush=True)

    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
