"""Pictures the runs log (mlflow.log_figure), built as matplotlib Figures from plain arrays and
frames: pure, no disk, no MLflow, no pyplot state (safe in any process, headless)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure


def plot_predictions(y_true: np.ndarray, y_pred: np.ndarray, title: str) -> Figure:
    """Predicted vs actual minutes and the residual distribution, side by side."""
    rng = np.random.default_rng(0)
    shown = rng.choice(len(y_true), size=min(5000, len(y_true)), replace=False)
    fig = Figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    left.scatter(y_true[shown], y_pred[shown], s=3, alpha=0.3)
    left.plot([0, 60], [0, 60], color="black", linewidth=1)
    left.set(xlabel="actual minutes", ylabel="predicted minutes", title=f"{title}: predicted")
    right.hist(y_pred - y_true, bins=80, range=(-30, 30))
    right.set(xlabel="prediction - actual (minutes)", ylabel="trips", title=f"{title}: residuals")
    fig.tight_layout()
    return fig
