"""Pictures the runs log (mlflow.log_figure), built as matplotlib Figures from plain arrays and
frames: pure, no disk, no MLflow, no pyplot state (safe in any process, headless)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
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


def plot_metrics_by_month(table: pd.DataFrame, metrics: Sequence[str], title: str) -> Figure:
    """Each metric month by month, one panel per metric and one line per model (a long table:
    month, model and the metrics, in minutes). A dashed line marks 0 on a panel that crosses it
    (the bias).

    Months sit at even spacing in calendar order, labelled, so a gap between the months scored
    (2021-05 then 2022-01) shows in the labels rather than as a stretch of empty axis.
    """
    months = sorted(table["month"].unique())
    position = {month: i for i, month in enumerate(months)}
    fig = Figure(figsize=(max(6.0, 0.7 * len(months) + 2), 1.0 + 3.2 * len(metrics)))
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    for ax, metric in zip(axes, metrics, strict=True):
        for label, rows in table.groupby("model", sort=False):
            rows = rows.sort_values("month")
            x = [position[m] for m in rows["month"]]
            ax.plot(x, rows[metric], marker="o", label=str(label))
        if metric == "bias":
            ax.axhline(0, color="black", linewidth=0.8, linestyle="--")
        ax.set(ylabel=f"{metric} (minutes)")
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    axes[0].legend()
    axes[-1].set_xticks(range(len(months)), months, rotation=45, ha="right")
    axes[-1].set_xlabel("month")
    fig.tight_layout()
    return fig
