"""The registered model: one pyfunc artifact that takes raw trip records and returns minutes.

It bundles the fitted preprocessor with the XGBoost booster, so `models:/<name>@champion`
needs nothing but raw records (PULocationID, DOLocationID, trip_distance; extra columns such
as a full TLC row are ignored).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb
from mlflow.pyfunc import PythonModel, PythonModelContext

from steps import features

BOOSTER_ARTIFACT = "booster"
PREPROCESSOR_ARTIFACT = "preprocessor"


class TripDurationModel(PythonModel):
    """Raw trip records in, predicted trip duration in minutes out."""

    def load_context(self, context: PythonModelContext) -> None:
        artifacts = context.artifacts
        self.preprocessor = features.load_preprocessor(Path(artifacts[PREPROCESSOR_ARTIFACT]))
        self.booster = xgb.Booster()
        self.booster.load_model(artifacts[BOOSTER_ARTIFACT])

    def predict(
        self,
        context: PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        records = pd.DataFrame(model_input)
        matrix = self.preprocessor.transform(features.model_input(records))
        return self.booster.predict(xgb.DMatrix(matrix, enable_categorical=True))
