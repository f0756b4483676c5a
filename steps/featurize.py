"""featurize: duration target, outlier filter and the feature encoding, fitted on training only.

Input: ingest_run (runs:/<id> of an ingest run). Parameters: encoding (categorical|onehot),
min_duration, max_duration (minutes).
Artifacts: preprocessor/preprocessor.pkl, matrices/{split}.{parquet|npz} (features + target),
trips/{split}.parquet (kept rows: pickup time, model input columns + target),
featurize_summary.json. Metrics: {split}_rows_kept, {split}_rows_dropped (+ why), n_features.
The run's description (its page in the MLflow UI) tabulates what each split kept.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import pandas as pd

from steps import runs
from steps.cli import exits_cleanly
from steps.config import check_duration_bounds, check_encoding
from steps.contracts import (
    FEATURIZE,
    FEATURIZE_SUMMARY_FILE,
    MATRICES_DIR,
    PREPROCESSOR_DIR,
    PREPROCESSOR_PATH,
    SPLITS,
    TARGET,
    TRIPS_DIR,
    featurize_paths,
    matrix_split_path,
    raw_split_path,
    trips_split_path,
)
from steps.errors import PipelineError
from steps.features import (
    FeatureMatrix,
    FilterStats,
    Preprocessor,
    filter_trips,
    make_preprocessor,
    save_matrix,
    save_preprocessor,
)


@dataclass(frozen=True)
class Features:
    """The fitted preprocessor and, per split, the kept trips, their matrix and filter counts."""

    preprocessor: Preprocessor
    trips: dict[str, pd.DataFrame]
    matrices: dict[str, FeatureMatrix]
    stats: dict[str, FilterStats]


def build_features(
    raw: dict[str, pd.DataFrame], encoding: str, min_duration: float, max_duration: float
) -> Features:
    """Filter every split, fit the encoding on the training split, transform all three."""
    trips, stats = {}, {}
    for split in SPLITS:
        kept, split_stats = filter_trips(raw[split], min_duration, max_duration)
        if split_stats.rows_kept == 0:
            raise PipelineError(
                f"the {split} split has 0 of {split_stats.rows_in} rows left with duration in "
                f"[{min_duration}, {max_duration}] minutes; widen min_duration/max_duration "
                "or pick another month"
            )
        trips[split], stats[split] = kept, split_stats
    preprocessor = make_preprocessor(encoding).fit(trips["train"])
    matrices = {
        split: FeatureMatrix(preprocessor.transform(frame), frame[TARGET].to_numpy())
        for split, frame in trips.items()
    }
    return Features(preprocessor, trips, matrices, stats)


ENCODING_WORDS = {
    "categorical": "pickup and dropoff zones as XGBoost native categoricals, plus the distance",
    "onehot": "the pickup-dropoff zone pair one-hot encoded (the course's DictVectorizer), "
    "plus the distance",
}


def describe(features: Features, min_duration: float, max_duration: float) -> str:
    """The run's description (markdown, shown on its page in the MLflow UI)."""
    encoding = features.preprocessor.encoding
    n_features = features.matrices["train"].columns
    rows = "\n".join(
        f"| {split} | {st.rows_in:,} | {st.rows_kept:,} | {st.dropped_duration:,} | "
        f"{st.unknown_zone:,} | {st.invalid_distance:,} |"
        for split, st in features.stats.items()
    )
    return f"""\
Kept the trips lasting **{min_duration:g} to {max_duration:g} minutes**; encoding \
**{encoding}**: {ENCODING_WORDS.get(encoding, encoding)} ({n_features:,} features, fitted on \
the training split only).

| split | trips in | kept | dropped (duration) | kept, unknown zone | kept, invalid distance |
|---|---|---|---|---|---|
{rows}

Unknown zones and invalid distances stay in: the model sees them as missing, as it will when \
serving. Matrices: `{MATRICES_DIR}/`; kept trips: `{TRIPS_DIR}/`.
"""


@click.command(help=__doc__)
@click.option("--ingest-run", required=True, help="runs:/<id> of an ingest run.")
@click.option("--encoding", default="categorical", show_default=True)
@click.option("--min-duration", type=float, default=1.0, show_default=True)
@click.option("--max-duration", type=float, default=60.0, show_default=True)
@exits_cleanly(FEATURIZE)
def main(ingest_run: str, encoding: str, min_duration: float, max_duration: float) -> None:
    check_encoding(encoding)
    check_duration_bounds(min_duration, max_duration)
    with runs.step_run(FEATURIZE) as run:
        runs.log_params(
            {
                "ingest_run": ingest_run,
                "encoding": encoding,
                "min_duration": min_duration,
                "max_duration": max_duration,
            }
        )
        upstream = runs.read_upstream(FEATURIZE, ingest_run)
        raw = {
            split: pd.read_parquet(runs.download(upstream.info.run_id, raw_split_path(split)))
            for split in SPLITS
        }
        started = time.perf_counter()
        features = build_features(raw, encoding, min_duration, max_duration)
        seconds = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            for name in (PREPROCESSOR_DIR, MATRICES_DIR, TRIPS_DIR):
                (root / name).mkdir()
            save_preprocessor(features.preprocessor, root / PREPROCESSOR_PATH)
            for split in SPLITS:
                save_matrix(features.matrices[split], root / matrix_split_path(split, encoding))
                features.trips[split].to_parquet(root / trips_split_path(split), index=False)
            runs.log_outputs(root, featurize_paths(encoding))
        summary = {split: asdict(stats) for split, stats in features.stats.items()}
        runs.log_json(summary, FEATURIZE_SUMMARY_FILE)
        rows_in = sum(stats.rows_in for stats in features.stats.values())
        metrics: dict[str, float] = {
            "n_features": features.matrices["train"].columns,
            "featurize_seconds": seconds,
            "rows_per_second": rows_in / seconds,
        }
        for split, stats in features.stats.items():
            metrics |= {
                f"{split}_rows_kept": stats.rows_kept,
                f"{split}_rows_dropped": stats.rows_dropped,
                f"{split}_dropped_duration": stats.dropped_duration,
                f"{split}_unknown_zone": stats.unknown_zone,
                f"{split}_invalid_distance": stats.invalid_distance,
            }
        runs.log_metrics(metrics)
        runs.set_tags({**runs.data_tags(upstream), "encoding": encoding})
        runs.set_description(describe(features, min_duration, max_duration))
        print(
            f"featurize: runs:/{run.info.run_id} encoding={encoding} "
            + ", ".join(f"{s}={st.rows_kept} rows kept" for s, st in features.stats.items())
        )


if __name__ == "__main__":
    main()
