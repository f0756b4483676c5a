"""Benchmark: how often does register's gate replace a champion with an equally good model?

Run with `python benchmarks/gate.py --data <folder of TLC months>`. For each window of real
green months (train, validation, test) it trains --models XGBoost models of one configuration
that differ only in their seed (row subsampling 0.8 makes the seed matter), so each is as good as
the others by construction. Every ordered pair (champion, challenger) is then judged on the test
month the way register judges it, and the benchmark counts how often the challenger would have
replaced the champion:

- by RMSE alone (min_improvement 0): any lower RMSE wins, about half of the pairs;
- by the statistical gate at several levels of min_confidence: the one-sided paired comparison
  of the two models' errors on the same rows that register runs (taxi_duration/model/gate.py).

A gate that works swaps about (1 - min_confidence) of equal pairs, or fewer. Prints a table and
writes it as JSON (--out).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import xgboost as xgb

from taxi_duration.data.tlc import read_trips
from taxi_duration.model.features import filter_trips, make_preprocessor, rmse
from taxi_duration.model.gate import paired_confidence

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = (
    ("2021-01", "2021-02", "2021-03"),
    ("2022-01", "2022-02", "2022-03"),
    ("2023-02", "2023-03", "2023-04"),
)
# The best configuration of the default main's search on green 2021-01/02/03 (50 trials).
CONFIG = {
    "max_depth": 10,
    "learning_rate": 0.112,
    "min_child_weight": 68.5,
    "reg_alpha": 0.133,
    "reg_lambda": 4.94,
    "subsample": 0.8,
    "objective": "reg:squarederror",
    "eval_metric": "rmse",
    "tree_method": "hist",
}
LEVELS = (0.9, 0.95, 0.99, 0.999)


def split(data: Path, month: str):
    trips, _ = filter_trips(read_trips(data / f"green_tripdata_{month}.parquet"), 1, 60)
    return trips


def equal_models(data: Path, window: tuple[str, str, str], count: int) -> dict:
    """`count` models of CONFIG on the window, seeds 0..count-1: their test predictions."""
    train, val, test = (split(data, m) for m in window)
    preprocessor = make_preprocessor("categorical", "time")
    dtrain = xgb.QuantileDMatrix(
        preprocessor.transform(train), train["duration"], enable_categorical=True
    )
    dval = xgb.DMatrix(preprocessor.transform(val), val["duration"], enable_categorical=True)
    dtest = xgb.DMatrix(preprocessor.transform(test), enable_categorical=True)
    y = test["duration"].to_numpy()
    predictions = []
    started = time.perf_counter()
    for seed in range(count):
        booster = xgb.train(
            {**CONFIG, "seed": seed},
            dtrain,
            1000,
            evals=[(dval, "val")],
            early_stopping_rounds=50,
            verbose_eval=False,
        )
        best = booster[: booster.best_iteration + 1]
        predictions.append(best.predict(dtest).astype("float64"))
    days = test["pickup_datetime"].dt.day.to_numpy()
    return {
        "y": y,
        "predictions": predictions,
        "days": days,
        "seconds": time.perf_counter() - started,
    }


def day_bootstrap(y, candidate, champion, days, draws=400, seed=0) -> float:
    """Share of bootstrap draws of whole days in which the candidate's MSE is lower: a check on
    the t-test, whose rows are trips, when trips of one day are alike."""
    gain = (champion - y) ** 2 - (candidate - y) ** 2
    labels, index = np.unique(days, return_inverse=True)
    sums = np.bincount(index, weights=gain)
    counts = np.bincount(index)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(labels), size=(draws, len(labels)))
    return float(np.mean(sums[picks].sum(axis=1) / counts[picks].sum(axis=1) > 0))


def swaps(y: np.ndarray, predictions: list[np.ndarray], days: np.ndarray) -> dict:
    """Share of ordered (champion, challenger) pairs where the challenger would win."""
    pairs = list(itertools.permutations(range(len(predictions)), 2))
    rmses = [rmse(y, p) for p in predictions]
    by_rmse = sum(rmses[b] < rmses[a] for a, b in pairs)
    confidences = [paired_confidence(y, predictions[b], predictions[a]) for a, b in pairs]
    by_day = [day_bootstrap(y, predictions[b], predictions[a], days) for a, b in pairs]
    return {
        **{
            f"day_bootstrap_at_{level:g}": float(np.mean([c >= level for c in by_day]))
            for level in LEVELS
        },
        "pairs": len(pairs),
        "rmse_min": min(rmses),
        "rmse_max": max(rmses),
        "swaps_by_rmse": by_rmse / len(pairs),
        **{
            f"swaps_at_{level:g}": float(np.mean([c >= level for c in confidences]))
            for level in LEVELS
        },
        "confidence_max": max(confidences),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gate.json")
    args = parser.parse_args()
    rows = []
    for window in WINDOWS:
        trained = equal_models(args.data, window, args.models)
        found = swaps(trained["y"], trained["predictions"], trained["days"])
        rows.append({"window": "/".join(window), "test_rows": len(trained["y"]), **found})
        print(json.dumps(rows[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    header = ["window", "test rows", "RMSE spread", "swaps by RMSE"]
    header += [f"at {level:g}" for level in LEVELS]
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [
            row["window"],
            f"{row['test_rows']:,}",
            f"{row['rmse_min']:.4f}..{row['rmse_max']:.4f}",
            f"{row['swaps_by_rmse']:.0%}",
            *(f"{row[f'swaps_at_{level:g}']:.1%}" for level in LEVELS),
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
