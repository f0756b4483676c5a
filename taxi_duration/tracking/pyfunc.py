"""The registered model: one pyfunc artifact that takes raw trip records and returns minutes.

It bundles the fitted preprocessor with the XGBoost booster, so `models:/<name>@champion`
needs nothing but raw records (PULocationID, DOLocationID, trip_distance, and for a model
trained with features=time the pickup time; extra columns such as a full TLC row are ignored).
This module also says how the model is logged (signature, metadata, pinned requirements),
loaded and evaluated (MLflow's standard regression metrics, and the comparison of a candidate
with a baseline that register's gate makes).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import EvaluationResult, MetricThreshold, ModelSignature
from mlflow.models.evaluation.validation import ModelValidationFailedException
from mlflow.pyfunc import PythonModel, PythonModelContext
from mlflow.types import ColSpec, Schema

from taxi_duration.core.contracts import (
    COURSE_FEATURES,
    PICKUP_ALIASES,
    PREDICTION,
    RMSE_METRIC,
    TARGET,
    model_input_columns,
)
from taxi_duration.model import features
from taxi_duration.model.drift import Profile

BOOSTER_ARTIFACT = "booster"
PREPROCESSOR_ARTIFACT = "preprocessor"
# The drift reference train_best writes with the model (model/drift.py); older models have none.
PROFILE_ARTIFACT = "reference_profile"
# What the model needs where it is loaded, pinned to what trained it.
# The model's metadata (MLmodel) names the columns it reads (its signature has no input schema),
# the feature set it was trained with, and the names it takes the pickup time under.
INPUT_COLUMNS_KEY = "input_columns"
FEATURES_KEY = "features"
PICKUP_COLUMNS_KEY = "pickup_time_columns"
REQUIREMENTS = ("mlflow", "xgboost", "pandas", "numpy", "scipy", "scikit-learn", "pyarrow")


class TripDurationModel(PythonModel):
    """Raw trip records in, predicted trip duration in minutes out."""

    def load_context(self, context: PythonModelContext) -> None:
        # xgboost is imported where the model is loaded, not with this module: `register`
        # imports it and needs xgboost only when it re-scores a champion.
        import xgboost as xgb

        artifacts = context.artifacts
        self.preprocessor = features.load_preprocessor(Path(artifacts[PREPROCESSOR_ARTIFACT]))
        self.booster = xgb.Booster()
        self.booster.load_model(artifacts[BOOSTER_ARTIFACT])
        profile = artifacts.get(PROFILE_ARTIFACT)
        self.profile = json.loads(Path(profile).read_text()) if profile else None

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        records = pd.DataFrame(model_input)
        try:
            checked = features.model_input(records, self.preprocessor.features)
        except ValueError as exc:
            # An MlflowException is what `mlflow models serve` answers with HTTP 400 and its
            # message alone; any other exception becomes a 500 with a Python traceback.
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        import xgboost as xgb

        matrix = self.preprocessor.transform(checked)
        return self.booster.predict(xgb.DMatrix(matrix, enable_categorical=True))


def reference_profile(model_uri: str) -> Profile | None:
    """The drift reference the model at `model_uri` carries (None: logged before models had
    one, or not by this pipeline)."""
    found = getattr(load(model_uri).unwrap_python_model(), "profile", None)
    return None if found is None else Profile.from_dict(found)


def requirements() -> list[str]:
    """Pinned requirements of the logged model, named instead of inferred (inference loads the
    model in a subprocess and costs seconds per run)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in REQUIREMENTS]


def signature() -> ModelSignature:
    """Minutes out; no input schema: the model checks its inputs itself.

    Raw records bring the zones as int64, as floats (a missing zone is NaN) or as JSON integers,
    and a distance as int or float. MLflow's schema enforcement refuses int64 for a double column
    and floats for a long one, and an `any`-typed input schema breaks `text/csv` requests to
    `mlflow models serve` (it cannot give pandas a dtype for `any`); a pickup time comes as a
    datetime, or as a string from JSON and CSV. So the model validates the records
    (features.model_input: the columns present, the zones and distance numeric, the pickup time
    readable) and says what is wrong in an MlflowException, which the server answers with HTTP
    400 and that message. The input columns are recorded in the model's metadata (`metadata`)
    and its input example.
    """
    return ModelSignature(outputs=Schema([ColSpec("double")]))


def metadata(features: str) -> dict[str, Any]:
    """What the model's MLmodel file says of its inputs: the columns, the feature set and (for a
    time model) the names the pickup time may come under."""
    found: dict[str, Any] = {
        INPUT_COLUMNS_KEY: list(model_input_columns(features)),
        FEATURES_KEY: features,
    }
    if features != COURSE_FEATURES:
        found[PICKUP_COLUMNS_KEY] = list(PICKUP_ALIASES)
    return found


def features_of(model_metadata: dict[str, Any] | None) -> str:
    """The feature set a logged model was trained with, from its metadata (models logged before
    there were feature sets say none: they read the zones and the distance)."""
    return str((model_metadata or {}).get(FEATURES_KEY, COURSE_FEATURES))


def features_of_model(model_uri: str) -> str:
    """The feature set of the model at `model_uri`, read from its MLmodel file alone (a version
    whose logged model lives in another store, or none, reads as well)."""
    return features_of(mlflow.models.Model.load(model_uri).metadata)


def log_model(features: str, **kwargs: Any) -> str:
    """Log a pyfunc model trained with `features` to the active run; returns its
    `models:/m-...` URI."""
    # MLflow warns that a pickled python_model needs caution; its class ships as code
    # (code_paths), and the pickle holds only the two artifact names.
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        info = mlflow.pyfunc.log_model(
            signature=signature(),
            pip_requirements=requirements(),
            metadata=metadata(features),
            **kwargs,
        )
    finally:
        pyfunc_logger.setLevel(level)
    return str(info.model_uri)


def load(model_uri: str) -> Any:
    """The pyfunc model at `model_uri` (models:/name@alias, models:/name/3, runs:/...)."""
    return mlflow.pyfunc.load_model(model_uri)


def spark_udf(spark: Any, model_uri: str) -> Any:
    """The model as a Spark UDF returning minutes (double), run by the executors' Python with
    the packages already there (env_manager="local": nothing is installed per task)."""
    # MLflow warns that env_manager="local" does not recreate the training environment: here
    # that is the point (the project's pinned environment is the one that trained it).
    pyfunc_logger = logging.getLogger("mlflow.pyfunc")
    level = pyfunc_logger.level
    pyfunc_logger.setLevel(logging.ERROR)
    try:
        return mlflow.pyfunc.spark_udf(spark, model_uri, result_type="double", env_manager="local")
    finally:
        pyfunc_logger.setLevel(level)


# The schema of evaluation_frame, as MLflow would infer it: two required doubles.
EVALUATION_SCHEMA = Schema([ColSpec("double", TARGET), ColSpec("double", PREDICTION)])


def evaluation_frame(targets: np.ndarray, predictions: np.ndarray) -> pd.DataFrame:
    """Targets and predictions as doubles, the rows mlflow.models.evaluate scores."""
    return pd.DataFrame(
        {
            TARGET: np.asarray(targets, dtype=np.float64),
            PREDICTION: np.asarray(predictions, dtype=np.float64),
        }
    )


def evaluate_predictions(
    targets: np.ndarray, predictions: np.ndarray, model_id: str, dataset_name: str
) -> dict[str, float]:
    """MLflow's standard regression metrics (root_mean_squared_error, mean_absolute_error,
    r2_score, max_error, ...) of `predictions` against `targets`, logged to the active run and
    linked to the logged model `model_id` (the model's page lists them, with the dataset).

    The predictions are the ones the step already made: evaluating them costs what computing
    the metrics costs, where evaluating the pyfunc would load the model and predict again.
    """
    from mlflow.data.pandas_dataset import from_pandas  # train_best alone needs it

    frame = evaluation_frame(targets, predictions)
    with warnings.catch_warnings():
        # from_pandas warns that the source is unknown: the rows are in the run's lineage.
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(frame, targets=TARGET, predictions=PREDICTION, name=dataset_name)
    # MLflow would infer the schema it logs with the dataset by testing every value for NaN in
    # Python: 19 s of the 27 s evaluate took on a 3.2-million-row month, where the metrics took
    # 0.7 s. The frame's two columns are floats with no NaN, so the schema is known: give it.
    dataset.schema = EVALUATION_SCHEMA
    # evaluate announces at INFO that it made the model active and tests a row first.
    quiet = [logging.getLogger(n) for n in ("mlflow.tracking.fluent", "mlflow.models.evaluation")]
    levels = [logger.level for logger in quiet]
    for logger in quiet:
        logger.setLevel(logging.WARNING)
    try:
        result = mlflow.models.evaluate(
            data=dataset,
            model_type="regressor",
            # shap (explainability plots) is not installed, and the step draws its own.
            evaluator_config={"log_model_explainability": False},
            model_id=model_id,
        )
    finally:
        for logger, level in zip(quiet, levels, strict=True):
            logger.setLevel(level)
    return {name: float(value) for name, value in result.metrics.items()}


def improvement_shortfall(
    candidate_rmse: float, baseline_rmse: float, min_improvement: float
) -> str | None:
    """Whether the candidate's RMSE is lower than the baseline's by at least `min_improvement`,
    asked of MLflow's validate_evaluation_results; None if it is, else MLflow's sentence why not.

    MLflow wants a positive minimum change and passes a candidate equal to the baseline minus
    it; with `min_improvement` 0, one representable step (math.ulp) makes "lower" strict, so a
    tie keeps the champion.
    """
    threshold = MetricThreshold(
        greater_is_better=False,
        min_absolute_change=max(min_improvement, math.ulp(baseline_rmse)),
    )
    try:
        mlflow.validate_evaluation_results(
            validation_thresholds={RMSE_METRIC: threshold},
            candidate_result=EvaluationResult({RMSE_METRIC: candidate_rmse}, {}, run_id=""),
            baseline_result=EvaluationResult({RMSE_METRIC: baseline_rmse}, {}, run_id=""),
        )
    except ModelValidationFailedException as exc:
        return " ".join(exc.message.split())
    return None
