"""Benchmark: the course notebook's flow against this pipeline, and the pipeline at scale.

Run with `make bench` (or `python benchmarks/bench.py --data data`). Everything runs
for real, in one process tree on this machine, in a temporary directory; nothing is mocked.

1. course flow: the course notebook as one script (reference/notebook_baseline.py beside the
   data folder) with --course-trials trials;
2. hpo with each encoding: seconds per trial, best validation RMSE after the same number of
   trials, time to reach the course flow's best RMSE;
3. the default `main` (50 trials): wall time, each step's own time, orchestration overhead,
   best validation and test RMSE; then the same command again (everything reused);
4. big months: yellow-layout months built from the real green months (renamed to tpep_, with
   yellow's extra columns, each trip keeping its time of day and weekday; training months of
   --scale-rows trips, 3.3 million by default: a yellow month; validation and test months of
   --val-rows, 1 million), one month and a three-month window of them (about 10 million rows),
   each through the default `main` (50 trials, searching on a sample): per step run time, peak
   RSS and the time of the step's own work, validation and test RMSE, the machine's load while
   it ran; the month again with early stopping on the whole validation month
   (early_stopping_rows=0: only train_best and register run again); then, on months of distinct
   real trips (the trips of the big months repeat, so a sample of them holds nearly every
   distinct trip), searches on samples of --compare-samples rows (the default's 100,000 and
   300,000) against `hpo_sample_rows=0` with the same budget (--compare-evals trials each, more
   than TPE's 20 random start-up trials).

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

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.tracking import MlflowClient

from taxi_duration.core.contracts import STEP_TAG, STEPS

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


# --- big months ------------------------------------------------------------------------------

# A yellow trip-record file's columns and types (TLC, 2023 on); green months map onto them.
YELLOW_SCHEMA = pa.schema(
    [
        ("VendorID", pa.int32()),
        ("tpep_pickup_datetime", pa.timestamp("us")),
        ("tpep_dropoff_datetime", pa.timestamp("us")),
        ("passenger_count", pa.int64()),
        ("trip_distance", pa.float64()),
        ("RatecodeID", pa.int64()),
        ("store_and_fwd_flag", pa.large_string()),
        ("PULocationID", pa.int32()),
        ("DOLocationID", pa.int32()),
        ("payment_type", pa.int64()),
        *(
            (name, pa.float64())
            for name in (
                "fare_amount",
                "extra",
                "mta_tax",
                "tip_amount",
                "tolls_amount",
                "improvement_surcharge",
                "total_amount",
                "congestion_surcharge",
                "airport_fee",
            )
        ),
    ]
)
# Validation and test months are built from these real months, training months from the others,
# so no trip is both trained on and scored.
VAL_SOURCE, TEST_SOURCE = "2024-01", "2024-03"
BIG_MONTHS = ("2030-01", "2030-02", "2030-03", "2030-04", "2030-05")  # window..., val, test


def as_yellow(path: Path) -> pa.Table:
    """A real green month with yellow's layout: tpep_ names, yellow's columns and types."""
    table = pq.read_table(path)
    table = table.rename_columns([n.replace("lpep_", "tpep_") for n in table.column_names])
    table = table.append_column("airport_fee", pa.array(np.zeros(table.num_rows)))
    return table.select(YELLOW_SCHEMA.names).cast(YELLOW_SCHEMA, safe=False)


def yellow_month(pool: pa.Table, month: str, rows: int, seed: int) -> pa.Table:
    """`rows` trips of `pool` (each repeated as often as needed, shuffled) moved into `month`:
    the same time of day, day of the week and duration, on the first day of `month` from their
    own day of the month on that falls on their weekday (a week earlier past the 28th)."""
    pickup = pool["tpep_pickup_datetime"].to_pandas()
    dropoff = pool["tpep_dropoff_datetime"].to_pandas()
    first = pd.Timestamp(f"{month}-01")
    day = pickup.dt.day.clip(upper=28) - 1
    day += (pickup.dt.day_of_week - (first.day_of_week + day)) % 7  # the next day on that weekday
    day = day.where(day < 28, day - 7)
    offset = pd.to_timedelta(day, unit="D") + (pickup - pickup.dt.normalize())
    picked = np.random.default_rng(seed).permutation(np.resize(np.arange(pool.num_rows), rows))
    moved = (first + offset.iloc[picked]).to_numpy("datetime64[us]")
    trip = (dropoff - pickup).iloc[picked].to_numpy("timedelta64[us]")
    table = pool.take(pa.array(picked))
    for column, values in (
        ("tpep_pickup_datetime", moved),
        ("tpep_dropoff_datetime", moved + trip),
    ):
        index = YELLOW_SCHEMA.get_field_index(column)
        table = table.set_column(index, YELLOW_SCHEMA.field(column), pa.array(values))
    return table


def build_big_months(data: Path, folder: Path, rows: int, val_rows: int) -> dict[str, Any]:
    """Write BIG_MONTHS as yellow files: training months of `rows` trips, the validation and test
    months of `val_rows`; training months come from every real green month except the two the
    validation and test months come from."""
    folder.mkdir(parents=True, exist_ok=True)
    train_pool, val_pool, test_pool = pools(data)
    sizes = [rows] * 3 + [val_rows] * 2
    for seed, (month, pool, size) in enumerate(
        zip(BIG_MONTHS, [train_pool] * 3 + [val_pool, test_pool], sizes, strict=True)
    ):
        table = yellow_month(pool, month, size, seed)
        pq.write_table(table, folder / f"yellow_tripdata_{month}.parquet")
    return {
        "rows_per_month": rows,
        "val_test_rows": val_rows,
        "unique_training_trips": train_pool.num_rows,
        "note": f"training months: the {train_pool.num_rows:,} trips of the real green months "
        f"other than {VAL_SOURCE}/{TEST_SOURCE}, repeated and shuffled; validation and test "
        f"months: the {val_pool.num_rows:,} and {test_pool.num_rows:,} trips of {VAL_SOURCE} "
        f"and {TEST_SOURCE}, repeated",
    }


def build_distinct_months(data: Path, folder: Path) -> dict[str, Any]:
    """The comparison months, every trip a distinct real one: a training month of all the real
    green trips but the validation and test months' (each once, shuffled), and those two months
    as they are, moved to BIG_MONTHS[3] and [4]."""
    folder.mkdir(parents=True, exist_ok=True)
    train_pool, val_pool, test_pool = pools(data)
    for seed, (month, pool) in enumerate(
        zip(BIG_MONTHS[2:], (train_pool, val_pool, test_pool), strict=True)
    ):
        table = yellow_month(pool, month, pool.num_rows, seed)
        pq.write_table(table, folder / f"yellow_tripdata_{month}.parquet")
    return {
        "rows_per_month": train_pool.num_rows,
        "val_test_rows": val_pool.num_rows,
        "note": f"every trip once: the {train_pool.num_rows:,} real green trips of the months "
        f"other than {VAL_SOURCE}/{TEST_SOURCE} as one training month, those two as validation "
        f"({val_pool.num_rows:,}) and test ({test_pool.num_rows:,})",
    }


def pools(data: Path) -> tuple[pa.Table, pa.Table, pa.Table]:
    """The real green trips as yellow records: the training pool (every month but the two held
    out), the validation month's and the test month's."""
    sources = sorted(data.glob("green_tripdata_*.parquet"))
    held_out = {VAL_SOURCE, TEST_SOURCE}
    if not {p.stem.rsplit("_", 1)[1] for p in sources} > held_out:
        sys.exit(f"big months need green months {VAL_SOURCE}, {TEST_SOURCE} and others in {data}")
    train_pool = pa.concat_tables(
        [as_yellow(p) for p in sources if p.stem.rsplit("_", 1)[1] not in held_out]
    )
    val_pool, test_pool = (
        as_yellow(data / f"green_tripdata_{m}.parquet") for m in (VAL_SOURCE, TEST_SOURCE)
    )
    return train_pool, val_pool, test_pool


def big_main(
    folder: Path, train_month: str, extra: dict[str, Any], work: Path, env: dict[str, str]
) -> dict[str, Any]:
    """One `mlflow run -e main` on the big months; its wall time and each step's figures."""
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    months = {"train_month": train_month, "val_month": BIG_MONTHS[3], "test_month": BIG_MONTHS[4]}
    load_before = os.getloadavg()[0]
    params = {"taxi": "yellow", "source": folder, **months, **extra}
    wall = mlflow_run("main", params, work, env)
    load_after = os.getloadavg()[0]
    exp = client.get_experiment_by_name("bench")
    main = client.search_runs(
        [exp.experiment_id], "tags.`pipeline.step` = 'main'", order_by=["start_time DESC"]
    )[0]
    steps = {s: client.get_run(main.data.tags[f"step.{s}.run_id"]) for s in STEPS}
    reused = set(main.data.tags.get("reused", "").split(","))
    figures: dict[str, Any] = {}
    for step, run in steps.items():
        metrics = run.data.metrics
        core = next((metrics[k] for k in CORE_SECONDS.get(step, ()) if k in metrics), None)
        figures[step] = {
            "seconds": round(duration(run), 1),
            "core_seconds": None if core is None else round(core, 1),
            "peak_rss_mib": round(metrics.get("peak_rss_mib", 0)),
            "reused": step in reused,
        }
    hpo, trained = steps["hpo"], steps["train_best"]
    return {
        "train_month": train_month,
        "params": {k: str(v) for k, v in extra.items()},
        "wall_seconds": round(wall, 1),
        "load_average": [round(load_before, 1), round(load_after, 1)],
        "train_rows": int(trained.data.metrics["train_rows"]),
        "search_train_rows": int(hpo.data.params["search_train_rows"]),
        "n_trials": int(hpo.data.metrics["n_trials"]),
        "seconds_per_trial": round(hpo.data.metrics["seconds_per_trial"], 2),
        "refit_trees": int(trained.data.metrics["n_trees"]),
        "stopping_val_rows": int(
            trained.data.metrics.get("stopping_val_rows", trained.data.metrics["val_rows"])
        ),
        "best_sample_val_rmse": round(hpo.data.metrics["best_rmse"], 4),
        "val_rmse": round(trained.data.metrics["val_rmse"], 4),
        "test_rmse": round(trained.data.metrics["test_rmse"], 4),
        "steps": figures,
    }


# What bounds each step: the step's own timing metric (the rest is starting Python, MLflow
# bookkeeping and artifact I/O).
CORE_SECONDS = {
    "ingest": ("load_seconds",),
    "featurize": ("featurize_seconds",),
    "hpo": ("tuning_seconds",),
    "train_best": ("training_seconds",),
}


def big_months(data: Path, work: Path, env: dict[str, str], args: argparse.Namespace) -> dict:
    """The default main on one big month and on a window of them, then the same month with
    early stopping on the whole validation month; then, on months of distinct real trips (small
    enough that a search on every row is affordable), the default (search on a sample, refit on
    every row) against a search on every row with the same budget."""
    result: dict[str, Any] = {}
    plan: list[tuple[str, Path, str, dict[str, Any]]] = []
    if args.scale_rows:
        folder = work / "big-months"
        result |= build_big_months(data, folder, args.scale_rows, args.val_rows)
        default = {"max_evals": args.scale_evals, **args.param}
        plan.append(("month", folder, BIG_MONTHS[2], default))
        if args.stopping_compare:  # reuses the search: only the refit and register run again
            plan.append(("month, stop on all", folder, BIG_MONTHS[2], {**default, STOP_ALL: 0}))
        if not args.skip_window:
            window = f"{BIG_MONTHS[0]}..{BIG_MONTHS[2]}"
            plan.append(("window", folder, window, default))
    if args.compare_evals:
        distinct = work / "distinct-months"
        result["compare"] = build_distinct_months(data, distinct)
        budget = {"max_evals": args.compare_evals, **args.param}
        plan += [
            (compare_name(rows), distinct, BIG_MONTHS[2], {**budget, "hpo_sample_rows": rows})
            for rows in args.compare_samples
        ]
    result["runs"] = {}
    for name, source, train_month, extra in plan:
        print(f"big months: {name} ...", file=sys.stderr, flush=True)
        result["runs"][name] = big_main(source, train_month, extra, work, env)
        print(json.dumps({name: result["runs"][name]}), file=sys.stderr, flush=True)
    return result


STOP_ALL = "early_stopping_rows"  # 0: early stopping on the whole validation month


COMPARE_ALL = "compare, all rows"


def compare_name(sample_rows: int) -> str:
    return f"compare, {sample_rows:,} rows" if sample_rows else COMPARE_ALL


def table(result: dict[str, Any]) -> str:
    lines = [f"machine: {result['machine']}", ""]
    if "course" in result:
        lines += pipeline_table(result)
    if "big_months" in result:
        lines += big_table(result)
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


def big_table(result: dict[str, Any]) -> list[str]:
    big = result["big_months"]
    runs = big["runs"]
    lines = []
    if "rows_per_month" in big:
        lines.append(
            f"big months: {big['rows_per_month']:,} trips a training month, "
            f"{big['val_test_rows']:,} a validation and test month ({big['note']})"
        )
    if "compare" in big:
        lines.append(f"comparison months: {big['compare']['note']}")
    lines.append("")
    lines.append(
        f"{'run':<22}{'train rows':>12}{'searched':>11}{'trials':>7}{'wall s':>9}"
        f"{'val RMSE':>10}{'test RMSE':>11}{'refit trees':>13}{'load avg':>11}"
    )
    for name, r in runs.items():
        load = "-".join(f"{x:.1f}" for x in r["load_average"])
        lines.append(
            f"{name:<22}{r['train_rows']:>12,}{r['search_train_rows']:>11,}{r['n_trials']:>7}"
            f"{r['wall_seconds']:>9.1f}{r['val_rmse']:>10.4f}{r['test_rmse']:>11.4f}"
            f"{r['refit_trees']:>13}{load:>11}"
        )
    if "month" in runs and "month, stop on all" in runs:
        sampled, whole = runs["month"], runs["month, stop on all"]
        gap = sampled["val_rmse"] / whole["val_rmse"] - 1
        lines.append(
            f"early stopping on {sampled['stopping_val_rows']:,} sampled validation rows against "
            f"all {whole['stopping_val_rows']:,}: validation RMSE {gap:+.3%} (whole month, "
            f"{sampled['val_rmse']:.4f} against {whole['val_rmse']:.4f}), refit "
            f"{sampled['steps']['train_best']['core_seconds']:.0f} s against "
            f"{whole['steps']['train_best']['core_seconds']:.0f} s, {sampled['refit_trees']} "
            f"against {whole['refit_trees']} trees"
        )
    full = runs.get(COMPARE_ALL)
    for name, sampled in runs.items():
        if full is None or not name.startswith("compare, ") or name == COMPARE_ALL:
            continue
        lines.append(
            f"on {sampled['train_rows']:,} distinct training trips, a search on "
            f"{sampled['search_train_rows']:,} sampled rows, refit on every row: validation RMSE "
            f"{sampled['val_rmse'] / full['val_rmse'] - 1:+.2%}, test RMSE "
            f"{sampled['test_rmse'] / full['test_rmse'] - 1:+.2%}, "
            f"{sampled['seconds_per_trial'] / full['seconds_per_trial']:.2f} times the seconds a "
            f"trial, against a search on every row, both {full['n_trials']} trials"
        )
    lines += ["", "per step: run time s (own work s), peak RSS MiB; 'reused' = not run again"]
    lines.append(f"{'step':<12}" + "".join(f"{name:>26}" for name in runs))
    for step in STEPS:
        cells = []
        for r in runs.values():
            f = r["steps"][step]
            own = "" if f["core_seconds"] is None else f" ({f['core_seconds']:.0f})"
            cells.append(
                "reused" if f["reused"] else f"{f['seconds']:.0f}{own} s {f['peak_rss_mib']} MiB"
            )
        lines.append(f"{step:<12}" + "".join(f"{c:>26}" for c in cells))
    if "month" in runs and "window" in runs:
        small, large = runs["month"], runs["window"]
        extra_rows = (large["train_rows"] - small["train_rows"]) / 1e6
        slopes = []
        for step in STEPS:
            a, b = small["steps"][step], large["steps"][step]
            if not (a["reused"] or b["reused"]) and extra_rows > 0:
                slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) / extra_rows
                slopes.append(f"{step} {slope:+.0f}")
        lines.append("peak RSS slope, MiB per million more training rows: " + ", ".join(slopes))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT / "data",
        help="folder of TLC files (make data fills data/)",
    )
    parser.add_argument("--course-trials", type=int, default=3)
    parser.add_argument("--onehot-trials", type=int, default=3)
    parser.add_argument(
        "--onehot-rounds", type=int, default=1000, help="num_boost_round of the onehot trials"
    )
    parser.add_argument("--max-evals", type=int, default=50, help="main's HPO budget")
    parser.add_argument(
        "--only-scale", action="store_true", help="skip the course flow and the pipeline runs"
    )
    parser.add_argument(
        "--scale-rows", type=int, default=3_300_000, help="trips in each big month (0: skip them)"
    )
    parser.add_argument(
        "--scale-evals", type=int, default=50, help="trials of main on the big months (default 50)"
    )
    parser.add_argument(
        "--val-rows",
        type=int,
        default=1_000_000,
        help="trips in the big validation and test months (default 1 million)",
    )
    parser.add_argument(
        "--compare-evals",
        type=int,
        default=30,
        help="trials of each search in the sample-against-every-row comparison, on months of "
        "distinct real trips (more than TPE's 20 random start-up trials; 0: skip it)",
    )
    parser.add_argument(
        "--compare-samples",
        type=int,
        nargs="+",
        default=[100_000, 300_000, 0],
        help="hpo_sample_rows of each search in the comparison (0: every row; default 100000 "
        "300000 0)",
    )
    parser.add_argument(
        "--no-stopping-compare",
        dest="stopping_compare",
        action="store_false",
        help="skip the big month's refit with early stopping on the whole validation month",
    )
    parser.add_argument(
        "-P",
        dest="param",
        action="append",
        default=[],
        type=lambda kv: tuple(kv.split("=", 1)),
        help="a parameter of every big-month main, KEY=VALUE (repeatable)",
    )
    parser.add_argument("--skip-window", action="store_true", help="big month only, no window")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (the store, the months)"
    )
    args = parser.parse_args()
    args.param = dict(args.param)
    data = args.data.resolve()

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work = args.keep.resolve() if args.keep else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
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
        if args.scale_rows or args.compare_evals:
            result["big_months"] = big_months(data, work, env, args)

    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
