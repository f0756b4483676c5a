"""Pictures the runs log (mlflow.log_figure), built as matplotlib Figures from plain arrays and
frames: pure, no disk, no MLflow, no pyplot state (safe in any process, headless).

Each builder draws from at most a few thousand points or a few dozen bins, so it costs well under
a second even for a month of millions of trips (benchmarks/figures.py measures them).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from taxi_duration.core.contracts import DISTANCE, DO, PICKUP, PICKUP_HOUR, PICKUP_WEEKDAY, PU

# What a person calls the model's inputs (the one-hot encoding's pair column included).
INPUT_LABELS: dict[str, str] = {
    PU: "pickup zone",
    DO: "dropoff zone",
    DISTANCE: "trip distance",
    PICKUP_HOUR: "pickup time of day",
    PICKUP_WEEKDAY: "pickup day of week",
    "PU_DO": "pickup-dropoff zone pair",
}
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
# Trip distance bands (miles) for the error breakdown: short hops to airport runs.
DISTANCE_BANDS: tuple[float, ...] = (0, 1, 2, 3, 5, 10, 20, np.inf)
DURATION_RANGE = (0.0, 90.0)  # minutes shown in ingest's histogram
DISTANCE_RANGE = (0.0, 20.0)  # miles shown in ingest's histogram
_SCATTER_POINTS = 5000


def plot_distributions(splits: Mapping[str, tuple[pd.Series, pd.Series]]) -> Figure:
    """Trip duration (minutes) and distance (miles) per split, as overlaid density histograms.

    `splits` maps a legend label ("train 2021-01") to (duration minutes, distance miles). The
    share of trips outside the drawn range is given in the legend: TLC months hold negative
    durations, day-long trips and meters reading thousands of miles.
    """
    fig = Figure(figsize=(11, 4.2))
    left, right = fig.subplots(1, 2)
    for label, (minutes, miles) in splits.items():
        for ax, values, (low, high), bins in (
            (left, minutes, DURATION_RANGE, 90),
            (right, miles, DISTANCE_RANGE, 80),
        ):
            known = values.dropna().to_numpy(dtype="float64")
            counts, edges = np.histogram(known, bins=bins, range=(low, high))
            total = max(len(known), 1)
            outside = 1 - counts.sum() / total
            ax.stairs(counts / total, edges, label=f"{label} ({outside:.1%} outside)")
    left.set(xlabel="trip duration (minutes)", ylabel="share of trips", title="Duration")
    right.set(xlabel="trip distance (miles)", ylabel="share of trips", title="Distance")
    for ax in (left, right):
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_search(rmse_by_trial: Mapping[int, float]) -> Figure:
    """Validation RMSE of each trial in the order hyperopt ran them, with the best so far."""
    numbers = np.array(sorted(rmse_by_trial))
    rmse = np.array([rmse_by_trial[n] for n in numbers])
    best = np.minimum.accumulate(rmse)
    winner = int(np.argmin(rmse))
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    ax.scatter(numbers, rmse, s=14, alpha=0.6, label="trial")
    ax.step(numbers, best, where="post", color="black", linewidth=1.5, label="best so far")
    ax.scatter(
        [numbers[winner]],
        [rmse[winner]],
        s=80,
        marker="*",
        color="tab:red",
        zorder=3,
        label=f"best: trial {numbers[winner]}, RMSE {rmse[winner]:.3f}",
    )
    # A few hopeless trials (depth 3, tiny learning rate) would squash the interesting band.
    top = float(np.quantile(rmse, 0.9)) if len(rmse) >= 10 else float(rmse.max())
    span = max(top - float(best.min()), 1e-3)
    ax.set_ylim(float(best.min()) - 0.1 * span, top + 0.1 * span)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are numbered, not measured
    ax.set(xlabel="trial", ylabel="validation RMSE (minutes)", title="Hyperparameter search")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_predictions(y_true: np.ndarray, y_pred: np.ndarray, title: str) -> Figure:
    """Predicted vs actual minutes and the residual distribution, side by side."""
    rng = np.random.default_rng(0)
    shown = rng.choice(len(y_true), size=min(_SCATTER_POINTS, len(y_true)), replace=False)
    fig = Figure(figsize=(11, 4.5))
    left, right = fig.subplots(1, 2)
    left.scatter(y_true[shown], y_pred[shown], s=3, alpha=0.3)
    left.plot([0, 60], [0, 60], color="black", linewidth=1)
    left.set(xlabel="actual minutes", ylabel="predicted minutes", title=f"{title}: predicted")
    right.hist(y_pred - y_true, bins=80, range=(-30, 30))
    right.set(xlabel="prediction - actual (minutes)", ylabel="trips", title=f"{title}: residuals")
    fig.tight_layout()
    return fig


def errors_by(groups: pd.Series, y_true: np.ndarray, y_pred: np.ndarray) -> pd.DataFrame:
    """RMSE, mean error (prediction - actual) and trip count per group, in group order."""
    error = np.asarray(y_pred, dtype="float64") - np.asarray(y_true, dtype="float64")
    frame = pd.DataFrame({"error": error, "squared": error**2}, index=groups.index)
    grouped = frame.groupby(groups, observed=True, sort=True)
    return pd.DataFrame(
        {
            "trips": grouped.size(),
            "rmse": np.sqrt(grouped["squared"].mean()),
            "mean_error": grouped["error"].mean(),
        }
    )


def distance_bands(miles: pd.Series) -> pd.Series:
    """Each trip's distance band ("0-1 mi", ..., "20+ mi"); missing for unknown distances."""
    edges = DISTANCE_BANDS
    labels = [
        f"{lo:g}-{hi:g} mi" if np.isfinite(hi) else f"{lo:g}+ mi"
        for lo, hi in itertools.pairwise(edges)
    ]
    numeric = pd.to_numeric(miles, errors="coerce")
    return pd.cut(numeric, bins=list(edges), labels=labels, right=False)


def error_tables(
    trips: pd.DataFrame, y_true: np.ndarray, y_pred: np.ndarray
) -> dict[str, pd.DataFrame]:
    """Where the model errs: by distance band and, when the trips have pickup times, by pickup
    hour and by day of the week."""
    tables = {"distance": errors_by(distance_bands(trips[DISTANCE]), y_true, y_pred)}
    if PICKUP in trips.columns:
        times = pd.to_datetime(trips[PICKUP])
        tables["hour"] = errors_by(times.dt.hour.rename("hour"), y_true, y_pred)
        days = pd.Series(
            pd.Categorical(times.dt.day_name().str[:3], categories=list(WEEKDAYS), ordered=True),
            index=trips.index,
            name="weekday",
        )
        tables["weekday"] = errors_by(days, y_true, y_pred)
    return tables


# The panels of plot_errors: table name, axis label, relative width.
ERROR_PANELS = (
    ("distance", "trip distance", 1.0),
    ("hour", "pickup hour", 1.5),
    ("weekday", "pickup day", 0.6),
)


def plot_errors(tables: Mapping[str, pd.DataFrame], title: str) -> Figure:
    """RMSE (bars) and mean error (dots) by distance band, pickup hour and day of the week."""
    panels = [(name, label, width) for name, label, width in ERROR_PANELS if name in tables]
    fig = Figure(figsize=(5.2 * sum(width for *_, width in panels), 4.5))
    axes = np.atleast_1d(fig.subplots(1, len(panels), width_ratios=[w for *_, w in panels]))
    for ax, (name, label, _) in zip(axes, panels, strict=True):
        table = tables[name]
        x = np.arange(len(table))
        bars = ax.bar(x, table["rmse"], color="tab:blue", alpha=0.7, label="RMSE")
        if name == "distance":  # few bands: say how many trips each holds
            counts = [f"{n:,}" for n in table["trips"]]
            ax.bar_label(bars, labels=counts, padding=2, fontsize="x-small", color="dimgray")
        ax.plot(x, table["mean_error"], "o", color="tab:red", label="mean error (pred - actual)")
        ax.axhline(0, color="black", linewidth=0.8)
        ticks = [str(i).removesuffix(" mi") for i in table.index]
        ax.set_xticks(x, ticks, fontsize="small")
        unit = " (miles; trips above the bars)" if name == "distance" else ""
        ax.set(xlabel=f"{label}{unit}", ylabel="minutes", title=f"{title}: error by {label}")
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_feature_importance(shares: pd.Series) -> Figure:
    """Each model input's share of the total gain (how much of the error reduction it brought),
    largest first. `shares` is indexed by input column and sums to 1."""
    ordered = shares.sort_values()
    labels = [INPUT_LABELS.get(str(c), str(c)) for c in ordered.index]
    fig = Figure(figsize=(7, 0.6 * len(ordered) + 1.6))
    ax = fig.subplots()
    bars = ax.barh(labels, ordered.to_numpy() * 100, color="tab:green")
    ax.bar_label(bars, labels=[f"{v:.0%}" for v in ordered], padding=3)
    ax.set_xlim(0, 110)
    ax.set(xlabel="share of total gain (%)", title="What the model relies on")
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


STATUS_COLORS = {"ok": "tab:green", "drift": "tab:orange", "degraded": "tab:red"}


def plot_drift_by_month(drift: pd.DataFrame, watch_psi: float, drift_psi: float) -> Figure:
    """The PSI of each input and of the predictions month by month (one line each), with the
    moderate and significant shift levels, and each month's status on top of its column."""
    months = list(drift["month"])
    x = np.arange(len(months))
    psis = [c for c in drift.columns if c.startswith("psi_") and drift[c].notna().any()]
    fig = Figure(figsize=(max(6.0, 0.7 * len(months) + 3), 4.6))
    ax = fig.subplots()
    for column in psis:
        label = column.removeprefix("psi_").replace("_", " ")
        ax.plot(x, drift[column].astype("float64"), marker="o", label=label)
    ax.axhline(
        watch_psi, color="gray", linewidth=0.8, linestyle=":", label=f"moderate ({watch_psi:g})"
    )
    ax.axhline(
        drift_psi, color="tab:red", linewidth=0.8, linestyle="--", label=f"drift ({drift_psi:g})"
    )
    top = max(
        drift_psi * 1.6,
        float(np.nanmax(drift[psis].astype("float64").to_numpy(), initial=0)) * 1.15,
    )
    ax.set_ylim(0, top)
    for position, status in enumerate(drift["status"]):
        ax.text(
            float(position),
            top * 0.97,
            status,
            ha="center",
            va="top",
            fontsize="small",
            color=STATUS_COLORS.get(status, "dimgray"),
            fontweight="bold",
        )
    ax.set_xticks(x, months, rotation=45, ha="right")
    ax.set(
        xlabel="month",
        ylabel="population stability index",
        title="Drift from the training data, month by month",
    )
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_backtest(table: pd.DataFrame, policies: Sequence[str]) -> Figure:
    """Month by month, the RMSE of the frozen model and of the champion each policy had in
    production (a filled marker where that policy retrained after the month's monitoring)."""
    months = list(table["month"])
    x = np.arange(len(months))
    fig = Figure(figsize=(max(6.0, 0.8 * len(months) + 3), 4.6))
    ax = fig.subplots()
    ax.plot(
        x,
        table["frozen_rmse"].astype("float64"),
        color="black",
        linestyle="--",
        marker="s",
        label="frozen (the first month's model)",
    )
    for policy in policies:
        rmse = table[f"{policy}_rmse"].astype("float64").to_numpy()
        line = ax.plot(x, rmse, marker="o", fillstyle="none", label=f"{policy}: in production")
        retrained = table[f"{policy}_retrained"].astype(bool).to_numpy()
        ax.plot(
            x[retrained],
            rmse[retrained],
            "o",
            color=line[0].get_color(),
            label=f"{policy}: retrained that month",
        )
    ax.set_xticks(x, months, rotation=45, ha="right")
    ax.set(
        xlabel="month",
        ylabel="RMSE (minutes)",
        title="Is monthly retraining worth it? RMSE of the model in production",
    )
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
