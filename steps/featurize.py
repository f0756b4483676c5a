"""featurize: duration target, outlier filter and the feature encoding, fitted on training only.

Input: ingest_run (runs:/<id> of an ingest run). Parameters: features (time: the zones, the
distance and the pickup time of day and weekday; course: the zones and the distance, the
course's model), encoding (categorical|onehot), min_duration, max_duration (minutes).
Artifacts: preprocessor/preprocessor.pkl, matrices/{split}.{parquet|npz} (features + target),
trips/{split}.parquet (kept rows: pickup time, model input columns + target),
featurize_summary.json. Metrics: {split}_rows_kept, {split}_rows_dropped (+ why), n_features.
The run's description (its page in the MLflow UI) tabulates what each split kept.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import click
import pandas as pd

from taxi_duration.core.contracts import (
    DEFAULT_FEATURES,
    FEATURIZE,
    FEATURIZE_SUMMARY_FILE,
    MATRICES_DIR,
    PREPROCESSOR_DIR,
    PREPROCESSOR_PATH,
    SPLITS,
    TRIPS_DIR,
    featurize_paths,
    matrix_split_path,
    raw_split_path,
    trips_split_path,
)
from taxi_duration.core.params import check_duration_bounds, check_encoding, check_features
from taxi_duration.model.features import (
    FilterStats,
    describe_features,
    encode,
    keep_trips,
    make_preprocessor,
    save_matrix,
    save_preprocessor,
)
from taxi_duration.pipeline.cli import exits_cleanly
from taxi_duration.tracking import runs


@click.command(help=__doc__)
@click.option("--ingest-run", required=True, help="runs:/<id> of an ingest run.")
@click.option("--features", default=DEFAULT_FEATURES, show_default=True, help="time or course.")
@click.option("--encoding", default="categorical", show_default=True)
@click.option("--min-duration", type=float, default=1.0, show_default=True)
@click.option("--max-duration", type=float, default=60.0, show_default=True)
@exits_cleanly(FEATURIZE)
def main(
    ingest_run: str, features: str, encoding: str, min_duration: float, max_duration: float
) -> None:
    check_features(features)
    check_encoding(encoding)
    check_duration_bounds(min_duration, max_duration)
    with runs.step_run(FEATURIZE) as run:
        runs.log_params(
            {
                "ingest_run": ingest_run,
                "features": features,
                "encoding": encoding,
                "min_duration": min_duration,
                "max_duration": max_duration,
            }
        )
        upstream = runs.read_upstream(FEATURIZE, ingest_run)
        preprocessor = make_preprocessor(encoding, features)
        stats: dict[str, FilterStats] = {}
        seconds, n_features = 0.0, 0
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name in (PREPROCESSOR_DIR, MATRICES_DIR, TRIPS_DIR):
                (root / name).mkdir()
            # One split at a time, training first (the encoding is fitted on it): a split's raw
            # trips are dropped once filtered, its matrix once written.
            for split in SPLITS:
                raw = pd.read_parquet(runs.download(upstream.info.run_id, raw_split_path(split)))
                started = time.perf_counter()
                kept, stats[split] = keep_trips(raw, split, min_duration, max_duration)
                del raw
                if split == "train":
                    preprocessor.fit(kept)
                matrix = encode(kept, preprocessor)
                seconds += time.perf_counter() - started
                n_features = n_features or matrix.columns
                save_matrix(matrix, root / matrix_split_path(split, encoding))
                kept.to_parquet(root / trips_split_path(split), index=False)
                del kept, matrix
            save_preprocessor(preprocessor, root / PREPROCESSOR_PATH)
            runs.log_outputs(root, featurize_paths(encoding))
        runs.log_json({split: asdict(st) for split, st in stats.items()}, FEATURIZE_SUMMARY_FILE)
        rows_in = sum(st.rows_in for st in stats.values())
        metrics: dict[str, float] = {
            "n_features": n_features,
            "featurize_seconds": seconds,
            "rows_per_second": rows_in / seconds,
        }
        for split, st in stats.items():
            metrics |= {
                f"{split}_rows_kept": st.rows_kept,
                f"{split}_rows_dropped": st.rows_dropped,
                f"{split}_dropped_duration": st.dropped_duration,
                f"{split}_unknown_zone": st.unknown_zone,
                f"{split}_invalid_distance": st.invalid_distance,
            }
        runs.log_metrics(metrics)
        runs.set_tags({**runs.data_tags(upstream), "features": features, "encoding": encoding})
        runs.set_description(
            describe_features(features, encoding, n_features, stats, min_duration, max_duration)
        )
        print(
            f"featurize: runs:/{run.info.run_id} features={features} encoding={encoding} "
            + ", ".join(f"{s}={st.rows_kept} rows kept" for s, st in stats.items())
        )


if __name__ == "__main__":
    main()
