"""The pyfunc model's helpers that need no tracking store."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow.data.pandas_dataset import from_pandas

from taxi_duration.core.contracts import PREDICTION, TARGET
from taxi_duration.tracking import pyfunc as model


@pytest.mark.filterwarnings("ignore")  # from_pandas may warn that the source is unknown
def test_the_evaluation_schema_is_the_one_mlflow_infers():
    """evaluate_predictions hands MLflow this schema instead of letting it test every value:
    it must be exactly what MLflow would have inferred from the frame, xgboost's float32
    predictions included."""
    targets = np.array([3.5, 12.0, 7.25])
    predictions = np.array([4.0, 11.5, 7.0], dtype=np.float32)
    frame = model.evaluation_frame(targets, predictions)
    inferred = from_pandas(frame, targets=TARGET, predictions=PREDICTION).schema
    assert inferred == model.EVALUATION_SCHEMA
    assert frame[PREDICTION].tolist() == [4.0, 11.5, 7.0]
