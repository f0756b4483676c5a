"""The pipeline's contracts, defined once: entry points, columns, artifact paths, defaults.

Every step and test imports names from here instead of repeating strings, so renaming an
artifact or a column is a one-line change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

# The library's own name (this package), and the project checkout it and the entry points
# run from (a git URL run: MLflow's clone of it, whose copy of the library comes first).
LIBRARY: Final = "taxi_duration"
PROJECT_DIR: Final = Path(__file__).resolve().parents[2]
STEPS_PACKAGE: Final = "steps"  # the entry points: steps/<entry point>.py
PROJECT_NAME: Final = "nyc-taxi-duration"  # MLproject's `name`

# --- entry points (MLproject names == module names under steps/) -------------------------
INGEST: Final = "ingest"
FEATURIZE: Final = "featurize"
HPO: Final = "hpo"
TRAIN_BEST: Final = "train_best"
REGISTER: Final = "register"
MAIN: Final = "main"
STEPS: Final = (INGEST, FEATURIZE, HPO, TRAIN_BEST, REGISTER)
# What a user runs on their own after training (not chained into main): monthly batch scoring.
PREDICT: Final = "predict"
# Not chained into main either: moves `champion` by hand (a rollback).
PROMOTE: Final = "promote"
# The monthly loop: monitor the champion on a new month and retrain on the latest window when
# the policy says so (retrain); replay that cycle over past months (backtest).
RETRAIN: Final = "retrain"
BACKTEST: Final = "backtest"
STANDALONE: Final = (PREDICT, PROMOTE, RETRAIN, BACKTEST)
# When retrain trains: every month, when the month drifted or degraded, or never (monitor only).
POLICIES: Final = ("always", "on_drift", "never")
LATEST: Final = "latest"  # retrain -P month=latest: the newest month the source has
# Lineage: each step after ingest reads one upstream run, given as this parameter (runs:/<id>).
UPSTREAM: Final[dict[str, tuple[str, str]]] = {
    FEATURIZE: ("ingest_run", INGEST),
    HPO: ("features_run", FEATURIZE),
    TRAIN_BEST: ("hpo_run", HPO),
    REGISTER: ("train_run", TRAIN_BEST),
}

# --- experiment, registry and tracking defaults --------------------------------------------
EXPERIMENT_NAME: Final = "nyc-taxi-experiment"
# MLflow 3 tells GenAI experiments from model-training ones by this experiment tag.
EXPERIMENT_KIND_TAG: Final = "mlflow.experimentKind"
MODEL_TRAINING_KIND: Final = "custom_model_development"
MODEL_NAME: Final = "nyc-taxi-duration"
CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
DEFAULT_MODEL_URI: Final = f"models:/{MODEL_NAME}@{CHAMPION}"
# backtest registers into models of its own, named from this prefix: never the production one.
BACKTEST_MODEL_NAME: Final = f"{MODEL_NAME}-backtest"

# The champion's history (tracking/history.py): one registered-model tag per move of `champion`,
# and on each version when it last became champion and when it stopped being one.
CHAMPION_HISTORY_PREFIX: Final = "champion_history."
CHAMPION_SINCE_TAG: Final = "champion_since"
CHAMPION_UNTIL_TAG: Final = "champion_until"

# --- the MLflow UI ---------------------------------------------------------------------------
UI_URL: Final = "http://127.0.0.1:5000"  # where `mlflow ui` (make ui) listens by default


def runs_table_url(ui_url: str, experiment_id: str) -> str:
    """The experiment's runs table under "Model training": MLflow 3 opens an experiment on its
    GenAI overview unless the link names the workflow type."""
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


# --- data source ---------------------------------------------------------------------------
TLC_URL: Final = "https://d37ci6vzurychx.cloudfront.net/trip-data"
TAXIS: Final = ("green", "yellow")
DEFAULT_CACHE_DIR: Final = "~/.cache/nyc-taxi-duration"
DEFAULT_MONTHS: Final = {"train": "2021-01", "val": "2021-02", "test": "2021-03"}
# hpo searches on a seeded sample of this many rows of each split (0 = all rows); chosen by
# measurement on a yellow-taxi-sized month (docs/big-months.md). Green months are smaller.
DEFAULT_HPO_SAMPLE_ROWS: Final = 100_000
# train_best's early stopping scores a seeded sample of this many validation rows after every
# round (0 = all); on a 3-million-row month it stops where the whole month does (same doc).
DEFAULT_EARLY_STOPPING_ROWS: Final = 500_000
# register: how sure the paired comparison must be that a candidate's error is lower than the
# champion's before it replaces it; measured on equal models (docs/model-management.md).
DEFAULT_MIN_CONFIDENCE: Final = 0.99

# --- splits and MLflow dataset contexts ----------------------------------------------------
SPLITS: Final[tuple[str, ...]] = ("train", "val", "test")
DATASET_CONTEXT: Final[dict[str, str]] = {
    "train": "training",
    "val": "validation",
    "test": "testing",
}
INFERENCE_CONTEXT: Final = "inference"  # predict: each scored month

# --- columns -------------------------------------------------------------------------------
# The canonical trip frame that ingest writes, whatever the TLC file called them.
PICKUP: Final = "pickup_datetime"
DROPOFF: Final = "dropoff_datetime"
PU: Final = "PULocationID"
DO: Final = "DOLocationID"
DISTANCE: Final = "trip_distance"
TRIP_COLUMNS: Final = (PICKUP, DROPOFF, PU, DO, DISTANCE)
# The names TLC files (and so raw records) carry the pickup and dropoff times under: green
# lpep_, yellow tpep_, FHV and this pipeline's own files neither.
PICKUP_ALIASES: Final = ("lpep_pickup_datetime", "tpep_pickup_datetime", PICKUP)
DROPOFF_ALIASES: Final = ("lpep_dropoff_datetime", "tpep_dropoff_datetime", DROPOFF)
TARGET: Final = "duration"

# --- features: what the model knows of a trip when it starts --------------------------------
# course: the zones and the distance (the course's model); time: those and the pickup time.
TIME_FEATURES: Final = "time"
COURSE_FEATURES: Final = "course"
FEATURE_SETS: Final = (TIME_FEATURES, COURSE_FEATURES)
DEFAULT_FEATURES: Final = TIME_FEATURES
# What features=time derives from the pickup time: the hour with its minutes (8.5 = 08:30) and
# the day of the week (0 = Monday).
PICKUP_HOUR: Final = "pickup_hour"
PICKUP_WEEKDAY: Final = "pickup_weekday"
# What the registered model takes: raw records with (at least) these columns; a time model also
# reads the pickup time, under any of PICKUP_ALIASES.
MODEL_INPUT_COLUMNS: Final = (PU, DO, DISTANCE)
# What predict and register hand every model, whichever features it was trained with (a course
# model ignores the pickup time).
SCORING_COLUMNS: Final = (PICKUP, *MODEL_INPUT_COLUMNS)


def model_input_columns(features: str) -> tuple[str, ...]:
    """The raw columns a model trained with `features` reads (the pickup time as PICKUP)."""
    return SCORING_COLUMNS if features == TIME_FEATURES else MODEL_INPUT_COLUMNS


# TLC taxi zones are numbered 1..265 (264/265 are "Unknown"); anything else is treated as missing.
ZONE_IDS: Final = tuple(range(1, 266))

# predict's output: the trips' own columns, the actual minutes (TARGET, where both timestamps
# exist) and the predicted minutes of the model (and of the model it is compared to).
PREDICTION: Final = "predicted_duration"
COMPARE_PREDICTION: Final = "compare_predicted_duration"
PREDICTION_INPUT_COLUMNS: Final = (PICKUP, PU, DO, DISTANCE, TARGET)
# MLflow's name for the test RMSE among its standard regression metrics (mlflow.models.evaluate),
# the metric register's gate compares.
RMSE_METRIC: Final = "root_mean_squared_error"

# --- encodings -----------------------------------------------------------------------------
ENCODINGS: Final = ("categorical", "onehot")

# --- hpo backends and predict engines --------------------------------------------------------
BACKENDS: Final = ("local", "spark")
ENGINES: Final = ("pandas", "spark")  # predict
REFIT_ENGINES: Final = ("local", "spark")  # train_best

# --- tags ----------------------------------------------------------------------------------
STEP_TAG: Final = "pipeline.step"
TRIAL_STEP: Final = "hpo_trial"  # STEP_TAG of a trial run
MODEL_TAG: Final = "model"
MODEL_TAG_VALUE: Final = "xgboost"
PARENT_RUN_TAG: Final = "mlflow.parentRunId"
MODEL_URI_TAG: Final = "model_uri"
BEST_TRIAL_TAG: Final = "best_trial_run_id"
CODE_TAG: Final = "pipeline.code_fingerprint"  # every step run: see taxi_duration/core/reuse.py
# Reuse is keyed on content: what a step read (ingest: the source files; later steps: the
# upstream run's output digest) and a digest of what it wrote for the next step to read.
INPUT_DIGEST_TAG: Final = "pipeline.input_digest"
OUTPUT_DIGEST_TAG: Final = "pipeline.output_digest"
CHAMPION_AFTER_TAG: Final = "pipeline.champion_after"  # register: champion version it left
# register: the last recorded move of champion when it ended (its champion_history.* key)
CHAMPION_MOVE_TAG: Final = "pipeline.champion_move"
HOST_TAG: Final = "pipeline.host"  # every step run: where its process runs...
PID_TAG: Final = "pipeline.pid"  # ...and which process, so a later main can tell it died
PEAK_RSS_METRIC: Final = "peak_rss_mib"  # every step run: its process's peak memory
# On a registered version: the digest and count of the test rows its test_rmse was measured on
# (register's gate compares two RMSEs only on the same rows).
TEST_ROWS_DIGEST_TAG: Final = "test_rows_digest"
TEST_ROWS_TAG: Final = "test_rows"
# Describe the data a run was built from; carried from ingest down to the registered version.
DATA_TAGS: Final = ("taxi", "train_month", "val_month", "test_month")

# --- artifact paths (relative to a run's artifact root) ------------------------------------
RAW_DIR: Final = "raw"  # ingest: raw/{split}.parquet
PROFILE_FILE: Final = "profile.json"  # ingest
PREPROCESSOR_DIR: Final = "preprocessor"  # featurize and train_best
PREPROCESSOR_PATH: Final = f"{PREPROCESSOR_DIR}/preprocessor.pkl"
TRIPS_DIR: Final = "trips"  # featurize: trips/{split}.parquet, filtered rows + target
MATRICES_DIR: Final = "matrices"  # featurize: matrices/{split}.{parquet|npz}
FEATURIZE_SUMMARY_FILE: Final = "featurize_summary.json"
TRIALS_FILE: Final = "trials.csv"  # hpo
BEST_PARAMS_FILE: Final = "best_params.json"  # hpo
MODEL_NAME_IN_RUN: Final = "model"  # train_best: the logged pyfunc's name
BOOSTER_FILE: Final = "booster.ubj"  # inside the logged model: artifacts/booster.ubj
REFERENCE_PROFILE_FILE: Final = "reference_profile.json"  # inside the logged model too
PLOTS_DIR: Final = "plots"  # ingest, hpo, train_best
DISTRIBUTIONS_PLOT: Final = f"{PLOTS_DIR}/distributions.png"  # ingest
SEARCH_PLOT: Final = f"{PLOTS_DIR}/search.png"  # hpo
TEST_PREDICTIONS_PLOT: Final = f"{PLOTS_DIR}/test_predictions.png"  # train_best...
TEST_ERRORS_PLOT: Final = f"{PLOTS_DIR}/test_errors.png"
FEATURE_IMPORTANCE_PLOT: Final = f"{PLOTS_DIR}/feature_importance.png"
REGISTRATION_FILE: Final = "registration.json"  # register
# train_best: its model's predictions of the test trips (featurize's trips/test.parquet, in
# order), which register's gate pairs with the champion's on the same rows
TEST_PREDICTIONS_FILE: Final = "predictions/test.parquet"
PROMOTION_FILE: Final = "promotion.json"  # promote
SUMMARY_FILE: Final = "summary.json"  # main
PREDICTIONS_DIR: Final = "predictions"  # predict: predictions/{taxi}_{month}.parquet
MONITORING_DIR: Final = "monitoring"  # predict: the month-by-month table and chart
METRICS_BY_MONTH_JSON: Final = f"{MONITORING_DIR}/metrics_by_month.json"
METRICS_BY_MONTH_CSV: Final = f"{MONITORING_DIR}/metrics_by_month.csv"
RMSE_BY_MONTH_PLOT: Final = f"{MONITORING_DIR}/rmse_by_month.png"
DRIFT_BY_MONTH_JSON: Final = f"{MONITORING_DIR}/drift_by_month.json"
DRIFT_BY_MONTH_CSV: Final = f"{MONITORING_DIR}/drift_by_month.csv"
DRIFT_BY_MONTH_PLOT: Final = f"{MONITORING_DIR}/drift_by_month.png"
BACKTEST_DIR: Final = "backtest"  # backtest: the month-by-month table and chart
BACKTEST_JSON: Final = f"{BACKTEST_DIR}/backtest.json"
BACKTEST_CSV: Final = f"{BACKTEST_DIR}/backtest.csv"
BACKTEST_PLOT: Final = f"{BACKTEST_DIR}/backtest.png"


def raw_split_path(split: str) -> str:
    """Artifact path of one raw split written by ingest."""
    return f"{RAW_DIR}/{split}.parquet"


def raw_paths() -> list[str]:
    """Every artifact ingest writes for featurize to read."""
    return [raw_split_path(split) for split in SPLITS]


def trips_split_path(split: str) -> str:
    """Artifact path of one filtered split (model input columns + target) written by featurize."""
    return f"{TRIPS_DIR}/{split}.parquet"


def matrix_split_path(split: str, encoding: str) -> str:
    """Artifact path of one split's feature matrix: parquet (dense categoricals) or npz (sparse)."""
    return (
        f"{MATRICES_DIR}/{split}.parquet"
        if encoding == "categorical"
        else f"{MATRICES_DIR}/{split}.npz"
    )


def featurize_paths(encoding: str) -> list[str]:
    """Every artifact featurize writes for the later steps to read."""
    return [
        PREPROCESSOR_PATH,
        *(matrix_split_path(split, encoding) for split in SPLITS),
        *(trips_split_path(split) for split in SPLITS),
    ]


def tlc_file_name(taxi: str, month: str) -> str:
    """File name TLC publishes a month under, e.g. green_tripdata_2021-01.parquet."""
    return f"{taxi}_tripdata_{month}.parquet"


def predictions_file(taxi: str, month: str) -> str:
    """File name of one month's predictions, in the run's predictions/ or an output folder."""
    return f"{taxi}_{month}.parquet"
