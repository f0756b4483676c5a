"""What register's gate compares (pure): the rows both models are scored on, whether a test month
is one the champion learnt from, and how sure a lower error on those rows is.

Two equally good models differ in RMSE by a few hundredths of a minute on a month of 60,000
trips by chance alone, so "lower" is not "better": the gate also asks how confident one can be
that the challenger's mean squared error is lower than the champion's on the same rows
(`paired_confidence`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import stats

from taxi_duration.core.contracts import DISTANCE, DO, PICKUP, PU, TARGET
from taxi_duration.core.errors import PipelineError
from taxi_duration.core.params import Month, parse_month, parse_month_spec

# The columns that make a scored row: the inputs every model reads and the actual minutes.
ROW_COLUMNS = (PICKUP, PU, DO, DISTANCE, TARGET)


def rows_digest(trips: pd.DataFrame) -> str:
    """A digest of the rows a model is scored on (inputs and actual minutes, in order): two
    RMSEs are comparable only when measured on rows with the same digest."""
    present = [c for c in ROW_COLUMNS if c in trips.columns]
    hashes = pd.util.hash_pandas_object(trips[present], index=False).to_numpy()
    digest = hashlib.sha256("|".join(present).encode())
    digest.update(hashes.tobytes())
    return digest.hexdigest()[:16]


def paired_confidence(y: np.ndarray, candidate: np.ndarray, champion: np.ndarray) -> float:
    """How confident one can be that the candidate's mean squared error on these rows is lower
    than the champion's: 1 - p of a one-sided paired t-test on the per-row difference of the
    squared errors (each row is one trip that both models predicted)."""
    y = np.asarray(y, dtype="float64")
    gain = (np.asarray(champion, dtype="float64") - y) ** 2
    gain -= (np.asarray(candidate, dtype="float64") - y) ** 2
    if len(gain) < 2 or not np.any(gain):
        return 0.5 if not np.any(gain) else float(np.mean(gain) > 0)
    result = stats.ttest_1samp(gain, 0.0, alternative="greater")
    return float(1.0 - result.pvalue)


def training_months(tags: Mapping[str, str]) -> list[Month]:
    """The months a registered version learnt from (its training window and its validation
    month, as register tagged them), or [] when its tags do not say."""
    try:
        months = parse_month_spec(tags["train_month"], "train_month")
        return [*months, parse_month(tags["val_month"], "val_month")]
    except (KeyError, PipelineError):
        return []


def seen_month(champion_tags: Mapping[str, str], taxi: str, test_month: str) -> str | None:
    """Why the champion cannot be compared on `test_month` (a month it trained or validated on,
    for the same taxi), or None when it can."""
    if champion_tags.get("taxi", taxi) != taxi:
        return None
    learnt = training_months(champion_tags)
    month = parse_month(test_month, "test_month")
    if month not in learnt:
        return None
    role = "validated" if month == learnt[-1] else "trained"
    window = f"training {champion_tags['train_month']}, validation {learnt[-1]}"
    return f"it {role} on {month} ({window})"
