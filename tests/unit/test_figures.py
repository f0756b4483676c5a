"""The pictures' builders and the tables behind them: pure, on small frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from taxi_duration.core.contracts import DISTANCE, DO, PICKUP, PU
from taxi_duration.model.figures import (
    distance_bands,
    error_tables,
    errors_by,
    plot_distributions,
    plot_errors,
    plot_feature_importance,
    plot_search,
)
from taxi_duration.model.selection import importance_by_input


def test_errors_by_gives_rmse_bias_and_count_per_group():
    groups = pd.Series(["a", "a", "b"])
    table = errors_by(groups, np.array([10.0, 10.0, 5.0]), np.array([13.0, 7.0, 6.0]))
    assert table.loc["a"].tolist() == [2, 3.0, 0.0]
    assert table.loc["b"].tolist() == [1, 1.0, 1.0]


def test_distance_bands_are_half_open_and_unknown_stays_missing():
    bands = distance_bands(pd.Series([0.0, 0.99, 1.0, 25.0, np.nan, -1.0]))
    assert list(bands.astype(object).where(bands.notna(), None)) == [
        "0-1 mi",
        "0-1 mi",
        "1-2 mi",
        "20+ mi",
        None,
        None,
    ]


def test_error_tables_break_down_by_hour_only_with_pickup_times():
    trips = pd.DataFrame(
        {
            PICKUP: pd.to_datetime(["2021-03-01 08:10", "2021-03-01 08:50", "2021-03-01 17:00"]),
            DISTANCE: [0.5, 3.5, 12.0],
        }
    )
    y, pred = np.array([5.0, 15.0, 30.0]), np.array([6.0, 15.0, 20.0])
    tables = error_tables(trips, y, pred)
    assert tables["hour"].index.tolist() == [8, 17]
    assert tables["hour"].loc[17, "mean_error"] == -10.0
    assert tables["distance"]["trips"].sum() == 3
    assert set(error_tables(trips.drop(columns=PICKUP), y, pred)) == {"distance"}


def test_importance_adds_one_hot_columns_up_to_their_input():
    columns = ["PU_DO", "PU_DO", DISTANCE, "PU_DO"]
    shares = importance_by_input({"f0": 1.0, "f3": 2.0, "f2": 6.0}, columns)
    assert shares.to_dict() == {DISTANCE: 2 / 3, "PU_DO": 1 / 3}


def test_importance_by_name_keeps_unused_inputs_at_zero():
    shares = importance_by_input({PU: 1.0, DISTANCE: 3.0}, [PU, DO, DISTANCE])
    assert shares.to_dict() == {DISTANCE: 0.75, PU: 0.25, DO: 0.0}


def test_builders_draw_figures_without_pyplot():
    rng = np.random.default_rng(0)
    minutes = pd.Series(rng.gamma(2, 7, 500))
    miles = pd.Series(rng.gamma(1.5, 2, 500))
    trips = pd.DataFrame(
        {PICKUP: pd.date_range("2021-03-01", periods=500, freq="37min"), DISTANCE: miles}
    )
    figures = [
        plot_distributions({"train 2021-01": (minutes, miles), "val 2021-02": (minutes, miles)}),
        plot_search({0: 7.0, 1: 6.5, 2: 6.9, 3: 6.2}),
        plot_errors(error_tables(trips, minutes.to_numpy(), minutes.to_numpy() + 1), "test"),
        plot_feature_importance(pd.Series({DISTANCE: 0.7, PU: 0.2, DO: 0.1})),
    ]
    assert all(isinstance(f, Figure) and f.axes for f in figures)


@pytest.mark.parametrize("n", [1, 3, 40])
def test_search_plot_marks_the_best_trial(n):
    rmse = {i: 6 + ((i * 7) % 5) / 10 for i in range(n)}
    ax = plot_search(rmse).axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    best = min(rmse, key=lambda k: rmse[k])
    assert f"best: trial {best}, RMSE {rmse[best]:.3f}" in labels
